"""What a customer waiting in a queue hears: the queue's music, and its announcement every so often
(docs/operations.md, "Audio: what each party hears"; docs/design.md, "Media").

Rules
- A queue caller is not answered until an agent answers (the call's billing and its CDR start then), so the waiting
  customer hears early media (RFC 3960, the "gateway model"): a ``183 Session Progress`` carrying the relay's SDP,
  and the relay plays to it. Only an anchored call whose customer's INVITE still rings waits like this; a direct
  call's customer hears what its own side plays while the INVITE rings, as before.
- The relay needs an answer to the customer's offer before it gives the customer an SDP. Nobody answers yet, so a
  stand-in does (`STAND_IN`): the relay's own offer, turned into an answer that points at the discard port of the
  loopback (RFC 863) with the same codecs. The customer's media toward it is blocked (nothing is sent there), and
  the sound is ``play media`` to the customer. Found with rtpengine 10.5: with ``port latching`` the customer keeps,
  in the 200 of the agent's answer, the relay address and port the 183 gave it, and the music keeps playing through
  the agent's offer (ringing) until it is stopped. An answer that is ``recvonly`` or ``inactive`` makes the relay
  refuse ``play media``; ``c=0.0.0.0`` makes it write ``c=0.0.0.0`` and ``sendonly`` toward the customer.
- The music waits `delay` seconds (the node's ``queue_music_delay_seconds``): meanwhile the customer has a ``180
  Ringing`` and rings, as on any call. A caller an agent takes within it never had a stand-in, so it costs the relay
  the three commands of any call, not nine (stand-in offer and answer, block, play; stop and unblock at the end).
  Under a burst of calls with every agent busy for a moment, that is what keeps the relay's queue of commands from
  growing with each waiting caller (bench/media_cps.py).
- Music is what gives way when the relay does not keep up: after the delay, while the relay holding the call has
  commands waiting behind its window (`Media.backlogged`), the caller rings on and the check is made again every
  `delay` (at least a second). Otherwise each caller waiting because the node is behind adds six commands and a
  sound stream to the relay's backlog, setting up calls slower, so more callers wait: the collapse
  bench/media_cps.py saw at 300 and 400 calls/s (tens of thousands of commands queued, calls taking 70 s). Counted
  once per call (`queue_music_deferred`).
- What plays: the queue's music, else the operation's hold music, else the built-in one (`CustomerHearing.music`),
  looped. With an announcement, it starts `announcement_interval` seconds after the music did, then every
  `announcement_interval` seconds from the previous one's start (on the loop's clock, so it does not drift), each
  played once with the music replaced; the music starts again when it ends (``play media`` replaces what plays).
- The customer's media going to a party on the relay (the agent answered: `stop`) ends the waiting: the task is
  cancelled, the sound stopped and the customer unblocked. Found with 10.5: the block of the customer toward the
  stand-in silences the customer toward the agent too until it is lifted; and deleting the stand-in's tag
  (``delete`` with its ``from-tag``) cuts the agent's media toward the customer, so the stand-in stays in the
  relay's call, idle, until the call is deleted. The customer hanging up, or the queue's limit running out, ends the
  call's media altogether (`ended`). A customer who hangs up while the waiting is being undone (a caller that hangs
  up the moment the agent answers) ends it too: the call's ``delete`` may reach the relay before the ``unblock
  media``, which then finds no call ("Unknown call-ID"); that is not a media failure.
- A relay step that fails is logged and counted (`media_failures`); the customer then hears what its own side plays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from callbridge.b2bua.hearing import PLAY_REPEAT, QueueAudio
from callbridge.b2bua.ports import Media, MediaError
from callbridge.callcontrol.model import Queue
from callbridge.media.audio import AudioError, wav_from_bytes
from callbridge.sip.sdp import Connection, SdpError, SessionDescription

__all__ = ["PLAY_REPEAT", "STAND_IN", "QueueWaiting", "stand_in_answer"]

STAND_IN = "queue-wait"  # the stand-in's tag in the relay's call
DISCARD = ("127.0.0.1", 9)  # RFC 863: where the relay would send the customer's media (blocked anyway)

log = logging.getLogger(__name__)


class Anchor(Protocol):
    """What this module reads of `anchor.MediaAnchor`, which owns it."""

    media: Media | None
    loop: asyncio.AbstractEventLoop | None
    calls: dict[str, str]
    stats: dict[str, int]

    def track(self, task: asyncio.Task[None]) -> None: ...

    def wake(self) -> None: ...


class Sounds(Protocol):
    def music(self, operation_id: str) -> bytes: ...


def stand_in_answer(offer: bytes) -> bytes:
    """The relay's offer `offer` answered by nobody: the same codecs, sendrecv, toward `DISCARD`."""
    sd = SessionDescription.parse(offer)
    sd.connection = Connection("IN", "IP4", DISCARD[0])
    for m in sd.media:
        m.connection = None
        if m.port:
            m.port = DISCARD[1]
        m.remove_attributes("rtcp", "candidate", "ice-ufrag", "ice-pwd", "ice-options", "end-of-candidates",
                            "sendonly", "recvonly", "inactive", "sendrecv")
        m.add_attribute("sendrecv")
    return bytes(sd)


class QueueWaiting:
    def __init__(self, anchor: Anchor, sounds: Sounds, delay: float = 0.0) -> None:
        self.anchor = anchor
        self.sounds = sounds
        self.delay = delay  # seconds a caller rings before the queue's audio starts (see the rules)
        self.tasks: dict[str, asyncio.Task[None]] = {}  # conn_id -> the waiting customer's sound
        self.placed: set[str] = set()  # calls whose stand-in is on the relay
        self._converted: dict[tuple[str, str], tuple[Queue, QueueAudio]] = {}

    def waiting(self, conn_id: str) -> bool:
        return conn_id in self.tasks

    def start(self, conn_id: str, customer: str, offer: bytes, operation_id: str, queue: Queue,
              early: Callable[[bytes], None]) -> None:
        """The anchored call `conn_id`'s customer (leg `customer`, its INVITE's `offer` unanswered) waits in
        `queue`: `early` gets the relay's SDP for it (the 183), then the queue's audio plays."""
        if self.anchor.media is None or conn_id in self.tasks or conn_id not in self.anchor.calls:
            return
        assert self.anchor.loop is not None
        audio = self.audio(operation_id, queue)
        task = self.anchor.loop.create_task(self._run(conn_id, customer, offer, audio, early))
        self.tasks[conn_id] = task
        self.anchor.track(task)

    def stop(self, conn_id: str, customer: str) -> None:
        """The customer's media goes to a party now (the agent answered): the waiting sound stops."""
        task = self.tasks.pop(conn_id, None)
        if task is not None:
            task.cancel()
        if conn_id in self.placed:
            self.placed.discard(conn_id)
            assert self.anchor.loop is not None
            self.anchor.track(self.anchor.loop.create_task(self._leave(conn_id, customer)))

    def ended(self, conn_id: str) -> None:
        """The customer left: the relay's call is deleted, stand-in included."""
        task = self.tasks.pop(conn_id, None)
        if task is not None:
            task.cancel()
        self.placed.discard(conn_id)

    # --- the relay steps ----------------------------------------------------------------------------------------
    async def _run(self, conn_id: str, customer: str, offer: bytes, audio: QueueAudio,
                   early: Callable[[bytes], None]) -> None:
        media = self.anchor.media
        loop = self.anchor.loop
        assert media is not None and loop is not None
        if self.delay > 0:
            await asyncio.sleep(self.delay)  # cancelled here (`stop`, `ended`): nothing was asked of the relay
        if media.backlogged(conn_id):
            self.anchor.stats["queue_music_deferred"] += 1
            while media.backlogged(conn_id):  # the relay does not keep up: the caller rings on (see the rules)
                await asyncio.sleep(max(self.delay, 1.0))
        try:
            relayed = await media.offer(conn_id, customer, None, offer)
            answer = stand_in_answer(relayed)
            self.placed.add(conn_id)
            sdp = await media.answer(conn_id, customer, STAND_IN, answer)
            await media.block(conn_id, customer, toward=STAND_IN)
            early(sdp)
            self.anchor.wake()
            await media.play_wav(conn_id, customer, audio.music, repeat=PLAY_REPEAT)
            if audio.announcement is None:
                return
            started = loop.time()
            turn = 1
            while True:
                await asyncio.sleep(max(0.0, started + turn * audio.interval - loop.time()))
                await media.play_wav(conn_id, customer, audio.announcement)
                await asyncio.sleep(audio.announcement_seconds)
                await media.play_wav(conn_id, customer, audio.music, repeat=PLAY_REPEAT)
                turn += 1
        except (MediaError, SdpError) as exc:
            self.anchor.stats["media_failures"] += 1
            log.warning("call %s: the media plane failed the queue's audio (%s)", conn_id, exc)

    async def _leave(self, conn_id: str, customer: str) -> None:
        media = self.anchor.media
        assert media is not None
        try:
            await media.stop_playing(conn_id, customer)
        except MediaError as exc:  # nothing was playing any more (an announcement ended the moment it was asked)
            log.debug("call %s: stopping the queue's audio: %s", conn_id, exc)
        if conn_id not in self.anchor.calls:
            return  # the customer hung up meanwhile: the call's delete frees its media, stand-in and block included
        try:
            await media.unblock(conn_id, customer, toward=STAND_IN)
        except MediaError as exc:
            if conn_id not in self.anchor.calls:  # the delete got there first ("Unknown call-ID"): nothing failed
                log.debug("call %s: unblocking after the queue: the call ended meanwhile (%s)", conn_id, exc)
                return
            self.anchor.stats["media_failures"] += 1
            log.warning("call %s: the media plane failed to unblock the customer after the queue (%s)", conn_id, exc)

    def audio(self, operation_id: str, queue: Queue) -> QueueAudio:
        """The queue's sounds as the relay is sent them, converted once per queue setting."""
        key = (operation_id, queue.name)
        cached = self._converted.get(key)
        if cached is not None and cached[0] == queue:
            return cached[1]
        music = self.sounds.music(operation_id)
        announcement, seconds = None, 0.0
        try:
            if queue.music:
                music = wav_from_bytes(queue.music, name=f"queue {queue.name}'s music").ulaw_wav_bytes()
            if queue.announcement:
                sound = wav_from_bytes(queue.announcement, name=f"queue {queue.name}'s announcement")
                announcement, seconds = sound.ulaw_wav_bytes(), sound.duration
        except AudioError as exc:  # stored by `callbridge admin`, so converted already: only a damaged row
            log.warning("%s: the operation's music plays instead", exc)
        audio = QueueAudio(music, announcement, max(queue.announcement_interval, seconds + 1.0), seconds)
        self._converted[key] = (queue, audio)
        return audio
