"""Bridging two legs, and the SDP each side is shown (media between the parties, or through the media plane).

Rules (RFC 3264, RFC 3725):
- Each party sees one consistent session from us: the first SDP we relay to a party is passed as it is, and every
  later one is shown as a new version of that session (`o=` username, session id and address kept, version + 1,
  `sdp.rebase_origin`), whoever the far end is now (§8). SDP that does not parse is passed through untouched.
- `connect(a, b)`: an incoming leg still ringing is answered 200 with the other leg's SDP. Two established legs
  are joined by moving an offer across: a leg whose 2xx we have not ACKed yet (it answered an offer-less INVITE,
  RFC 3725 flow I, so its 2xx holds an offer) gives its offer to the other leg in a re-INVITE, and the answer
  goes back in the ACK. When neither leg has an offer pending, one is asked for with an offer-less re-INVITE.
- An offer moved to a leg whose own re-INVITE is still in progress is moved once that one is done.
- Parking (a dial: the agent's phone answers first, the customer may ring for up to the dial timeout). A leg whose
  2xx holds an offer cannot wait for its ACK until the party that offer goes to answers: the phone retransmits
  that 2xx for 64*T1 only (32 s) and then hangs up (RFC 3261 §13.3.1.4), and RFC 3725 §4.1 keeps flow I for a
  party that answers at once. So when the offer is handed to a leg that may ring, `park` ACKs the 2xx at once
  with an answer that sends no media (`sdp.inactive_answer`: every stream accepted with one of its codecs,
  `a=inactive`, the black-hole address; our own `o=` session, version 1), as step 3 of RFC 3725 §4.3 (flow III)
  does. When that leg answers, `connect` brings the parked party to it with a re-INVITE carrying the answerer's
  SDP as a new version of our session (same `o=` session id, version + 1, RFC 3264 §8), as flow III's steps 6-9
  do; the answerer got the parked party's own offer in its INVITE (flow I's step 3, since a trunk may refuse an
  INVITE without an offer), and was ACKed when it answered.
- Anchored calls (`anchor.py`, docs/design.md "Media"): every offer and answer moved from one leg to another goes
  through the media plane first (`sw.anchor.offer`/`answer`), and what the relay gives is what `present` shows;
  the step continues when the relay has answered. For a direct call those steps run at once with the SDP as it is.
- A re-INVITE or UPDATE from one party is relayed to the party it is bridged to, the answer relayed back; a
  re-INVITE without SDP, or one from a party bridged to nobody, is answered with the SDP that party last got
  from us (the session does not change). A relayed request that crosses one of ours gets 491 (§14.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from callbridge.b2bua.legs import SipLeg
from callbridge.sip.message import Request, Response
from callbridge.sip.sdp import Origin, SdpError, SessionDescription, inactive_answer, rebase_origin
from callbridge.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from callbridge.b2bua.context import BridgeContext

SDP = "application/sdp"

__all__ = ["SDP", "connect", "modify_own", "park", "park_on_relay", "present", "present_change", "relay_offer"]
# RFC 4566 §5.2 suggests an NTP timestamp for an o= session id: seconds from 1900 to the Unix epoch.
_NTP_EPOCH_OFFSET = 2_208_988_800


def present(leg: SipLeg, sdp: bytes) -> bytes:
    """`sdp`, written by the far end, as `leg`'s party is to see it; remembered as what we sent it.

    The first SDP a party gets is passed as it is, and its `o=` is worked out only when a later SDP or a change
    of ours needs it (`_settle_origin`): most calls never re-negotiate, so their SDP is never parsed."""
    if not sdp:
        return sdp
    if leg.origin_pending:
        _settle_origin(leg)
    if leg.sent_origin is None:
        leg.sent_sdp = sdp
        leg.origin_pending = True
        return sdp
    try:
        sd = SessionDescription.parse(sdp)
        far = sd.origin
    except SdpError:
        leg.sent_sdp = sdp
        return sdp
    if leg.relayed_origin == far:
        sd.origin = leg.sent_origin  # the same far session, unchanged: same version
        out = bytes(sd)
    else:
        rebased = rebase_origin(sd, leg.sent_origin)
        leg.sent_origin, leg.relayed_origin = rebased.origin, far
        out = bytes(rebased)
    leg.sent_sdp = out
    return out


def present_change(leg: SipLeg, sdp: bytes) -> bytes:
    """`sdp` as `present` shows it, but always as a new version of the session `leg`'s party knows (RFC 3264 §8):
    for an SDP whose far-end `o=` is one `leg` was already shown although what it describes changed (rtpengine
    keeps the far end's `o=`, so a call moved to another relay looks like the same version, `relay_loss.py`)."""
    if leg.origin_pending:
        _settle_origin(leg)
    leg.relayed_origin = None
    return present(leg, sdp)


def _settle_origin(leg: SipLeg) -> None:
    """The `o=` of the SDP passed as it is to `leg`'s party: the session that party knows our side by from now on
    (none when that SDP does not parse: the next one that does is passed as it is in its turn)."""
    leg.origin_pending = False
    try:
        origin = SessionDescription.parse(leg.sent_sdp).origin
    except SdpError:
        return
    leg.sent_origin = leg.relayed_origin = origin


def modify_own(leg: SipLeg, change: Callable[[SessionDescription], SessionDescription]) -> bytes | None:
    """A new version of the SDP we last sent `leg` (hold, resume, mute), or None when there is none to change."""
    if not leg.sent_sdp:
        return None
    if leg.origin_pending:
        _settle_origin(leg)
    try:
        sd = change(SessionDescription.parse(leg.sent_sdp))
    except SdpError:
        return None
    if leg.sent_origin is not None:
        sd.origin = leg.sent_origin.next_version()
    else:
        sd.bump_version()
    leg.sent_origin, leg.relayed_origin = sd.origin, None  # the next relay is a change again
    leg.sent_sdp = bytes(sd)
    return leg.sent_sdp


def connect(sw: BridgeContext, a: SipLeg, b: SipLeg) -> None:
    """Make `a` and `b` talk to each other (see the module rules)."""
    a.peer, b.peer = b.leg_id, a.leg_id
    a.early_peer = b.early_peer = None
    for x, y in ((a, b), (b, a)):
        if x.direction == "in" and x.ringing and x.server_tx is not None:
            _answer_incoming(sw, x, y)
            return
    for x, y in ((a, b), (b, a)):
        if y.parked and x.offer_source == y.leg_id:
            _unpark(sw, parked=y, answerer=x)  # x answered y's offer; y sends no media yet (dial, RFC 3725 §4.3)
            return
    for x, y in ((a, b), (b, a)):
        if y.ack_pending and x.offer_source == y.leg_id:
            sw.ack(y, present(y, x.remote_sdp))  # x answered y's offer already (dial: RFC 3725 flow I)
            return
    for x, y in ((a, b), (b, a)):
        if y.ack_pending:
            _move_offer(sw, offerer=y, answerer=x)
            return
    if not (a.up and b.up):
        return

    def offered(response: Response | None) -> None:
        if response is not None and 200 <= response.status < 300 and b.ack_pending:
            b.remote_sdp = response.body
            _move_offer(sw, offerer=b, answerer=a)

    if not sw.reinvite(b, b"", offered, defer_ack=True):
        sw.log.warning("could not ask leg %s for an offer to bridge it with %s", b.leg_id, a.leg_id)


def _answer_incoming(sw: BridgeContext, incoming: SipLeg, answerer: SipLeg) -> None:
    """200 to the ringing `incoming` leg with `answerer`'s answer to its offer."""
    sw.anchor.answer(incoming.conn_id, incoming, answerer, answerer.remote_sdp,
                     lambda sdp: sw.answer_incoming(incoming, present(incoming, sdp)))


def park(sw: BridgeContext, leg: SipLeg) -> None:
    """ACK `leg`'s 2xx now, answering its offer with no media (module rules, "Parking").

    An offer that does not parse is left waiting for its ACK as before (flow I): there is nothing to answer it
    with."""
    try:
        offer = SessionDescription.parse(leg.remote_sdp)
    except SdpError:
        return
    origin = _our_origin(sw)
    answer = bytes(inactive_answer(offer, origin))
    leg.sent_sdp, leg.sent_origin, leg.relayed_origin, leg.origin_pending = answer, origin, None, False
    leg.parked = True
    sw.ack(leg, answer)


def _our_origin(sw: BridgeContext) -> Origin:
    host = sw.endpoint.host
    return Origin("callbridge", str(int(sw.wall()) + _NTP_EPOCH_OFFSET), 1, "IN", "IP6" if ":" in host else "IP4",
                  host)


def park_on_relay(sw: BridgeContext, leg: SipLeg, customer: SipLeg, offer: bytes, then: Callable[[], None]) -> None:
    """`park` on an anchored call (module rules, "Parking"): `offer` is the relay's offer of `leg`'s SDP toward
    `customer`, not called yet. The relay is given a stand-in answer from `customer` that sends no media
    (`sdp.inactive_answer` of that offer), and `leg`'s 2xx is ACKed with the answer the relay makes of it: the
    agent's phone (or page: WebRTC) names the relay from the start, and the customer's real answer later goes
    through the relay as a second answer to the same offer (`_unpark`; rtpengine keeps each side's ports).
    `then` runs once the ACK went (the customer is called after it, so its answer cannot overtake the stand-in)."""
    try:
        stand_in = bytes(inactive_answer(SessionDescription.parse(offer), _our_origin(sw)))
    except SdpError:
        park(sw, leg)
        then()
        return
    leg.parked = True

    def answered(sdp: bytes) -> None:
        if leg.ack_pending:
            sw.ack(leg, present(leg, sdp))
        then()

    sw.anchor.answer(leg.conn_id, leg, customer, stand_in, answered)


def _unpark(sw: BridgeContext, *, parked: SipLeg, answerer: SipLeg) -> None:
    """`answerer` answered `parked`'s offer: re-INVITE `parked` with that answer as our session's next version."""
    parked.parked = False

    def answered(response: Response | None) -> None:
        if response is None or not 200 <= response.status < 300:
            sw.log.warning("leg %s refused the media of leg %s (%s): the call has no media", parked.leg_id,
                           answerer.leg_id, response.status if response is not None else "no response")

    def bring(sdp: bytes) -> None:
        brought = not parked.up or sw.reinvite(parked, present(parked, sdp), answered)
        if not brought:
            answered(None)

    def send() -> None:
        # A 2xx without the answer its INVITE's offer called for leaves nothing to bring to the parked party.
        if not answerer.remote_sdp:
            answered(None)
            return
        # anchored: the answer to the parked party's offer goes through the relay (`park_on_relay` gave it a
        # stand-in first), and the parked party is re-INVITEd with what the relay makes of it
        sw.anchor.answer(parked.conn_id or answerer.conn_id, parked, answerer, answerer.remote_sdp, bring)

    pending = parked.reinvite_done
    if pending is not None and parked.up:
        # A re-INVITE of ours is still in progress on the parked leg (§14.1: one at a time): send once it is done.
        def then(response: Response | None) -> None:
            pending(response)
            send()

        parked.reinvite_done = then
        return
    send()


def _move_offer(sw: BridgeContext, *, offerer: SipLeg, answerer: SipLeg) -> None:
    """`offerer`'s 2xx holds an offer and waits for its ACK: offer it to `answerer`, ACK with the answer."""

    conn_id = offerer.conn_id or answerer.conn_id

    def answered(response: Response | None) -> None:
        if offerer.ack_pending:
            if response is not None and 200 <= response.status < 300 and response.body:
                answerer.remote_sdp = response.body
            sw.anchor.answer(conn_id, offerer, answerer, answerer.remote_sdp,
                             lambda sdp: sw.ack(offerer, present(offerer, sdp)))

    pending = answerer.reinvite_done
    if pending is not None and answerer.up:
        # A re-INVITE of ours is still in progress on the answerer (a transfer's hold, when the target answered
        # first): move the offer once it is done, rather than ACK the offerer with a stale answer and leave the
        # answerer's party talking to a leg that is gone (§14.1: one INVITE transaction at a time).
        def then(response: Response | None) -> None:
            pending(response)
            _move_offer(sw, offerer=offerer, answerer=answerer)

        answerer.reinvite_done = then
        return

    def send(sdp: bytes) -> None:
        if not sw.reinvite(answerer, present(answerer, sdp), answered):
            answered(None)

    sw.anchor.offer(conn_id, offerer, answerer, offerer.remote_sdp, send)


def relay_offer(sw: BridgeContext, leg: SipLeg, tx: ServerTransaction, request: Request) -> None:
    """A re-INVITE or UPDATE from `leg`'s party: relay its offer to the peer and the answer back."""
    peer = sw.legs.get(leg.peer)
    if not request.body or peer is None or not peer.up:
        sw.respond(tx, 200, body=leg.sent_sdp if request.method == "INVITE" else b"")
        return
    leg.remote_sdp = request.body
    conn_id = leg.conn_id

    def answered(response: Response | None) -> None:
        if response is None:
            sw.respond(tx, 500)
        elif 200 <= response.status < 300:
            peer.remote_sdp = response.body or peer.remote_sdp
            status = response.status
            if response.body:
                def answer(sdp: bytes) -> None:
                    sw.respond(tx, status, body=present(leg, sdp))
                    sw.write_cseq(leg)  # the SDPs it changed are written through (dialogs.py)

                sw.anchor.answer(conn_id, leg, peer, response.body, answer)
            else:
                sw.respond(tx, status, body=b"")
        else:
            sw.respond(tx, response.status)

    def send(sdp: bytes) -> None:
        offer = present(peer, sdp)
        if request.method == "INVITE":
            if not sw.reinvite(peer, offer, answered):
                sw.respond(tx, 491)
        elif not sw.request_in_dialog(peer, "UPDATE", offer, SDP, answered):
            sw.respond(tx, 500)

    sw.anchor.hearing.peer_offered(conn_id, leg.leg_id, request.body)  # the agent's phone holding (hearing.py)
    sw.anchor.offer(conn_id, leg, peer, request.body, send)
