"""The UAC half of the endpoint: responses in (dialog creation, ACK for 2xx and its re-sending, glare retry,
408/481), CANCEL and ACK out. See `endpoint.py` for the theory of operation."""

from __future__ import annotations

from callbridge.sip.absorbing import Record
from callbridge.sip.core import EndpointCore
from callbridge.sip.dialog import Dialog, DialogError, DialogInput, DialogStatus
from callbridge.sip.events import DialogEstablished, ResponseReceived
from callbridge.sip.message import Response
from callbridge.sip.routing import request_destination
from callbridge.sip.session_timer import SessionTimer
from callbridge.sip.transaction import ClientTransaction, TxKind, TxState, client_key

__all__ = ["OVERLAP_DELAY_MAX", "OVERLAP_RETRIES", "UacCore"]

OVERLAP_RETRIES = 3  # re-sends of a re-INVITE answered 500 with Retry-After, in a row
OVERLAP_DELAY_MAX = 1.3  # seconds waited at most before each (three: about 4 s in all)


def _retry_after(response: Response) -> float | None:
    """The seconds of a Retry-After header (§20.33: ``delta-seconds`` then optional comment and parameters)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    digits = value.strip().split(";", 1)[0].split("(", 1)[0].strip()
    return float(digits) if digits.isdigit() else None


class UacCore(EndpointCore):
    """Responses in, CANCEL and ACK out (RFC 3261 §9.1, §12.1.2, §13.2, §17.1)."""

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

    def _on_response(self, response: Response, now: float) -> None:
        tx = self._client.get(client_key(response))
        if isinstance(tx, Record):  # a transaction waiting out Timer D or K (`absorbing.py`)
            if tx.kind is TxKind.INVITE_CLIENT and response.status >= 300 and tx.resend is not None:
                self._out.append((tx.resend, tx.dest, tx.transport))  # §17.1.1.2: ACK each retransmission
            return
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
            dialog.creating_tx = None  # needed only while early (CANCEL in `bye`); the call keeps no INVITE
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
            dialog.overlap_retries = 0
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
        overlap = _retry_after(response) if code == 500 and dialog.glare_retry is not None else None
        if overlap is not None and dialog.overlap_retries < OVERLAP_RETRIES:
            # §14.2: a UAS still busy with an INVITE of its own (our ACK not in yet, its re-INVITE in progress)
            # answers 500 with Retry-After; §14.1 lets us try again after that many seconds. Bounded, so that an
            # action waiting on it ends within about 4 s rather than Retry-After's up to 10 s three times over.
            dialog.overlap_retries += 1
            self._arm_dialog(dialog, "glare", now + min(overlap, OVERLAP_DELAY_MAX))
            return
        dialog.overlap_retries = 0
        dialog.glare_retry = None
        if code in (408, 481):
            self._end_dialog(dialog, now, "timeout", send_bye=code == 408)

    def _send_ack(
        self, dialog: Dialog, cseq: int, now: float, *, body: bytes = b"", content_type: str | None = None
    ) -> None:
        """§13.2.2.4: ACK for a 2xx, built like an in-dialog request with the INVITE's CSeq number."""
        request = dialog.build_request("ACK", cseq, None, None, body=body, content_type=content_type)
        target = self._destinations.get(dialog.id) or request_destination(request)
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
