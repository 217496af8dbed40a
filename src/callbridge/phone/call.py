"""One call of a phone: what the user does to it (ring, answer, reject, hold, refer, DTMF, hang up).

Every method acts on the SIP endpoint at once (the phone's runtime sends what it produced in its next drain) and,
where the far end's answer matters (hold, resume, refer, DTMF), awaits the final response of its request. What the
far end does to the call arrives as events on the phone (`callbridge.phone.events`); the phone's dispatcher
(`callbridge.phone.phone`) moves the call through its state table (`callbridge.phone.states`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from callbridge.phone.events import CallEnded, CallFailed
from callbridge.phone.media import MediaSession, NotAcceptable, parse_remote
from callbridge.phone.rtp_endpoint import RtpEndpoint
from callbridge.phone.states import CallInput, CallState, CallStateError, next_state
from callbridge.sip import Request, Response, SdpError, SessionDescription
from callbridge.sip.dialog import Dialog
from callbridge.sip.transaction import ClientTransaction, ServerTransaction
from callbridge.sip.uri import URI

if TYPE_CHECKING:
    from callbridge.phone.phone import Phone

__all__ = ["SDP", "Call", "CallError"]

SDP = "application/sdp"
DTMF_RELAY = "application/dtmf-relay"
DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")


class CallError(Exception):
    """A request of the call failed: ``status`` is its final status (408 time-out, 503 transport failure)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(f"{message}: {status}")
        self.status = status


class Call:
    """One call; ``direction`` is "in" (we received the INVITE) or "out"."""

    def __init__(self, phone: Phone, direction: Literal["in", "out"], media: MediaSession, *,
                 invite: Request | None = None, server_tx: ServerTransaction | None = None,
                 client_tx: ClientTransaction | None = None) -> None:
        self.phone = phone
        self.direction = direction
        self.media = media
        self.state = CallState.INCOMING if direction == "in" else CallState.CALLING
        self.invite = invite  # the INVITE that started it (received, or ours as sent)
        self.server_tx = server_tx
        self.client_tx = client_tx
        self.dialog: Dialog | None = None
        self.end_reason: str | None = None
        self.end_status: int | None = None
        self.ended_by: str | None = None
        self.referred_by: Call | None = None  # the call whose REFER made this one
        self.offer_in_ack = False  # we put an offer in our 2xx (offer-less INVITE): the answer comes in the ACK
        self.ack_body: bytes | None = None  # that ACK's SDP as received (for a media stack given `answer(sdp=)`)
        # A media stack outside the phone (given `answer(sdp=)`: aiortc's WebRTC) answers the far end's re-offers:
        # given the offer, the SDP our 2xx carries (the stack takes the offer itself, on `ReInviteReceived`).
        self.answer_offers: Callable[[bytes], bytes] | None = None
        self._auth_tried = False  # our INVITE was re-sent with credentials once
        self._transfer_done = False  # a REFER of ours reached its final NOTIFY
        self._answered: asyncio.Future[Call] | None = None
        self._reinvite: asyncio.Future[int] | None = None
        # The call's RTP endpoint when the phone sends media (Phone.start(media=True)), else None.
        self.rtp: RtpEndpoint | None = None
        if media.rtp_socket is not None:
            self.rtp = RtpEndpoint(self, media.rtp_socket, symmetric=phone.symmetric_rtp)

    def __repr__(self) -> str:
        call_id = self.invite.call_id if self.invite is not None else "?"
        return f"<Call {self.direction} {self.state.value} {call_id}>"

    # --- views --------------------------------------------------------------------------------------------
    @property
    def call_id(self) -> str | None:
        return self.invite.call_id if self.invite is not None else None

    @property
    def local_sdp(self) -> SessionDescription | None:
        body = self.media.local
        return parse_remote(body) if body is not None else None

    @property
    def remote_sdp(self) -> SessionDescription | None:
        return self.media.remote

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    @property
    def on_hold(self) -> bool:
        """We hold the far end (our last offer was sendonly)."""
        return self.media.holding

    # --- state ----------------------------------------------------------------------------------------------
    def _move(self, event: CallInput) -> CallState:
        self.state = next_state(self.state, event)
        return self.state

    def _end(self, reason: str, status: int | None, by: Literal["local", "remote"]) -> None:
        """Move to ended (once) and report it; the phone forgets the call."""
        if self.ended_by is not None:
            return
        self.state = CallState.ENDED
        self.end_reason, self.end_status, self.ended_by = reason, status, by
        tx = self.server_tx
        if tx is not None and tx.user_data is self:
            # Nothing reads it once the call ended; unlinked, an ended call is freed by reference counting instead
            # of waiting (in a cycle with its transaction) for the garbage collector.
            tx.user_data = None
        phone = self.phone
        phone._forget(self)
        if self.rtp is not None:
            self.rtp.close()
        fut = self._answered
        if fut is not None and not fut.done():
            fut.set_exception(CallError(f"call ended ({reason})", status or 0))
            fut.exception()  # retrieved: nobody may be awaiting it
        phone._emit(CallEnded(self, reason, status, by))

    def _fail(self, status: int, reason: str, by: Literal["local", "remote"]) -> None:
        self.phone._emit(CallFailed(self, status))
        self._end(reason, status, by)

    def _established(self) -> None:
        fut = self._answered
        if fut is not None and not fut.done():
            fut.set_result(self)

    async def wait_answered(self, timeout: float | None = 30.0) -> Call:
        """Until the call is established (returns it) or ends (raises `CallError` with the final status)."""
        if self.state is CallState.ESTABLISHED:
            return self
        if self.state is CallState.ENDED:
            raise CallError("call ended", self.end_status or 0)
        if self._answered is None:
            self._answered = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(asyncio.shield(self._answered), timeout)

    # --- answering side -------------------------------------------------------------------------------------
    def _require_incoming(self) -> ServerTransaction:
        if self.direction != "in" or self.server_tx is None or self.state not in (CallState.INCOMING,
                                                                                   CallState.RINGING):
            raise CallStateError(f"{self!r} is not an unanswered incoming call")
        return self.server_tx

    async def ring(self, status: int = 180) -> None:
        """Send a provisional response (180 Ringing by default) without answering."""
        self.ring_now(status)

    def ring_now(self, status: int = 180) -> None:
        tx = self._require_incoming()
        if not 100 < status < 200:
            raise ValueError(f"{status} is not a provisional status")
        phone = self.phone
        phone.endpoint.respond(tx, status, phone.now())
        self._move(CallInput.SEND_1XX)
        self._link(tx.dialog)
        phone.runtime.wake()

    async def answer(self, status: int = 200, *, sdp: bytes | None = None) -> None:
        """Answer with a 2xx carrying our SDP (the answer to the INVITE's offer, or an offer if it had none), or
        `sdp` as given: the answer of a media stack the phone does not own (a WebRTC peer's, in tests)."""
        self.answer_now(status, sdp=sdp)

    def answer_now(self, status: int = 200, *, sdp: bytes | None = None) -> None:
        tx = self._require_incoming()
        phone = self.phone
        assert self.invite is not None
        offer = self.media.remote
        if sdp is not None:
            body = sdp
            self.offer_in_ack = offer is None  # `sdp` is then our offer (RFC 3264 in the 2xx, answer in the ACK)
        elif offer is not None:
            try:
                body = self.media.answer(offer)
            except NotAcceptable:
                self.reject_now(488)
                return
        else:
            body = self.media.offer()  # RFC 3725 flow I: the answer comes in the ACK
            self.offer_in_ack = True
        phone.endpoint.respond(tx, status, phone.now(), body=body, content_type=SDP)
        self._move(CallInput.SEND_2XX)
        self._link(tx.dialog)
        phone.runtime.wake()

    async def reject(self, status: int = 486, reason: str | None = None) -> None:
        """Refuse the call with any final non-2xx status."""
        self.reject_now(status, reason)

    def reject_now(self, status: int = 486, reason: str | None = None) -> None:
        tx = self._require_incoming()
        if status < 300:
            raise ValueError(f"{status} does not reject a call")
        phone = self.phone
        phone.endpoint.respond(tx, status, phone.now(), reason=reason)
        phone.runtime.wake()
        self._end("rejected", status, "local")

    def _link(self, dialog: Dialog | None) -> None:
        if dialog is not None and self.dialog is None:
            self.dialog = dialog
            dialog.user_data = self

    # --- both sides -------------------------------------------------------------------------------------------
    async def hangup(self) -> None:
        """BYE an answered call, CANCEL our unanswered INVITE, or decline (603) an unanswered incoming one."""
        phone = self.phone
        state = self.state
        if state is CallState.ENDED:
            return
        if state in (CallState.INCOMING, CallState.RINGING):
            self.reject_now(603)
            return
        if state in (CallState.CALLING, CallState.ALERTING):
            assert self.client_tx is not None
            self._move(CallInput.HANGUP)
            phone.endpoint.cancel(self.client_tx, phone.now())
            phone.runtime.wake()
            return
        if state is CallState.ENDING:
            return
        assert self.dialog is not None
        self._move(CallInput.HANGUP)
        if not self.dialog.terminated:
            phone.endpoint.bye(self.dialog, phone.now())
            phone.runtime.wake()
        self._end("bye", None, "local")

    def _require_established(self) -> Dialog:
        if self.state is not CallState.ESTABLISHED or self.dialog is None:
            raise CallStateError(f"{self!r} is not established")
        return self.dialog

    async def _request(self, method: str, *, body: bytes = b"", content_type: str | None = None,
                       headers: tuple[tuple[str, str], ...] = (), timeout: float = 32.0) -> Response | None:
        """Send a request in the call's dialog; its final response (None when it timed out or failed to go)."""
        dialog = self._require_established()
        phone = self.phone
        fut: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
        tx = phone.endpoint.send_in_dialog(dialog, method, phone.now(), body=body, content_type=content_type,
                                           headers=headers)
        tx.user_data = fut
        phone.runtime.wake()
        return await asyncio.wait_for(fut, timeout)

    async def _reinvite_with(self, holding: bool, timeout: float) -> int:
        dialog = self._require_established()
        if self._reinvite is not None:
            raise CallStateError("a re-INVITE of ours is already in progress")
        phone = self.phone
        previous = self.media.holding
        self.media.holding = holding
        body = self.media.offer()
        self._reinvite = asyncio.get_running_loop().create_future()
        try:
            phone.endpoint.send_in_dialog(dialog, "INVITE", phone.now(), body=body, content_type=SDP)
            phone.runtime.wake()
            status = await asyncio.wait_for(asyncio.shield(self._reinvite), timeout)
        finally:
            self._reinvite = None
        if not 200 <= status < 300:
            self.media.holding = previous
            raise CallError("re-INVITE failed", status)
        return status

    def _reinvite_done(self, response: Response | None, status: int) -> None:
        """The final response to our re-INVITE (a 491 is retried by the endpoint: keep waiting)."""
        if status == 491:
            return
        if response is not None and 200 <= status < 300 and response.body:
            try:
                self.media.accept_answer(parse_remote(response.body))
            except SdpError:
                pass
        fut = self._reinvite
        if fut is not None and not fut.done():
            fut.set_result(status)

    async def hold(self, timeout: float = 32.0) -> None:
        """Put the far end on hold: a re-INVITE whose offer is ``a=sendonly`` (RFC 3264 §8.4), o= version + 1."""
        await self._reinvite_with(True, timeout)

    async def resume(self, timeout: float = 32.0) -> None:
        """Take the far end off hold: a re-INVITE offering ``a=sendrecv`` again, o= version + 1."""
        await self._reinvite_with(False, timeout)

    async def send_dtmf(self, digits: str, *, duration: int = 160, timeout: float = 32.0) -> None:
        """One INFO per digit (application/dtmf-relay, ``Signal=<d>\\r\\nDuration=<ms>``), each sent after the
        previous one was answered, so that they arrive in order."""
        bad = [d for d in digits if d not in DTMF_DIGITS]
        if bad:
            raise ValueError(f"not DTMF digits: {bad!r}")
        for digit in digits:
            body = f"Signal={digit}\r\nDuration={duration}\r\n".encode()
            response = await self._request("INFO", body=body, content_type=DTMF_RELAY, timeout=timeout)
            status = response.status if response is not None else 408
            if not 200 <= status < 300:
                raise CallError(f"INFO for DTMF {digit!r} failed", status)

    async def refer(self, target: str | URI, replaces: Call | None = None, *, timeout: float = 32.0) -> int:
        """Transfer the far end to ``target`` with REFER (RFC 3515); attended when ``replaces`` is our other call
        to the target (Refer-To carries ``?Replaces=``, RFC 3891). Returns the REFER's status (202); the
        progress arrives as `TransferProgress` and `TransferDone` events."""
        from callbridge.phone.transfer import refer_to_value

        refer_to = refer_to_value(target, replaces)
        headers = (("Refer-To", refer_to), ("Referred-By", f"<{self.phone.aor}>"))
        response = await self._request("REFER", headers=headers, timeout=timeout)
        status = response.status if response is not None else 408
        if not 200 <= status < 300:
            raise CallError("REFER refused", status)
        return status

    async def info(self, body: bytes, content_type: str, *, timeout: float = 32.0) -> int:
        """Any INFO; returns its final status."""
        response = await self._request("INFO", body=body, content_type=content_type, timeout=timeout)
        return response.status if response is not None else 408
