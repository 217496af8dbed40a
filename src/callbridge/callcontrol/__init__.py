"""callbridge.callcontrol: the domain (operations, agents, calls, legs, transfers, routing), reached through ports.

It knows neither SIP, HTTP, SQL nor asyncio. Adapters build `CallControlService` from the ports in
`callbridge.callcontrol.ports` and drive it: the HTTP layer with the verbs, the B2BUA with the `on_*` reports.
"""

from callbridge.callcontrol.commands import ActionTicket, AgentView, CallView, LegView
from callbridge.callcontrol.errors import CallControlError
from callbridge.callcontrol.ids import random_ids
from callbridge.callcontrol.service import CallControlService

__all__ = ["ActionTicket", "AgentView", "CallControlError", "CallControlService", "CallView", "LegView",
           "random_ids"]
