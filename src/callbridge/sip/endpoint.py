"""The SIP endpoint: the sans-I/O facade that the transport drives and the TU (phone, B2BUA) uses.

Shape (as aioquic): bytes and the current time go in (`receive_datagram`, `handle_timer`), events
(`next_event`), datagrams (`datagrams_to_send`) and the next deadline (`get_timer`) come out. No clock, no socket,
no DNS; all randomness (branches, tags, Call-IDs, the §14.1 glare delay) comes from the `random.Random` given.

Theory of operation
- Requests in (§8.2, §17.2.3): the top Via is stamped (received/rport, `routing.stamp_via`), the request matched
  to a server transaction (a retransmission is absorbed by it) or a new one is made. CANCEL is answered here (200,
  and 487 for the INVITE it cancels, §9.2); ACK goes to its INVITE server transaction (non-2xx) or to its dialog
  (2xx). A request with a To tag must match a dialog (else 481, §12.2.2) and be in order (else 500); an INVITE
  while one is in progress in the other direction gets 491, in the same direction 500 (§14.2); a Session-Expires
  below our Min-SE gets 422 (RFC 4028). BYE is answered 200 here. Everything else is a `RequestReceived`.
- Responses in: matched to a client transaction by branch + CSeq method (§17.1.3). Responses to INVITE create
  early and confirmed dialogs (§12.1.2); a 2xx is ACKed (§13.2.2.4) and the ACK re-sent for each retransmitted
  2xx; a 491 to a re-INVITE schedules its retry after the §14.1 random delay; 408/481 in a dialog end it.
- The TU's responses (`respond`): To tag, Contact and Record-Route for dialog-creating responses (§12.1.1), the
  session timer for 2xx to INVITE/UPDATE; a 2xx to INVITE is retransmitted from T1 doubling to T2 until its ACK,
  and after 64*T1 without ACK the session ends with BYE (§13.3.1.4).
- Timers of transactions and dialogs live in one heap of ``(deadline, seq, owner, name)`` entries with lazy
  deletion: an entry is live only while ``owner.timers[name] == deadline``, so cancelling or re-arming is a dict
  write and every operation stays O(log n).
- Finished transactions and dialogs leave their tables at once (`transaction_count`, `dialog_count`).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Iterable, Sequence

from callbridge.sip.dialog import Dialog, DialogError, DialogInput, DialogState, DialogStatus
from callbridge.sip.errors import ParseError
from callbridge.sip.events import (
    AckReceived,
    DialogEstablished,
    DialogTerminated,
    Event,
    InviteCancelled,
    RequestReceived,
    ResponseReceived,
    SessionExpired,
    TransactionTimedOut,
    TransportError,
)
from callbridge.sip.headers import Headers, header_key
from callbridge.sip.message import Request, Response, make_response
from callbridge.sip.parser import parse
from callbridge.sip.routing import Addr, error_response_for_unparsable, request_destination, stamp_via
from callbridge.sip.session_timer import SessionTimer, expiry_delay, refresh_delay, supports_timer
from callbridge.sip.timers import TimerConfig
from callbridge.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    Transaction,
    TxInput,
    TxState,
    client_key,
    server_key,
)
from callbridge.sip.uri import URI, parse_uri

__all__ = ["Endpoint"]

HeaderList = Sequence[tuple[str, str]]
TimerOwner = Transaction | Dialog
# Requests that carry a Contact (dialog-creating or target-refreshing, §8.1.1.8, §12.2.1.1; REGISTER §10.2).
CONTACT_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER", "REGISTER"})
REPLACED_ON_RETRY = frozenset({"via", "cseq", "authorization", "proxy-authorization"})


def _live(owner: TimerOwner, name: TxInput | str, deadline: float) -> bool:
    """Lazy deletion: a heap entry counts only while its owner still has that timer armed for that deadline."""
    if isinstance(owner, Transaction):
        return isinstance(name, TxInput) and owner.timers.get(name) == deadline
    return isinstance(name, str) and owner.timers.get(name) == deadline


class Endpoint:
    """One SIP user agent core with its transaction and dialog layers; see the module docstring."""

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
        self._client: dict[tuple[str, ...], ClientTransaction] = {}
        self._server: dict[tuple[str, ...], ServerTransaction] = {}
        self._dialogs: dict[tuple[str, str, str], Dialog] = {}
        self._heap: list[tuple[float, int, TimerOwner, TxInput | str]] = []
        self._seq = itertools.count()
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Addr, str]] = []
        self.stats: dict[str, int] = {
            "parse_errors": 0,
            "responses_sent_stateless": 0,
            "unmatched_responses": 0,
            "unmatched_acks": 0,
        }

    # === the I/O side ======================================================================================
    def receive_datagram(self, data: bytes, addr: Addr, now: float, transport: str = "udp") -> None:
        try:
            message = parse(data)
            if isinstance(message, Request):
                self._on_request(message, addr, now, transport)
            else:
                self._on_response(message, now)
        except ParseError as error:
            self.stats["parse_errors"] += 1
            if error.status is not None:
                formed = error_response_for_unparsable(data, error.status, addr, transport)
                if formed is not None:
                    self.stats["responses_sent_stateless"] += 1
                    self._out.append((formed[0], formed[1], transport))

    def datagrams_to_send(self) -> list[tuple[bytes, Addr, str]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, owner, name = heap[0]
            if _live(owner, name, deadline):
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, owner, name = heapq.heappop(heap)
            if isinstance(owner, Transaction):
                assert isinstance(name, TxInput)
                owner.fire(name, deadline, now)
            elif isinstance(name, str) and owner.timers.get(name) == deadline:
                del owner.timers[name]
                self._dialog_timer(owner, name, now)

    @property
    def transaction_count(self) -> int:
        return len(self._client) + len(self._server)

    @property
    def dialog_count(self) -> int:
        return len(self._dialogs)

    # === the TU side =======================================================================================
    def create_request(
        self,
        method: str,
        uri: URI | str,
        *,
        from_uri: URI | str,
        to_uri: URI | str | None = None,
        from_display: str | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        body: bytes = b"",
        content_type: str | None = None,
        headers: HeaderList = (),
    ) -> Request:
        """An out-of-dialog request (§8.1.1) ready for `send_request`: From with a new tag, Call-ID, CSeq."""
        target = parse_uri(uri) if isinstance(uri, str) else uri
        display = f'"{from_display}" ' if from_display else ""
        fields: list[tuple[str, str]] = [
            ("Max-Forwards", "70"),
            ("From", f"{display}<{from_uri}>;tag={self._token(48)}"),
            ("To", f"<{to_uri if to_uri is not None else target}>"),
            ("Call-ID", call_id if call_id is not None else f"{self._token(96)}@{self.host}"),
            ("CSeq", f"{cseq} {method}"),
        ]
        if method in CONTACT_METHODS:
            fields.append(("Contact", self.contact(target.transport or "udp")))
        if self.user_agent:
            fields.append(("User-Agent", self.user_agent))
        fields.extend(headers)
        if content_type is not None:
            fields.append(("Content-Type", content_type))
        return Request(method, target, headers=Headers(fields), body=body)

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

    def invite(
        self,
        uri: URI | str,
        now: float,
        *,
        from_uri: URI | str,
        to_uri: URI | str | None = None,
        from_display: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: HeaderList = (),
        dest: Addr | None = None,
        transport: str | None = None,
        session_expires: int | None = None,
    ) -> ClientTransaction:
        """Start a call: an INVITE offering a session timer when configured (RFC 4028 §7.1)."""
        extra = [*headers, ("Supported", "timer")]
        interval = session_expires if session_expires is not None else self.session_expires
        if interval is not None:
            extra += [("Session-Expires", str(interval)), ("Min-SE", str(self.min_se))]
        request = self.create_request(
            "INVITE", uri, from_uri=from_uri, to_uri=to_uri, from_display=from_display, body=body,
            content_type=content_type, headers=extra,
        )
        return self.send_request(request, now, dest=dest, transport=transport)

    def retry_request(self, tx: ClientTransaction, now: float, *, headers: HeaderList = ()) -> ClientTransaction:
        """Re-send `tx`'s request with CSeq + 1 and a new branch (after 401/407 with credentials, or 422),
        replacing the headers named in `headers` (§8.1.3.5, §22.2)."""
        old = tx.request
        replaced = {header_key(name) for name, _ in headers} | REPLACED_ON_RETRY
        dialog = tx.dialog
        cseq = dialog.next_cseq() if dialog is not None else old.cseq.number + 1
        fields = [(name, value) for key, name, value in old.headers.fields() if key not in replaced]
        fields.insert(0, ("CSeq", f"{cseq} {old.method}"))
        fields.extend(headers)
        request = Request(old.method, old.uri_text, headers=Headers(fields), body=old.body)
        new = self.send_request(request, now, dest=tx.dest, transport=tx.transport)
        new.dialog = dialog
        if dialog is not None and old.method == "INVITE":
            dialog.outgoing_invite = new
        return new

    def respond(
        self,
        tx: ServerTransaction,
        status: int | Response,
        now: float,
        *,
        reason: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: HeaderList = (),
    ) -> Response:
        """Send a response to the request of `tx`; dialogs and 2xx retransmission follow (module docstring)."""
        request = tx.request
        if isinstance(status, Response):
            response = status
        else:
            to_tag = None
            if request.to.tag is None and status > 100:
                if tx.local_tag is None:
                    tx.local_tag = self._token(48)
                to_tag = tx.local_tag
            response = make_response(request, status, reason, to_tag=to_tag)
            for name, value in headers:
                response.headers.add(name, value)
            if body:
                response.body = body
            if content_type is not None:
                response.headers.add("Content-Type", content_type)
        code = response.status
        method = request.method
        if self.user_agent and "server" not in response.headers:
            response.headers.add("Server", self.user_agent)
        dialog_forming = method == "INVITE" and 100 < code < 300
        if dialog_forming and "contact" not in response.headers:
            response.headers.add("Contact", self.contact(tx.transport))
        if dialog_forming and tx.dialog is None:
            for value in request.headers.get_all("Record-Route"):
                response.headers.add("Record-Route", value)
        session: SessionTimer | None = None
        if 200 <= code < 300 and method in ("INVITE", "UPDATE"):
            session = self._session_for_2xx(request, response)
        tx.send_response(response, now)
        if method == "INVITE":
            self._after_invite_response(tx, response, session, now)
        elif method == "UPDATE" and 200 <= code < 300 and tx.dialog is not None:
            tx.dialog.refresh_target(request)
            self._set_session(tx.dialog, session, now)
        return response

    def cancel(self, tx: ClientTransaction, now: float) -> None:
        """CANCEL our INVITE (§9.1): at once after a provisional response, else as soon as one arrives."""
        if tx.method != "INVITE" or tx.cancelled or tx.state not in (TxState.CALLING, TxState.PROCEEDING):
            return
        tx.cancelled = True
        if tx.state is TxState.CALLING:
            tx.cancel_pending = True
        else:
            self._send_cancel(tx, now)

    def ack(self, dialog: Dialog, now: float, *, body: bytes = b"", content_type: str | None = None) -> None:
        """ACK the 2xx of our INVITE (with `auto_ack=False`), e.g. carrying the SDP answer (RFC 3264)."""
        if dialog.unacked_invite is None:
            raise DialogError("no 2xx awaits our ACK in this dialog")
        self._send_ack(dialog, dialog.unacked_invite, now, body=body, content_type=content_type)

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
        """A request inside `dialog` (§12.2.1.1). BYE ends the dialog at once ("bye-sent")."""
        if dialog.terminated:
            raise DialogError("dialog is terminated")
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"{method} is not sent with send_in_dialog")
        if method == "INVITE" and (dialog.outgoing_invite is not None or dialog.incoming_invite is not None):
            raise DialogError("an INVITE transaction is in progress in this dialog (§14.1)")
        extra = list(headers)
        if method in ("INVITE", "UPDATE") and dialog.session is not None:
            extra += [("Session-Expires", dialog.session.header_value(True)), ("Supported", "timer")]
        tx = self._dialog_request(dialog, method, now, body=body, content_type=content_type, headers=extra)
        if method == "INVITE":
            dialog.outgoing_invite = tx
            dialog.glare_retry = (method, body, content_type, tuple(headers))
            if body:
                dialog.last_offer = (body, content_type)
        elif method == "BYE":
            self._end_dialog(dialog, now, "bye-sent", send_bye=False)
        return tx

    def bye(self, dialog: Dialog, now: float) -> ClientTransaction | None:
        """Hang up: BYE a confirmed dialog, CANCEL the INVITE of an early one we started."""
        if dialog.state is DialogStatus.EARLY:
            creating = dialog.creating_tx
            if isinstance(creating, ClientTransaction):
                self.cancel(creating, now)
                return None
            raise DialogError("an early dialog of ours is ended by a final response (respond), not BYE")
        return self.send_in_dialog(dialog, "BYE", now)

    def dialog_state(self, dialog: Dialog) -> DialogState:
        return dialog.export()

    def restore_dialog(self, state: DialogState) -> Dialog:
        """Rebuild a confirmed dialog from storage (after a restart) so that the TU can `bye` it."""
        dialog = Dialog.restore(state)
        self._dialogs[dialog.id] = dialog
        return dialog

    def contact(self, transport: str = "udp") -> str:
        suffix = ";transport=tcp" if transport == "tcp" else ""
        return f"<sip:{self.user}@{self._hostport}{suffix}>"

    # === TransactionUser (called by transactions) ===========================================================
    def tx_send(self, tx: Transaction, data: bytes, dest: Addr, transport: str) -> None:
        self._out.append((data, dest, transport))

    def tx_arm(self, tx: Transaction, timer: TxInput, deadline: float) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), tx, timer))

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

    # === incoming requests ==================================================================================
    def _on_request(self, request: Request, source: Addr, now: float, transport: str) -> None:
        key = server_key(request)  # before stamping: the key uses the Via as sent
        dest = stamp_via(request, source, transport)
        method = request.method
        existing = self._server.get(key)
        if method == "ACK":
            if existing is not None and existing.state in (TxState.COMPLETED, TxState.CONFIRMED, TxState.ACCEPTED):
                existing.handle(TxInput.RECV_ACK, now, request)
            else:
                self._ack_for_2xx(request, now)
            return
        if existing is not None:
            existing.handle(TxInput.RECV_REQUEST, now, request)
            return
        tx = ServerTransaction(request, key, self, self.timers, dest, transport, source)
        self._server[key] = tx
        if method == "CANCEL":
            self._on_cancel(tx, request, now)
            return
        if method == "INVITE" and self.send_trying:
            tx.send_response(make_response(request, 100), now)
        to_tag = request.to.tag
        dialog: Dialog | None = None
        if to_tag is not None:
            dialog = self._dialogs.get((request.call_id, to_tag, request.from_.tag or ""))
            if dialog is None or dialog.terminated:
                self.respond(tx, 481, now)
                return
            tx.dialog = dialog
            if not dialog.check_remote_cseq(request):
                self.respond(tx, 500, now, reason="CSeq Out of Order")
                return
        elif method == "BYE":
            self.respond(tx, 481, now)
            return
        if method in ("INVITE", "UPDATE") and not self._session_acceptable(tx, request, now):
            return
        if dialog is not None:
            if method == "INVITE":
                if dialog.outgoing_invite is not None:
                    self.respond(tx, 491, now)  # glare (§14.2)
                    return
                if dialog.incoming_invite is not None:
                    retry = self.rng.randint(0, 10)
                    self.respond(tx, 500, now, headers=[("Retry-After", str(retry))])
                    return
                dialog.incoming_invite = tx
            elif method == "BYE":
                pending = dialog.incoming_invite
                if pending is not None and pending.state is TxState.PROCEEDING:
                    self.respond(pending, 487, now)  # §15.1.2
                self.respond(tx, 200, now)
                self._end_dialog(dialog, now, "bye", send_bye=False)
                return
            elif method == "UPDATE" and not request.body:
                self.respond(tx, 200, now)  # a session refresh (RFC 4028 §7.4): nothing for the TU to decide
                return
        self._events.append(RequestReceived(request, tx, dialog))

    def _on_cancel(self, tx: ServerTransaction, request: Request, now: float) -> None:
        invite_tx = self._server.get(server_key(request, "INVITE"))
        if invite_tx is None:
            self.respond(tx, 481, now)
            return
        self.respond(tx, 200, now)
        if invite_tx.state is TxState.PROCEEDING:
            self._events.append(InviteCancelled(invite_tx, request))
            self.respond(invite_tx, 487, now)

    def _ack_for_2xx(self, request: Request, now: float) -> None:
        dialog = self._dialogs.get((request.call_id, request.to.tag or "", request.from_.tag or ""))
        pending = dialog.pending_2xx if dialog is not None else None
        if dialog is None or pending is None or pending[0] != request.cseq.number:
            self.stats["unmatched_acks"] += 1  # a retransmitted ACK, or one for a dialog that is gone
            return
        dialog.pending_2xx = None
        dialog.timers.pop("2xx", None)
        dialog.timers.pop("2xx_giveup", None)
        self._events.append(AckReceived(request, dialog))

    # === our responses ======================================================================================
    def _after_invite_response(
        self, tx: ServerTransaction, response: Response, session: SessionTimer | None, now: float
    ) -> None:
        code = response.status
        request = tx.request
        dialog = tx.dialog
        created = False
        if dialog is None and 100 < code < 300 and tx.local_tag is not None:
            created = True
            dialog = Dialog.for_uas(request, response, tx.local_tag)
            dialog.creating_tx = tx
            tx.dialog = dialog
            self._dialogs[dialog.id] = dialog
        if dialog is None or dialog.terminated:
            return
        creating = dialog.creating_tx is tx
        if code < 200:
            if creating:
                dialog.handle(DialogInput.PROVISIONAL)
            return
        if code >= 300:
            if creating:
                self._end_dialog(dialog, now, "cancelled" if code == 487 else "rejected", send_bye=False)
            elif dialog.incoming_invite is tx:
                dialog.incoming_invite = None
            return
        was_early = dialog.state is DialogStatus.EARLY
        dialog.handle(DialogInput.CONFIRM)
        if not creating:
            dialog.refresh_target(request)
            if dialog.incoming_invite is tx:
                dialog.incoming_invite = None
        if response.body:
            dialog.last_offer = (response.body, response.content_type)
        data = bytes(response)
        interval = self.timers.t1
        dialog.pending_2xx = (request.cseq.number, data, tx.dest, tx.transport, interval)
        if tx.transport == "udp":
            self._arm_dialog(dialog, "2xx", now + interval)
        self._arm_dialog(dialog, "2xx_giveup", now + 64 * self.timers.t1)
        self._set_session(dialog, session, now)
        if creating and (created or was_early):
            self._events.append(DialogEstablished(dialog))

    def _session_acceptable(self, tx: ServerTransaction, request: Request, now: float) -> bool:
        """RFC 4028 §8.1: 422 with our Min-SE when the offered interval is too small."""
        se = request.session_expires
        if se is not None and se.delta < self.min_se:
            self.respond(tx, 422, now, headers=[("Min-SE", str(self.min_se))])
            return False
        return True

    def _session_for_2xx(self, request: Request, response: Response) -> SessionTimer | None:
        """RFC 4028 §9: the interval and refresher our 2xx states (kept if the TU already wrote them)."""
        if "session-expires" in response.headers:
            return SessionTimer.from_2xx(response, we_sent_request=False)
        uac_supports = supports_timer(request)
        offered = request.session_expires
        if offered is not None:
            interval = offered.delta
            refresher = offered.refresher or ("uac" if uac_supports else "uas")
        elif self.session_expires is not None:
            interval = max(self.session_expires, request.min_se or 0, self.min_se)
            refresher = "uac" if uac_supports else "uas"
        else:
            return None
        if not uac_supports:
            refresher = "uas"
        response.headers.add("Session-Expires", f"{interval};refresher={refresher}")
        if uac_supports:
            response.headers.add("Require", "timer")
        return SessionTimer(interval, we_refresh=refresher == "uas")

    # === incoming responses =================================================================================
    def _on_response(self, response: Response, now: float) -> None:
        tx = self._client.get(client_key(response))
        if tx is not None:
            tx.receive_response(response, now)
            return
        if response.cseq.method == "INVITE" and 200 <= response.status < 300:
            dialog = self._dialogs.get((response.call_id, response.from_.tag or "", response.to.tag or ""))
            if dialog is not None and dialog.ack is not None and dialog.ack[0] == response.cseq.number:
                self._resend_ack(dialog)  # the 2xx retransmitted after Timer M ended our transaction
                return
        self.stats["unmatched_responses"] += 1

    def _client_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        if tx.method == "INVITE":
            if tx.dialog is None:
                self._initial_invite_response(tx, response, now)
            else:
                self._reinvite_response(tx, tx.dialog, response, now)
            return
        dialog = tx.dialog
        code = response.status
        if code >= 200 and dialog is not None and not dialog.terminated:
            if code in (408, 481):
                self._events.append(ResponseReceived(response, tx, dialog))
                self._end_dialog(dialog, now, "timeout", send_bye=code == 408 and tx.method != "BYE")
                return
            if 200 <= code < 300 and tx.method == "UPDATE":
                dialog.refresh_target(response)
                self._set_session(dialog, self._session_after_our_refresh(dialog, response), now)
            elif code in (405, 501) and tx.method == "UPDATE" and dialog.session is not None:
                self._refresh_with_invite(dialog, now)  # the peer has no UPDATE: refresh by re-INVITE
        self._events.append(ResponseReceived(response, tx, dialog))

    def _initial_invite_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        code = response.status
        request = tx.request
        to_tag = response.to.tag
        dialog_id = (request.call_id, request.from_.tag or "", to_tag or "")
        dialog = self._dialogs.get(dialog_id) if to_tag else None
        if code < 200:
            if code > 100 and to_tag:
                if dialog is None:
                    dialog = self._new_uac_dialog(tx, response)
                else:
                    dialog.refresh_target(response)
            self._events.append(ResponseReceived(response, tx, dialog))
            if tx.cancel_pending:
                tx.cancel_pending = False
                self._send_cancel(tx, now)
            return
        if code < 300:
            if not to_tag:
                self.stats["unmatched_responses"] += 1
                return
            if dialog is not None and dialog.state is DialogStatus.CONFIRMED:
                if dialog.ack is not None and dialog.ack[0] == request.cseq.number:
                    self._resend_ack(dialog)
                return
            if dialog is None:
                dialog = self._new_uac_dialog(tx, response)
            else:
                dialog.update_from_2xx(response)
                dialog.handle(DialogInput.CONFIRM)
            if request.body:
                dialog.last_offer = (request.body, request.content_type)
            self._set_session(dialog, SessionTimer.from_2xx(response, we_sent_request=True), now)
            if self.auto_ack or tx.cancelled:
                self._send_ack(dialog, request.cseq.number, now)
            else:
                dialog.unacked_invite = request.cseq.number
            self._events.append(ResponseReceived(response, tx, dialog))
            if tx.cancelled:  # our CANCEL crossed the 2xx: end the call we no longer want (§9.1)
                self._end_dialog(dialog, now, "cancelled", send_bye=True)
            else:
                self._events.append(DialogEstablished(dialog))
            return
        self._events.append(ResponseReceived(response, tx, None))
        reason = "cancelled" if code == 487 else "rejected"
        for early in tx.early_dialogs:
            self._end_dialog(early, now, reason, send_bye=False)

    def _new_uac_dialog(self, tx: ClientTransaction, response: Response) -> Dialog:
        dialog = Dialog.for_uac(tx.request, response)
        dialog.creating_tx = tx
        tx.early_dialogs.append(dialog)
        self._dialogs[dialog.id] = dialog
        return dialog

    def _reinvite_response(self, tx: ClientTransaction, dialog: Dialog, response: Response, now: float) -> None:
        code = response.status
        if code < 200:
            self._events.append(ResponseReceived(response, tx, dialog))
            return
        if dialog.outgoing_invite is tx:
            dialog.outgoing_invite = None
        if code < 300:
            cseq = tx.request.cseq.number
            if dialog.ack is not None and dialog.ack[0] == cseq:
                self._resend_ack(dialog)
                return
            dialog.glare_retry = None
            if dialog.terminated:
                return
            dialog.refresh_target(response)
            self._set_session(dialog, self._session_after_our_refresh(dialog, response), now)
            if self.auto_ack:
                self._send_ack(dialog, cseq, now)
            else:
                dialog.unacked_invite = cseq
            self._events.append(ResponseReceived(response, tx, dialog))
            return
        self._events.append(ResponseReceived(response, tx, dialog))
        if dialog.terminated:
            return
        if code == 491 and dialog.glare_retry is not None:
            self._arm_dialog(dialog, "glare", now + self._glare_delay(dialog))
            return
        dialog.glare_retry = None
        if code in (408, 481):
            self._end_dialog(dialog, now, "timeout", send_bye=code == 408)

    # === helpers ============================================================================================
    def _token(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):x}"

    def _via(self, transport: str) -> str:
        return f"SIP/2.0/{transport.upper()} {self._hostport};branch=z9hG4bK{self._token(64)};rport"

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
        tx = self.send_request(request, now)
        tx.dialog = dialog
        return tx

    def _send_ack(
        self, dialog: Dialog, cseq: int, now: float, *, body: bytes = b"", content_type: str | None = None
    ) -> None:
        """§13.2.2.4: ACK for a 2xx, built like an in-dialog request with the INVITE's CSeq number."""
        request = dialog.build_request("ACK", cseq, None, None, body=body, content_type=content_type)
        target = request_destination(request)
        if target is None:
            return  # nowhere to send it; the peer's 2xx retransmissions will end the dialog
        request.headers.prepend("Via", self._via(target[1]))
        data = bytes(request)
        dialog.ack = (cseq, data, target[0], target[1])
        dialog.unacked_invite = None
        self._out.append((data, target[0], target[1]))

    def _resend_ack(self, dialog: Dialog) -> None:
        assert dialog.ack is not None
        _, data, dest, transport = dialog.ack
        self._out.append((data, dest, transport))

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
        if self._dialogs.get(dialog.id) is dialog:
            del self._dialogs[dialog.id]
        self._events.append(DialogTerminated(dialog, reason))

    def _arm_dialog(self, dialog: Dialog, name: str, deadline: float) -> None:
        dialog.timers[name] = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), dialog, name))

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

    def _dialog_timer(self, dialog: Dialog, name: str, now: float) -> None:
        if dialog.terminated:
            return
        if name == "2xx":
            pending = dialog.pending_2xx
            if pending is None:
                return
            cseq, data, dest, transport, interval = pending
            self._out.append((data, dest, transport))
            interval = min(interval * 2, self.timers.t2)
            dialog.pending_2xx = (cseq, data, dest, transport, interval)
            self._arm_dialog(dialog, "2xx", now + interval)
        elif name == "2xx_giveup":
            dialog.pending_2xx = None
            dialog.timers.pop("2xx", None)
            self._end_dialog(dialog, now, "ack-timeout", send_bye=True)
        elif name == "glare":
            retry = dialog.glare_retry
            if retry is None:
                return
            if dialog.outgoing_invite is not None or dialog.incoming_invite is not None:
                self._arm_dialog(dialog, "glare", now + self._glare_delay(dialog))  # the peer's INVITE won
                return
            method, body, content_type, headers = retry
            self.send_in_dialog(dialog, method, now, body=body, content_type=content_type, headers=headers)
        elif name == "st_refresh":
            if dialog.outgoing_invite is None and dialog.incoming_invite is None:
                if dialog.refresh_by_invite:
                    self._refresh_with_invite(dialog, now)
                else:
                    self.send_in_dialog(dialog, "UPDATE", now)
        elif name == "st_expire":
            self._events.append(SessionExpired(dialog))
            self._end_dialog(dialog, now, "session-expired", send_bye=True)
