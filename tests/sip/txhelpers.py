"""A recording TransactionUser and message builders for the transaction table tests."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from callbridge.sip.headers import Headers
from callbridge.sip.message import Request, Response, make_response
from callbridge.sip.parser import parse
from callbridge.sip.transaction import Transaction, TxInput

Addr = tuple[str, int]


@dataclass
class Recorder:
    """Implements TransactionUser: records sends (with the clock), hands, time-outs; keeps a timer heap."""

    now: float = 0.0
    sent: list[tuple[float, bytes]] = field(default_factory=list)
    to_tu: list[Request | Response] = field(default_factory=list)
    timeouts: list[Transaction] = field(default_factory=list)
    transport_errors: list[Transaction] = field(default_factory=list)
    terminated: list[Transaction] = field(default_factory=list)
    completed: list[tuple[Transaction, float]] = field(default_factory=list)
    heap: list[tuple[float, int, Transaction, TxInput]] = field(default_factory=list)
    seq: int = 0

    def tx_send(self, tx: Transaction, data: bytes, dest: Addr, transport: str) -> None:
        self.sent.append((self.now, data))

    def tx_arm(self, tx: Transaction, timer: TxInput, deadline: float) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (deadline, self.seq, tx, timer))

    def tx_absorbing(self, tx: Transaction, timer: TxInput, deadline: float) -> None:
        self.tx_arm(tx, timer, deadline)

    def tx_completed(self, tx: Transaction, seconds: float) -> None:
        self.completed.append((tx, seconds))

    def tx_to_tu(self, tx: Transaction, message: Request | Response, now: float) -> None:
        self.to_tu.append(message)

    def tx_timeout(self, tx: Transaction, now: float) -> None:
        self.timeouts.append(tx)

    def tx_transport_error(self, tx: Transaction, now: float) -> None:
        self.transport_errors.append(tx)

    def tx_terminated(self, tx: Transaction) -> None:
        self.terminated.append(tx)

    def run_until(self, until: float) -> None:
        while self.heap and self.heap[0][0] <= until:
            deadline, _, tx, timer = heapq.heappop(self.heap)
            self.now = deadline
            tx.fire(timer, deadline, deadline)
        self.now = until

    def send_times(self, start: bytes) -> list[float]:
        return [t for t, data in self.sent if data.startswith(start)]


def request(method: str = "INVITE", branch: str = "z9hG4bKabc", *, to_tag: str | None = None) -> Request:
    to = "<sip:bob@127.0.0.2>" + (f";tag={to_tag}" if to_tag else "")
    return Request(
        method,
        "sip:bob@127.0.0.2:5060",
        headers=Headers(
            [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport"),
                ("Max-Forwards", "70"),
                ("From", "<sip:alice@127.0.0.1>;tag=a1"),
                ("To", to),
                ("Call-ID", "call-1@127.0.0.1"),
                ("CSeq", f"1 {method}"),
                ("Route", "<sip:127.0.0.3;lr>"),
            ]
        ),
    )


def response(req: Request, status: int, to_tag: str | None = "b2") -> Response:
    return make_response(req, status, to_tag=to_tag if status > 100 else None)


def reparse(message: Request | Response) -> Request | Response:
    return parse(bytes(message))
