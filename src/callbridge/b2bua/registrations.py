"""Agents' registrations as the switch keeps them: REGISTER answered by the registrar, every binding change
written through (`RegistrationStore`) and reported to the domain, the expiry timer, and the restore after a
restart.

Rules (RFC 3261 §10.3)
- A REGISTER is the registrar's to answer (`registrar.Registrar`); a failure that counts (a wrong or missing
  credential, `defence.counts_as_failure`) is counted toward a ban of its source.
- A binding added or refreshed is saved; one removed (expired, replaced, unregistered) is removed from the store.
  The domain hears of an agent's first binding (registered) and of its last one going (unregistered), on a later
  loop turn (`report`).
- One timer runs for the earliest expiry of all bindings (`Registrar.next_expiry`), re-armed after every change.
- While the node drains (SIGTERM) it takes no new agents: a REGISTER that would add a binding is answered 503 with
  Retry-After (`registrar`, rule 8); refreshes and removals go on.
- A REGISTER for an operation this cluster node handed over or lost is answered 503 with Retry-After (`registrar`,
  rule 9): the owner registers it.
- After a restart the bindings still valid are restored (their source addresses kept: behind NAT that is where
  requests must go, RFC 3581) and their agents reported registered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from callbridge.b2bua.defence import counts_as_failure
from callbridge.b2bua.location import (
    AgentUnregistered,
    Binding,
    BindingAdded,
    BindingRefreshed,
    BindingRemoved,
    RegistrationEvent,
)
from callbridge.b2bua.ports import Domain, RegistrationRecord, RegistrationStore
from callbridge.b2bua.registrar import ChallengerPool, Registrar, RegistrarDirectory, RegistrarLimits
from callbridge.sip.message import Request
from callbridge.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from callbridge.b2bua.context import RegistrationsContext

__all__ = ["Registrations"]


class Registrations:
    """Owned by the switch (`Switch.registrations`); its registrar is `Switch.registrar`."""

    def __init__(self, sw: RegistrationsContext, directory: RegistrarDirectory, challengers: ChallengerPool,
                 store: RegistrationStore, limits: RegistrarLimits | None) -> None:
        self.sw = sw
        self.store = store
        self.registrar = Registrar(directory, challengers, on_change=self._on_binding, limits=limits)
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at: float | None = None

    def on_register(self, request: Request, tx: ServerTransaction) -> None:
        sw = self.sw
        response = self.registrar.handle_register(request, tx.source, tx.transport, sw.wall(),
                                                  new_bindings=not sw.draining,
                                                  refused_operations=sw.handed.operations)
        sw.endpoint.respond(tx, response, sw.now())
        if counts_as_failure(response.status, carried_credentials="authorization" in request.headers):
            sw.defence.record_failure(tx.source[0], sw.now())
        self._arm_expiry()

    def _on_binding(self, event: RegistrationEvent) -> None:
        store, sw = self.store, self.sw
        if isinstance(event, BindingAdded | BindingRefreshed):
            store.save_registration(_registration_record(event.binding))
            if isinstance(event, BindingAdded) and event.first:
                b = event.binding
                sw.report(self._service().on_registration_changed, b.operation_id, b.extension, True)
        elif isinstance(event, BindingRemoved):
            b = event.binding
            store.remove_registration(b.operation_id, b.extension, b.contact_uri)
        elif isinstance(event, AgentUnregistered):
            sw.report(self._service().on_registration_changed, event.operation_id, event.extension, False)

    def restore(self, records: Iterable[RegistrationRecord]) -> int:
        """After a restart: the bindings still valid, and their agents reported registered."""
        sw = self.sw
        now = sw.wall()
        bindings = [_binding(r) for r in records]
        count = self.registrar.restore(bindings, now)
        for agent in sorted({b.agent for b in bindings if b.expires_at > now}):
            sw.report(self._service().on_registration_changed, agent[0], agent[1], True)
        self._arm_expiry()
        return count

    def connection_closed(self, source: tuple[str, int], transport: str) -> None:
        """A WebSocket closed: its registrations go (each removal reported like an expiry)."""
        self.registrar.connection_closed(source, transport, self.sw.wall())

    def _arm_expiry(self) -> None:
        when = self.registrar.next_expiry()
        if when is None or (self._expiry is not None and self._expiry_at is not None and self._expiry_at <= when):
            return
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry_at = when
        self._expiry = self.sw.loop.call_later(max(0.0, when - self.sw.wall()) + 0.01, self._expire)

    def _expire(self) -> None:
        self._expiry = self._expiry_at = None
        self.registrar.expire(self.sw.wall())
        self._arm_expiry()

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _service(self) -> Domain:
        service = self.sw.service
        assert service is not None, "the switch is not attached to the call-control service"
        return service


def _registration_record(b: Binding) -> RegistrationRecord:
    return RegistrationRecord(
        operation_id=b.operation_id, extension=b.extension, contact_uri=b.contact_uri, source_host=b.source_host,
        source_port=b.source_port, transport=b.transport, expires_at=b.expires_at, call_id=b.call_id,
        cseq=b.cseq, updated_at=b.updated_at, user_agent=b.user_agent)


def _binding(r: RegistrationRecord) -> Binding:
    return Binding(
        operation_id=r.operation_id, extension=r.extension, contact_uri=r.contact_uri, source_host=r.source_host,
        source_port=r.source_port, transport=r.transport, expires_at=r.expires_at, call_id=r.call_id, cseq=r.cseq,
        user_agent=r.user_agent, registered_at=r.updated_at, updated_at=r.updated_at)
