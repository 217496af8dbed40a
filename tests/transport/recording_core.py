"""A test-only core for the transport tests: it implements the endpoint facade, records what it receives, and
echoes it back. The transport is what is under test here, so the SIP core itself is not needed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Address = tuple[str, int]


@dataclass
class Received:
    data: bytes
    addr: Address
    now: float
    transport: str


@dataclass
class RecordingCore:
    """Facade-shaped core: records input; echoes it (prefixed) when ``echo`` is set; the timer is what tests set."""

    echo: bool = True
    received: list[Received] = field(default_factory=list)
    outbox: list[tuple[bytes, Address, str]] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    deadline: float | None = None
    timer_calls: list[float] = field(default_factory=list)
    on_timer: Callable[[float], None] | None = None
    drains: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def receive_datagram(self, data: bytes, addr: Address, now: float, transport: str = "udp") -> None:
        self.received.append(Received(data, addr, now, transport))
        if self.echo:
            self.outbox.append((b"echo:" + data, addr, transport))
        self.events.append(("received", data))
        self.arrived.set()

    def datagrams_to_send(self) -> list[tuple[bytes, Address, str]]:
        self.drains += 1
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.timer_calls.append(now)
        self.deadline = None
        if self.on_timer is not None:
            self.on_timer(now)

    def next_event(self) -> Any | None:
        return self.events.pop(0) if self.events else None

    async def wait_for(self, count: int, timeout: float = 3.0) -> None:
        async def _wait() -> None:
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(_wait(), timeout)


def sip_request(call_id: str, body: bytes = b"") -> bytes:
    head = (
        "OPTIONS sip:agent@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK" + call_id + "\r\n"
        "From: <sip:test@127.0.0.1>;tag=t1\r\n"
        "To: <sip:agent@127.0.0.1>\r\n"
        "Call-ID: " + call_id + "\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
