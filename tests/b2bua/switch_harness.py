"""The B2BUA's switch in memory: no socket, no event loop, a fake clock (the way h11 and aioquic test their cores).

`Net` holds the switch (made as `bootstrap` makes it, with the real `CallControlService` on in-memory ports and
the real `SipSignalling`) and peers that are plain sans-I/O `Endpoint`s (a trunk's gateway, agents' phones) at
addresses of their own. It moves every datagram to the core at its destination address, hands the switch's
events to `Switch.on_event` as the runtime does, runs what the switch and the domain put on the loop
(`call_soon`, `call_later`) in order, and records every datagram (`Net.log`) so that tests assert what was sent,
and to where. Time moves only when a test says so (`advance`), every due timer firing at its own deadline.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "callcontrol"))
from callcontrol_fakes import (
    EventLog,
    InMemoryDirectory,
    InMemoryRecalls,
    InMemoryRecords,
    InMemoryStates,
    counter_ids,
)

from callbridge.b2bua.defence import Defence, DefenceConfig
from callbridge.b2bua.ports import DialogRecord, RegistrationRecord
from callbridge.b2bua.registrar import ChallengerPool
from callbridge.b2bua.signalling import SipSignalling
from callbridge.b2bua.switch import Switch
from callbridge.callcontrol.model import Agent, DialPlan, Did, Operation, Queue, Trunk
from callbridge.callcontrol.service import CallControlService
from callbridge.sip import Request, Response, parse
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.events import Event, RequestReceived
from callbridge.sip.timers import TimerConfig

Addr = tuple[str, int]
OP = "0042"
DOMAIN = "op42.example.test"
SWITCH: Addr = ("10.0.0.1", 5060)
GATEWAY: Addr = ("192.0.2.10", 5060)  # the trunk's gateway: calls come in from it and go out to it
PHONES: dict[str, Addr] = {"1001": ("192.0.2.21", 5062), "1002": ("192.0.2.22", 5062), "1003": ("192.0.2.23", 5062)}
T0 = 1_700_000_000.0
OFFER = (b"v=0\r\no=cust 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
         b"m=audio 40000 RTP/AVP 0\r\na=sendrecv\r\n")


def sdp(owner: str, host: str, port: int, direction: str = "sendrecv", version: int = 1) -> bytes:
    return (f"v=0\r\no={owner} 1 {version} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na={direction}\r\n").encode()


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """`asyncio`'s `time`, `call_soon` and `call_later` on a fake clock; also the domain's clock and scheduler."""

    def __init__(self, start: float) -> None:
        self.t = start
        self.ready: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self.timers: list[tuple[float, int, _Handle, Callable[..., object], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.t

    def now(self) -> float:  # the domain's Clock
        return self.t

    def call_soon(self, fn: Callable[..., object], *args: Any) -> _Handle:
        self.ready.append((fn, args))
        return _Handle()

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> _Handle:
        handle = _Handle()
        heapq.heappush(self.timers, (self.t + max(0.0, delay), next(self._seq), handle, fn, args))
        return handle

    def run_ready(self) -> bool:
        ran = False
        while self.ready:
            fn, args = self.ready.pop(0)
            fn(*args)
            ran = True
        return ran

    def next_deadline(self) -> float | None:
        while self.timers and self.timers[0][2].cancelled:
            heapq.heappop(self.timers)
        return self.timers[0][0] if self.timers else None

    def fire_due(self) -> None:
        while (deadline := self.next_deadline()) is not None and deadline <= self.t:
            _, _, handle, fn, args = heapq.heappop(self.timers)
            handle.cancelled = True
            fn(*args)


class Directory(InMemoryDirectory):
    def operation_for_domain(self, sip_domain: str) -> Operation | None:
        return next((op for op in self.operations.values() if op.sip_domain == sip_domain), None)


class Records:
    """The B2BUA's write-through ports, in memory."""

    def __init__(self) -> None:
        self.dialogs: dict[str, DialogRecord] = {}
        self.registrations: dict[tuple[str, str, str], RegistrationRecord] = {}

    def save_dialog(self, dialog: DialogRecord) -> None:
        self.dialogs[dialog.leg_id] = dialog

    def update_cseq(self, leg_id: str, local_cseq: int, remote_cseq: int | None, at: float) -> None:
        pass

    def update_sdp(self, leg_id: str, sent_sdp: bytes, remote_sdp: bytes, at: float) -> None:
        if leg_id in self.dialogs:
            self.dialogs[leg_id] = dataclasses.replace(self.dialogs[leg_id], sent_sdp=sent_sdp, remote_sdp=remote_sdp)

    def remove_dialog(self, leg_id: str) -> None:
        self.dialogs.pop(leg_id, None)

    def save_registration(self, reg: RegistrationRecord) -> None:
        self.registrations[(reg.operation_id, reg.extension, reg.contact_uri)] = reg

    def remove_registration(self, operation_id: str, extension: str, contact_uri: str) -> None:
        self.registrations.pop((operation_id, extension, contact_uri), None)


@dataclass
class Sent:
    time: float
    src: Addr
    dst: Addr
    message: Request | Response

    @property
    def line(self) -> str:
        m = self.message
        return f"{m.method} {m.uri}" if isinstance(m, Request) else f"{m.status} {m.reason}"


class _Waker:
    def wake(self) -> None:
        pass


class Net:
    def __init__(self, **op_settings: Any) -> None:
        self.loop = FakeLoop(T0)
        self.timers = TimerConfig()
        self.directory = d = Directory()
        settings: dict[str, Any] = {"default_queue": "sales", "acw_seconds": 0.0, "ring_timeout": 15.0,
                                    "transfer_timeout": 20.0} | op_settings
        d.operations[OP] = Operation(OP, DOMAIN, **settings)
        for ext in PHONES:
            d.agents[(OP, ext)] = Agent(OP, ext, f"Agent {ext}", queues=("sales",))
        d.queues[(OP, "sales")] = Queue(OP, "sales", max_wait_seconds=60.0)
        d.trunks[OP] = [Trunk(OP, "carrier", GATEWAY[0], GATEWAY[1], inbound_networks=(f"{GATEWAY[0]}/32",),
                              dial_plan=DialPlan(allowed_patterns=(r"[0-9]{7,10}",), min_length=7, max_length=10))]
        d.dids[(OP, "5550100")] = Did(OP, "5550100", "sales", "carrier")
        self.records = Records()
        endpoint = Endpoint(SWITCH[0], SWITCH[1], self.timers, random.Random(7), user="callbridge",
                            user_agent="callbridge", auto_ack=False)
        self.switch = Switch(endpoint, d, defence=Defence(DefenceConfig()),
                             challengers=ChallengerPool(b"k" * 32), dialogs=self.records,
                             registrations=self.records, wall_clock=self.loop.time,
                             loop=self.loop)  # type: ignore[arg-type]
        self.events = EventLog()
        self.service = CallControlService(directory=d, states=InMemoryStates(), records=InMemoryRecords(),
                                          recalls=InMemoryRecalls(), signalling=SipSignalling(self.switch),
                                          events=self.events, clock=self.loop, scheduler=self.loop,
                                          ids=counter_ids())
        self.switch.attach(self.service, _Waker())
        self.peers: dict[Addr, Endpoint] = {}
        self.inbox: dict[Addr, list[Event]] = {}
        self.notifies: dict[Addr, list[Request]] = {}  # NOTIFYs a peer received (and answered 200)
        self.log: list[Sent] = []
        self.gateway = self.peer(GATEWAY)

    # --- building ---------------------------------------------------------------------------------------------
    def peer(self, addr: Addr) -> Endpoint:
        endpoint = Endpoint(addr[0], addr[1], self.timers, random.Random(len(self.peers) + 11), user="peer")
        self.peers[addr] = endpoint
        self.inbox[addr] = []
        self.notifies[addr] = []
        return endpoint

    def phone(self, ext: str, addr: Addr | None = None) -> Endpoint:
        """A phone registered for `ext` (its binding restored, as after a restart) at `addr`."""
        addr = addr or PHONES[ext]
        phone = self.peers.get(addr) or self.peer(addr)
        self.switch.restore_registrations([RegistrationRecord(
            OP, ext, f"sip:{ext}@{addr[0]}:{addr[1]}", addr[0], addr[1], "udp", self.loop.t + 3600,
            f"reg-{ext}-{addr[0]}", 1, self.loop.t)])
        self.flush()
        return phone

    def ready(self, *extensions: str) -> None:
        for ext in extensions:
            self.service.change_status(OP, ext, "ready")
            self.loop.t += 1.0  # distinct idle times, in the order given
        self.flush()

    # --- moving bytes -----------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Deliver everything, hand over every event, run what is ready, until nothing moves."""
        sw = self.switch
        moved = True
        while moved:
            moved = False
            now = self.loop.t
            for data, dst, transport in sw.datagrams_to_send():
                moved = True
                self.log.append(Sent(now, SWITCH, dst, parse(data)))
                peer = self.peers.get(dst)
                if peer is not None:
                    peer.receive_datagram(data, SWITCH, now, transport)
            for src, peer in list(self.peers.items()):
                for data, dst, transport in peer.datagrams_to_send():
                    moved = True
                    self.log.append(Sent(now, src, dst, parse(data)))
                    if dst == SWITCH:
                        sw.receive_datagram(data, src, now, transport)
                    elif dst in self.peers:
                        self.peers[dst].receive_datagram(data, src, now, transport)
            while (event := sw.next_event()) is not None:
                moved = True
                sw.on_event(event)
            for addr, peer in self.peers.items():
                while (event := peer.next_event()) is not None:
                    if isinstance(event, RequestReceived) and event.request.method == "NOTIFY":
                        peer.respond(event.transaction, 200, now)  # as a phone does (RFC 6665 §4.1.3)
                        self.notifies[addr].append(event.request)
                        moved = True
                    else:
                        self.inbox[addr].append(event)
            moved = self.loop.run_ready() or moved

    def advance(self, seconds: float) -> None:
        until = self.loop.t + seconds
        self.flush()
        while True:
            deadlines = [d for d in (self.switch.get_timer(), self.loop.next_deadline(),
                                     *(p.get_timer() for p in self.peers.values())) if d is not None]
            if not deadlines or min(deadlines) > until:
                break
            self.loop.t = max(self.loop.t, min(deadlines))
            self.switch.handle_timer(self.loop.t)
            for peer in self.peers.values():
                peer.handle_timer(self.loop.t)
            self.loop.fire_due()
            self.flush()
        self.loop.t = until

    # --- reading ----------------------------------------------------------------------------------------------
    def mark(self) -> int:
        return len(self.log)

    def sipfrags(self, addr: Addr) -> list[tuple[str, str]]:
        """Take the NOTIFYs `addr`'s peer received: (the sipfrag's status line, Subscription-State)."""
        taken, self.notifies[addr] = self.notifies[addr], []
        return [(n.body.decode().split("\r\n", 1)[0], n.headers.get("Subscription-State") or "") for n in taken]

    def sent(self, since: int = 0, *, src: Addr | None = None, dst: Addr | None = None) -> list[Sent]:
        return [s for s in self.log[since:] if (src is None or s.src == src) and (dst is None or s.dst == dst)]

    def lines(self, since: int = 0, *, src: Addr | None = None, dst: Addr | None = None) -> list[str]:
        return [s.line for s in self.sent(since, src=src, dst=dst)]

    def requests(self, addr: Addr, method: str | None = None) -> list[RequestReceived]:
        """Take the requests `addr`'s peer received (of `method` when given)."""
        box = self.inbox[addr]
        taken = [e for e in box if isinstance(e, RequestReceived) and (method is None or e.request.method == method)]
        self.inbox[addr] = [e for e in box if e not in taken]
        return taken

    def events_of(self, addr: Addr, kind: type[Event]) -> list[Any]:
        return [e for e in self.inbox[addr] if isinstance(e, kind)]

    # --- driving the peers ------------------------------------------------------------------------------------
    def call_in(self, did: str = "5550100", caller: str = "3001234567", offer: bytes = OFFER) -> Any:
        """The gateway's INVITE to `did` (the customer's call); its client transaction."""
        tx = self.gateway.invite(f"sip:{did}@{SWITCH[0]}:{SWITCH[1]}", self.loop.t,
                                 from_uri=f"sip:{caller}@{GATEWAY[0]}", body=offer,
                                 content_type="application/sdp", dest=SWITCH)
        self.flush()
        return tx

    def answer(self, addr: Addr, event: RequestReceived, status: int, body: bytes = b"") -> None:
        self.peers[addr].respond(event.transaction, status, self.loop.t, body=body,
                                 content_type="application/sdp" if body else None)
        self.flush()

    def dialog(self, addr: Addr) -> Any:
        """The last dialog `addr`'s peer established."""
        from callbridge.sip.events import DialogEstablished

        return self.events_of(addr, DialogEstablished)[-1].dialog

    def answer_reinvites(self, addr: Addr) -> list[Request]:
        """Answer every re-INVITE `addr`'s peer received with 200 and the mirror of the offer's direction (RFC 3264
        §6.1: sendonly → recvonly, recvonly → sendonly); the offers answered."""
        mirror = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive", "sendrecv": "sendrecv"}
        offers = []
        for event in self.requests(addr, "INVITE"):
            if event.dialog is None:
                self.inbox[addr].append(event)  # an initial INVITE: not ours to answer here
                continue
            offers.append(event.request)
            direction = next((d for d in mirror if f"a={d}".encode() in event.request.body), "sendrecv")
            host, port = addr
            self.peers[addr].respond(event.transaction, 200, self.loop.t,
                                     body=sdp(f"p{port}", host, 41000, mirror[direction], version=2),
                                     content_type="application/sdp")
        self.flush()
        return offers

    def connected(self, ext: str = "1001") -> tuple[Any, Any]:
        """A customer from the gateway talking with `ext`: (the gateway's dialog, the phone's dialog)."""
        self.call_in()
        phone = PHONES[ext]
        (invite,) = self.requests(phone, "INVITE")
        self.answer(phone, invite, 200, sdp(f"phone{ext}", phone[0], 42000))
        return self.dialog(GATEWAY), self.dialog(phone)


def direction(message: Request | Response) -> str | None:
    """The a= direction attribute of a message's SDP (None without one)."""
    for d in ("sendrecv", "sendonly", "recvonly", "inactive"):
        if f"a={d}".encode() in message.body:
            return d
    return None
