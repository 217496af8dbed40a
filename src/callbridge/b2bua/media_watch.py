"""What the relay tells of an anchored call's media, turned into domain reports (docs/operations.md, "DTMF" and
"Dead media").

Rules
- DTMF: a digit the relay saw (its DTMF log, `media/dtmf_log.py`, wired by bootstrap) is reported to the domain
  (`Domain.on_dtmf`) when its call is anchored here and the media that carried it is the customer's. Digits in
  the other parties' media are not reported: rtpengine 10.5 also logs the digits ``play DTMF`` injects toward the
  customer (api=dtmf) under the tag of the customer's peer, so an agent's own key presses cannot be told from them.
- Dead media: every `interval` seconds (`poll_interval`: a quarter of the time-out, between 0.2 and 5 s) each
  anchored call's relay is asked how many RTP packets it has received from each party (`Media.packets`, ng
  ``query``), all calls at once and each bounded by the ng time-out, off the loop's critical path (a task of its
  own; the loop only waits on sockets). The parties judged are the customer and the party its media goes to now,
  once answered, and only while they are to send (their last SDP and ours allow it: a party on hold or muted was
  told not to send, RFC 3264 §6.1). A party whose count has not moved for `timeout` seconds ends the call
  (`Domain.on_media_timeout`, once per call): the domain releases every leg (BYE both ways) and writes the CDR
  with end_reason "media_timeout". Found with 10.5: the per-stream ``last packet`` of ``query`` is whole seconds
  of the relay's wall clock, so counters compared on callbridge's own monotonic clock are used instead.
- Revival: a relay can stop carrying a call's media while it still answers for it (rtpengine 10.5 stops reading a
  media socket for good once it fell behind: docs/peers.md); the parties then hear nothing until the time-out
  ends the call. So a call whose judged parties all sent media before and have all been silent for `revive_after`
  seconds (shorter than the time-out; 0: never) is first anchored afresh (`revive`: `relay_loss.py` deletes the
  relay's session and offers the call again, new sockets, a re-INVITE to each party), once per silence: a call is
  revived again only after its counters moved forward since (a revived session counts from 0, which is not moving
  forward). One party silent alone (its phone, its network) is not revived, nor a call whose parties never sent:
  the time-out ends them as before.
- A call one exchange of which went direct (the relay failed an offer or answer, `anchor.py`) is not watched any
  more: its media may flow between the parties, past the relay's counters.
- A relay that does not answer (`MediaUnavailable`) is no report: the call's clocks restart (the relay's own
  failure is not the parties' silence). A relay that no longer knows the call (`MediaRefused`: deleted by its own
  time-out, or restarted) carries no media for it: its parties count as silent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from callbridge.b2bua.anchor import MediaAnchor
from callbridge.b2bua.legs import LegTable, SipLeg
from callbridge.b2bua.ports import Domain, MediaRefused, MediaUnavailable
from callbridge.sip.sdp import SdpError, SessionDescription

__all__ = ["MediaWatch", "poll_interval", "sends"]

log = logging.getLogger(__name__)


class WatchContext(Protocol):
    """What this module reads of the switch."""

    anchor: MediaAnchor
    legs: LegTable
    service: Domain | None

    def report(self, fn: Callable[..., object], *args: object) -> None: ...


def poll_interval(timeout: float) -> float:
    return min(5.0, max(0.2, timeout / 4))


def _directions(sdp: bytes) -> set[str] | None:
    if not sdp:
        return None
    try:
        sd = SessionDescription.parse(sdp)
    except SdpError:
        return None
    return {sd.direction(m) for m in sd.media if m.port != 0}


def sends(leg: SipLeg) -> bool:
    """Whether `leg`'s party is to send RTP now: answered, and neither its last SDP (recvonly, inactive) nor ours
    to it (sendonly, inactive) stops it (RFC 3264 §6.1). An SDP that cannot be read does not stop it."""
    if not leg.up:
        return False
    theirs, ours = _directions(leg.remote_sdp), _directions(leg.sent_sdp)
    if theirs is not None and theirs and theirs <= {"recvonly", "inactive"}:
        return False
    return not (ours is not None and ours and ours <= {"sendonly", "inactive"})


class MediaWatch:
    def __init__(self, sw: WatchContext, *, timeout: float = 0.0, clock: Callable[[], float] | None = None,
                 revive_after: float = 0.0, revive: Callable[[str], bool] | None = None) -> None:
        self.sw = sw
        self.timeout = timeout  # 0: dead media is not watched
        self.interval = poll_interval(timeout)
        self.clock = clock or asyncio.get_running_loop().time
        # a revival only before the time-out, and only with someone to do it
        self.revive_after = revive_after if revive is not None and 0 < revive_after < timeout else 0.0
        self.revive = revive
        self.stats = {"dtmf": 0, "dtmf_ignored": 0, "polls": 0, "media_timeouts": 0, "revivals": 0}
        self._seen: dict[tuple[str, str], tuple[int, float]] = {}  # (conn_id, leg_id) -> (packets, since)
        self._ended: set[str] = set()
        self._revived: set[str] = set()  # revived in their current silence

    # --- DTMF -----------------------------------------------------------------------------------------------------
    def dtmf(self, conn_id: str, leg_id: str, digit: str, duration_ms: int) -> None:
        """The relay saw `digit` in `leg_id`'s media of call `conn_id`."""
        service = self.sw.service
        if service is None or self.sw.anchor.calls.get(conn_id) != leg_id:
            self.stats["dtmf_ignored"] += 1
            return
        self.stats["dtmf"] += 1
        self.sw.report(service.on_dtmf, conn_id, leg_id, digit, duration_ms)

    # --- dead media -----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Poll until cancelled (bootstrap starts it when a relay and a time-out are configured)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except Exception:
                log.exception("watching the media of anchored calls failed")

    async def poll(self) -> None:
        anchor = self.sw.anchor
        media = anchor.media
        if media is None or self.timeout <= 0:
            return
        self.stats["polls"] += 1
        calls = dict(anchor.calls)
        self._ended &= set(calls)
        self._revived &= set(calls)
        for key in [k for k in self._seen if k[0] not in calls]:
            del self._seen[key]
        watched = [conn_id for conn_id in calls if conn_id not in self._ended and conn_id not in anchor.went_direct]
        replies = await asyncio.gather(*(media.packets(conn_id) for conn_id in watched), return_exceptions=True)
        now = self.clock()
        for conn_id, reply in zip(watched, replies, strict=True):
            if isinstance(reply, MediaUnavailable):
                for key in [k for k in self._seen if k[0] == conn_id]:
                    self._seen[key] = (self._seen[key][0], now)
                continue
            if isinstance(reply, MediaRefused):  # nothing moves any more: the counts stay where they were
                reply = {leg_id: seen[0] for (conn, leg_id), seen in self._seen.items() if conn == conn_id}
            elif isinstance(reply, BaseException):
                log.warning("call %s: reading its media counters failed: %s", conn_id, reply)
                continue
            self._judge(conn_id, reply, now)

    def _judge(self, conn_id: str, packets: dict[str, int], now: float) -> None:
        anchor = self.sw.anchor
        customer = anchor.calls.get(conn_id)
        if customer is None:
            return  # ended while the relay answered
        parties = {customer, anchor.peers.get(conn_id)} - {None}
        for key in [k for k in self._seen if k[0] == conn_id and k[1] not in parties]:
            del self._seen[key]
        judged = 0
        quiet: list[tuple[float, int, str]] = []  # (silent for, packets so far, leg) of the judged parties silent
        for leg_id in sorted(p for p in parties if p is not None):
            leg = self.sw.legs.get(leg_id)
            count = packets.get(leg_id, 0)
            last = self._seen.get((conn_id, leg_id))
            if leg is None or not sends(leg):
                self._seen[(conn_id, leg_id)] = (count, now)
                continue
            judged += 1
            if last is None or count != last[0]:
                if last is not None and count > last[0]:
                    self._revived.discard(conn_id)  # its media moves forward: a later silence is a new one
                self._seen[(conn_id, leg_id)] = (count, now)
                continue
            silent = now - last[1]
            if silent >= self.timeout:
                self._dead(conn_id, leg_id, silent)
                return
            quiet.append((silent, count, leg_id))
        # A relay that stopped reading a call's sockets silences every party that was sending through it; one party
        # silent alone is that party's (its phone, its network), and a call whose parties never sent anything had
        # nothing the relay could have dropped: neither is revived, the time-out decides.
        if self.revive_after and conn_id not in self._revived and quiet and len(quiet) == judged \
                and all(silent >= self.revive_after and count > 0 for silent, count, _ in quiet):
            silent, _, leg_id = min(quiet)
            self._revive(conn_id, leg_id, silent)

    def _revive(self, conn_id: str, leg_id: str, silent: float) -> None:
        assert self.revive is not None
        if not self.revive(conn_id):
            return  # not now (no relay up) or not this call (not two parties talking): asked again at the next poll
        self._revived.add(conn_id)
        self.stats["revivals"] += 1
        log.warning("call %s: no RTP from leg %s for %.1f s: anchoring the call afresh", conn_id, leg_id, silent)

    def _dead(self, conn_id: str, leg_id: str, silent: float) -> None:
        service = self.sw.service
        if service is None:
            return
        self._ended.add(conn_id)
        self.stats["media_timeouts"] += 1
        log.info("call %s: no RTP from leg %s for %.1f s: ending the call (media timeout)", conn_id, leg_id, silent)
        self.sw.report(service.on_media_timeout, conn_id, leg_id)
