"""The phone's dispatcher: what it does with each event of its SIP endpoint (runs inside the runtime's drain).

Rules (the theory of operation is in `callbridge.phone.phone`)
- A new INVITE becomes a `Call` (its server transaction's ``user_data``); with ``answer="auto"`` it is answered
  (or rung, or rejected with ``auto_answer_status``) right here. An offer that is not SDP gets 415, malformed SDP
  400, one without PCMU 488; an INVITE with Replaces (RFC 3891) naming no live call gets 481.
- In a call: re-INVITE and UPDATE with an offer are answered (RFC 3264 §6.1; far-end hold reported as `Held` /
  `Resumed`), a re-INVITE without one gets our offer in the 2xx and its answer from the ACK (RFC 3725 flow I);
  INFO, OPTIONS, MESSAGE and NOTIFY (Event: refer) get 200; REFER gets 202 and is followed; other methods 405.
  Requests for a dialog whose call is gone get 481.
- Responses find their owner through the client transaction's ``user_data`` (module `phone`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from callbridge.phone.call import SDP, Call
from callbridge.phone.events import (
    Answered,
    DtmfReceived,
    Established,
    Held,
    IncomingCall,
    InfoReceived,
    PhoneEvent,
    ReferReceived,
    ReInviteReceived,
    Resumed,
    Ringing,
    TransferDone,
    TransferProgress,
)
from callbridge.phone.media import MediaSession, NotAcceptable, parse_remote, remote_direction
from callbridge.phone.registration import Registration
from callbridge.phone.states import CallInput, CallState
from callbridge.phone.transfer import SIPFRAG, notify_headers, parse_sipfrag_status, sipfrag, split_refer_to
from callbridge.sip import DigestResponder, Request, Response, SdpError, SessionDescription, SipError
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.events import (
    AckReceived,
    DialogTerminated,
    InviteCancelled,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportError,
)
from callbridge.sip.message import REASON_PHRASES
from callbridge.sip.transaction import ClientTransaction, ServerTransaction
from callbridge.sip.uri import URI

if TYPE_CHECKING:
    from callbridge.phone.phone import Phone
    from callbridge.transport import Runtime

__all__ = ["ALLOW", "Dispatcher"]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY, MESSAGE"
HELD_DIRECTIONS = frozenset({"sendonly", "inactive"})


class Dispatcher:
    """The half of `Phone` that reacts to the endpoint; `Phone` provides the attributes declared here."""

    endpoint: Endpoint
    runtime: Runtime
    responder: DigestResponder | None
    answer_mode: str
    auto_answer_status: int
    ring_delay: float
    follow_refer: bool
    _calls: dict[Call, None]
    _timers: set[asyncio.TimerHandle]
    _handlers: dict[type, Callable[[Any], None]]

    def now(self) -> float:
        raise NotImplementedError

    def _emit(self, event: PhoneEvent) -> None:
        raise NotImplementedError

    def _new_media(self) -> MediaSession:
        raise NotImplementedError

    def _place_call(self, uri: str | URI, *, dest: tuple[str, int] | None, headers: tuple[tuple[str, str], ...],
                    from_display: str | None = None) -> Call:
        raise NotImplementedError

    def _core_handlers(self) -> dict[type, Callable[[Any], None]]:
        return {
            RequestReceived: self._on_request,
            ResponseReceived: self._on_response,
            AckReceived: self._on_ack,
            InviteCancelled: self._on_cancelled,
            DialogTerminated: self._on_dialog_terminated,
            TransactionTimedOut: self._on_tx_failed,
            TransportError: self._on_tx_failed,
        }

    # --- the dispatcher (runs inside the runtime's drain) ---------------------------------------------------------
    def _on_core_event(self, event: object) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _respond(self, tx: ServerTransaction, status: int, **kwargs: Any) -> None:
        self.endpoint.respond(tx, status, self.now(), **kwargs)

    def _on_request(self, event: RequestReceived) -> None:
        request, tx, dialog = event.request, event.transaction, event.dialog
        method = request.method
        if dialog is None:
            if method == "INVITE":
                self._incoming_invite(request, tx)
            elif method == "OPTIONS":
                self._respond(tx, 200, headers=[("Allow", ALLOW), ("Accept", SDP)])
            elif method in ("INFO", "UPDATE", "REFER", "NOTIFY", "PRACK"):
                self._respond(tx, 481)
            else:
                self._respond(tx, 405, headers=[("Allow", ALLOW)])
            return
        call = dialog.user_data
        if not isinstance(call, Call) or call.ended:
            self._respond(tx, 481)
            return
        try:
            if method == "INVITE" or method == "UPDATE":
                self._modify(call, request, tx)
            elif method == "INFO":
                self._info(call, request, tx)
            elif method == "REFER":
                self._refer(call, request, tx)
            elif method == "NOTIFY":
                self._notify(call, request, tx)
            elif method in ("OPTIONS", "MESSAGE"):
                self._respond(tx, 200, headers=[("Allow", ALLOW)])
            else:
                self._respond(tx, 405, headers=[("Allow", ALLOW)])
        except SipError as error:  # a header or body that does not parse
            if tx.last_response is None or tx.last_response.status < 200:
                self._respond(tx, error.status or 400)

    # --- incoming calls ---------------------------------------------------------------------------------------
    def _incoming_invite(self, request: Request, tx: ServerTransaction) -> None:
        media = self._new_media()
        if request.body:
            if request.content_type != SDP:
                media.close()
                self._respond(tx, 415, headers=[("Accept", SDP)])
                return
            try:
                media.remote = parse_remote(request.body)
            except SdpError:
                media.close()
                self._respond(tx, 400, reason="Bad SDP")
                return
        replaced: Call | None = None
        if "replaces" in request.headers:
            try:
                replaces = request.replaces
            except SipError:
                media.close()
                self._respond(tx, 400, reason="Bad Replaces")
                return
            replaced = self._find_dialog_call(replaces.call_id, replaces.to_tag, replaces.from_tag) \
                if replaces is not None else None
            if replaced is None:
                media.close()
                self._respond(tx, 481)
                return
        call = Call(cast("Phone", self), "in", media, invite=request, server_tx=tx)
        tx.user_data = call
        self._calls[call] = None
        self._emit(IncomingCall(call, request, replaced))
        if replaced is not None:
            call.answer_now()
            self._end_replaced(replaced)
        elif self.answer_mode == "auto":
            if self.ring_delay > 0:
                call.ring_now()
                handle = asyncio.get_running_loop().call_later(self.ring_delay, self._auto_answer, call)
                self._timers.add(handle)
            else:
                self._auto_answer(call)

    def _auto_answer(self, call: Call) -> None:
        if call.state not in (CallState.INCOMING, CallState.RINGING):
            return
        status = self.auto_answer_status
        if 200 <= status < 300:
            call.answer_now(status)
        elif status >= 300:
            call.reject_now(status)
        elif call.state is CallState.INCOMING:
            call.ring_now(status)

    def _find_dialog_call(self, call_id: str, local_tag: str, remote_tag: str) -> Call | None:
        for call in self._calls:
            dialog = call.dialog
            if (dialog is not None and dialog.call_id == call_id and dialog.local_tag == local_tag
                    and dialog.remote_tag == remote_tag):
                return call
        return None

    def _end_replaced(self, call: Call) -> None:
        """RFC 3891 §3: the replaced call ends (BYE once answered, else CANCEL or decline)."""
        if call.state in (CallState.ESTABLISHED, CallState.CONNECTING) and call.dialog is not None:
            self.endpoint.bye(call.dialog, self.now())
            call._end("replaced", None, "remote")
        elif call.state in (CallState.INCOMING, CallState.RINGING):
            call.reject_now(487)
        elif call.state in (CallState.CALLING, CallState.ALERTING) and call.client_tx is not None:
            self.endpoint.cancel(call.client_tx, self.now())
            call._end("replaced", None, "remote")

    def _on_cancelled(self, event: InviteCancelled) -> None:
        call = event.transaction.user_data
        if isinstance(call, Call) and not call.ended:
            call._move(CallInput.RECV_CANCEL)
            call._end("cancelled", 487, "remote")

    def _on_ack(self, event: AckReceived) -> None:
        call = event.dialog.user_data
        if not isinstance(call, Call) or call.ended:
            return
        request = event.request
        if call.offer_in_ack:
            call.offer_in_ack = False
            call.ack_body = request.body or None
            if request.body:
                try:
                    self._remote_description(call, parse_remote(request.body))
                except SdpError:
                    pass
        was = call.state
        call._move(CallInput.RECV_ACK)
        if was is CallState.CONNECTING:
            self._emit(Established(call))
            call._established()

    def _remote_description(self, call: Call, sd: SessionDescription, *, answered: bool = True) -> None:
        """A new description from the far end: record it and report a change of its hold state."""
        before = call.media.remote
        if answered:
            call.media.accept_answer(sd)
        was_held = before is not None and remote_direction(before) in HELD_DIRECTIONS
        now_held = remote_direction(sd) in HELD_DIRECTIONS
        if now_held and not was_held:
            self._emit(Held(call, remote_direction(sd)))
        elif was_held and not now_held:
            self._emit(Resumed(call, remote_direction(sd)))

    # --- requests inside a call -------------------------------------------------------------------------------
    def _modify(self, call: Call, request: Request, tx: ServerTransaction) -> None:
        """A re-INVITE or an UPDATE with an offer: answer it (RFC 3264 §6.1), or offer in the 2xx."""
        if request.body:
            if request.content_type != SDP:
                self._respond(tx, 415, headers=[("Accept", SDP)])
                return
            if call.answer_offers is not None:  # a media stack of the test's (aiortc): its SDP, its session
                self._respond(tx, 200, body=call.answer_offers(request.body), content_type=SDP)
                call._move(CallInput.MODIFY)
                if request.method == "INVITE":
                    self._emit(ReInviteReceived(call, request))
                return
            offer = parse_remote(request.body)
            before = call.media.remote
            try:
                body = call.media.answer(offer)
            except NotAcceptable:
                self._respond(tx, 488)
                return
            self._respond(tx, 200, body=body, content_type=SDP)
            call.media.remote = before
            self._remote_description(call, offer)
        elif request.method == "INVITE":
            body = call.media.offer()  # the answer comes in the ACK
            call.offer_in_ack = True
            self._respond(tx, 200, body=body, content_type=SDP)
        else:
            self._respond(tx, 200)
        call._move(CallInput.MODIFY)
        if request.method == "INVITE":
            self._emit(ReInviteReceived(call, request))

    def _info(self, call: Call, request: Request, tx: ServerTransaction) -> None:
        self._respond(tx, 200)
        content_type = request.content_type
        digit: str | None = None
        if content_type == "application/dtmf-relay":
            for line in request.body.decode("utf-8", "replace").splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal":
                    digit = value.strip()
                    break
        elif content_type == "application/dtmf":
            digit = request.body.decode("utf-8", "replace").strip()
        if digit:
            self._emit(DtmfReceived(call, digit))
        else:
            self._emit(InfoReceived(call, request))

    def _refer(self, call: Call, request: Request, tx: ServerTransaction) -> None:
        try:
            target, replaces = split_refer_to(request)
        except ValueError:
            self._respond(tx, 400, reason="Missing Refer-To")
            return
        self._respond(tx, 202)
        self._emit(ReferReceived(call, request, request.headers.get("Refer-To") or ""))
        if not self.follow_refer:
            return
        self._send_notify(call, 100, final=False)
        headers: list[tuple[str, str]] = []
        if replaces is not None:
            headers.append(("Replaces", replaces))
        referred_by = request.headers.get("Referred-By")
        if referred_by:
            headers.append(("Referred-By", referred_by))
        new_call = self._place_call(target, dest=None, headers=tuple(headers))
        new_call.referred_by = call

    def _send_notify(self, call: Call, status: int, *, final: bool) -> None:
        dialog = call.dialog
        if dialog is None or dialog.terminated:
            return
        reason = REASON_PHRASES.get(status, "Unknown")
        self.endpoint.send_in_dialog(dialog, "NOTIFY", self.now(), body=sipfrag(status, reason),
                                     content_type=SIPFRAG, headers=notify_headers(final))

    def _notify(self, call: Call, request: Request, tx: ServerTransaction) -> None:
        event = request.event
        if event is None or event.package != "refer":
            self._respond(tx, 489)
            return
        self._respond(tx, 200)
        status = parse_sipfrag_status(request.body)
        if status is not None:
            self._emit(TransferProgress(call, status))
        state = request.subscription_state
        final = (status is not None and status >= 200) or (state is not None and state.state == "terminated")
        if final and not call._transfer_done:
            call._transfer_done = True
            self._emit(TransferDone(call, status or 0))

    # --- responses to our requests ------------------------------------------------------------------------------
    def _on_response(self, event: ResponseReceived) -> None:
        self._route_final(event.transaction, event.response, event.response.status, event.dialog)

    def _on_tx_failed(self, event: TransactionTimedOut | TransportError) -> None:
        tx = event.transaction
        if isinstance(tx, ClientTransaction):
            status = 408 if isinstance(event, TransactionTimedOut) else 503
            self._route_final(tx, None, status, tx.dialog)

    def _route_final(self, tx: ClientTransaction, response: Response | None, status: int, dialog: Any) -> None:
        owner = tx.user_data
        if isinstance(owner, Call):
            self._invite_response(owner, tx, response, status, dialog)
        elif status < 200:
            return
        elif isinstance(owner, asyncio.Future):
            if not owner.done():
                owner.set_result(response)
        elif isinstance(owner, Registration):
            owner.on_final(tx, response)
        elif tx.method == "INVITE" and dialog is not None:
            call = dialog.user_data
            if isinstance(call, Call):
                call._reinvite_done(response, status)

    def _invite_response(self, call: Call, tx: ClientTransaction, response: Response | None, status: int,
                         dialog: Any) -> None:
        if dialog is not None:
            if dialog.user_data is None:
                dialog.user_data = call
            if 200 <= status < 300 and call.dialog is not None and call.dialog is not dialog \
                    and call.dialog.state.value == "confirmed":
                self.endpoint.bye(dialog, self.now())  # a second fork answered: we keep the first
                return
            if call.dialog is None or call.dialog.state.value == "early":
                call.dialog = dialog
        if call.ended:
            return
        if status < 200:
            if status > 100:
                if response is not None and response.body:  # early media (RFC 3960): heard, and sent to, at once
                    try:
                        call.media.accept_answer(parse_remote(response.body))
                    except SdpError:
                        pass
                call._move(CallInput.RECV_1XX)
                if call.state is CallState.ALERTING:
                    self._emit(Ringing(call, status))
            return
        if status < 300:
            if call.state is CallState.ESTABLISHED:
                return
            call._move(CallInput.RECV_2XX)
            if call.state is CallState.ENDING:
                return  # our CANCEL crossed it: the endpoint BYEs the dialog, DialogTerminated ends the call
            assert response is not None
            if response.body:
                try:
                    call.media.accept_answer(parse_remote(response.body))
                except SdpError:
                    pass
            self._emit(Answered(call, response))
            self._emit(Established(call))
            call._established()
            if call.referred_by is not None:
                self._send_notify(call.referred_by, status, final=True)
            return
        if response is not None and status in (401, 407) and self.responder is not None and not call._auth_tried:
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            challenges = response.headers.get_all(header)
            if challenges:
                call._auth_tried = True
                name = "Authorization" if status == 401 else "Proxy-Authorization"
                value = self.responder.authorize("INVITE", str(tx.request.uri), challenges, tx.request.body)
                retry = self.endpoint.retry_request(tx, self.now(), headers=[(name, value)])
                retry.user_data = call
                call.client_tx = retry
                return
        if call.referred_by is not None:
            self._send_notify(call.referred_by, status, final=True)
        if call.state is CallState.ENDING:
            call._move(CallInput.RECV_FINAL)
            call._end("cancelled", status, "local")
            return
        call._move(CallInput.RECV_FINAL)
        if response is None:
            call._fail(status, "timeout" if status == 408 else "failed", "local")
        else:
            call._fail(status, "rejected", "remote")

    def _on_dialog_terminated(self, event: DialogTerminated) -> None:
        dialog = event.dialog
        call = dialog.user_data
        if not isinstance(call, Call):
            return
        if not call.ended and call.dialog is dialog:
            reason = event.reason
            if reason == "bye":
                call._end("bye", None, "remote")
            elif reason == "bye-sent":
                call._end("bye", None, "local")
            elif call.direction == "out" and call.state in (CallState.CALLING, CallState.ALERTING):
                return  # an early dialog ended with our INVITE's final response, which ends the call
            else:
                call._end(reason, None, "local")
        if call.ended and call._reinvite is None:
            # Both ended and no re-INVITE of ours awaits its answer: unlinked, the call and its dialog are freed by
            # reference counting instead of waiting (in a cycle) for the garbage collector.
            dialog.user_data = None
