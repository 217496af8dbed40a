"""SIP transactions: the four state machines of RFC 3261 §17, with the Accepted state of RFC 6026.

Rules
- Each machine is one table ``(state, input) -> (actions, next state)``. An input that the table does not list
  for the current state is a programming error and raises `TransactionStateError`: the endpoint only feeds inputs
  that can happen, and inputs the RFC says to absorb (a 1xx retransmission in Completed, an INVITE retransmission
  in Accepted, ...) are listed with no action.
- Inputs are named after the RFC: ``SEND_REQUEST``, ``RECV_1XX``, ``RECV_2XX``, ``RECV_300_699``, ``TIMER_A`` ...
  ``TIMER_M``, ``TU_1XX``, ``TU_2XX``, ``TU_300_699``, ``RECV_REQUEST`` (a retransmission of the request that
  created a server transaction), ``RECV_ACK``, ``TRANSPORT_ERROR``.
- Every duration comes from one `TimerConfig`. The retransmission timers (A, E, G) are armed over unreliable
  transports only; the absorb timers (D, I, J, K) are zero over reliable ones, and a zero timer fires within the
  same step (the transaction ends at once instead of lingering in a table).
- Timer C (§16.6) also runs in the INVITE client transaction, restarted by each provisional response: a peer that
  rang and vanished times the transaction out (the endpoint then sends CANCEL).
- Timers survive a change of state unless an action stops them (``STOP_TIMERS``); entering Terminated stops all.
- Entering a state where the transaction only waits out one timer (`ABSORBING`: D, I, J, K, L), that timer is
  armed through ``tx_absorbing`` instead of ``tx_arm``, after the state changed: the endpoint then keeps a compact
  record in place of the transaction (`callbridge.sip.absorbing`).
- No I/O and no clock: a transaction is driven with ``now`` and reports through its `TransactionUser` (the
  endpoint): bytes to send, deadlines to arm, responses/requests for the TU, time-outs, termination.

Theory of operation
- Client (§17.1): the endpoint builds the request (top Via with a ``z9hG4bK`` branch), creates the transaction
  and feeds ``SEND_REQUEST``. Responses are matched by branch + CSeq method (`client_key`, §17.1.3) and fed as
  ``RECV_*``. The INVITE client transaction builds and sends the ACK for a non-2xx final response itself
  (§17.1.1.3): same branch, To from the response (with its tag), Route from the original request. A 2xx moves it
  to Accepted (RFC 6026 §8.4) where retransmitted 2xx go to the TU, whose core re-sends its ACK (§13.2.2.4).
- Server (§17.2): the endpoint matches a request with `server_key` (branch + sent-by + method, ACK matching the
  INVITE, §17.2.3; the RFC 2543 fallback without the magic cookie uses Request-URI, From tag, Call-ID, CSeq
  number and top Via). No match: a new transaction, created in Proceeding (INVITE) or Trying (non-INVITE), and the
  endpoint hands the request to the TU. A match: ``RECV_REQUEST`` or ``RECV_ACK``. The TU's responses are fed as
  ``TU_*``. An INVITE answered with 2xx goes to Accepted (RFC 6026 §8.7), where the TU core retransmits the 2xx
  through the transaction until the ACK arrives (§13.3.1.4); the ACK for a 2xx is a transaction of its own and is
  routed by the endpoint to the dialog.
- CANCEL (§9) is an ordinary non-INVITE transaction; the endpoint pairs it with the INVITE it cancels through
  `server_key` (same branch, method INVITE).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

from callbridge.sip.headers import Headers
from callbridge.sip.message import Request, Response
from callbridge.sip.timers import TimerConfig

if TYPE_CHECKING:
    from callbridge.sip.dialog import Dialog

__all__ = [
    "ABSORBING",
    "Act",
    "ClientTransaction",
    "ServerTransaction",
    "TransactionStateError",
    "TransactionUser",
    "TxInput",
    "TxKind",
    "TxState",
    "build_non_2xx_ack",
    "client_key",
    "response_input",
    "server_key",
]

Addr = tuple[str, int]
MAGIC_COOKIE = "z9hG4bK"
# Timer C (§16.6 step 11, "greater than 3 minutes"): RFC 3261 gives it to proxies; here it bounds an INVITE
# client transaction left in Proceeding by a peer that rang and vanished, so that no transaction lives forever.
TIMER_C = 181.0


class TransactionStateError(Exception):
    """An input the transaction's table does not list for its current state."""


class TxInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: hashed by identity, in C (Enum hashes its name in Python)
    SEND_REQUEST = "SEND_REQUEST"
    RECV_1XX = "RECV_1XX"
    RECV_2XX = "RECV_2XX"
    RECV_300_699 = "RECV_300_699"
    RECV_REQUEST = "RECV_REQUEST"
    RECV_ACK = "RECV_ACK"
    TU_1XX = "TU_1XX"
    TU_2XX = "TU_2XX"
    TU_300_699 = "TU_300_699"
    TRANSPORT_ERROR = "TRANSPORT_ERROR"
    TIMER_A = "TIMER_A"
    TIMER_B = "TIMER_B"
    TIMER_C = "TIMER_C"
    TIMER_D = "TIMER_D"
    TIMER_E = "TIMER_E"
    TIMER_F = "TIMER_F"
    TIMER_G = "TIMER_G"
    TIMER_H = "TIMER_H"
    TIMER_I = "TIMER_I"
    TIMER_J = "TIMER_J"
    TIMER_K = "TIMER_K"
    TIMER_L = "TIMER_L"
    TIMER_M = "TIMER_M"


class TxState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: hashed by identity, in C (Enum hashes its name in Python)
    INIT = "Init"  # client transactions before SEND_REQUEST
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class TxKind(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: hashed by identity, in C (Enum hashes its name in Python)
    INVITE_CLIENT = "ict"
    NON_INVITE_CLIENT = "nict"
    INVITE_SERVER = "ist"
    NON_INVITE_SERVER = "nist"


class Act(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: hashed by identity, in C (Enum hashes its name in Python)
    SEND_REQUEST = enum.auto()  # (re)transmit the request
    SEND_ACK = enum.auto()  # ACK for a non-2xx final response, built once (§17.1.1.3)
    SEND_RESPONSE = enum.auto()  # transmit the TU's response and keep it for retransmission
    RESEND_RESPONSE = enum.auto()  # retransmit the last response
    TO_TU = enum.auto()  # hand the response (client) or the ACK (server) to the TU
    TIMEOUT = enum.auto()  # tell the TU the transaction timed out (B, F, H)
    TRANSPORT_FAILED = enum.auto()  # tell the TU of a transport error
    STOP_TIMERS = enum.auto()
    START_A = enum.auto()
    BACKOFF_A = enum.auto()  # A doubles without bound
    START_B = enum.auto()
    START_C = enum.auto()  # (re)start Timer C on a provisional response
    START_D = enum.auto()
    START_E = enum.auto()
    BACKOFF_E = enum.auto()  # E doubles up to T2
    RESET_E_T2 = enum.auto()  # E in Proceeding: T2 (§17.1.2.2)
    START_F = enum.auto()
    START_G = enum.auto()
    BACKOFF_G = enum.auto()  # G doubles up to T2
    START_H = enum.auto()
    START_I = enum.auto()
    START_J = enum.auto()
    START_K = enum.auto()
    START_L = enum.auto()
    START_M = enum.auto()


In, S, A = TxInput, TxState, Act
Table = dict[tuple[TxState, TxInput], tuple[tuple[Act, ...], TxState]]

# §17.1.1.2, Figure 5; RFC 6026 §7.2 (Accepted).
INVITE_CLIENT_TABLE: Table = {
    (S.INIT, In.SEND_REQUEST): ((A.SEND_REQUEST, A.START_A, A.START_B), S.CALLING),
    (S.INIT, In.TRANSPORT_ERROR): ((A.TRANSPORT_FAILED,), S.TERMINATED),  # no usable destination
    (S.CALLING, In.TIMER_A): ((A.SEND_REQUEST, A.BACKOFF_A), S.CALLING),
    (S.CALLING, In.TIMER_B): ((A.TIMEOUT,), S.TERMINATED),
    (S.CALLING, In.RECV_1XX): ((A.STOP_TIMERS, A.TO_TU, A.START_C), S.PROCEEDING),
    (S.CALLING, In.RECV_2XX): ((A.STOP_TIMERS, A.TO_TU, A.START_M), S.ACCEPTED),
    (S.CALLING, In.RECV_300_699): ((A.STOP_TIMERS, A.TO_TU, A.SEND_ACK, A.START_D), S.COMPLETED),
    (S.CALLING, In.TRANSPORT_ERROR): ((A.TRANSPORT_FAILED,), S.TERMINATED),
    (S.PROCEEDING, In.RECV_1XX): ((A.TO_TU, A.START_C), S.PROCEEDING),
    (S.PROCEEDING, In.RECV_2XX): ((A.STOP_TIMERS, A.TO_TU, A.START_M), S.ACCEPTED),
    (S.PROCEEDING, In.RECV_300_699): ((A.STOP_TIMERS, A.TO_TU, A.SEND_ACK, A.START_D), S.COMPLETED),
    (S.PROCEEDING, In.TRANSPORT_ERROR): ((A.TRANSPORT_FAILED,), S.TERMINATED),
    (S.PROCEEDING, In.TIMER_C): ((A.TIMEOUT,), S.TERMINATED),  # rang too long: the endpoint CANCELs
    # RFC 6026: every 2xx (other forks, retransmissions) goes to the TU, which (re-)sends its ACK.
    (S.ACCEPTED, In.RECV_2XX): ((A.TO_TU,), S.ACCEPTED),
    (S.ACCEPTED, In.RECV_1XX): ((), S.ACCEPTED),  # late, reordered provisional
    (S.ACCEPTED, In.RECV_300_699): ((), S.ACCEPTED),  # another fork failing after one answered
    (S.ACCEPTED, In.TIMER_M): ((), S.TERMINATED),
    (S.COMPLETED, In.RECV_300_699): ((A.SEND_ACK,), S.COMPLETED),
    (S.COMPLETED, In.RECV_1XX): ((), S.COMPLETED),
    (S.COMPLETED, In.RECV_2XX): ((), S.COMPLETED),
    (S.COMPLETED, In.TRANSPORT_ERROR): ((A.TRANSPORT_FAILED,), S.TERMINATED),
    (S.COMPLETED, In.TIMER_D): ((), S.TERMINATED),
}

# §17.1.2.2, Figure 6.
NON_INVITE_CLIENT_TABLE: Table = {
    (S.INIT, In.SEND_REQUEST): ((A.SEND_REQUEST, A.START_E, A.START_F), S.TRYING),
    (S.INIT, In.TRANSPORT_ERROR): ((A.TRANSPORT_FAILED,), S.TERMINATED),  # no usable destination
    (S.TRYING, In.TIMER_E): ((A.SEND_REQUEST, A.BACKOFF_E), S.TRYING),
    (S.TRYING, In.TIMER_F): ((A.TIMEOUT,), S.TERMINATED),
    (S.TRYING, In.TRANSPORT_ERROR): ((A.TRANSPORT_FAILED,), S.TERMINATED),
    (S.TRYING, In.RECV_1XX): ((A.TO_TU,), S.PROCEEDING),
    (S.TRYING, In.RECV_2XX): ((A.STOP_TIMERS, A.TO_TU, A.START_K), S.COMPLETED),
    (S.TRYING, In.RECV_300_699): ((A.STOP_TIMERS, A.TO_TU, A.START_K), S.COMPLETED),
    (S.PROCEEDING, In.TIMER_E): ((A.SEND_REQUEST, A.RESET_E_T2), S.PROCEEDING),
    (S.PROCEEDING, In.TIMER_F): ((A.TIMEOUT,), S.TERMINATED),
    (S.PROCEEDING, In.TRANSPORT_ERROR): ((A.TRANSPORT_FAILED,), S.TERMINATED),
    (S.PROCEEDING, In.RECV_1XX): ((A.TO_TU,), S.PROCEEDING),
    (S.PROCEEDING, In.RECV_2XX): ((A.STOP_TIMERS, A.TO_TU, A.START_K), S.COMPLETED),
    (S.PROCEEDING, In.RECV_300_699): ((A.STOP_TIMERS, A.TO_TU, A.START_K), S.COMPLETED),
    (S.COMPLETED, In.RECV_1XX): ((), S.COMPLETED),
    (S.COMPLETED, In.RECV_2XX): ((), S.COMPLETED),
    (S.COMPLETED, In.RECV_300_699): ((), S.COMPLETED),
    (S.COMPLETED, In.TIMER_K): ((), S.TERMINATED),
}

# §17.2.1, Figure 7; RFC 6026 §7.1 (Accepted). Created in Proceeding with the INVITE handed to the TU.
INVITE_SERVER_TABLE: Table = {
    (S.PROCEEDING, In.RECV_REQUEST): ((A.RESEND_RESPONSE,), S.PROCEEDING),
    (S.PROCEEDING, In.TU_1XX): ((A.SEND_RESPONSE,), S.PROCEEDING),
    (S.PROCEEDING, In.TU_2XX): ((A.SEND_RESPONSE, A.START_L), S.ACCEPTED),
    (S.PROCEEDING, In.TU_300_699): ((A.SEND_RESPONSE, A.START_G, A.START_H), S.COMPLETED),
    (S.PROCEEDING, In.TRANSPORT_ERROR): ((A.TRANSPORT_FAILED,), S.TERMINATED),
    (S.ACCEPTED, In.RECV_REQUEST): ((), S.ACCEPTED),  # the TU core retransmits the 2xx itself
    (S.ACCEPTED, In.RECV_ACK): ((A.TO_TU,), S.ACCEPTED),
    (S.ACCEPTED, In.TU_2XX): ((A.SEND_RESPONSE,), S.ACCEPTED),
    (S.ACCEPTED, In.TRANSPORT_ERROR): ((A.TRANSPORT_FAILED,), S.ACCEPTED),
    (S.ACCEPTED, In.TIMER_L): ((), S.TERMINATED),
    (S.COMPLETED, In.RECV_REQUEST): ((A.RESEND_RESPONSE,), S.COMPLETED),
    (S.COMPLETED, In.TIMER_G): ((A.RESEND_RESPONSE, A.BACKOFF_G), S.COMPLETED),
    (S.COMPLETED, In.TIMER_H): ((A.TIMEOUT,), S.TERMINATED),
    (S.COMPLETED, In.RECV_ACK): ((A.STOP_TIMERS, A.START_I), S.CONFIRMED),
    (S.COMPLETED, In.TRANSPORT_ERROR): ((A.TRANSPORT_FAILED,), S.TERMINATED),
    (S.CONFIRMED, In.RECV_ACK): ((), S.CONFIRMED),
    (S.CONFIRMED, In.RECV_REQUEST): ((), S.CONFIRMED),
    (S.CONFIRMED, In.TIMER_I): ((), S.TERMINATED),
}

# §17.2.2, Figure 8. Created in Trying with the request handed to the TU.
NON_INVITE_SERVER_TABLE: Table = {
    (S.TRYING, In.RECV_REQUEST): ((), S.TRYING),
    (S.TRYING, In.TU_1XX): ((A.SEND_RESPONSE,), S.PROCEEDING),
    (S.TRYING, In.TU_2XX): ((A.SEND_RESPONSE, A.START_J), S.COMPLETED),
    (S.TRYING, In.TU_300_699): ((A.SEND_RESPONSE, A.START_J), S.COMPLETED),
    (S.PROCEEDING, In.RECV_REQUEST): ((A.RESEND_RESPONSE,), S.PROCEEDING),
    (S.PROCEEDING, In.TU_1XX): ((A.SEND_RESPONSE,), S.PROCEEDING),
    (S.PROCEEDING, In.TU_2XX): ((A.SEND_RESPONSE, A.START_J), S.COMPLETED),
    (S.PROCEEDING, In.TU_300_699): ((A.SEND_RESPONSE, A.START_J), S.COMPLETED),
    (S.PROCEEDING, In.TRANSPORT_ERROR): ((A.TRANSPORT_FAILED,), S.TERMINATED),
    (S.COMPLETED, In.RECV_REQUEST): ((A.RESEND_RESPONSE,), S.COMPLETED),
    (S.COMPLETED, In.TRANSPORT_ERROR): ((A.TRANSPORT_FAILED,), S.TERMINATED),
    (S.COMPLETED, In.TIMER_J): ((), S.TERMINATED),
}

# The states in which a transaction only waits out one timer (§17.1.1.2 Timer D, §17.1.2.2 Timer K, §17.2.1
# Timer I, §17.2.2 Timer J, RFC 6026 §8.7 Timer L): what it still does there needs only its key and the bytes it
# last sent (absorb a retransmission, re-send a response or an ACK, pass an ACK for a 2xx to the dialog). The owner
# is told (`tx_absorbing`) so that it can keep a compact record instead of the transaction and its messages.
ABSORBING: dict[tuple[TxKind, TxState], TxInput] = {
    (TxKind.INVITE_SERVER, S.ACCEPTED): In.TIMER_L,
    (TxKind.INVITE_SERVER, S.CONFIRMED): In.TIMER_I,
    (TxKind.NON_INVITE_SERVER, S.COMPLETED): In.TIMER_J,
    (TxKind.NON_INVITE_CLIENT, S.COMPLETED): In.TIMER_K,
    (TxKind.INVITE_CLIENT, S.COMPLETED): In.TIMER_D,
}

# The first final response ends a transaction's open states (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2): what
# `tx_completed` measures. Later finals (retransmissions, other forks' 2xx) find the transaction past them.
_FINAL_INPUTS = frozenset({In.RECV_2XX, In.RECV_300_699, In.TU_2XX, In.TU_300_699})
_OPEN_STATES = frozenset({S.CALLING, S.TRYING, S.PROCEEDING})

TABLES: dict[TxKind, Table] = {
    TxKind.INVITE_CLIENT: INVITE_CLIENT_TABLE,
    TxKind.NON_INVITE_CLIENT: NON_INVITE_CLIENT_TABLE,
    TxKind.INVITE_SERVER: INVITE_SERVER_TABLE,
    TxKind.NON_INVITE_SERVER: NON_INVITE_SERVER_TABLE,
}


class TransactionUser(Protocol):
    """What a transaction needs from its owner (the endpoint)."""

    def tx_send(self, tx: Transaction, data: bytes, dest: Addr, transport: str) -> None: ...

    def tx_arm(self, tx: Transaction, timer: TxInput, deadline: float) -> None: ...

    def tx_to_tu(self, tx: Transaction, message: Request | Response, now: float) -> None: ...

    def tx_timeout(self, tx: Transaction, now: float) -> None: ...

    def tx_transport_error(self, tx: Transaction, now: float) -> None: ...

    def tx_terminated(self, tx: Transaction) -> None: ...

    def tx_completed(self, tx: Transaction, seconds: float) -> None:
        """`tx` got (client) or sent (server) its first final response, `seconds` after it started (its first
        `now`): the transaction layer's latency, for metrics."""

    def tx_absorbing(self, tx: Transaction, timer: TxInput, deadline: float) -> None:
        """`tx` entered a state of `ABSORBING`: arm its one `timer` for `deadline` (as `tx_arm` would), or keep a
        compact record of it instead (`callbridge.sip.absorbing`)."""


def response_input(status: int) -> TxInput:
    if status < 200:
        return TxInput.RECV_1XX
    if status < 300:
        return TxInput.RECV_2XX
    return TxInput.RECV_300_699


def tu_input(status: int) -> TxInput:
    if status < 200:
        return TxInput.TU_1XX
    if status < 300:
        return TxInput.TU_2XX
    return TxInput.TU_300_699


ClientKey = tuple[str, str]
ServerKey = tuple[str, ...]


def client_key(message: Request | Response) -> ClientKey:
    """§17.1.3: the top Via branch and the CSeq method."""
    return (message.via.branch or "", message.cseq.method)


def server_key(request: Request, method: str | None = None) -> ServerKey:
    """§17.2.3 key of the server transaction `request` belongs to; ACK maps to its INVITE.

    `method` overrides the request's own method (a CANCEL looks up the INVITE it cancels with "INVITE").
    """
    via = request.via
    if method is None:
        method = request.method
        if method == "ACK":
            method = "INVITE"
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        host, port = via.sent_by
        return (branch, host.lower(), str(port or ""), method)
    # RFC 2543 fallback (§17.2.3): Request-URI, From tag, Call-ID, CSeq number, top Via. The To tag is left out
    # so that the ACK (which carries the tag of our response) finds the INVITE.
    host, port = via.sent_by
    return (
        "2543",
        str(request.uri),
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.number),
        f"{via.transport} {host.lower()}:{port or ''};{branch or ''}",
        method,
    )


def build_non_2xx_ack(request: Request, response: Response) -> Request:
    """§17.1.1.3: the ACK for a non-2xx final response to `request` (same branch, To from the response)."""
    headers = [
        ("Via", request.headers.get_all("Via")[0]),
        ("Max-Forwards", "70"),
        ("From", request.headers.get("From") or ""),
        ("To", response.headers.get("To") or ""),
        ("Call-ID", request.call_id),
        ("CSeq", f"{request.cseq.number} ACK"),
    ]
    headers.extend(("Route", route) for route in request.headers.get_all("Route"))
    return Request("ACK", request.uri, headers=Headers(headers))


class Transaction:
    """One transaction of any of the four kinds; its behaviour is its table."""

    __slots__ = (
        "__weakref__",  # the owner's compact record of an absorbing transaction refers to it weakly
        "_absorbing",
        "_ack_bytes",
        "_intervals",
        "_request_bytes",
        "_response_bytes",
        "_table",
        "config",
        "dest",
        "dialog",
        "key",
        "kind",
        "last_response",
        "owner",
        "reliable",
        "request",
        "started",
        "state",
        "timers",
        "transport",
        "user_data",
    )

    def __init__(
        self,
        kind: TxKind,
        request: Request,
        key: tuple[str, ...],
        owner: TransactionUser,
        config: TimerConfig,
        dest: Addr,
        transport: str,
    ) -> None:
        self.kind = kind
        self.request = request
        self.key = key
        self.owner = owner
        self.config = config
        self.dest = dest  # where requests go (client) or responses go (server)
        self.transport = transport
        self.reliable = transport != "udp"
        self.state = TxState.INIT if kind in (TxKind.INVITE_CLIENT, TxKind.NON_INVITE_CLIENT) else (
            TxState.PROCEEDING if kind is TxKind.INVITE_SERVER else TxState.TRYING
        )
        self.timers: dict[TxInput, float] = {}
        self._intervals: dict[TxInput, float] = {}
        self._table = TABLES[kind]
        self._request_bytes: bytes | None = None
        self._response_bytes: bytes | None = None
        self._ack_bytes: bytes | None = None
        self._absorbing: TxInput | None = None  # the absorbing timer whose arming waits for the new state
        self.last_response: Response | None = None
        self.dialog: Dialog | None = None  # the dialog this transaction belongs to, set by the endpoint
        self.user_data: object | None = None
        # The `now` of its first input (a server transaction's owner sets it when the request arrives): what a
        # final response is measured from (`TransactionUser.tx_completed`). No clock is read here.
        self.started: float | None = None

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def last_sent(self) -> bytes | None:
        """What an absorbing state re-sends: the ACK of a non-2xx (INVITE client), else the last response."""
        return self._ack_bytes if self.kind is TxKind.INVITE_CLIENT else self._response_bytes

    @property
    def terminated(self) -> bool:
        return self.state is TxState.TERMINATED

    def __repr__(self) -> str:
        return f"<{self.kind.value} {self.request.method} {self.state.value} {self.key[0]}>"

    # --- driving -------------------------------------------------------------------------------------------
    def handle(self, event: TxInput, now: float, message: Request | Response | None = None) -> None:
        """Feed one input; run the table's actions; move to the next state."""
        try:
            actions, next_state = self._table[(self.state, event)]
        except KeyError:
            raise TransactionStateError(
                f"{self.kind.value}: input {event.value} not allowed in state {self.state.value}"
            ) from None
        if self.started is None:
            self.started = now
        elif event in _FINAL_INPUTS and self.state in _OPEN_STATES:
            self.owner.tx_completed(self, now - self.started)
        immediate: list[TxInput] = []
        absorbing = self._absorbing = ABSORBING.get((self.kind, next_state))
        for action in actions:
            self._run(action, now, message, immediate)
        deferred = absorbing is not None and self._absorbing is None  # its timer was started: owner arms it
        self._absorbing = None
        self.state = next_state
        if next_state is TxState.TERMINATED:
            self.timers.clear()
            self.owner.tx_terminated(self)
            return
        for timer in immediate:
            if self.timers.get(timer) == now:
                del self.timers[timer]
                self.handle(timer, now)
                if self.state is TxState.TERMINATED:
                    return
        if deferred:
            assert absorbing is not None
            deadline = self.timers.get(absorbing)
            if deadline is not None:
                self.owner.tx_absorbing(self, absorbing, deadline)

    def fire(self, timer: TxInput, deadline: float, now: float) -> None:
        """A timer entry came due; ignore it unless it is still the armed one (lazy deletion)."""
        if self.timers.get(timer) != deadline:
            return
        del self.timers[timer]
        self.handle(timer, now)

    def start(self, now: float) -> None:
        self.handle(TxInput.SEND_REQUEST, now)

    def receive_response(self, response: Response, now: float) -> None:
        self.handle(response_input(response.status), now, response)

    def send_response(self, response: Response, now: float) -> None:
        self.handle(tu_input(response.status), now, response)

    def transport_error(self, now: float) -> None:
        self.handle(TxInput.TRANSPORT_ERROR, now)

    # --- actions -------------------------------------------------------------------------------------------
    def _arm(self, timer: TxInput, duration: float, now: float, immediate: list[TxInput]) -> None:
        deadline = now + duration
        self.timers[timer] = deadline
        if duration <= 0:
            immediate.append(timer)
        elif timer is self._absorbing:
            self._absorbing = None  # armed through `tx_absorbing` once the transaction is in its new state
        else:
            self.owner.tx_arm(self, timer, deadline)

    def _retransmit_timer(self, timer: TxInput, interval: float, now: float, immediate: list[TxInput]) -> None:
        if self.reliable:
            return
        self._intervals[timer] = interval
        self._arm(timer, interval, now, immediate)

    def _run(self, action: Act, now: float, message: Request | Response | None, immediate: list[TxInput]) -> None:
        cfg = self.config
        if action is Act.SEND_REQUEST:
            if self._request_bytes is None:
                self._request_bytes = bytes(self.request)
            self.owner.tx_send(self, self._request_bytes, self.dest, self.transport)
        elif action is Act.SEND_RESPONSE:
            assert isinstance(message, Response)
            self.last_response = message
            self._response_bytes = bytes(message)
            self.owner.tx_send(self, self._response_bytes, self.dest, self.transport)
        elif action is Act.RESEND_RESPONSE:
            if self._response_bytes is not None:
                self.owner.tx_send(self, self._response_bytes, self.dest, self.transport)
        elif action is Act.SEND_ACK:
            if self._ack_bytes is None:
                assert isinstance(message, Response)
                self._ack_bytes = bytes(build_non_2xx_ack(self.request, message))
            self.owner.tx_send(self, self._ack_bytes, self.dest, self.transport)
        elif action is Act.TO_TU:
            assert message is not None
            if isinstance(message, Response):
                self.last_response = message
            self.owner.tx_to_tu(self, message, now)
        elif action is Act.TIMEOUT:
            self.owner.tx_timeout(self, now)
        elif action is Act.TRANSPORT_FAILED:
            self.owner.tx_transport_error(self, now)
        elif action is Act.STOP_TIMERS:
            self.timers.clear()
        else:
            self._timer_action(action, cfg, now, immediate)

    def _timer_action(self, action: Act, cfg: TimerConfig, now: float, immediate: list[TxInput]) -> None:
        arm = self._arm
        reliable = self.reliable
        if action is Act.START_A:
            self._retransmit_timer(TxInput.TIMER_A, cfg.a, now, immediate)
        elif action is Act.BACKOFF_A:
            self._retransmit_timer(TxInput.TIMER_A, cfg.next_a(self._intervals[TxInput.TIMER_A]), now, immediate)
        elif action is Act.START_B:
            arm(TxInput.TIMER_B, cfg.b, now, immediate)
        elif action is Act.START_C:
            arm(TxInput.TIMER_C, TIMER_C, now, immediate)
        elif action is Act.START_D:
            arm(TxInput.TIMER_D, cfg.timer_d(reliable), now, immediate)
        elif action is Act.START_E:
            self._retransmit_timer(TxInput.TIMER_E, cfg.e, now, immediate)
        elif action is Act.BACKOFF_E:
            self._retransmit_timer(TxInput.TIMER_E, cfg.next_e(self._intervals[TxInput.TIMER_E]), now, immediate)
        elif action is Act.RESET_E_T2:
            self._retransmit_timer(TxInput.TIMER_E, cfg.t2, now, immediate)
        elif action is Act.START_F:
            arm(TxInput.TIMER_F, cfg.f, now, immediate)
        elif action is Act.START_G:
            self._retransmit_timer(TxInput.TIMER_G, cfg.g, now, immediate)
        elif action is Act.BACKOFF_G:
            self._retransmit_timer(TxInput.TIMER_G, cfg.next_g(self._intervals[TxInput.TIMER_G]), now, immediate)
        elif action is Act.START_H:
            arm(TxInput.TIMER_H, cfg.h, now, immediate)
        elif action is Act.START_I:
            arm(TxInput.TIMER_I, cfg.timer_i(reliable), now, immediate)
        elif action is Act.START_J:
            arm(TxInput.TIMER_J, cfg.timer_j(reliable), now, immediate)
        elif action is Act.START_K:
            arm(TxInput.TIMER_K, cfg.timer_k(reliable), now, immediate)
        elif action is Act.START_L:
            arm(TxInput.TIMER_L, cfg.l, now, immediate)
        elif action is Act.START_M:
            arm(TxInput.TIMER_M, cfg.m, now, immediate)
        else:  # pragma: no cover - every Act is handled above
            raise TransactionStateError(f"unknown action {action}")


class ClientTransaction(Transaction):
    """A client transaction (§17.1). `cancel_pending`: send CANCEL once a provisional response arrives."""

    __slots__ = ("cancel_pending", "cancelled", "early_dialogs", "options")

    def __init__(
        self,
        request: Request,
        owner: TransactionUser,
        config: TimerConfig,
        dest: Addr,
        transport: str,
    ) -> None:
        kind = TxKind.INVITE_CLIENT if request.method == "INVITE" else TxKind.NON_INVITE_CLIENT
        super().__init__(kind, request, client_key(request), owner, config, dest, transport)
        self.cancel_pending = False
        self.cancelled = False
        self.early_dialogs: list[Dialog] = []  # dialogs created by this INVITE's responses (forks)
        self.options: dict[str, object] = {}


class ServerTransaction(Transaction):
    """A server transaction (§17.2); `source` is where the request came from, `dest` where responses go."""

    __slots__ = ("local_tag", "source")

    def __init__(
        self,
        request: Request,
        key: ServerKey,
        owner: TransactionUser,
        config: TimerConfig,
        dest: Addr,
        transport: str,
        source: Addr,
    ) -> None:
        kind = TxKind.INVITE_SERVER if request.method == "INVITE" else TxKind.NON_INVITE_SERVER
        super().__init__(kind, request, key, owner, config, dest, transport)
        self.source = source
        self.local_tag: str | None = None  # To tag of our responses to an out-of-dialog request
