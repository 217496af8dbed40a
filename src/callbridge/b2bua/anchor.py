"""Anchoring calls on the media plane: every offer and answer of an anchored call goes through the `Media` port.

Rules (docs/design.md, "Media")
- Whether a call is anchored is decided once, when the customer's INVITE arrives (`admit`), or for a call callbridge
  places (a dial, an aux_call, a recall) when its agent's leg is originated (`signalling`), from its operation:
  ``media_mode`` "direct", or no media plane configured: direct (media flows between the parties, the SDP is
  passed as `bridge.present` shows it). "anchored" with a relay up: anchored. "anchored" with no relay up: the
  operation's ``media_relay_down`` says: "direct" (the call goes on with direct media, counted, and reported to
  the domain: event ``call.media_direct``) or "refuse" (503,
  RFC 3261 §21.5.4: a service that is temporarily unavailable; nothing is created).
- An anchored call is one media session named by its `conn_id`; its parties are leg ids. The customer's leg is the
  one that persists; agents and transfer targets come and go: a new party's offer toward the customer re-targets
  the customer's media, and the customer keeps the address and ports it was first given.
- `offer` and `answer` pass an SDP through the media plane and hand the result to `then`, on a later loop turn
  (the relay answers over the network); for a direct call `then` runs at once with the SDP unchanged, so a direct
  call is exactly what it was before anchoring existed. A media failure in the middle of an anchored call (the relay
  stopped answering) degrades that exchange to direct media rather than drop the call: the SDP goes through
  unchanged, and it is logged and counted.
- A leg that reaches a browser (its phone registered over WebSocket: the agent's page) is a WebRTC party: the
  media plane gives it DTLS-SRTP, ICE and rtcp-mux, and turns what it sends back into plain RTP for the others
  (`browser`). A direct call cannot reach a browser: its page says the audio needs the relay.
- A leg that ends leaves the session (`leg_ended`); the customer's leg ending ends it (`delete`). A leg that is
  still the customer's media peer when it ends (an attended transfer releases the agent before the customer is
  joined to the target) leaves only once the customer's media is re-targeted to someone else: rtpengine 10.5 gives
  the customer new ports when its peer is deleted first. Until then its phone has hung up and sends nothing.
- A supervisor listening (`monitor`) is the relay's subscription, not a party: its leg ending ends only that.
- Recording (`recorder`): each SDP the relay gives the customer is reported to it (the customer's channel is the
  relay's port it names); the customer's leg ending stops a running recording before the relay's call is deleted.
- In a cluster (docs/cluster.md, "Media in the cluster"): the relay of a call is written through with its dialogs
  (`relay_of`); the node that takes a connected call over restores its anchoring (`restore`: same call-id, same
  tags, same relay), the node that handed it over forgets it without a command to the relay (`forget`), and a
  left call that the new owner ends has its relay call deleted (`delete_left`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal

from callbridge.b2bua.hearing import CustomerHearing
from callbridge.b2bua.legs import SipLeg
from callbridge.b2bua.monitor import CallListeners
from callbridge.b2bua.ports import B2buaDirectory, Media, MediaError, OpenRecording
from callbridge.b2bua.recorder import CallRecorder
from callbridge.b2bua.waiting import QueueWaiting
from callbridge.callcontrol.model import Operation

__all__ = ["BROWSER_TRANSPORTS", "Admission", "MediaAnchor", "browser"]

BROWSER_TRANSPORTS = ("ws", "wss")

Admission = Literal["anchored", "direct", "direct_relay_down", "refuse"]
Then = Callable[[bytes], None]

log = logging.getLogger(__name__)


def browser(leg: SipLeg | None) -> bool:
    """`leg` reaches a WebRTC endpoint: a phone registered over SIP WebSocket (RFC 7118), the agent's page."""
    return leg is not None and leg.transport in BROWSER_TRANSPORTS


def _sides(first: str, one: SipLeg | None, second: str, other: SipLeg | None) -> dict[str, bool]:
    """The media plane's profile flags, only those that are set (a call without a browser asks as it always did)."""
    return {name: True for name, leg in ((first, one), (second, other)) if browser(leg)}


class MediaAnchor:
    def __init__(self, media: Media | None, loop: asyncio.AbstractEventLoop | None = None,
                 wake: Callable[[], None] = lambda: None, directory: B2buaDirectory | None = None) -> None:
        if media is not None and loop is None:
            raise ValueError("a media plane needs the event loop its steps run on")
        self.media = media
        self.loop = loop
        self.wake = wake
        self.calls: dict[str, str] = {}  # conn_id -> the customer's leg id (its media persists)
        self.peers: dict[str, str] = {}  # conn_id -> the leg the customer's media goes to now
        self.leaving: dict[str, list[str]] = {}  # conn_id -> legs that ended while they were the customer's peer
        self.went_direct: set[str] = set()  # calls an exchange of which went direct (the relay failed it)
        self.stats = {"anchored": 0, "direct": 0, "direct_relay_down": 0, "refused_relay_down": 0,
                      "media_failures": 0, "reanchored": 0, "revived": 0, "relay_lost": 0,
                      "queue_music_deferred": 0}
        self._tasks: set[asyncio.Task[None]] = set()
        self.hearing = CustomerHearing(self, directory)  # music, ringback or the peer (hearing.py)
        self.recorder = CallRecorder(self, loop)  # the call's recording on the relay (recorder.py)
        self.waiting = QueueWaiting(self, self.hearing)  # a queue caller's music and announcements (waiting.py)
        self.listeners = CallListeners(self)  # supervisors listening through the relay (monitor.py)

    # --- the decision at a call's start -------------------------------------------------------------------------
    def admit(self, operation: Operation | None) -> Admission:
        """The media of a call that starts now (counted: `stats`)."""
        admission = self.would_admit(operation)
        self.stats["refused_relay_down" if admission == "refuse" else admission] += admission != "anchored"
        return admission

    def would_admit(self, operation: Operation | None) -> Admission:
        """What `admit` would decide now, uncounted (a dial checks before it creates anything)."""
        if self.media is None or operation is None or operation.media_mode == "direct":
            return "direct"
        if self.media.available():
            return "anchored"
        return "refuse" if operation.media_relay_down == "refuse" else "direct_relay_down"

    def adopt(self, conn_id: str, customer: SipLeg) -> None:
        """`conn_id`'s media is anchored, and `customer` is its persistent party."""
        if conn_id not in self.calls:
            self.calls[conn_id] = customer.leg_id
            self.stats["anchored"] += 1
            self.hearing.started(conn_id, customer.operation_id)
            self.recorder.started(conn_id, customer.operation_id)

    def anchored(self, conn_id: str | None) -> bool:
        return conn_id is not None and conn_id in self.calls

    # --- a cluster: calls written through, taken over, let go (docs/cluster.md, "Media in the cluster") ---------
    def relay_of(self, conn_id: str | None) -> str | None:
        """The relay holding `conn_id`'s media (written through with its dialogs), None when the call is direct."""
        if conn_id is None or conn_id not in self.calls or conn_id in self.went_direct or self.media is None:
            return None
        return self.media.relay_of(conn_id)

    def restore(self, conn_id: str, operation_id: str, customer: str, peer: str | None, relay: str) -> bool:
        """Another node's anchored call, connected, is this node's now (`cluster.adopt`): its relay call goes on
        under the same call-id and tags, `customer` talking to `peer` on `relay`; hold, transfers and its end use
        the relay as if this node had anchored it. False (the call goes on as a direct one, logged) when `relay` is
        not one of this node's relays."""
        if self.media is None or not self.media.restore(conn_id, relay):
            log.warning("call %s: its media relay %s is not one of this node's: adopted as a direct call", conn_id,
                        relay)
            return False
        self.calls[conn_id] = customer
        if peer is not None:  # None: the customer alone (its agent had left during a transfer)
            self.peers[conn_id] = peer
        self.stats["anchored"] += 1
        self.hearing.started(conn_id, operation_id)
        self.recorder.started(conn_id, operation_id)
        return True

    def delete_left(self, conn_id: str, relay: str) -> None:
        """Another node's anchored call that this node ended when it took the operation over: its relay call is
        deleted, so that the relay holds no call nobody will end."""
        media = self.media
        if media is not None and media.restore(conn_id, relay):
            self._spawn(self._quietly(media.delete(conn_id), conn_id, "delete"))

    def unsubscribe_left(self, conn_id: str, relay: str, listener: str) -> None:
        """A listener (b2bua/monitor.py) of a call another node had, which this node hung up when it took the call
        over: the relay stops sending it the parties' media (the call goes on)."""
        media = self.media
        if media is not None and media.restore(conn_id, relay):
            self._spawn(self._quietly(media.unsubscribe(conn_id, listener), conn_id, "unsubscribe"))

    def finish_left(self, left: OpenRecording, relay: str | None) -> None:
        """Like `delete_left`, for a call that was being recorded: its recording is stopped and handed over
        first (`CallRecorder.finish_left`)."""
        if self.media is not None:
            self._spawn(self.recorder.finish_left(left, relay))

    def forget(self, conn_id: str) -> None:
        """The call is another node's now (a handover): its anchoring leaves this node, its relay call stays."""
        if self.calls.pop(conn_id, None) is None:
            return
        self.peers.pop(conn_id, None)
        self.leaving.pop(conn_id, None)
        self.went_direct.discard(conn_id)
        self.waiting.ended(conn_id)
        self.hearing.ended(conn_id)
        recording = self.recorder.calls.pop(conn_id, None)
        if recording is not None and recording.task is not None:
            recording.task.cancel()
        if self.media is not None:
            self.media.forget(conn_id)

    # --- SDP through the media plane ----------------------------------------------------------------------------
    def offer(self, conn_id: str | None, from_leg: SipLeg, to_leg: SipLeg | None, sdp: bytes, then: Then, *,
              receiver: SipLeg | None = None) -> None:
        """`from_leg`'s offer `sdp`, as `to_leg` (None: not known yet; `receiver` is the leg whose INVITEs will
        carry it, for its profile) is to get it."""
        if not sdp or conn_id is None or conn_id not in self.calls or self.media is None:
            then(sdp)
            return
        media = self.media
        to_id = to_leg.leg_id if to_leg is not None else None
        sides = _sides("from_browser", from_leg, "to_browser", to_leg or receiver)
        toward = to_leg or receiver  # the customer gets this offer: a re-targeting, or a call an agent's page places
        customer = toward is not None and toward.leg_id == self.calls[conn_id]
        self._run(lambda: media.offer(conn_id, from_leg.leg_id, to_id, sdp, **sides), sdp, then, "offer", conn_id,
                  to_customer=customer)

    def answer(self, conn_id: str | None, offerer: SipLeg, answerer: SipLeg, sdp: bytes, then: Then) -> None:
        """`answerer`'s answer `sdp` to `offerer`'s offer, as `offerer` is to get it."""
        if not sdp or conn_id is None or conn_id not in self.calls or self.media is None:
            then(sdp)
            return
        media = self.media
        customer = self.calls[conn_id]
        peer = {offerer.leg_id: answerer.leg_id, answerer.leg_id: offerer.leg_id}.get(customer)

        def answered() -> None:
            if peer is not None:
                self._customer_peer(conn_id, peer)
            else:  # two other parties (an agent and a consulted target): what the customer hears may change
                self.hearing.rewired(conn_id, offerer.leg_id, answerer.leg_id)

        sides = _sides("offerer_browser", offerer, "answerer_browser", answerer)
        self._run(lambda: media.answer(conn_id, offerer.leg_id, answerer.leg_id, sdp, **sides), sdp, then,
                  "answer", conn_id, answered, to_customer=offerer.leg_id == customer)

    def _customer_peer(self, conn_id: str, peer: str) -> None:
        """The customer's media goes to `peer` now: the legs that were waiting for that can leave."""
        self.peers[conn_id] = peer
        self.waiting.stop(conn_id, self.calls[conn_id])
        self.hearing.peer_changed(conn_id)
        media = self.media
        assert media is not None
        for leg_id in self.leaving.pop(conn_id, []):
            if leg_id != peer:
                self._spawn(self._quietly(media.drop_leg(conn_id, leg_id), conn_id, "leg release"))

    def _run(self, make: Callable[[], Awaitable[bytes]], sdp: bytes, then: Then, what: str, conn_id: str,
             done: Callable[[], None] | None = None, *, to_customer: bool = False) -> None:
        async def run() -> None:
            try:
                out = await make()
                if to_customer:
                    self.recorder.customer_sdp(conn_id, out)
                if done is not None and conn_id in self.calls:
                    done()
            except MediaError as exc:
                self.stats["media_failures"] += 1
                log.warning("call %s: the media plane failed the %s (%s): this exchange goes direct", conn_id,
                            what, exc)
                out = sdp
                if conn_id in self.calls:
                    self.went_direct.add(conn_id)  # the relay may carry none of its media now (media_watch.py)
                self.hearing.exchange_failed(conn_id)
            try:
                then(out)
            except Exception:
                log.exception("call %s: acting on the %s's SDP failed", conn_id, what)
            self.wake()

        self._spawn(run())

    # --- parties leaving ----------------------------------------------------------------------------------------
    def leg_ended(self, leg: SipLeg) -> None:
        if self.listeners.ended(leg):
            return  # a listener is not one of the call's parties: its subscription ends, nothing else
        conn_id = leg.conn_id
        if conn_id is None or conn_id not in self.calls or self.media is None:
            return
        media = self.media
        if self.calls[conn_id] == leg.leg_id:
            del self.calls[conn_id]
            self.peers.pop(conn_id, None)
            self.leaving.pop(conn_id, None)
            self.went_direct.discard(conn_id)
            self.waiting.ended(conn_id)
            self.hearing.ended(conn_id)
            self._spawn(self.recorder.ended(conn_id, lambda: self._quietly(media.delete(conn_id), conn_id, "delete")))
        elif self.peers.get(conn_id) == leg.leg_id:
            self.leaving.setdefault(conn_id, []).append(leg.leg_id)  # see the module rules
        else:
            self._spawn(self._quietly(media.drop_leg(conn_id, leg.leg_id), conn_id, "leg release"))

    async def _quietly(self, step: Coroutine[Any, Any, None], conn_id: str, what: str) -> None:
        try:
            await step
        except MediaError as exc:
            self.stats["media_failures"] += 1
            log.warning("call %s: the media plane failed the %s (%s)", conn_id, what, exc)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self.loop is not None  # only anchored calls spawn, and a media plane comes with its loop
        self.track(self.loop.create_task(coroutine))

    def track(self, task: asyncio.Task[None]) -> None:
        """`task` is a media step in flight: `settle` waits for it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for the media steps in flight (closing)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
