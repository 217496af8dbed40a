"""A supervisor listening to an anchored call through the relay's subscription (docs/operations.md, "A supervisor
listens"; the domain's `callcontrol.monitor`).

Rules (found with rtpengine 10.5 on loopback; `media/rtpengine.py` has the ng side)
- The listener is a leg of its own (`SipLeg.listener`), rung like an agent (every registered contact, first answer
  wins) with an INVITE whose offer comes from the relay: ``subscribe request`` of the customer and the party it
  talks to now (in that order), the listener's leg id as its tag. 10.5 answers with one send-only ``m=audio`` per
  party and cannot mix them (it has no mixer).
- A phone plays one audio stream, so the INVITE offers it the first stream alone (the customer's), and its answer
  is given to the relay (``subscribe answer``) for every stream: both parties' packets then reach the one port the
  phone answered with, each party with its own SSRC (RFC 3550 §8: one RTP session, two sources; RFC 8108). A phone
  that mixes its sources hears both; the test phone measures each source apart.
- Nothing the listener sends reaches the parties (a subscription only carries media toward it), whatever its SDP
  says; its answer is normally `recvonly` to our `sendonly` offer anyway.
- It listens to the parties of the moment it was rung: a transfer that moves the customer to another party does not
  move the subscription (the new party is not heard until the listener is rung again).
- Its end (its BYE, our BYE on the domain's release, its INVITE failing) is ``unsubscribe``: the parties' call
  goes on (``delete`` with both tags would end it). A relay step that fails is logged and counted, and the listener
  is hung up by the domain when its leg's end is reported.
- A listener in the supervisor's board page (`PageListener`, docs/operations.md "The supervisor's board") has no SIP
  leg: the subscription is asked with the WebRTC profile (DTLS-SRTP, ICE, rtcp-mux: `Media.subscribe(webrtc=True)`),
  its offer, every stream of it (a browser takes one ``m=audio`` per party and plays each), goes to the page over the
  board's HTTP session (`page_offer`), and the page's answer goes to the relay as it is (`page_answer`); that is the
  leg's answer for the domain. Its release is ``unsubscribe``, as a phone's end.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from callbridge.b2bua.legs import SipLeg
from callbridge.b2bua.ports import Media, MediaError

__all__ = ["CallListeners", "PageListener", "every_stream_to", "first_stream"]

log = logging.getLogger(__name__)

_MEDIA = re.compile(rb"^m=", re.MULTILINE)


class Anchor(Protocol):
    media: Media | None
    loop: asyncio.AbstractEventLoop | None
    calls: dict[str, str]
    peers: dict[str, str]
    stats: dict[str, int]

    def track(self, task: asyncio.Task[None]) -> None: ...

    def wake(self) -> None: ...


def _split(sdp: bytes) -> tuple[bytes, list[bytes]]:
    starts = [m.start() for m in _MEDIA.finditer(sdp)]
    if not starts:
        return sdp, []
    return sdp[:starts[0]], [sdp[a:b] for a, b in zip(starts, [*starts[1:], len(sdp)], strict=True)]


def first_stream(offer: bytes) -> bytes:
    """`offer` with its first media section alone."""
    session, media = _split(offer)
    return session + (media[0] if media else b"")


def every_stream_to(offer: bytes, answer: bytes) -> bytes:
    """An answer to `offer` (any number of media sections) that sends every stream where `answer` (to the first
    section alone) says: its media section repeated once per section of `offer` (RFC 3264 §6: same count, order)."""
    session, media = _split(answer)
    count = len(_split(offer)[1])
    return session + (media[0] if media else b"") * count


@dataclass(slots=True)
class PageListener:
    conn_id: str
    offer: asyncio.Future[bytes]  # the relay's WebRTC offer, or its refusal (MediaError)
    answered: Callable[[], None]  # the domain is told the leg answered
    failed: Callable[[], None]  # ... or failed
    answer_given: bool = False


class CallListeners:
    def __init__(self, anchor: Anchor) -> None:
        self.anchor = anchor
        self.offers: dict[str, bytes] = {}  # listener leg -> the relay's offer (every stream)
        self.pages: dict[str, PageListener] = {}  # a board page's listener leg -> its subscription

    def can_listen(self, conn_id: str) -> bool:
        """The call's media goes through the relay and its customer talks to someone on it."""
        a = self.anchor
        return a.media is not None and conn_id in a.calls and conn_id in a.peers

    def subscribe(self, conn_id: str, leg: SipLeg, then: Callable[[bytes], None], failed: Callable[[], None]) -> None:
        """Ask the relay for the parties' media toward `leg`; `then` gets the offer for its INVITE."""
        a = self.anchor
        media = a.media
        assert media is not None and a.loop is not None
        parties = [a.calls[conn_id], a.peers[conn_id]]

        async def run() -> None:
            try:
                offer = await media.subscribe(conn_id, parties, leg.leg_id)
            except MediaError as exc:
                a.stats["media_failures"] += 1
                log.warning("call %s: the relay refused a listener (%s)", conn_id, exc)
                failed()
            else:
                self.offers[leg.leg_id] = offer
                then(first_stream(offer))
            a.wake()

        a.track(a.loop.create_task(run()))

    def answered(self, leg: SipLeg, answer: bytes) -> None:
        """The listener's phone answered: every party's stream goes to the port it answered with."""
        offer = self.offers.get(leg.leg_id)
        a = self.anchor
        if offer is None or leg.conn_id is None or a.media is None or a.loop is None:
            return
        media, conn_id = a.media, leg.conn_id

        async def run() -> None:
            try:
                await media.subscribe_answer(conn_id, leg.leg_id, every_stream_to(offer, answer))
            except MediaError as exc:
                a.stats["media_failures"] += 1
                log.warning("call %s: the relay refused the listener's answer (%s)", conn_id, exc)

        a.track(a.loop.create_task(run()))

    def restored(self, leg: SipLeg) -> None:
        """`leg` is a listener another node rang, answered and subscribed, taken over with its call: its end
        unsubscribes it (the offer itself is not needed any more)."""
        self.offers[leg.leg_id] = b""

    def ended(self, leg: SipLeg) -> bool:
        """`leg` ended: True when it was a listener (its subscription is ended, the call's media untouched)."""
        if not leg.listener:
            return False
        offer = self.offers.pop(leg.leg_id, None)
        a = self.anchor
        if offer is None or leg.conn_id is None or leg.conn_id not in a.calls or a.media is None or a.loop is None:
            return True
        media, conn_id = a.media, leg.conn_id

        async def run() -> None:
            try:
                await media.unsubscribe(conn_id, leg.leg_id)
            except MediaError as exc:  # not answered yet, or the relay forgot it: nothing flows to it
                log.debug("call %s: unsubscribing %s: %s", conn_id, leg.leg_id, exc)

        a.track(a.loop.create_task(run()))
        return True

    # --- a listener in the board's page ---------------------------------------------------------------------------
    def subscribe_page(self, conn_id: str, leg_id: str, answered: Callable[[], None],
                       failed: Callable[[], None]) -> None:
        """Ask the relay for the parties' media toward a browser (WebRTC); `page_offer` waits for its offer."""
        a = self.anchor
        media = a.media
        assert media is not None and a.loop is not None
        parties = [a.calls[conn_id], a.peers[conn_id]]
        page = self.pages[leg_id] = PageListener(conn_id, a.loop.create_future(), answered, failed)

        async def run() -> None:
            try:
                offer = await media.subscribe(conn_id, parties, leg_id, webrtc=True)
            except MediaError as exc:
                a.stats["media_failures"] += 1
                log.warning("call %s: the relay refused a page listener (%s)", conn_id, exc)
                if not page.offer.done():
                    page.offer.set_exception(exc)
                    page.offer.exception()  # retrieved: `page_offer` reads the refusal as None
                self.pages.pop(leg_id, None)
                failed()
            else:
                if not page.offer.done():
                    page.offer.set_result(offer)
            a.wake()

        a.track(a.loop.create_task(run()))

    async def page_offer(self, leg_id: str) -> bytes | None:
        """The relay's WebRTC offer for the page listener `leg_id`; None: the relay refused it, or it is gone."""
        page = self.pages.get(leg_id)
        if page is None:
            return None
        try:
            return await asyncio.shield(page.offer)
        except (MediaError, asyncio.CancelledError):
            if page.offer.cancelled() or page.offer.done():
                return None
            raise  # the waiter itself was cancelled

    async def page_answer(self, leg_id: str, sdp: bytes) -> Literal["taken", "invalid", "refused"]:
        """The page's answer to its offer: the parties' media flows to the browser from now on, and the domain
        hears that the leg answered ("taken"). "invalid": not one media section per one of the offer's (RFC 3264
        §6), nothing changed. "refused": no such listener, it answered already, or the relay refused the answer
        (the leg is then reported failed)."""
        page = self.pages.get(leg_id)
        media = self.anchor.media
        if page is None or page.answer_given or not page.offer.done() or page.offer.cancelled() \
                or page.offer.exception() is not None or media is None:
            return "refused"
        if len(_split(sdp)[1]) != len(_split(page.offer.result())[1]):
            return "invalid"
        page.answer_given = True
        try:
            await media.subscribe_answer(page.conn_id, leg_id, sdp)
        except MediaError as exc:
            self.anchor.stats["media_failures"] += 1
            log.warning("call %s: the relay refused the page listener's answer (%s)", page.conn_id, exc)
            if self.pages.pop(leg_id, None) is not None:
                page.failed()
            return "refused"
        if self.pages.get(leg_id) is not page:  # released while the relay answered
            return "refused"
        page.answered()
        return "taken"

    def release_page(self, leg_id: str) -> bool:
        """The domain released `leg_id`: True when it was a page listener (its subscription is ended)."""
        page = self.pages.pop(leg_id, None)
        if page is None:
            return False
        if not page.offer.done():
            page.offer.cancel()
        a = self.anchor
        if page.conn_id not in a.calls or a.media is None or a.loop is None:
            return True
        media = a.media

        async def run() -> None:
            try:
                await media.unsubscribe(page.conn_id, leg_id)
            except MediaError as exc:  # not answered yet, or the relay forgot it: nothing flows to it
                log.debug("call %s: unsubscribing %s: %s", page.conn_id, leg_id, exc)

        a.track(a.loop.create_task(run()))
        return True
