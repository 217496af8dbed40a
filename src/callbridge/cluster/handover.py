"""Handing an operation over to another node with its live calls (docs/cluster.md, "Moving and draining").

The old owner's half of a handover (`callbridge admin cluster move`, `drain`, or SIGTERM while another node is
live). `ClusterMember` asks `ready(operation)` in every round in which the planner would release the operation's
lease, and renews the lease instead until the answer is True:
- the first time, the switch stops taking new calls for the operation (503, Retry-After: `inbound`);
- while some call of it is not settled (in setup, being transferred: `callcontrol.handover`) and the settle time
  (`SETTLE_SECONDS`) has not run out, the answer is False: the call connects or ends on this node, which keeps the
  lease meanwhile;
- then the calls still unsettled are ended here as a drain's leftovers are (BYE or CANCEL, closed by "system" with
  their CDRs, written while this node still holds the lease), and the rest of the operation's live state is
  forgotten: the domain's calls, agents and timers (`callcontrol.handover`), the legs, dialogs, media anchoring
  and registrations (`b2bua.handover`). Nothing is sent to the parties; their media never went through
  this node.
The member then flushes the writer and releases the lease; the target takes it in its next round and adopts the
calls from the records (`cluster.adopt`), as it adopts a dead node's. If the operation comes back to this node
later it is taken over from the records the same way (`gained` lets its new calls in again).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from callbridge.b2bua.handover import forget

if TYPE_CHECKING:
    from callbridge.bootstrap import Node

log = logging.getLogger(__name__)

SETTLE_SECONDS = 10.0  # how long a handover waits for calls in setup to connect or end
SHUTDOWN_CAUSE = 503  # the Reason of the BYEs of calls still unsettled when the settle time is over


@dataclass(slots=True)
class HandedOver:
    """What one handover did (logged; tests read it from `Node.handovers`)."""

    operation_id: str
    forgotten: list[str] = field(default_factory=list)  # conn_ids left to the new owner
    ended: list[str] = field(default_factory=list)  # conn_ids still unsettled at the end of the settle time
    seconds: float = 0.0


class Handovers:
    def __init__(self, node: Node, settle_seconds: float = SETTLE_SECONDS) -> None:
        self.node = node
        self.settle_seconds = settle_seconds
        self._started: dict[str, float] = {}

    @property
    def handed(self) -> list[str]:
        """The operations handed over (or lost) whose dialogs' requests this node still hands on."""
        return sorted(set(self.node.switch.handed.dialogs.values()))

    def ready(self, operation_id: str) -> bool:
        node = self.node
        now = time.monotonic()
        if operation_id not in self._started:
            self._started[operation_id] = now
            node.switch.handed.operations.add(operation_id)
            log.warning("cluster: handing operation %s over: no new calls for it here", operation_id)
        started = self._started[operation_id]
        unsettled = node.service.handover.unsettled(operation_id)
        if unsettled and now - started < self.settle_seconds:
            return False
        done = HandedOver(operation_id, ended=unsettled)
        for conn_id in unsettled:
            for leg in list(node.switch.legs):
                if leg.conn_id == conn_id and not leg.released:
                    node.signalling.release(leg.leg_id, SHUTDOWN_CAUSE)
                    node.service.on_leg_ended(leg.leg_id, "system")
        done.forgotten, legs = node.service.handover.forget(operation_id)
        forget(node.switch, operation_id, legs)
        node.runtime.wake()
        del self._started[operation_id]
        done.seconds = now - started
        node.handovers.append(done)
        log.warning("cluster: handed operation %s over: %d calls left to the new owner, %d ended (unsettled)",
                    operation_id, len(done.forgotten), len(done.ended))
        return True

    def lost(self, operation_id: str) -> None:
        """The lease is gone (released by the handover, or lost: it expired while this node was paused or cut
        off, and another node may have adopted the calls already). Whatever is left of the operation here is
        forgotten at once, without a settle time: its records can no longer be written by this node anyway (the
        fence), and no two nodes may drive one call. New calls for it are refused until it comes back."""
        node = self.node
        node.switch.handed.operations.add(operation_id)
        self._started.pop(operation_id, None)
        conn_ids, legs = node.service.handover.forget(operation_id)
        forget(node.switch, operation_id, legs)
        if conn_ids:
            log.warning("cluster: operation %s lost: %d calls forgotten here (the new owner adopts them)",
                        operation_id, len(conn_ids))

    def gained(self, operation_id: str) -> None:
        """The operation is this node's again: new calls are let in."""
        handed = self.node.switch.handed
        handed.operations.discard(operation_id)
        for key in [k for k, op in handed.dialogs.items() if op == operation_id]:
            del handed.dialogs[key]  # they are adopted here again: requests for them are this node's
        self._started.pop(operation_id, None)
