"""The kernel: the few moves every collaborator of the service shares (time, events, timers, directory reads).

Time is the `Clock`; timeouts are `Scheduler` callbacks kept by key in the live state, so arming a key again
replaces its timer and a cancelled timer that runs anyway does nothing. Events are stamped (`seq`, `at`) and
published here, and nowhere else, so `seq` grows by one per event of the service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from callbridge.callcontrol.calls import Call, CallHistoryEntry
from callbridge.callcontrol.directory import Operation, Queue, Trunk
from callbridge.callcontrol.errors import CallControlError, NumberNotAllowed
from callbridge.callcontrol.events import DomainEvent
from callbridge.callcontrol.live import LiveState
from callbridge.callcontrol.ports import Ports

_E = TypeVar("_E", bound=DomainEvent)


class Kernel:
    __slots__ = ("_ports", "_state", "_timers")

    def __init__(self, state: LiveState, ports: Ports) -> None:
        self._state = state
        self._ports = ports
        self._timers = state.timers

    def now(self) -> float:
        return self._ports.clock.now()

    def emit(self, event: _E) -> _E:
        """Stamp `event` (seq, at) and publish it. Every caller passes an event it has just built and shares with
        nobody yet, so it is stamped in place rather than copied (`dataclasses.replace` was a hot-path cost)."""
        state = self._state
        state.seq += 1
        object.__setattr__(event, "seq", state.seq)
        object.__setattr__(event, "at", self._ports.clock.now())
        self._ports.events.publish(event)
        return event

    def arm(self, key: str, delay: float, callback: Callable[[], None]) -> None:
        self.disarm(key)
        self._timers[key] = self._ports.scheduler.call_later(max(0.0, delay), lambda: self._fire(key, callback))

    def _fire(self, key: str, callback: Callable[[], None]) -> None:
        if self._timers.pop(key, None) is not None:  # a cancelled timer that runs anyway does nothing
            callback()

    def disarm(self, key: str) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def history(self, call: Call, what: str, detail: str = "") -> None:
        call.history.append(CallHistoryEntry(self._ports.clock.now(), what, detail))

    # --- directory reads --------------------------------------------------------------------------------------

    def operation(self, operation_id: str) -> Operation:
        op = self._ports.directory.get_operation(operation_id)
        if op is None:
            raise CallControlError(f"operation {operation_id} does not exist")
        return op

    def queue(self, operation_id: str, name: str) -> Queue:
        return self._ports.directory.get_queue(operation_id, name) or Queue(operation_id, name)

    def resolve_number(self, operation_id: str, number: str) -> tuple[Trunk, str]:
        """The first outbound trunk whose dial plan accepts `number`, and the number to send it."""
        for trunk in self._ports.directory.list_trunks(operation_id):
            dialled = trunk.dial_plan.apply(number)
            if dialled is not None:
                return trunk, dialled
        raise NumberNotAllowed()

    def trunk(self, operation_id: str, name: str | None) -> Trunk | None:
        return next((t for t in self._ports.directory.list_trunks(operation_id) if t.name == name), None)

    def live_calls(self, operation_id: str) -> Iterable[Call]:
        return (c for c in self._state.calls.values() if c.operation_id == operation_id)
