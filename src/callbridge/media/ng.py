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
- A window per relay (`NgWindow`): at most `max_requests` requests, and `max_bytes` of their datagrams, are out
  (sent, unanswered) toward one relay at a time; the others wait in that relay's queue and are sent as replies (or
  time-outs) free the window. Why: an unbounded burst (a few hundred calls' offers in one loop turn, each queued
  call's music a ~64 kB ``play media`` blob) overflows the relay's ng socket (rtpengine keeps the kernel's default
  receive buffer, 208 kB on Linux: three such blobs) and the replies' way back into ours: the kernel drops the
  datagrams (``RcvbufErrors`` in /proc/net/snmp), and each lost one costs a retransmission `NgTimers.first` later,
  or a time-out. A request that alone exceeds `max_bytes` is sent when nothing else is out.
- The queue is served by priority class, each class in request order: health requests first (``urgent``: pings,
  so that a long queue does not make a live relay miss its ping), then the commands a call's signalling waits on
  (`SETUP_COMMANDS`: ``offer``, ``answer``, ``delete``, a listener's ``subscribe``), then the rest (``play media``,
  ``stop media``, ``block media``, ``query``...: what feeds or reads the audio). Why: each queued caller's music
  is a ``play media`` blob (and a ``block media`` before it, a ``stop media`` and an ``unblock media`` after), and
  set-up commands queued behind them made calls set up slower, so more callers waited and got music
  (bench/media_cps.py at 300 calls/s: 51,075 of 55,598 requests queued). A request of the last class is held back
  at most `NgWindow.hold_back` (1 s): older, it goes with the set-up commands, in request order. Why: with set-up
  commands always waiting (a relay or an event loop slower than the calls), the audio commands would otherwise
  wait until their time-out, and a time-out takes the relay down for new calls (bench/media_cps.py at 200 calls/s
  on a loaded machine: 470 ``block media`` timed out in the queue, 1,017 calls went direct).
  The class never reorders one rtpengine call: a request waits behind every earlier request of its ``call-id``
  still queued, and when it is the next of its class those earlier ones go first, in their order, whatever their
  class (a ``delete`` never passes its call's ``play media``, nor a ``play media`` its call's ``offer``; a call's
  set-up is held back by its own earlier commands, never by other calls' audio). The head chosen waits for room
  in the window: nothing of a lower class passes it. The time-out counts from the request, queue included: the
  caller's bound holds. A request still queued can be withdrawn (`withdraw`: its caller gave up): the relay never
  sees it.
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

__all__ = ["SETUP_COMMANDS", "Address", "NgClient", "NgEvent", "NgReply", "NgTimedOut", "NgTimers", "NgWindow"]

Address = tuple[str, int]

# The commands a call's signalling waits on (an INVITE's SDP, its answer, the call's end; a supervisor listening in):
# served before the other commands of the queue (the module rules).
SETUP_COMMANDS = frozenset({"offer", "answer", "delete", "subscribe request", "subscribe answer", "unsubscribe"})
_URGENT, _SETUP, _OTHER = 0, 1, 2  # the queue's priority classes, served in this order


@dataclass(frozen=True, slots=True)
class NgTimers:
    first: float = 0.25   # rtpengine answers in well under a millisecond on loopback; a loss is the only reason
    cap: float = 2.0
    total: float = 4.0    # then the relay is taken for unreachable (the caller decides what that means)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap or self.total <= 0:
            raise ValueError(f"NgTimers: need 0 < first <= cap and total > 0, got {self}")


@dataclass(frozen=True, slots=True)
class NgWindow:
    max_requests: int = 64       # out toward one relay at once (rtpengine answers them with its --num-threads)
    max_bytes: int = 96 * 1024   # of their datagrams: one 64 kB blob and small commands beside it
    hold_back: float = 1.0       # at most, behind set-up commands, for the last class (the module rules)

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1 or self.hold_back < 0:
            raise ValueError(f"NgWindow: need max_requests >= 1, max_bytes >= 1 and hold_back >= 0, got {self}")


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
    asked: float = 0.0  # when it was requested
    rank: int = _OTHER  # its priority class
    call_id: str | None = None  # the rtpengine call it belongs to, if any: its order within that call is kept
    next_at: float = field(default=0.0)
    sends: int = 0  # 0 while it waits in its relay's queue


@dataclass(slots=True)
class _Queue:
    """One relay's requests waiting for its window: a FIFO per priority class, and per call-id its requests in
    request order. Both are cleaned lazily: an entry sent, timed out or withdrawn is dropped when it comes first."""

    classes: tuple[deque[_Pending], ...] = field(default_factory=lambda: (deque(), deque(), deque()))
    calls: dict[str, deque[_Pending]] = field(default_factory=dict)


class NgClient:
    """Requests to one or more rtpengine relays over ng, matched with their replies by cookie."""

    def __init__(self, rng: random.Random, timers: NgTimers | None = None, window: NgWindow | None = None) -> None:
        self.timers = timers or NgTimers()
        self.window = window or NgWindow()
        self._out_count: dict[Address, int] = {}   # requests sent and unanswered, per relay
        self._out_bytes: dict[Address, int] = {}
        self._queues: dict[Address, _Queue] = {}  # waiting for the window
        # A prefix per client keeps two clients (two nodes, a restarted node) from sharing cookies on one relay.
        self._prefix = f"{rng.getrandbits(32):08x}"
        self._counter = 0
        self._pending: dict[str, _Pending] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[NgEvent] = deque()
        # sent: requests made (queued ones included); queued: those that had to wait for the window (queued_setup:
        # of them, `SETUP_COMMANDS`); withdrawn: queued ones their caller gave up before they were sent; timeouts:
        # requests ended unanswered (queued_timeouts: of them, those that never left the queue); the last three are
        # datagrams dropped
        self.stats = {"sent": 0, "queued": 0, "queued_setup": 0, "withdrawn": 0, "retransmissions": 0,
                      "replies": 0, "timeouts": 0, "queued_timeouts": 0, "unparseable": 0, "unknown_cookie": 0,
                      "wrong_source": 0}

    @property
    def pending_count(self) -> int:
        """Requests not yet answered nor timed out, queued ones included."""
        return len(self._pending)

    def outstanding(self, relay: Address) -> tuple[int, int]:
        """(requests, bytes) sent to `relay` and not answered yet: what its window holds."""
        return self._out_count.get(relay, 0), self._out_bytes.get(relay, 0)

    def queued(self, relay: Address) -> int:
        """Requests waiting for `relay`'s window."""
        queue = self._queues.get(relay)
        return 0 if queue is None else sum(1 for fifo in queue.classes for p in fifo if self._waiting(p))

    def backlogged(self, relay: Address) -> bool:
        """Some request waits for `relay`'s window: the relay (or this loop) does not keep up. Stops at the first."""
        queue = self._queues.get(relay)
        return queue is not None and any(self._waiting(p) for fifo in queue.classes for p in fifo)

    def queued_calls(self, relay: Address) -> int:
        """rtpengine calls (call-ids) with requests toward `relay` still queued, or ended in the queue and not yet
        cleaned up: 0 once the queue has drained."""
        queue = self._queues.get(relay)
        return 0 if queue is None else len(queue.calls)

    def request(self, relay: Address, message: dict[str, Any], now: float, *, urgent: bool = False) -> str:
        """Send `message` (a dictionary with at least ``command``) to `relay`, or queue it behind the relay's window
        in its priority class (the first class when `urgent`, see the module rules); returns its cookie."""
        command = message.get("command")
        if not isinstance(command, str) or not command:
            raise ValueError(f"an ng message needs a 'command' string, got {command!r}")
        self._counter += 1
        cookie = f"{self._prefix}_{self._counter}"
        datagram = cookie.encode("ascii") + b" " + encode(message)
        call_id = message.get("call-id")
        if isinstance(call_id, bytes):
            call_id = call_id.decode("utf-8", "replace")
        rank = _URGENT if urgent else _SETUP if command in SETUP_COMMANDS else _OTHER
        pending = _Pending(cookie, relay, command, datagram, give_up_at=now + self.timers.total,
                           interval=self.timers.first, asked=now, rank=rank,
                           call_id=call_id if isinstance(call_id, str) else None)
        self._pending[cookie] = pending
        self.stats["sent"] += 1
        queue = self._queues.get(relay)
        if queue is None:
            queue = self._queues[relay] = _Queue()
        queue.classes[rank].append(pending)
        if pending.call_id is not None:
            queue.calls.setdefault(pending.call_id, deque()).append(pending)
        self._pump(relay, now)  # sends it at once when nothing queued comes before it and the window has room
        if not pending.sends:
            self.stats["queued"] += 1
            if rank == _SETUP:
                self.stats["queued_setup"] += 1
            pending.next_at = pending.give_up_at  # queued: only its time-out is due
            self._push(pending.give_up_at, cookie)
        return cookie

    def cancel(self, cookie: str) -> bool:
        """Stop waiting for `cookie` (its reply, if it comes, is then counted as unknown); its place in the window
        is given to the next queued request at the next `handle_timer` or reply."""
        pending = self._pending.pop(cookie, None)
        if pending is None:
            return False
        self._done(pending)
        return True

    def withdraw(self, cookie: str) -> bool:
        """Cancel `cookie` if it still waits in its relay's queue: the relay never sees it, and no event comes for
        it. One already sent is left to its reply or time-out (the relay acts on it anyway, and it holds its share
        of the window until then): False."""
        pending = self._pending.get(cookie)
        if pending is None or pending.sends:
            return False
        del self._pending[cookie]
        self.stats["withdrawn"] += 1
        return True

    def _fits(self, relay: Address, size: int) -> bool:
        count, used = self._out_count.get(relay, 0), self._out_bytes.get(relay, 0)
        return count == 0 or (count < self.window.max_requests and used + size <= self.window.max_bytes)

    def _send(self, pending: _Pending, now: float) -> None:
        relay = pending.relay
        self._out_count[relay] = self._out_count.get(relay, 0) + 1
        self._out_bytes[relay] = self._out_bytes.get(relay, 0) + len(pending.datagram)
        pending.sends = 1
        pending.next_at = now + pending.interval
        self._push(min(pending.next_at, pending.give_up_at), pending.cookie)
        self._out.append((pending.datagram, relay))

    def _done(self, pending: _Pending) -> None:
        """`pending` left `_pending` (answered, timed out, cancelled): its window share is free again."""
        if pending.sends:
            relay = pending.relay
            self._out_count[relay] -= 1
            self._out_bytes[relay] -= len(pending.datagram)

    def _waiting(self, pending: _Pending) -> bool:
        """Still queued: neither sent nor ended (timed out, cancelled, withdrawn) while it waited."""
        return not pending.sends and self._pending.get(pending.cookie) is pending

    def _pump(self, relay: Address, now: float) -> None:
        """Send what the relay's window has room for, in the queue's order (the module rules)."""
        queue = self._queues.get(relay)
        if queue is None:
            return
        while (chosen := self._next(queue, now)) is not None and self._fits(relay, len(chosen.datagram)):
            if chosen.call_id is not None:  # `_next` picks only the first of its call
                queue.calls[chosen.call_id].popleft()
                self._first_of_call(queue, chosen.call_id)  # the call's entry goes once nothing of it waits
            self._send(chosen, now)

    def _next(self, queue: _Queue, now: float) -> _Pending | None:
        """The request to send next: the first of the highest class waiting (the last class's first instead when it
        has been held back long enough and came first), or the first request of its call-id still queued (which
        came before it)."""
        heads = [self._head(queue, fifo) for fifo in queue.classes]
        head = next((h for h in heads if h is not None), None)
        held = heads[_OTHER]
        if head is not None and head.rank == _SETUP and held is not None and held.asked < head.asked \
                and now - held.asked >= self.window.hold_back:
            head = held
        return head if head is None or head.call_id is None else self._first_of_call(queue, head.call_id)

    def _head(self, queue: _Queue, fifo: deque[_Pending]) -> _Pending | None:
        """The first request of a class still queued, those before it that ended dropped."""
        while fifo and not self._waiting(fifo[0]):
            gone = fifo.popleft()
            if gone.call_id is not None:  # a call-id whose requests all ended queued leaves nothing behind
                self._first_of_call(queue, gone.call_id)
        return fifo[0] if fifo else None

    def _first_of_call(self, queue: _Queue, call_id: str) -> _Pending | None:
        """The first request of `call_id` still queued, those before it that ended dropped."""
        calls = queue.calls.get(call_id)
        while calls and not self._waiting(calls[0]):
            calls.popleft()
        if calls:
            return calls[0]
        queue.calls.pop(call_id, None)
        return None

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
        if not pending.sends:  # a reply to a request not sent yet: not ours (a cookie another client reused)
            self.stats["unknown_cookie"] += 1
            return
        del self._pending[cookie]
        self._done(pending)
        self.stats["replies"] += 1
        self._events.append(NgReply(cookie, pending.relay, pending.command, body))
        self._pump(pending.relay, now)

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
                self._done(pending)
                self.stats["timeouts"] += 1
                if not pending.sends:
                    self.stats["queued_timeouts"] += 1
                self._events.append(NgTimedOut(pending.cookie, pending.relay, pending.command))
                continue
            self._out.append((pending.datagram, pending.relay))
            pending.sends += 1
            self.stats["retransmissions"] += 1
            pending.interval = min(pending.interval * 2, self.timers.cap)
            pending.next_at = now + pending.interval
            self._push(min(pending.next_at, pending.give_up_at), pending.cookie)
        for relay in self._queues:  # cancelled requests free their share here too, and a time-out's
            self._pump(relay, now)

    def _push(self, deadline: float, cookie: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, cookie))

    def _stale(self, entry: tuple[float, int, str]) -> bool:
        pending = self._pending.get(entry[2])
        return pending is None or entry[0] != min(pending.next_at, pending.give_up_at)
