"""A fake clock and an in-memory network for sans-I/O SIP endpoints.

`Wire` moves each endpoint's `datagrams_to_send()` to the `receive_datagram` of the endpoint at the destination
address, as bytes, and can drop chosen datagrams. Time only moves when a test says so (`advance`, `run_until`),
and then every timer that comes due fires at its own deadline, in order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from callbridge.sip.endpoint import Endpoint
from callbridge.sip.events import Event
from callbridge.sip.timers import TimerConfig

Addr = tuple[str, int]
DropRule = Callable[[bytes, Addr, Addr], bool]


@dataclass
class Sent:
    time: float
    src: Addr
    dst: Addr
    data: bytes
    dropped: bool

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode()


@dataclass
class Wire:
    now: float = 1000.0
    endpoints: dict[Addr, Endpoint] = field(default_factory=dict)
    events: dict[Addr, list[Event]] = field(default_factory=dict)
    log: list[Sent] = field(default_factory=list)
    drop_rules: list[DropRule] = field(default_factory=list)
    transport: str = "udp"

    def add(
        self, host: str, port: int, *, seed: int = 1, timers: TimerConfig | None = None, **options: Any
    ) -> Endpoint:
        endpoint = Endpoint(host, port, timers or TimerConfig(), random.Random(seed), **options)
        self.endpoints[(host, port)] = endpoint
        self.events[(host, port)] = []
        return endpoint

    def addr(self, endpoint: Endpoint) -> Addr:
        return (endpoint.host, endpoint.port)

    # --- dropping ------------------------------------------------------------------------------------------
    def drop_next(self, prefix: bytes, count: int = 1) -> None:
        """Drop the next `count` datagrams whose bytes start with `prefix` (e.g. b"SIP/2.0 200", b"ACK ")."""
        remaining = [count]

        def rule(data: bytes, src: Addr, dst: Addr) -> bool:
            if remaining[0] > 0 and data.startswith(prefix):
                remaining[0] -= 1
                return True
            return False

        self.drop_rules.append(rule)

    def drop_all_from(self, endpoint: Endpoint) -> None:
        """The endpoint goes silent: nothing it sends arrives."""
        src = self.addr(endpoint)
        self.drop_rules.append(lambda data, s, d: s == src)

    # --- moving bytes --------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Deliver everything every endpoint has to send, until nobody has anything left."""
        moved = True
        while moved:
            moved = False
            for src, endpoint in list(self.endpoints.items()):
                for data, dst, transport in endpoint.datagrams_to_send():
                    moved = True
                    dropped = any(rule(data, src, dst) for rule in self.drop_rules)
                    self.log.append(Sent(self.now, src, dst, data, dropped))
                    peer = self.endpoints.get(dst)
                    if not dropped and peer is not None:
                        peer.receive_datagram(data, src, self.now, transport)
            self._collect()

    def _collect(self) -> None:
        for addr, endpoint in self.endpoints.items():
            while (event := endpoint.next_event()) is not None:
                self.events[addr].append(event)

    def next_deadline(self) -> float | None:
        deadlines = [d for e in self.endpoints.values() if (d := e.get_timer()) is not None]
        return min(deadlines) if deadlines else None

    def run_until(self, until: float) -> None:
        """Fire every timer due up to `until` at its own time, delivering what each one sends."""
        self.flush()
        while (deadline := self.next_deadline()) is not None and deadline <= until:
            self.now = max(self.now, deadline)
            for endpoint in self.endpoints.values():
                endpoint.handle_timer(self.now)
            self.flush()
        self.now = max(self.now, until)

    def advance(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # --- reading -------------------------------------------------------------------------------------------
    def take(self, endpoint: Endpoint, kind: type[Event] | None = None) -> list[Event]:
        """Remove and return the endpoint's collected events (only those of `kind` when given)."""
        self._collect()
        bucket = self.events[self.addr(endpoint)]
        if kind is None:
            taken = list(bucket)
            bucket.clear()
            return taken
        taken = [e for e in bucket if isinstance(e, kind)]
        bucket[:] = [e for e in bucket if not isinstance(e, kind)]
        return taken

    def first_lines(self, *, src: Endpoint | None = None, delivered_only: bool = False) -> list[str]:
        return [
            s.first_line
            for s in self.log
            if (src is None or s.src == self.addr(src)) and not (delivered_only and s.dropped)
        ]
