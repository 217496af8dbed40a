"""The ng control protocol of rtpengine, sans-I/O: requests, retransmissions, replies matched by cookie.

Rules (rtpengine's documentation, "The NG Control Protocol")
- A message is one UDP datagram: ``COOKIE SP BENCODED-DICTIONARY``; the reply carries the request's cookie. Every
  request gets a cookie of its own (`NgClient` never reuses one): rtpengine keeps the reply of each cookie it saw
  for a while and answers a repeated cookie from that cache without acting again, which is what makes a
  retransmission safe (an ``offer`` resent after a lost reply is not a second offer) and what would make a reused
  cookie silently return an old reply.
- A request unanswered is resent with the same cookie and bytes after `NgTimers.first`, then at doubling intervals
  capped at `NgTimers.cap` (the shape of RFC 3261 §17.1.2.2 Timer E), until `NgTimers.total` has passed since it was
  first sent: then it ends with `NgTimedOut`. Bounded in time and count.
- A datagram that does not parse (no cookie, a body that is not a bencoded dictionary), that names a cookie
  nobody waits for (a late reply to a timed-out request, a duplicate), or that comes from another address than the
  request went to, is dropped and counted in `stats`; it never raises.
- A reply whose ``result`` is ``error`` is still a reply (`NgReply.ok` is False, `error_reason` says why): what
  to do about it is the caller's business.
- No I/O and no clock: ``now`` is passed in, datagrams are queued for `datagrams_to_send`, the next deadline is
  `get_timer`, and `handle_timer(now)` fires what is due; randomness (the cookie prefix) comes from the rng given.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from callbridge.media.bencode import BencodeError, decode, encode

__all__ = ["Address", "NgClient", "NgEvent", "NgReply", "NgTimedOut", "NgTimers"]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class NgTimers:
    first: float = 0.25   # rtpengine answers in well under a millisecond on loopback; a loss is the only reason
    cap: float = 2.0
    total: float = 4.0    # then the relay is taken for unreachable (the caller decides what that means)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap or self.total <= 0:
            raise ValueError(f"NgTimers: need 0 < first <= cap and total > 0, got {self}")


@dataclass(frozen=True, slots=True)
class NgReply:
    cookie: str
    relay: Address
    command: str
    reply: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.reply.get("result") not in (b"error", "error")

    @property
    def error_reason(self) -> str:
        reason = self.reply.get("error-reason", b"")
        return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)


@dataclass(frozen=True, slots=True)
class NgTimedOut:
    cookie: str
    relay: Address
    command: str


NgEvent = NgReply | NgTimedOut


@dataclass(slots=True)
class _Pending:
    cookie: str
    relay: Address
    command: str
    datagram: bytes
    give_up_at: float
    interval: float
    next_at: float = field(default=0.0)
    sends: int = 1


class NgClient:
    """Requests to one or more rtpengine relays over ng, matched with their replies by cookie."""

    def __init__(self, rng: random.Random, timers: NgTimers | None = None) -> None:
        self.timers = timers or NgTimers()
        # A prefix per client keeps two clients (two nodes, a restarted node) from sharing cookies on one relay.
        self._prefix = f"{rng.getrandbits(32):08x}"
        self._counter = 0
        self._pending: dict[str, _Pending] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[NgEvent] = deque()
        self.stats = {"sent": 0, "retransmissions": 0, "replies": 0, "timeouts": 0, "unparseable": 0,
                      "unknown_cookie": 0, "wrong_source": 0}

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def request(self, relay: Address, message: dict[str, Any], now: float) -> str:
        """Queue `message` (a dictionary with at least ``command``) to `relay`; returns its cookie."""
        command = message.get("command")
        if not isinstance(command, str) or not command:
            raise ValueError(f"an ng message needs a 'command' string, got {command!r}")
        self._counter += 1
        cookie = f"{self._prefix}_{self._counter}"
        datagram = cookie.encode("ascii") + b" " + encode(message)
        pending = _Pending(cookie, relay, command, datagram, give_up_at=now + self.timers.total,
                           interval=self.timers.first)
        pending.next_at = now + pending.interval
        self._pending[cookie] = pending
        self._push(min(pending.next_at, pending.give_up_at), cookie)
        self._out.append((datagram, relay))
        self.stats["sent"] += 1
        return cookie

    def cancel(self, cookie: str) -> bool:
        """Stop waiting for `cookie` (its reply, if it comes, is then counted as unknown)."""
        return self._pending.pop(cookie, None) is not None

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        space = data.find(b" ")
        if space <= 0:
            self.stats["unparseable"] += 1
            return
        try:
            cookie = data[:space].decode("ascii")
            body = decode(data[space + 1:])
        except (UnicodeDecodeError, BencodeError):
            self.stats["unparseable"] += 1
            return
        if not isinstance(body, dict):
            self.stats["unparseable"] += 1
            return
        pending = self._pending.get(cookie)
        if pending is None:
            self.stats["unknown_cookie"] += 1
            return
        if (addr[0], addr[1]) != pending.relay:
            self.stats["wrong_source"] += 1
            return
        del self._pending[cookie]
        self.stats["replies"] += 1
        self._events.append(NgReply(cookie, pending.relay, pending.command, body))

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> NgEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap and self._stale(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._stale(entry):
                continue
            pending = self._pending[entry[2]]
            if now >= pending.give_up_at:
                del self._pending[pending.cookie]
                self.stats["timeouts"] += 1
                self._events.append(NgTimedOut(pending.cookie, pending.relay, pending.command))
                continue
            self._out.append((pending.datagram, pending.relay))
            pending.sends += 1
            self.stats["retransmissions"] += 1
            pending.interval = min(pending.interval * 2, self.timers.cap)
            pending.next_at = now + pending.interval
            self._push(min(pending.next_at, pending.give_up_at), pending.cookie)

    def _push(self, deadline: float, cookie: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, cookie))

    def _stale(self, entry: tuple[float, int, str]) -> bool:
        pending = self._pending.get(entry[2])
        return pending is None or entry[0] != min(pending.next_at, pending.give_up_at)
