"""The shared state and helpers of the SIP endpoint: tables, timer heap, event queue, outgoing datagrams, dialog
life (ending, session timers, glare delays) and in-dialog requests. `uas.py` and `uac.py` add the two roles and
`endpoint.py` assembles them into the facade; the theory of operation is in `endpoint.py`.
"""

from __future__ import annotations

import heapq
import itertools
import random
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from callbridge.sip.absorbing import CLIENT_RECORD, SERVER_RECORD, Record, record_of
from callbridge.sip.dialog import Dialog, DialogError, DialogInput, DialogStatus
from callbridge.sip.events import (
    ConnectionClosed,
    DialogTerminated,
    Event,
    TransactionTimedOut,
    TransportError,
)
from callbridge.sip.headers import Headers
from callbridge.sip.message import Request, Response
from callbridge.sip.routing import Addr, request_destination
from callbridge.sip.session_timer import SessionTimer, expiry_delay, refresh_delay, timer_headers
from callbridge.sip.timers import TimerConfig
from callbridge.sip.transaction import (
    ABSORBING,
    ClientTransaction,
    ServerTransaction,
    Transaction,
    TxInput,
    TxState,
)

__all__ = ["EndpointCore"]

HeaderList = Sequence[tuple[str, str]]
# A heap entry's owner: a weak reference to a live transaction (name: its TxInput), or the key of a transaction's
# `Record` (name: SERVER_RECORD/CLIENT_RECORD), or a dialog's id (name: the dialog timer). None of them keeps a
# transaction or dialog alive after it ended: entries are deleted lazily, and one for Timer C (3 min) would
# otherwise hold an answered INVITE's transaction, its parsed request and responses, for minutes of the call.
TimerOwner = weakref.ReferenceType[Transaction] | tuple[str, ...]
# Requests that carry a Contact (dialog-creating or target-refreshing, §8.1.1.8, §12.2.1.1; REGISTER §10.2).
CONTACT_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER", "REGISTER"})
# Requests of a subscription usage (RFC 6665), which outlives the INVITE usage of its dialog (RFC 5057 §5.5).
USAGE_METHODS = frozenset({"NOTIFY", "SUBSCRIBE"})
REPLACED_ON_RETRY = frozenset({"via", "cseq", "authorization", "proxy-authorization"})


_AWAITING_FINAL = frozenset({TxState.INIT, TxState.CALLING, TxState.TRYING, TxState.PROCEEDING})

class EndpointCore:
    """Tables, timers, events and dialog life shared by the UAS and UAC halves."""

    def __init__(
        self,
        host: str,
        port: int,
        timers: TimerConfig,
        rng: random.Random,
        *,
        user: str = "callbridge",
        user_agent: str | None = None,
        send_trying: bool = True,
        session_expires: int | None = None,
        min_se: int = 90,
        auto_ack: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.timers = timers
        self.rng = rng
        self.user = user
        self.user_agent = user_agent
        self.send_trying = send_trying
        self.session_expires = session_expires
        self.min_se = min_se
        self.auto_ack = auto_ack
        self._hostport = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        # A WebSocket client cannot be reached at an address of its own (RFC 7118 §5): when set, Via and Contact
        # over ws/wss name this `.invalid` host instead, and the far end answers over the connection.
        self.flow_host: str | None = None
        self._client: dict[tuple[str, ...], ClientTransaction | Record] = {}
        self._server: dict[tuple[str, ...], ServerTransaction | Record] = {}
        self._dialogs: dict[tuple[str, str, str], Dialog] = {}
        # Dialogs whose requests go to a fixed address instead of their route/remote target (`set_destination`).
        self._destinations: dict[tuple[str, str, str], tuple[Addr, str]] = {}
        self._heap: list[tuple[float, int, TimerOwner, TxInput | str]] = []
        self._seq = itertools.count()
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Addr, str]] = []
        # Told (side "client" or "server", method, seconds) when a transaction gets or sends its first final
        # response, timed with the `now`s it was driven with: the node's transaction latency histograms.
        self.on_transaction_completed: Callable[[str, str, float], None] | None = None
        self.stats: dict[str, int] = {
            "parse_errors": 0,
            "responses_sent_stateless": 0,
            "unmatched_responses": 0,
            "unmatched_acks": 0,
            "protocol_errors": 0,
        }

    def datagrams_to_send(self) -> list[tuple[bytes, Addr, str]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def connection_closed(self, addr: Addr, transport: str, now: float) -> None:
        """The transport closed a connection-bound flow (a WebSocket): reported to the TU as `ConnectionClosed`."""
        self._events.append(ConnectionClosed(addr, transport))

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, owner, name = heap[0]
            if self._live(owner, name, deadline):
                return deadline
            heapq.heappop(heap)
        return None

    def _live(self, owner: TimerOwner, name: TxInput | str, deadline: float) -> bool:
        """Lazy deletion: a heap entry counts only while its owner still has that timer armed for that deadline."""
        if isinstance(owner, weakref.ReferenceType):
            tx = owner()
            return tx is not None and isinstance(name, TxInput) and tx.timers.get(name) == deadline
        if name in (SERVER_RECORD, CLIENT_RECORD):
            record = (self._server if name == SERVER_RECORD else self._client).get(owner)
            return isinstance(record, Record) and record.deadline == deadline
        dialog = self._dialogs.get(owner)  # type: ignore[arg-type]
        return dialog is not None and isinstance(name, str) and dialog.timers.get(name) == deadline

    @property
    def transaction_count(self) -> int:
        return len(self._client) + len(self._server)

    @property
    def pending_transaction_count(self) -> int:
        """Transactions whose final response is still to come or to be sent; not those that only wait out their
        absorbing timers (Completed, Accepted, Confirmed, compact records), which need nothing more from anyone."""
        return sum(1 for table in (self._client, self._server) for tx in table.values()
                   if not isinstance(tx, Record) and tx.state in _AWAITING_FINAL)

    @property
    def dialog_count(self) -> int:
        return len(self._dialogs)

    def contact(self, transport: str = "udp") -> str:
        suffix = f";transport={transport}" if transport in ("tcp", "ws", "wss") else ""
        return f"<sip:{self.user}@{self._sent_by(transport)}{suffix}>"

    def _sent_by(self, transport: str) -> str:
        if self.flow_host is not None and transport in ("ws", "wss"):
            return self.flow_host
        return self._hostport

    def set_destination(self, dialog: Dialog, dest: Addr | None, transport: str = "udp") -> None:
        """Send every later request of `dialog` (and the ACK of its 2xx) to `dest` over `transport`, whatever its
        route set and remote target name; None goes back to them (§12.2.1.1).

        For a peer behind NAT: its Contact names a private address, and the TU knows where it really is (the source
        of its REGISTER or of its request, RFC 3581). The Request-URI and Route headers stay as §12.2.1.1 builds
        them; only where the datagram goes changes. Forgotten when the dialog ends."""
        if dest is None:
            self._destinations.pop(dialog.id, None)
        elif not dialog.terminated:
            self._destinations[dialog.id] = (dest, transport)

    def dialog_destination(self, dialog: Dialog) -> tuple[Addr, str] | None:
        """The destination `set_destination` gave `dialog`, if any."""
        return self._destinations.get(dialog.id)

    def send_request(
        self, request: Request, now: float, *, dest: Addr | None = None, transport: str | None = None
    ) -> ClientTransaction:
        """Send `request` in a new client transaction (adds the top Via with a new branch and rport)."""
        target = request_destination(request) if dest is None else (dest, transport or "udp")
        via_transport = target[1] if target is not None else (transport or "udp")
        request.headers.prepend("Via", self._via(via_transport))
        tx = ClientTransaction(
            request, self, self.timers, target[0] if target is not None else ("", 0), via_transport
        )
        self._client[tx.key] = tx
        if target is None:
            tx.transport_error(now)
        else:
            tx.start(now)
        return tx

    def send_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        now: float,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: HeaderList = (),
    ) -> ClientTransaction:
        """A request inside `dialog` (§12.2.1.1). BYE ends the dialog at once ("bye-sent"). A terminated dialog
        whose subscription usage the TU holds (`hold_usage`) still carries that usage's NOTIFY/SUBSCRIBE."""
        if dialog.terminated and not (dialog.usages and method in USAGE_METHODS):
            raise DialogError("dialog is terminated")
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"{method} is not sent with send_in_dialog")
        if method == "INVITE" and (dialog.outgoing_invite is not None or dialog.incoming_invite is not None):
            raise DialogError("an INVITE transaction is in progress in this dialog (§14.1)")
        extra = list(headers)
        if method in ("INVITE", "UPDATE") and dialog.session is not None:
            session = dialog.session
            extra += timer_headers(session_expires=session.interval, refresher=session.refresher(True), supported=True)
        tx = self._dialog_request(dialog, method, now, body=body, content_type=content_type, headers=extra)
        if method == "INVITE":
            dialog.outgoing_invite = tx
            dialog.glare_retry = (method, body, content_type, tuple(headers))
            if body:
                dialog.last_offer = (body, content_type)
        elif method == "BYE":
            self._end_dialog(dialog, now, "bye-sent", send_bye=False)
        return tx

    def tx_send(self, tx: Transaction, data: bytes, dest: Addr, transport: str) -> None:
        self._out.append((data, dest, transport))

    def send_raw(self, data: bytes, dest: Addr, transport: str) -> None:
        """Send `data` as it is, outside any transaction (a request handed on to another cluster node)."""
        self._out.append((data, dest, transport))

    def tx_arm(self, tx: Transaction, timer: TxInput, deadline: float) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), weakref.ref(tx), timer))

    def tx_to_tu(self, tx: Transaction, message: Request | Response, now: float) -> None:
        if isinstance(message, Response):
            assert isinstance(tx, ClientTransaction)
            self._client_response(tx, message, now)
        else:  # an ACK matched to an INVITE server transaction in Accepted (RFC 2543 peers)
            self._ack_for_2xx(message, now)

    def tx_timeout(self, tx: Transaction, now: float) -> None:
        self._events.append(TransactionTimedOut(tx))
        self._tx_failed(tx, now, "timeout")

    def tx_transport_error(self, tx: Transaction, now: float) -> None:
        reason = "no IP literal destination" if tx.dest == ("", 0) else "transport failure"
        self._events.append(TransportError(tx, reason))
        self._tx_failed(tx, now, "transport-error")

    def tx_completed(self, tx: Transaction, seconds: float) -> None:
        observer = self.on_transaction_completed
        if observer is not None:
            observer("client" if isinstance(tx, ClientTransaction) else "server", tx.request.method, seconds)

    def tx_absorbing(self, tx: Transaction, timer: TxInput, deadline: float) -> None:
        """Keep a `Record` of `tx` instead of `tx` while it waits out `timer` (`callbridge.sip.absorbing`)."""
        if isinstance(tx, ClientTransaction):
            table: dict[tuple[str, ...], ClientTransaction | Record] | dict[
                tuple[str, ...], ServerTransaction | Record] = self._client
            name = CLIENT_RECORD
            # Its early dialogs end when it terminates (`tx_terminated`): keep it whole while one lives.
            keep = any(not dialog.terminated for dialog in tx.early_dialogs)
        else:
            table, name, keep = self._server, SERVER_RECORD, False
        if keep or table.get(tx.key) is not tx:
            self.tx_arm(tx, timer, deadline)
            return
        table[tx.key] = record_of(tx, deadline)
        heapq.heappush(self._heap, (deadline, next(self._seq), tx.key, name))

    def _record_expired(self, key: tuple[str, ...], name: str, deadline: float, now: float) -> None:
        table = self._server if name == SERVER_RECORD else self._client
        record = table.get(key)
        if not isinstance(record, Record) or record.deadline != deadline:
            return
        del table[key]
        tx = record.tx()
        if tx is not None:  # the TU still holds it: it ends as its table says
            timer = ABSORBING.get((tx.kind, tx.state))
            if timer is not None:
                tx.fire(timer, deadline, now)

    def tx_terminated(self, tx: Transaction) -> None:
        if isinstance(tx, ClientTransaction):
            if self._client.get(tx.key) is tx:
                del self._client[tx.key]
            for dialog in tx.early_dialogs:
                if dialog.state is DialogStatus.EARLY:  # forks that never answered
                    self._end_dialog(dialog, 0.0, "rejected", send_bye=False)
            tx.early_dialogs = []
        elif self._server.get(tx.key) is tx:
            del self._server[tx.key]

    def _token(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):x}"

    def _via(self, transport: str) -> str:
        return f"SIP/2.0/{transport.upper()} {self._sent_by(transport)};branch=z9hG4bK{self._token(64)};rport"

    def _dialog_request(
        self,
        dialog: Dialog,
        method: str,
        now: float,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> ClientTransaction:
        uri, _ = dialog.target_and_routes()
        contact = self.contact(uri.transport or "udp") if method in CONTACT_METHODS else None
        request = dialog.build_request(
            method, dialog.next_cseq(), None, contact, body=body, content_type=content_type,
            headers=list(headers), user_agent=self.user_agent,
        )
        fixed = self._destinations.get(dialog.id) if self._destinations else None
        if fixed is None:
            tx = self.send_request(request, now)
        else:
            tx = self.send_request(request, now, dest=fixed[0], transport=fixed[1])
        tx.dialog = dialog
        return tx

    def _send_cancel(self, tx: ClientTransaction, now: float) -> None:
        """§9.1: CANCEL with the INVITE's Request-URI, Call-ID, From, To, CSeq number, top Via and Route."""
        invite = tx.request
        fields = [
            ("Via", invite.headers.get_all("Via")[0]),
            ("Max-Forwards", "70"),
            ("From", invite.headers.get("From") or ""),
            ("To", invite.headers.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} CANCEL"),
        ]
        fields.extend(("Route", route) for route in invite.headers.get_all("Route"))
        cancel = Request("CANCEL", invite.uri_text, headers=Headers(fields))
        cancel_tx = ClientTransaction(cancel, self, self.timers, tx.dest, tx.transport)
        self._client[cancel_tx.key] = cancel_tx
        cancel_tx.start(now)

    def _tx_failed(self, tx: Transaction, now: float, reason: str) -> None:
        """A transaction timed out or could not be sent: what that does to its dialog (§12.2.1.2)."""
        dialog = tx.dialog
        if isinstance(tx, ClientTransaction):
            if tx.method == "INVITE" and dialog is None:
                if tx.state is TxState.PROCEEDING and reason == "timeout":
                    self._send_cancel(tx, now)  # Timer C: stop the ringing we no longer wait for
                for early in tx.early_dialogs:
                    self._end_dialog(early, now, reason, send_bye=False)
                return
            if dialog is not None and dialog.outgoing_invite is tx:
                dialog.outgoing_invite = None
            if dialog is not None and tx.method != "BYE":
                self._end_dialog(dialog, now, reason, send_bye=reason == "timeout")
        elif dialog is not None and dialog.incoming_invite is tx:
            dialog.incoming_invite = None

    def _end_dialog(self, dialog: Dialog, now: float, reason: str, *, send_bye: bool) -> None:
        if dialog.terminated:
            return
        if send_bye and dialog.state is DialogStatus.CONFIRMED:
            self._dialog_request(dialog, "BYE", now)
        dialog.handle(DialogInput.TERMINATE)
        dialog.timers.clear()
        dialog.pending_2xx = None
        # Break the dialog <-> transaction cycles so that both are freed by reference counting.
        dialog.creating_tx = dialog.outgoing_invite = dialog.incoming_invite = None
        if not dialog.usages:  # else the INVITE usage alone ended (RFC 5057 §5.5): `release_usage` forgets it
            self._forget_dialog(dialog)
        self._events.append(DialogTerminated(dialog, reason))

    def forget_dialog(self, dialog: Dialog) -> None:
        """Drop a confirmed dialog without ending it: nothing is sent, its timers (2xx retransmission, session
        refresh) stop. Another cluster node adopted it from the records (`cluster.handover`); a request for it
        that still reaches this node is answered 481 (RFC 3261 §12.2.2)."""
        dialog.timers.clear()
        dialog.pending_2xx = None
        dialog.creating_tx = dialog.outgoing_invite = dialog.incoming_invite = None
        dialog.user_data = None
        self._forget_dialog(dialog)

    def _forget_dialog(self, dialog: Dialog) -> None:
        if self._dialogs.get(dialog.id) is dialog:
            del self._dialogs[dialog.id]
            self._destinations.pop(dialog.id, None)

    def hold_usage(self, dialog: Dialog) -> None:
        """The TU holds a usage of `dialog` besides the INVITE one (a REFER's subscription, RFC 3515 §2.4.4):
        a BYE ends the session but the dialog stays in the table (requests for it still get 481) and can carry
        NOTIFY/SUBSCRIBE until every usage held is released (RFC 5057 §5.5, RFC 6665 §4.5.3)."""
        if dialog.terminated:
            raise DialogError("dialog is terminated")
        dialog.usages += 1

    def release_usage(self, dialog: Dialog) -> None:
        """A usage held with `hold_usage` ended; the last one of a terminated dialog releases its state."""
        if dialog.usages <= 0:
            raise DialogError("no usage of this dialog is held")
        dialog.usages -= 1
        if not dialog.usages and dialog.terminated:
            self._forget_dialog(dialog)

    def _arm_dialog(self, dialog: Dialog, name: str, deadline: float) -> None:
        dialog.timers[name] = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), dialog.id, name))

    def _set_session(self, dialog: Dialog, session: SessionTimer | None, now: float) -> None:
        """(Re-)arm the session timer after a successful INVITE/UPDATE (RFC 4028 §10)."""
        dialog.session = session
        dialog.timers.pop("st_refresh", None)
        dialog.timers.pop("st_expire", None)
        if session is None or dialog.terminated:
            return
        if session.we_refresh:
            self._arm_dialog(dialog, "st_refresh", now + refresh_delay(session.interval))
        self._arm_dialog(dialog, "st_expire", now + expiry_delay(session.interval))

    @staticmethod
    def _session_after_our_refresh(dialog: Dialog, response: Response) -> SessionTimer | None:
        """The session timer after a 2xx to our INVITE/UPDATE; a peer that does not echo Session-Expires
        leaves us refreshing as before (RFC 4028 §7.2)."""
        session = SessionTimer.from_2xx(response, we_sent_request=True)
        if session is None and dialog.session is not None and dialog.session.we_refresh:
            return dialog.session
        return session

    def _refresh_with_invite(self, dialog: Dialog, now: float) -> None:
        """RFC 4028 §7.4 with a peer that does not allow UPDATE: re-INVITE with our last offer, unchanged."""
        dialog.refresh_by_invite = True
        if dialog.outgoing_invite is not None or dialog.incoming_invite is not None:
            return
        body, content_type = dialog.last_offer if dialog.last_offer is not None else (b"", None)
        self.send_in_dialog(dialog, "INVITE", now, body=body, content_type=content_type)

    def _glare_delay(self, dialog: Dialog) -> float:
        """§14.1: the owner of the Call-ID waits 2.1-4 s, the other side 0-2 s, in units of 10 ms."""
        if dialog.is_uac:
            return self.rng.randint(210, 400) / 100
        return self.rng.randint(0, 200) / 100

    # Implemented by the role mixins (uac.py, uas.py).
    def _client_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        raise NotImplementedError

    def _ack_for_2xx(self, request: Request, now: float) -> None:
        raise NotImplementedError
