"""The location service: which contacts reach an agent, until when, and from where (RFC 3261 §10, RFC 3581).

Rules:
- A binding maps an agent (operation, extension) to one contact URI. Two contacts are the same binding when their
  URIs are equal under RFC 3261 §19.1.4; the URI text is kept exactly as the phone sent it (parameters, escaped
  headers: RFC 4475 §3.3.13, §3.3.14) and the contact-params apart from `expires` are kept beside it (§3.3.12).
- A binding also records where its REGISTER came from (source address and transport). Behind NAT the Contact names
  a private address; requests for the agent go to the source address, which the binding's `destination` gives.
- A binding made over a connection-bound flow (a WebSocket) is removed when that connection closes (`remove_flow`,
  reason "connection closed").
- A binding is live while `now < expires_at`. Expired bindings are never returned; `expire(now)` removes them and
  says so, and the adapter calls it at `next_expiry()`.
- Every change is reported as one event, in order: `BindingAdded`, `BindingRefreshed`, `BindingRemoved`, and
  `AgentUnregistered` after the removal of an agent's last binding. The adapter writes them through to storage and
  tells the domain (an unregistered agent goes to `logout`).

Theory of operation: bindings sit in a dict per agent (a handful each). Expiry uses a heap of
`(expires_at, agent, contact)` entries with lazy deletion: a refresh pushes a new entry and leaves the old one,
which is recognised as outdated when it reaches the top because the binding's `expires_at` no longer matches.
The heap is rebuilt when outdated entries outnumber the live ones, so memory stays proportional to the bindings.
Times are whatever clock the caller passes as `now` (the adapter uses wall-clock seconds, as storage does).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from callbridge.sip import URI, ParseError, parse_uri

__all__ = [
    "AgentKey",
    "AgentUnregistered",
    "Binding",
    "BindingAdded",
    "BindingRefreshed",
    "BindingRemoved",
    "LocationService",
    "RegistrationEvent",
]

AgentKey = tuple[str, str]
"""(operation_id, extension)"""

ContactParams = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact of an agent (§10.3 step 8) and where its registration came from."""

    operation_id: str
    extension: str
    contact_uri: str  # exactly as received, escapes and all
    source_host: str
    source_port: int
    transport: str  # "udp" | "tcp" | "ws" | "wss"
    expires_at: float
    call_id: str
    cseq: int
    q: float | None = None
    instance_id: str | None = None  # +sip.instance (RFC 5626 §4.1), quotes removed
    reg_id: int | None = None
    params: ContactParams = ()  # contact-params as received, without `expires`
    user_agent: str = ""
    registered_at: float = 0.0  # when this binding was first added
    updated_at: float = 0.0  # when it was last added or refreshed

    @property
    def agent(self) -> AgentKey:
        return self.operation_id, self.extension

    @property
    def uri(self) -> URI:
        return parse_uri(self.contact_uri)

    @property
    def destination(self) -> tuple[str, int]:
        """Where requests for this contact are sent: the address the registration came from (RFC 3581)."""
        return self.source_host, self.source_port

    @property
    def behind_nat(self) -> bool:
        """True when the Contact names another host or port than the one the REGISTER came from."""
        uri = self.uri
        default_port = 5061 if uri.scheme == "sips" else 5060
        host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
        return host.lower() != self.source_host.lower() or (uri.port or default_port) != self.source_port

    def remaining(self, now: float) -> int:
        """Whole seconds left, rounded up (a binding shown with `expires=0` is gone)."""
        return max(0, math.ceil(self.expires_at - now - 1e-6))

    def contact_value(self, now: float) -> str:
        """The Contact value a 200 to REGISTER lists for this binding (§10.3 step 8)."""
        params = "".join(f";{name}" if value is None else f";{name}={value}" for name, value in self.params)
        return f"<{self.contact_uri}>{params};expires={self.remaining(now)}"


@dataclass(frozen=True, slots=True)
class BindingAdded:
    binding: Binding
    first: bool  # the agent had no live binding before this one


@dataclass(frozen=True, slots=True)
class BindingRefreshed:
    binding: Binding
    previous: Binding


@dataclass(frozen=True, slots=True)
class BindingRemoved:
    binding: Binding
    reason: str  # "unregistered" (expires 0), "wildcard" (Contact: *), "expired", "replaced" (same instance)


@dataclass(frozen=True, slots=True)
class AgentUnregistered:
    """The agent's last binding went: the domain puts the agent in `logout`."""

    operation_id: str
    extension: str
    at: float
    reason: str  # the reason of the last removal


RegistrationEvent = BindingAdded | BindingRefreshed | BindingRemoved | AgentUnregistered


@dataclass(slots=True)
class _Slot:
    uri: URI
    binding: Binding


class LocationService:
    """Bindings per agent, their expiry, and the events that report each change (see the module rules)."""

    def __init__(self, emit: Callable[[RegistrationEvent], None]) -> None:
        self._emit = emit
        self._agents: dict[AgentKey, list[_Slot]] = {}
        self._heap: list[tuple[float, str, str, str]] = []  # (expires_at, operation, extension, contact_uri)
        self._count = 0

    # -- reading -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Bindings held (expired ones not yet removed included)."""
        return self._count

    @property
    def agent_count(self) -> int:
        return len(self._agents)

    def contacts_for(self, operation_id: str, extension: str, now: float) -> list[Binding]:
        """The agent's live bindings, highest q first (absent q counts as 1.0), then the most recently updated."""
        slots = self._agents.get((operation_id, extension), ())
        live = [slot.binding for slot in slots if slot.binding.expires_at > now]
        live.sort(key=lambda b: (-(1.0 if b.q is None else b.q), -b.updated_at))
        return live

    def find(self, operation_id: str, extension: str, uri: URI, text: str | None = None) -> Binding | None:
        """The binding whose contact equals `uri` (§19.1.4; `text`, when given, is how `uri` was written),
        expired or not."""
        slot = self._slot((operation_id, extension), uri, text)
        return None if slot is None else slot.binding

    def bindings(self) -> list[Binding]:
        """Every binding held, for a snapshot."""
        return [slot.binding for slots in self._agents.values() for slot in slots]

    def next_expiry(self) -> float | None:
        """When the earliest binding expires (arm a timer and call `expire` then), or None."""
        heap = self._heap
        while heap and not self._current(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # -- changing ------------------------------------------------------------------------------------------
    def put(self, binding: Binding, now: float, uri: URI | None = None) -> None:
        """Add the binding, or refresh the one with an equal contact URI (keeping its `registered_at`)."""
        uri = binding.uri if uri is None else uri
        key = binding.agent
        slots = self._agents.setdefault(key, [])
        slot = self._slot(key, uri, binding.contact_uri)
        if slot is None:
            first = not any(s.binding.expires_at > now for s in slots)
            slots.append(_Slot(uri, binding))
            self._count += 1
            self._push(binding)
            self._emit(BindingAdded(binding, first))
            return
        previous = slot.binding
        if binding.registered_at != previous.registered_at:
            binding = replace(binding, registered_at=previous.registered_at)
        slot.uri, slot.binding = uri, binding
        if (binding.expires_at, binding.contact_uri) != (previous.expires_at, previous.contact_uri):
            self._push(binding)
        self._emit(BindingRefreshed(binding, previous))

    def remove(self, operation_id: str, extension: str, uri: URI, reason: str, now: float) -> Binding | None:
        """Remove the binding whose contact equals `uri`; the removed binding, or None if there was none."""
        key = (operation_id, extension)
        slot = self._slot(key, uri)
        if slot is None:
            return None
        self._drop(key, slot, reason, now)
        return slot.binding

    def remove_all(self, operation_id: str, extension: str, reason: str, now: float) -> list[Binding]:
        """Remove every binding of the agent (`Contact: *`, §10.2.2)."""
        key = (operation_id, extension)
        removed = []
        for slot in list(self._agents.get(key, ())):
            self._drop(key, slot, reason, now)
            removed.append(slot.binding)
        return removed

    def remove_flow(self, source: tuple[str, int], transport: str, reason: str, now: float) -> list[Binding]:
        """Remove every binding registered through the connection from `source` over `transport` (RFC 7118 §5: a
        WebSocket's registrations cannot be reached once it closes)."""
        removed = []
        for key, slots in list(self._agents.items()):
            for slot in list(slots):
                b = slot.binding
                if (b.source_host, b.source_port) == source and b.transport == transport:
                    self._drop(key, slot, reason, now)
                    removed.append(b)
        return removed

    def forget_operation(self, operation_id: str) -> int:
        """Drop the operation's bindings without reporting anything (its lease went to another cluster node,
        which restored them from the records); their heap entries are skipped as stale. How many were dropped."""
        dropped = 0
        for key in [k for k in self._agents if k[0] == operation_id]:
            dropped += len(self._agents.pop(key))
        self._count -= dropped
        return dropped

    def expire(self, now: float) -> list[Binding]:
        """Remove the bindings expired at `now` (each reported, and the agents left without one)."""
        removed: list[Binding] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._current(entry):
                continue
            _, operation_id, extension, contact_uri = entry
            key = (operation_id, extension)
            slot = next(s for s in self._agents[key] if s.binding.contact_uri == contact_uri)
            self._drop(key, slot, "expired", now)
            removed.append(slot.binding)
        return removed

    def restore(self, bindings: Iterable[Binding], now: float) -> int:
        """Load bindings read back after a restart, without events (storage already holds them).

        Expired ones are skipped, as are contacts that no longer parse; the number restored.
        """
        restored = 0
        for binding in bindings:
            if binding.expires_at <= now:
                continue
            try:
                uri = binding.uri
            except ParseError:
                continue
            key = binding.agent
            slot = self._slot(key, uri)
            if slot is not None:
                if slot.binding.updated_at >= binding.updated_at:
                    continue
                slot.uri, slot.binding = uri, binding
            else:
                self._agents.setdefault(key, []).append(_Slot(uri, binding))
                self._count += 1
                restored += 1
            self._push(binding)
        return restored

    # -- internals -----------------------------------------------------------------------------------------
    def _slot(self, key: AgentKey, uri: URI, text: str | None = None) -> _Slot | None:
        slots = self._agents.get(key, ())
        if text is not None:  # a refresh re-sends the contact as it was: the same text is the same URI
            for slot in slots:
                if slot.binding.contact_uri == text:
                    return slot
        for slot in slots:
            if slot.uri == uri:
                return slot
        return None

    def _drop(self, key: AgentKey, slot: _Slot, reason: str, now: float) -> None:
        slots = self._agents[key]
        slots.remove(slot)
        self._count -= 1
        self._emit(BindingRemoved(slot.binding, reason))
        if not any(s.binding.expires_at > now for s in slots):
            # expired leftovers go with the last live one, so the agent is reported gone exactly once
            for leftover in slots:
                self._count -= 1
                self._emit(BindingRemoved(leftover.binding, "expired"))
            del self._agents[key]
            self._emit(AgentUnregistered(key[0], key[1], now, reason))

    def _push(self, binding: Binding) -> None:
        heapq.heappush(self._heap, (binding.expires_at, binding.operation_id, binding.extension,
                                    binding.contact_uri))
        if len(self._heap) > 2 * self._count + 64:
            self._heap = [entry for entry in self._heap if self._current(entry)]
            heapq.heapify(self._heap)

    def _current(self, entry: tuple[float, str, str, str]) -> bool:
        expires_at, operation_id, extension, contact_uri = entry
        for slot in self._agents.get((operation_id, extension), ()):
            if slot.binding.contact_uri == contact_uri:
                return slot.binding.expires_at == expires_at
        return False
