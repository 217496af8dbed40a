"""A relay that dies mid-call: its calls are re-anchored on another relay, or ended cleanly; never left half-dead
(docs/operations.md, "A relay that dies mid-call").

Rules
- Detection is the relay set's (`media/relays.py`): `rtpengine_pings_to_lose` ``ping``s in a row unanswered
  through the ng client's bounded retransmissions (one every `rtpengine_ping_seconds`), or an uptime gone back (a
  restart), is a relay lost; the shell hands that to `lost` with the calls the relay held. A command that timed
  out (a media watch ``query`` among them), or one failed ping, only keeps new calls off the relay until its next
  pong: under overload callbridge's own loop may read a reply too late, and that must not end calls.
  rtpengine keeps its calls in memory only, so a lost relay's calls have no media whatever happens next: the
  parties send to ports nobody reads.
- Re-anchored when another relay is up and the call is two parties talking: the customer and the party its media
  goes to (`MediaAnchor.peers`), both answered, no re-INVITE of ours in progress on either, and the customer hearing
  its peer (no music, ringback, consultation or supervisor listening that the dead relay carried: those are relay
  state this module does not rebuild). The call starts afresh on the new relay from the SDP each party last sent
  us: an ng ``offer`` from the customer toward its peer, then the peer's ``answer`` (`Media.lost` first, so that
  this offer is assigned to a relay that is up). Each party then gets a re-INVITE with the new relay's SDP, as a
  new version of the session it knows (RFC 3264 §8: same ``o=`` session, version + 1, `bridge.present_change`);
  RFC 3264 §8.3.1 lets a re-offer change the address media goes to. The parties' answers name the addresses they
  already had, and rtpengine also learns a party's address from the RTP it sends (symmetric RTP), so the answers
  are not passed through the relay again.
- Otherwise (no other relay up, a call in any other state, the new relay refusing, a re-INVITE refused or
  unanswered) the call is ended by the domain (`Domain.on_relay_lost`): BYE both ways, the CDR's end_reason
  ``relay_lost``, the agent freed as after any hang-up.
- Revival (`revive`, asked by the media watch for a call whose relay stopped carrying its media while still
  answering for it: `media_watch.py`): the same move, after deleting the call's session on its relay so that the
  new offer gets new sockets (on the least loaded relay that is up, which may be the same). A call that is not two
  parties talking is left as it is (the media time-out decides); one the move fails for is ended as above.
- One recovery per call at a time; counted in `MediaAnchor.stats` (``reanchored``, ``revived``, ``relay_lost``)
  and logged. A
  recording running on the dead relay ends with it: its segments written so far stay where the relay wrote them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from callbridge.b2bua.anchor import MediaAnchor, browser
from callbridge.b2bua.bridge import present_change
from callbridge.b2bua.legs import LegTable, ReinviteDone, SipLeg
from callbridge.b2bua.ports import Domain, MediaError
from callbridge.sip.message import Response

__all__ = ["RelayLoss"]

log = logging.getLogger(__name__)


class LossContext(Protocol):
    """What this module reads of the switch."""

    anchor: MediaAnchor
    legs: LegTable
    service: Domain | None

    def report(self, fn: Callable[..., object], *args: object) -> None: ...

    def reinvite(self, leg: SipLeg, body: bytes, done: ReinviteDone, *, defer_ack: bool = False) -> bool: ...


class RelayLoss:
    def __init__(self, sw: LossContext) -> None:
        self.sw = sw
        self._recovering: set[str] = set()

    def lost(self, conn_ids: list[str]) -> None:
        """The relay that held `conn_ids` went down (called by the media shell on the loop)."""
        anchor = self.sw.anchor
        for conn_id in conn_ids:
            if conn_id in anchor.calls and conn_id not in self._recovering:
                self._recovering.add(conn_id)
                anchor.track(asyncio.get_running_loop().create_task(self._recover(conn_id)))

    def _two_parties(self, conn_id: str) -> tuple[SipLeg, SipLeg] | None:
        """The customer and its peer when the call is two parties talking (the module rules), else None."""
        anchor = self.sw.anchor
        customer, peer = self.sw.legs.get(anchor.calls.get(conn_id)), self.sw.legs.get(anchor.peers.get(conn_id))
        heard = anchor.hearing.calls.get(conn_id)
        if customer is None or peer is None or heard is None:
            return None
        if heard.wanted != "peer" or heard.playing is not None or heard.blocked is not None or heard.consulting:
            return None
        if any(leg.listener and leg.conn_id == conn_id for leg in self.sw.legs) \
                or any(page.conn_id == conn_id for page in anchor.listeners.pages.values()):
            return None  # a supervisor's subscription (a phone's or a board page's) was on the dead relay: not rebuilt
        for leg in (customer, peer):
            if (not leg.up or leg.released or leg.reinvite_done is not None or leg.ack_pending
                    or not leg.remote_sdp or leg.peer not in (customer.leg_id, peer.leg_id)):
                return None
        return customer, peer

    def revive(self, conn_id: str) -> bool:
        """The relay of `conn_id` carries none of its media any more though it answers for it (the media watch).
        False when it cannot be done now: no relay up (it may be asked again), or not a call of two parties
        talking, or being recovered already."""
        anchor = self.sw.anchor
        media = anchor.media
        if conn_id not in anchor.calls or conn_id in self._recovering or media is None or not media.available():
            return False
        if self._two_parties(conn_id) is None:
            log.info("call %s: not anchored afresh: the call is not two parties talking", conn_id)
            return False
        self._recovering.add(conn_id)
        anchor.track(asyncio.get_running_loop().create_task(self._revive(conn_id)))
        return True

    async def _revive(self, conn_id: str) -> None:
        anchor = self.sw.anchor
        media = anchor.media
        assert media is not None
        try:
            parties = self._two_parties(conn_id)
            if parties is None:
                return  # changed since `revive` looked
            try:
                await media.delete(conn_id)  # its sockets on the relay are dead: the next offer gets new ones
            except MediaError as exc:
                log.warning("call %s: deleting its session on the relay failed (%s): offered afresh anyway",
                            conn_id, exc)
                media.lost(conn_id)
            if conn_id in anchor.calls and self._two_parties(conn_id) == parties \
                    and await self._move(conn_id, parties):
                anchor.stats["revived"] += 1
                log.warning("call %s: anchored afresh after its relay stopped carrying its media", conn_id)
        finally:
            self._recovering.discard(conn_id)

    async def _recover(self, conn_id: str) -> None:
        anchor = self.sw.anchor
        media = anchor.media
        assert media is not None
        try:
            media.lost(conn_id)
            parties = self._two_parties(conn_id)
            if parties is None or not media.available():
                why = "no other relay is up" if parties is not None else "the call is not two parties talking"
                self._end(conn_id, why)
                return
            if await self._move(conn_id, parties):
                anchor.stats["reanchored"] += 1
                log.warning("call %s: re-anchored on another relay after its relay went down", conn_id)
        finally:
            self._recovering.discard(conn_id)

    async def _move(self, conn_id: str, parties: tuple[SipLeg, SipLeg]) -> bool:
        """The call offered afresh on a relay that is up and each party re-INVITEd with its SDP; True when both
        took it. A failure ends the call (`_end`); a call ended or changed meanwhile is left to that path."""
        anchor = self.sw.anchor
        media = anchor.media
        assert media is not None
        customer, peer = parties
        try:
            to_peer = await media.offer(conn_id, customer.leg_id, peer.leg_id, customer.remote_sdp,
                                        from_browser=browser(customer), to_browser=browser(peer))
            to_customer = await media.answer(conn_id, customer.leg_id, peer.leg_id, peer.remote_sdp,
                                             offerer_browser=browser(customer), answerer_browser=browser(peer))
        except MediaError as exc:
            self._end(conn_id, f"the new relay failed the call ({exc})")
            return False
        if conn_id not in anchor.calls or self._two_parties(conn_id) != parties:
            return False  # ended or changed while the new relay answered: that path owns the call now
        outcomes = await asyncio.gather(self._reinvite(customer, to_customer), self._reinvite(peer, to_peer))
        if conn_id not in anchor.calls:
            return False
        if not all(outcomes):
            self._end(conn_id, "a party did not take the new relay's SDP")
            return False
        return True

    async def _reinvite(self, leg: SipLeg, sdp: bytes) -> bool:
        """A re-INVITE of `leg` with `sdp` (as its party is to see it); True when it was answered 2xx."""
        done: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()

        def answered(response: Response | None) -> None:
            if not done.done():
                done.set_result(response)

        # rtpengine keeps the far end's o= line: the new relay's SDP has the dead one's o=, yet it changed
        if not self.sw.reinvite(leg, present_change(leg, sdp), answered):
            return False
        response = await done
        return response is not None and 200 <= response.status < 300

    def _end(self, conn_id: str, why: str) -> None:
        anchor = self.sw.anchor
        service = self.sw.service
        if conn_id not in anchor.calls or service is None:
            return
        anchor.stats["relay_lost"] += 1
        log.warning("call %s: its media relay went down and %s: ending the call (relay lost)", conn_id, why)
        self.sw.report(service.on_relay_lost, conn_id)
