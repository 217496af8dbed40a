"""Waiting for a verb's SIP outcome: `hang`, `hold`, `mute`, `dtmf` and `hang_type_ready` answer after the request
they send got its final response, at most 5 s (agentbox contract, "When a verb answers").

The service returns an `ActionTicket` at once; the outcome follows as an `ActionCompleted`/`ActionFailed` domain
event with the same `action_id`, and `action_outcome(action_id)` keeps it for a while. The waiter looks the outcome
up first (it may already be there), then parks a future that the event log resolves when the event is published.
Both run on the event loop's thread with no await in between, so an outcome cannot slip past.

A failure, or no outcome within the limit, raises `ActionNotCompleted` (the contract's 409 CALL COULD NOT BE
UPDATED; the domain leaves a toggle unchanged on failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from callbridge.callcontrol.commands import ActionTicket
from callbridge.callcontrol.events import ActionCompleted, ActionFailed, DomainEvent

Outcome = ActionCompleted | ActionFailed
OutcomeLookup = Callable[[str], Outcome | None]

DEFAULT_ACTION_LIMIT_S = 5.0


class ActionNotCompleted(Exception):
    """The phone or carrier refused the request, or did not answer within the limit."""

    def __init__(self, ticket: ActionTicket, sip_status: int | None, error_id: str = "CALL_NOT_UPDATED") -> None:
        super().__init__(f"{ticket.verb} {ticket.action_id}: {sip_status}")
        self.ticket = ticket
        self.sip_status = sip_status
        self.error_id = error_id


class ActionWaiter:
    def __init__(self, lookup: OutcomeLookup, *, limit: float = DEFAULT_ACTION_LIMIT_S) -> None:
        self._lookup = lookup
        self.limit = limit
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}

    def on_event(self, event: DomainEvent) -> None:
        """Fed every domain event by the event log; resolves the waiter of an action outcome."""
        if isinstance(event, ActionCompleted | ActionFailed):
            future = self._waiting.pop(event.action_id, None)
            if future is not None and not future.done():
                future.set_result(event)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def wait(self, ticket: ActionTicket) -> ActionCompleted:
        outcome = self._lookup(ticket.action_id)
        if outcome is None:
            future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            self._waiting[ticket.action_id] = future
            try:
                async with asyncio.timeout(self.limit):
                    outcome = await future
            except TimeoutError:
                raise ActionNotCompleted(ticket, None) from None
            finally:
                self._waiting.pop(ticket.action_id, None)
        if isinstance(outcome, ActionFailed):
            raise ActionNotCompleted(ticket, outcome.sip_status, outcome.error_id)
        return outcome
