"""Our re-INVITEs on a leg (hold, resume, mute, moving an offer across a bridge) and their outcome.

Rules (RFC 3261 §14, RFC 3264, RFC 3725)
- One at a time per leg (§14.1): none is sent while one of ours is in progress (`reinvite_done` is its
  completion), nor while the leg's 2xx awaits the ACK that carries an answer (`ack_pending`), nor on a leg that is
  not up. The caller then gets False, and decides (a relayed offer is answered 491, an action fails).
- An offer-less re-INVITE (`defer_ack`, RFC 3725: asking a party for an offer to bridge it) keeps its 2xx un-ACKed:
  the 2xx holds the offer, and the ACK carries the answer once the other side gave it (`ack_pending`). Every other
  2xx is ACKed at once, the answer it carries remembered as the party's SDP.
- A 491 the endpoint retries after the §14.1 delay (glare), or a 500 with Retry-After it retries after that delay
  (§14.2: the phone still busy with an INVITE; at most 3 times, about 4 s), completes nothing: the retry's answer
  does. A re-INVITE
  that got no answer (time-out, transport error), or whose leg's dialog ended, completes with None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callbridge.b2bua.bridge import SDP
from callbridge.b2bua.legs import LegTable, ReinviteDone, SipLeg
from callbridge.sip.dialog import Dialog, DialogError
from callbridge.sip.message import Response

if TYPE_CHECKING:
    from callbridge.b2bua.context import ReinviteContext

__all__ = ["reinvite_failed", "reinvite_response", "send_reinvite"]


def send_reinvite(sw: ReinviteContext, leg: SipLeg, body: bytes, done: ReinviteDone, defer_ack: bool) -> bool:
    """Send a re-INVITE on `leg` (an offer, or none with `defer_ack`); False when one cannot be sent now."""
    if not leg.up or leg.reinvite_done is not None or leg.ack_pending:
        return False
    assert leg.dialog is not None
    try:
        sw.endpoint.send_in_dialog(leg.dialog, "INVITE", sw.now(), body=body, content_type=SDP if body else None)
    except DialogError:
        return False
    leg.reinvite_done, leg.defer_ack = done, defer_ack
    sw.write_cseq(leg)
    sw.wake()
    return True


def reinvite_response(sw: ReinviteContext, response: Response, dialog: Dialog | None) -> None:
    """A response to an INVITE in `dialog` (ours; the endpoint's own session refreshes and glare retries too)."""
    status = response.status
    leg = LegTable.of_dialog(dialog)
    if status < 200 or dialog is None:
        return
    if 200 <= status < 300 and dialog.unacked_invite is not None:
        if leg is not None and leg.defer_ack and leg.reinvite_done is not None:
            leg.ack_pending = True
            leg.remote_sdp = response.body
        else:
            sw.endpoint.ack(dialog, sw.now())
    if leg is None or leg.reinvite_done is None:
        return
    if status in (491, 500) and dialog.glare_retry is not None:
        return  # the endpoint re-sends it after the §14.1 delay (or 500's Retry-After); its answer completes it
    if 200 <= status < 300 and response.body and not leg.defer_ack:
        leg.remote_sdp = response.body
        sw.write_cseq(leg)  # the answer is written through with the dialog (dialogs.py)
    done, leg.reinvite_done, leg.defer_ack = leg.reinvite_done, None, False
    done(response)


def reinvite_failed(leg: SipLeg | None) -> None:
    """No answer to our re-INVITE on `leg` (or its dialog ended): it completes with None."""
    if leg is not None and leg.reinvite_done is not None:
        done, leg.reinvite_done, leg.defer_ack = leg.reinvite_done, None, False
        done(None)
