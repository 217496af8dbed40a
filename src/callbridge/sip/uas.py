"""The UAS half of the endpoint: requests in (matching, CANCEL, ACK, dialog checks, 481/500/491/422) and the TU's
responses out (dialog creation, 2xx retransmission until ACK). See `endpoint.py` for the theory of operation."""

from __future__ import annotations

from callbridge.sip.absorbing import Record
from callbridge.sip.core import USAGE_METHODS, EndpointCore, HeaderList
from callbridge.sip.dialog import Dialog, DialogInput, DialogStatus
from callbridge.sip.events import (
    AckReceived,
    DialogEstablished,
    InviteCancelled,
    RequestReceived,
)
from callbridge.sip.inspection import DEFAULT_SUPPORTED_OPTIONS, DEFAULT_URI_SCHEMES, inspect_request
from callbridge.sip.message import Request, Response, make_response
from callbridge.sip.routing import Addr, stamp_via
from callbridge.sip.session_timer import SessionTimer, supports_timer, timer_headers
from callbridge.sip.transaction import ServerTransaction, TxInput, TxKind, TxState, server_key

__all__ = ["UasCore"]


class UasCore(EndpointCore):
    """Requests in, responses out (RFC 3261 §8.2, §12.1.1, §13.3, §17.2)."""

    # §8.2.2 header inspection (`inspection.py`): what this UAS handles; the transaction user may widen them.
    uri_schemes: frozenset[str] = DEFAULT_URI_SCHEMES
    supported_options: frozenset[str] = DEFAULT_SUPPORTED_OPTIONS

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
        # Every response of the initial INVITE that can make a dialog carries its Record-Route (§12.1.1), the 2xx
        # after an early dialog's 18x too: the caller's confirmed dialog takes its route set from the 2xx
        # (§12.1.2, §13.2.2.4), and without it its ACK and BYE bypass the proxies that record-routed.
        if dialog_forming and request.to.tag is None and "record-route" not in response.headers:
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

    def _on_request(self, request: Request, source: Addr, now: float, transport: str) -> None:
        key = server_key(request)  # before stamping: the key uses the Via as sent
        dest = stamp_via(request, source, transport)
        method = request.method
        existing = self._server.get(key)
        if isinstance(existing, Record):
            self._absorbed(existing, request, now)
            return
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
        tx.started = now  # its final response is measured from here (`tx_completed`)
        self._server[key] = tx
        if method == "CANCEL":
            self._on_cancel(tx, request, now)
            return
        rejection = inspect_request(request, self.uri_schemes, self.supported_options)  # 416, 420 (§8.2.2)
        if rejection is not None:
            self.respond(tx, rejection[0], now, headers=rejection[1])
            return
        if method == "INVITE" and self.send_trying:
            tx.send_response(make_response(request, 100), now)
        to_tag = request.to.tag
        dialog: Dialog | None = None
        if to_tag is not None:
            dialog = self._dialogs.get((request.call_id, to_tag, request.from_.tag or ""))
            # A terminated dialog whose subscription usage is held still takes that usage's requests (RFC 5057).
            if dialog is None or (dialog.terminated and not (dialog.usages and method in USAGE_METHODS)):
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
                # §15.1.2: pending requests of the dialog get 487 -- a re-INVITE, or the INVITE that created
                # an early dialog (the caller may BYE an early dialog, §15); left unanswered, that server
                # transaction would stay in Proceeding, which no timer ends.
                creating = dialog.creating_tx
                pending = [t for t in (dialog.incoming_invite, creating) if isinstance(t, ServerTransaction)]
                self.respond(tx, 200, now)
                self._end_dialog(dialog, now, "bye", send_bye=False)
                for invite_tx in pending:
                    if invite_tx.state is TxState.PROCEEDING:
                        self.respond(invite_tx, 487, now)
                return
            elif method == "UPDATE" and not request.body:
                self.respond(tx, 200, now)  # a session refresh (RFC 4028 §7.4): nothing for the TU to decide
                return
        self._events.append(RequestReceived(request, tx, dialog))

    def _absorbed(self, record: Record, request: Request, now: float) -> None:
        """A request matching a server transaction kept as a `Record` (the tables of `absorbing.py`)."""
        if record.kind is TxKind.INVITE_SERVER:
            if request.method == "ACK" and record.state is TxState.ACCEPTED:
                self._ack_for_2xx(request, now)  # RFC 6026 §8.7: the ACK of a 2xx goes to the dialog
            return  # an INVITE retransmission in Accepted or Confirmed, an ACK in Confirmed: absorbed
        if record.resend is not None:
            self._out.append((record.resend, record.dest, record.transport))  # §17.2.2 Completed

    def _on_cancel(self, tx: ServerTransaction, request: Request, now: float) -> None:
        invite_tx = self._server.get(server_key(request, "INVITE"))
        if invite_tx is None:
            self.respond(tx, 481, now)
            return
        self.respond(tx, 200, now)
        if isinstance(invite_tx, ServerTransaction) and invite_tx.state is TxState.PROCEEDING:
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
        if creating:
            dialog.creating_tx = None  # needed only while early (the 487 on BYE above); the call keeps no INVITE
        else:
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
            self.respond(tx, 422, now, headers=timer_headers(min_se=self.min_se))
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
        for name, value in timer_headers(session_expires=interval, refresher=refresher, require=uac_supports):
            response.headers.add(name, value)
        return SessionTimer(interval, we_refresh=refresher == "uas")
