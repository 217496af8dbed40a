"""What the customer of an anchored call hears: the party it talks to, hold music, or ringback (docs/operations.md,
"Audio: what each party hears"; docs/design.md, "Media").

Rules
- The SIP hold stays what it was (RFC 3264 §8.4): callbridge's re-INVITE offers the customer `sendonly`, the
  customer answers `recvonly` and stops sending; a hold made on the agent's phone is the phone's `sendonly` offer
  relayed to the customer. Neither needs the relay to see the direction. What the customer *hears* is decided here,
  on the relay, from what the domain asks the B2BUA to do:
  - `hold` of the customer's leg (api=hold, and the hold that starts a transfer), or a `sendonly`/`inactive` offer
    from the customer's peer (the agent's phone holding): **music**, the operation's (`Operation.hold_music`) or
    the built-in one;
  - a transfer target rung for an anchored call whose customer is held (an offer-less INVITE, RFC 3725 flow I):
    **ringback** (`Operation.ringback_tone`), or the music when the operation's `transfer_audio` is "music";
  - the agent bridged to the target (an attended transfer's consultation): **music** again;
  - `unhold`, the peer's `sendrecv` offer, or the customer bridged to a party (a transfer completed, or back to the
    agent after a failed or cancelled one): **the peer** once the customer's media goes to that party on the relay
    (`peer_changed`), so the customer never hears the party it is leaving after the music stops.
- On the relay (rtpengine 10.5, `media/rtpengine.py`): music or ringback is ``block media`` of the customer's peer
  toward the customer, then ``play media`` of the sound to the customer, looped; the peer is ``stop media`` then
  ``unblock media``. ``play media`` alone would mix the peer in. Found with 10.5: a block named with a to-tag still
  silences the agent toward a consulted target once the agent is re-targeted to it; and once it is, the customer
  no longer gets the agent's media at all. So while consulting, the agent is unblocked as soon as its answer with
  the target went through the relay (`rewired`), and the music goes on alone.
- A customer back in a queue after a failed transfer (answered already, so without the early media of
  `waiting.py`) hears that queue's music and its announcement every `announcement_interval` seconds, as a caller
  waiting in it does (`requeued` with the queue's audio), while agents are offered the call too, until one joins
  it; the announcements are a task of their own, stopped whenever the relay is to play something else or stop.
- One call's relay steps run in order, one task at a time: what is wanted is set at once (the domain's commands
  come on the loop), and the task applies the latest wish, so a hold followed at once by the transfer's ringing
  plays ringback without racing the music.
- A relay that fails a step is logged and counted (`media_failures`); the call goes on. Unblocking a party that has
  already left the relay is not a failure (nothing is left to unblock).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal, Protocol

from callbridge.b2bua.ports import B2buaDirectory, Media, MediaError
from callbridge.media.audio import AudioError, hold_music, ringback, wav_from_bytes
from callbridge.sip.sdp import SdpError, SessionDescription

__all__ = ["PLAY_REPEAT", "CustomerHearing", "Heard", "QueueAudio"]

Heard = Literal["peer", "music", "ringback"]
# rtpengine plays a sound this many times over (the built-in music is a 2 s phrase: more than 5 hours).
PLAY_REPEAT = 10000

log = logging.getLogger(__name__)


class Anchor(Protocol):
    """What this module reads of `anchor.MediaAnchor`, which owns it (and imports it: no import back)."""

    media: Media | None
    loop: asyncio.AbstractEventLoop | None
    calls: dict[str, str]  # conn_id -> the customer's leg
    peers: dict[str, str]  # conn_id -> the leg the customer's media goes to now
    stats: dict[str, int]

    def track(self, task: asyncio.Task[None]) -> None: ...


@dataclass(frozen=True)
class QueueAudio:
    """A queue's sounds as the relay is sent them (`waiting.QueueWaiting.audio` converts them once)."""

    music: bytes  # mu-law WAV
    announcement: bytes | None
    interval: float
    announcement_seconds: float


@dataclass
class _Call:
    operation_id: str
    wanted: Heard = "peer"
    joining: str | None = None  # "peer" waits until the customer's media goes to this leg
    playing: Heard | None = None  # what the relay plays to the customer now
    blocked: str | None = None  # the leg whose media toward the customer is blocked now
    consulting: frozenset[str] = frozenset()  # the agent and a consulted target, bridged to each other
    rewired: bool = False  # ... and their media goes to each other on the relay now
    requeued: bool = False  # back in a queue (a failed transfer the agent had left): music while agents ring
    queue_audio: QueueAudio | None = None  # ... that queue's music and announcement
    task: asyncio.Task[None] | None = None
    announcing: asyncio.Task[None] | None = None  # the requeued customer's announcements


class CustomerHearing:
    def __init__(self, anchor: Anchor, directory: B2buaDirectory | None) -> None:
        self.anchor = anchor
        self.directory = directory
        self.calls: dict[str, _Call] = {}
        self._ringbacks: dict[str, bytes] = {}  # tone -> as sent to the relay
        self._music: dict[str, tuple[bytes | None, bytes]] = {}  # operation -> (its hold_music, as sent)

    # --- what the B2BUA was asked to do -------------------------------------------------------------------------
    def started(self, conn_id: str, operation_id: str) -> None:
        self.calls.setdefault(conn_id, _Call(operation_id))

    def ended(self, conn_id: str) -> None:
        call = self.calls.pop(conn_id, None)
        if call is not None and call.task is not None:
            call.task.cancel()
        if call is not None:
            self._stop_announcing(call)

    def hold(self, conn_id: str | None) -> None:
        call = self._call(conn_id)
        if call is not None and call.wanted == "peer":
            self._want(conn_id, call, "music")

    def restored_held(self, conn_id: str) -> None:
        """A call adopted on hold from another node (`cluster.adopt`): the relay call it restored plays the music to
        the customer and blocks the peer's media toward it, as the old node left them (a settled hold), so that
        `unhold` stops the one and lifts the other."""
        call = self.calls.get(conn_id)
        if call is not None:
            call.wanted = call.playing = "music"
            call.blocked = self.anchor.peers.get(conn_id)

    def unhold(self, conn_id: str | None) -> None:
        call = self._call(conn_id)
        if call is not None:
            call.consulting, call.rewired = frozenset(), False
            self._want(conn_id, call, "peer", self.anchor.peers.get(conn_id or ""))

    def requeued(self, conn_id: str | None, audio: QueueAudio | None = None) -> None:
        """The answered customer went back to a queue (a transfer failed after its agent left): the queue's
        music (`audio`; else the hold music) and announcements until an agent takes it, whatever played before
        (the ringback of the target that failed); played anew, since what played went on toward parties that
        have left the relay since."""
        call = self._call(conn_id)
        if call is None:
            return
        going_on = audio is not None and call.queue_audio is audio and call.playing == "music"
        call.consulting, call.rewired, call.requeued = frozenset(), False, True
        if not going_on:  # back in the queue after an agent it was offered did not answer: the music goes on
            call.playing, call.queue_audio = None, audio
        self._want(conn_id, call, "music")

    def target_ringing(self, conn_id: str | None) -> None:
        call = self._call(conn_id)
        if call is None or call.wanted != "music" or call.requeued:
            return  # a target rung while the customer is not held is not a transfer's (nor an agent a queue offers)
        op = self.directory.get_operation(call.operation_id) if self.directory is not None else None
        if op is None or op.transfer_audio == "ringback":
            self._want(conn_id, call, "ringback")

    def bridged(self, conn_id: str | None, leg_a: str, leg_b: str) -> None:
        call = self._call(conn_id)
        if call is None or conn_id is None:
            return
        customer = self.anchor.calls.get(conn_id)
        call.consulting, call.rewired, call.requeued = frozenset(), False, False
        if customer in (leg_a, leg_b):
            self._want(conn_id, call, "peer", leg_b if customer == leg_a else leg_a)
        else:  # the agent and a consulted target: the customer waits with the music
            call.consulting = frozenset((leg_a, leg_b))
            self._want(conn_id, call, "music")

    def rewired(self, conn_id: str, leg_a: str, leg_b: str) -> None:
        """An answer between two parties other than the customer went through the relay (`MediaAnchor.answer`)."""
        call = self.calls.get(conn_id)
        if call is not None and call.consulting == {leg_a, leg_b}:
            call.rewired = True
            self._kick(conn_id, call)

    def peer_offered(self, conn_id: str | None, leg_id: str, sdp: bytes) -> None:
        """`leg_id` offered `sdp` (a re-INVITE from its phone): from the customer's peer, `sendonly` or `inactive`
        is its hold (RFC 3264 §8.4) and anything else takes the customer off it."""
        call = self._call(conn_id)
        if call is None or conn_id is None or self.anchor.peers.get(conn_id) != leg_id:
            return
        try:
            sd = SessionDescription.parse(sdp)
            directions = {sd.direction(m) for m in sd.media}
        except SdpError:
            return
        if directions and directions <= {"sendonly", "inactive"}:
            if call.wanted == "peer":
                self._want(conn_id, call, "music")
        elif call.wanted == "music":
            self._want(conn_id, call, "peer", self.anchor.peers.get(conn_id))

    def exchange_failed(self, conn_id: str) -> None:
        """An offer or answer of the call went direct (the relay failed it): the customer may never be re-targeted
        on the relay, so a pending return to the peer stops the sound now rather than play it over the call."""
        call = self.calls.get(conn_id)
        if call is not None and call.wanted == "peer" and call.joining is not None:
            call.joining = None
            self._kick(conn_id, call)

    def peer_changed(self, conn_id: str) -> None:
        """The customer's media goes to another party on the relay now (`MediaAnchor`)."""
        call = self.calls.get(conn_id)
        if call is not None and call.wanted == "peer":
            self._kick(conn_id, call)

    # --- the relay steps ----------------------------------------------------------------------------------------
    def _call(self, conn_id: str | None) -> _Call | None:
        if conn_id is None or self.anchor.media is None or conn_id not in self.anchor.calls:
            return None
        return self.calls.get(conn_id)

    def _want(self, conn_id: str | None, call: _Call, heard: Heard, joining: str | None = None) -> None:
        assert conn_id is not None
        call.wanted, call.joining = heard, joining
        self._kick(conn_id, call)

    def _kick(self, conn_id: str, call: _Call) -> None:
        if (call.task is None or call.task.done()) and not self._settled(conn_id, call):
            assert self.anchor.loop is not None
            call.task = self.anchor.loop.create_task(self._apply(conn_id, call))
            self.anchor.track(call.task)

    def _to_block(self, conn_id: str, call: _Call) -> str | None:
        """The party whose media must not reach the customer while it hears `call.wanted` (not the peer)."""
        if call.consulting and call.rewired:
            return None  # the agent talks to the target now, the customer no longer gets its media (see below)
        return self.anchor.peers.get(conn_id)

    def _settled(self, conn_id: str, call: _Call) -> bool:
        if call.wanted != "peer":
            return call.playing == call.wanted and call.blocked == self._to_block(conn_id, call)
        return call.playing is None and call.blocked is None

    async def _apply(self, conn_id: str, call: _Call) -> None:
        media = self.anchor.media
        assert media is not None
        customer = self.anchor.calls.get(conn_id)
        while customer is not None and self.calls.get(conn_id) is call and not self._settled(conn_id, call):
            peer = self.anchor.peers.get(conn_id)
            wanted = call.wanted
            block = self._to_block(conn_id, call)
            try:
                if wanted == "peer":
                    if call.joining is not None and peer != call.joining:
                        return  # the customer is not re-targeted yet: `peer_changed` comes back here
                    if call.playing is not None:
                        self._stop_announcing(call)
                        call.queue_audio = None
                        await media.stop_playing(conn_id, customer)
                        call.playing = None
                    if call.blocked is not None:
                        blocked, call.blocked = call.blocked, None
                        await self._unblock(conn_id, blocked, customer)
                    continue
                if call.blocked != block:
                    if call.blocked is not None:
                        blocked, call.blocked = call.blocked, None
                        await self._unblock(conn_id, blocked, customer)
                    if block is not None:
                        await media.block(conn_id, block, toward=customer)
                    call.blocked = block
                if call.playing != wanted:
                    self._stop_announcing(call)
                    queued = call.queue_audio if call.requeued and wanted == "music" else None
                    sound = queued.music if queued is not None else self._sound(call.operation_id, wanted)
                    await media.play_wav(conn_id, customer, sound, repeat=PLAY_REPEAT)
                    call.playing = wanted
                    if queued is not None and queued.announcement is not None and call.announcing is None:
                        assert self.anchor.loop is not None
                        call.announcing = self.anchor.loop.create_task(self._announce(conn_id, call, queued))
                        self.anchor.track(call.announcing)
            except MediaError as exc:
                self.anchor.stats["media_failures"] += 1
                log.warning("call %s: the media plane failed to play %s to the customer (%s)", conn_id, wanted, exc)
                return

    async def _announce(self, conn_id: str, call: _Call, audio: QueueAudio) -> None:
        """The requeued customer's announcement every `audio.interval` seconds from the music's start, each played
        once in place of the music, which then starts again (as `waiting.py` does for a caller not answered)."""
        media, loop = self.anchor.media, self.anchor.loop
        assert media is not None and loop is not None and audio.announcement is not None
        started, turn = loop.time(), 1
        try:
            while True:
                await asyncio.sleep(max(0.0, started + turn * audio.interval - loop.time()))
                customer = self.anchor.calls.get(conn_id)
                if customer is None or call.playing != "music" or call.queue_audio is not audio:
                    return  # the relay plays something else now, or nothing
                await media.play_wav(conn_id, customer, audio.announcement)
                await asyncio.sleep(audio.announcement_seconds)
                await media.play_wav(conn_id, customer, audio.music, repeat=PLAY_REPEAT)
                turn += 1
        except MediaError as exc:
            self.anchor.stats["media_failures"] += 1
            log.warning("call %s: the media plane failed the queue's announcement (%s)", conn_id, exc)
        finally:
            if call.announcing is asyncio.current_task():
                call.announcing = None

    @staticmethod
    def _stop_announcing(call: _Call) -> None:
        if call.announcing is not None:
            call.announcing.cancel()
            call.announcing = None

    async def _unblock(self, conn_id: str, leg_id: str, customer: str) -> None:
        media = self.anchor.media
        assert media is not None
        try:
            await media.unblock(conn_id, leg_id, toward=customer)
        except MediaError as exc:  # that party left the relay already: nothing is left to unblock
            log.debug("call %s: unblocking %s: %s", conn_id, leg_id, exc)

    def music(self, operation_id: str) -> bytes:
        """The operation's hold music, else the built-in one, as the relay is sent it (`waiting` falls back on it)."""
        return self._sound(operation_id, "music")

    def _sound(self, operation_id: str, heard: Heard) -> bytes:
        """The sound as the relay is sent it (mu-law WAV, `Audio.ulaw_wav_bytes`), converted once per operation."""
        op = self.directory.get_operation(operation_id) if self.directory is not None else None
        if heard == "ringback":
            tone = op.ringback_tone if op is not None else "etsi"
            if tone not in self._ringbacks:
                self._ringbacks[tone] = ringback(tone).ulaw_wav_bytes()
            return self._ringbacks[tone]
        music = op.hold_music if op is not None else None
        cached = self._music.get(operation_id)
        if cached is not None and cached[0] == music:
            return cached[1]
        audio = hold_music()
        if music:
            try:
                audio = wav_from_bytes(music, name=f"operation {operation_id}'s hold music")
            except AudioError as exc:  # stored by `callbridge admin`, so converted already: only a damaged row
                log.warning("%s: the built-in music plays instead", exc)
        self._music[operation_id] = (music, audio.ulaw_wav_bytes())
        return self._music[operation_id][1]
