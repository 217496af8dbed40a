"""Recording an anchored call on the relay: one recording per call (`conn_id`) across every transfer, paused and
resumed as the domain asks, handed over to be joined into one WAV when the call ends (docs/operations.md,
"Recordings"; docs/design.md, "Media").

Rules
- The domain decides (its recording policy, the API's start, stop and pause) and says only "on" or "off"
  (`want`, through `Signalling.record`). A call whose media does not go through a relay, or a node that does not
  know where the relays write their recordings (`Media.can_record`), cannot record: `want` answers False and
  nothing happens.
- On the relay a recording is the whole call's (every party, both directions): the customer's leg persists and
  agents and transfer targets come and go inside the same recording. "Off" after "on" is ``stop recording`` and a
  later "on" another ``start recording`` (rtpengine 10.5 has no ``pause recording``): each start makes a new
  segment, and the span between a stop and the next start is a pause, kept with its wall-clock times so the joined
  WAV can name it (it is silence there).
- One call's steps run in order, one task at a time, applying the latest wish (as `hearing` does): on, off and on
  again quickly ends as one recording running, with the pause the relay really made.
- The customer's channel is what the relay receives on its port facing the customer; the anchor reports every SDP
  the relay gives the customer (`customer_sdp`) and the port is read from it (it stays the same for the call): from
  the latest of them that parses and has an audio port, read only when a recording is handed over (most calls are
  never recorded, and parsing each SDP on the loop was a measurable share of an anchored call's CPU).
- When the call ends (`ended`): a running recording is stopped first, which closes its last segment on the relay
  at once (rtpengine closes a deleted call's files only about 30 s later), then the relay's call is deleted, then
  the segments are found on disk (off the loop) and handed to the `RecordingSink`, which joins and stores them.
- A relay step that fails is logged and counted (`media_failures`); the call goes on, and recording stays as the
  relay has it.
- Written through (`journal`, `RecordingJournal`): after each start or stop the relay took, the call's recording
  as it stands, so that a crash loses none of it: the node starting again finishes what it left (`finish_left`:
  a running recording stopped, the relay's call deleted, the segments handed over as when a call ends), and a node
  taking a call over goes on with its recording (`adopt`). The stored row leaves with the finished recording's
  (storage/recordings.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from callbridge.b2bua.ports import (
    FinishedRecording,
    Media,
    MediaError,
    OpenRecording,
    RecordingJournal,
    RecordingSink,
)
from callbridge.sip.sdp import SdpError, SessionDescription

__all__ = ["CallRecorder"]

log = logging.getLogger(__name__)


class Anchor(Protocol):
    """What this module reads of `anchor.MediaAnchor`, which owns it."""

    media: Media | None
    calls: dict[str, str]  # conn_id -> the customer's leg
    stats: dict[str, int]

    def track(self, task: asyncio.Task[None]) -> None: ...


# SDPs kept unread per call before the older ones are read (a call re-negotiating over and over stays bounded).
MAX_UNREAD_SDPS = 4


@dataclass
class _Recording:
    operation_id: str
    port_read: int | None = None  # the customer's port from the SDPs already read
    unread: list[bytes] = field(default_factory=list)  # the SDPs the relay gave the customer since, oldest first
    wanted: bool = False
    on_relay: bool = False
    started_at: float | None = None  # the first start the relay took
    off_since: float | None = None  # stopped (paused) at, after a start
    pauses: list[tuple[float, float]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def customer_port(self) -> int | None:
        """The relay's port facing the customer, from the latest SDP given to the customer that names one (the
        SDPs kept unread are read now)."""
        for sdp in reversed(self.unread):
            port = _audio_port(sdp)
            if port is not None:
                self.port_read = port
                break
        self.unread.clear()
        return self.port_read


def _audio_port(sdp: bytes) -> int | None:
    try:
        media = [m for m in SessionDescription.parse(sdp).media if m.media == "audio" and m.port]
    except SdpError:
        return None
    return media[0].port if media else None


class CallRecorder:
    def __init__(self, anchor: Anchor, loop: asyncio.AbstractEventLoop | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.anchor = anchor
        self.loop = loop
        self.clock = clock
        self.sink: RecordingSink | None = None  # bootstrap's: where finished recordings go
        self.journal: RecordingJournal | None = None  # bootstrap's: where recordings in progress are written
        self.calls: dict[str, _Recording] = {}

    def started(self, conn_id: str, operation_id: str) -> None:
        self.calls.setdefault(conn_id, _Recording(operation_id))

    def customer_sdp(self, conn_id: str, sdp: bytes) -> None:
        """The relay gave the customer `sdp`: the port it names is where the customer's media arrives."""
        rec = self.calls.get(conn_id)
        if rec is None:
            return
        if len(rec.unread) >= MAX_UNREAD_SDPS:
            rec.customer_port()  # reads the ones kept so far (see MAX_UNREAD_SDPS)
        rec.unread.append(sdp)
        if rec.started_at is not None and rec.port_read is None and rec.customer_port() is not None:
            # the journal's row was written without the port (the relay took the start before the exchange that
            # gave the customer its SDP): a node adopting the call after a crash joins by that port
            self._write(conn_id, rec)

    def recording(self, conn_id: str) -> bool:
        """The relay records the call now."""
        rec = self.calls.get(conn_id)
        return rec is not None and rec.on_relay

    def want(self, conn_id: str, on: bool) -> bool:
        """Record the call (or stop); False when it cannot be recorded (its media is not anchored)."""
        rec = self.calls.get(conn_id)
        media = self.anchor.media
        if rec is None or conn_id not in self.anchor.calls or media is None or not media.can_record():
            return False
        rec.wanted = on
        if rec.task is None or rec.task.done():
            assert self.loop is not None
            rec.task = self.loop.create_task(self._apply(conn_id, rec), name=f"callbridge-recording-{conn_id}")
            self.anchor.track(rec.task)
        return True

    async def _apply(self, conn_id: str, rec: _Recording) -> None:
        media = self.anchor.media
        assert media is not None
        while rec.wanted != rec.on_relay:
            on = rec.wanted
            at = self.clock()
            try:
                await (media.start_recording(conn_id) if on else media.stop_recording(conn_id))
            except MediaError as exc:
                self.anchor.stats["media_failures"] += 1
                log.warning("call %s: the relay failed to %s recording (%s)", conn_id, "start" if on else "stop", exc)
                rec.wanted = rec.on_relay
                return
            rec.on_relay = on
            if not on:
                rec.off_since = at
            elif rec.started_at is None:
                rec.started_at = at
            elif rec.off_since is not None:
                rec.pauses.append((rec.off_since, at))
                rec.off_since = None
            self._write(conn_id, rec)

    def _write(self, conn_id: str, rec: _Recording) -> None:
        if self.journal is not None and rec.started_at is not None:
            self.journal.save_recording(OpenRecording(
                conn_id, rec.operation_id, rec.started_at, rec.on_relay, rec.off_since, tuple(rec.pauses),
                rec.customer_port()))

    def adopt(self, left: OpenRecording) -> None:
        """A call this node took over was being recorded (`left`, as its last node wrote it): go on with that
        recording, as if this node had made its starts and stops; written through again under this node."""
        rec = self.calls.setdefault(left.conn_id, _Recording(left.operation_id))
        rec.port_read, rec.wanted, rec.on_relay = left.customer_port, left.on_relay, left.on_relay
        rec.started_at, rec.off_since, rec.pauses = left.started_at, left.off_since, list(left.pauses)
        if left.customer_port is None and left.customer_sdp:  # the row lost the race with the customer's SDP
            rec.unread.append(left.customer_sdp)
        self._write(left.conn_id, rec)

    async def finish_left(self, left: OpenRecording, relay: str | None) -> None:
        """A recorded call that a crash (this node's, or a dead node's whose operation this one took) ended: stop
        the recording on `relay` if it ran, delete the relay's call, hand the segments over (see the rules)."""
        media = self.anchor.media
        if media is None:
            return
        if relay is not None and media.restore(left.conn_id, relay):
            steps = [("stop recording", media.stop_recording)] if left.on_relay else []
            for what, step in [*steps, ("delete", media.delete)]:
                try:
                    await step(left.conn_id)
                except MediaError as exc:  # the relay may have lost the call meanwhile: its files are what counts
                    self.anchor.stats["media_failures"] += 1
                    log.warning("call %s: the relay failed to %s a call left from before (%s)", left.conn_id, what,
                                exc)
        ended = self.clock() if left.on_relay or left.off_since is None else left.off_since
        port = left.customer_port
        if port is None and left.customer_sdp:  # the row lost the race with the customer's SDP (`customer_sdp`)
            port = _audio_port(left.customer_sdp)
        await self._hand_over(media, left.conn_id, left.operation_id, port, left.started_at, ended, left.pauses)

    async def ended(self, conn_id: str, delete: Callable[[], Awaitable[None]]) -> None:
        """The call is over: stop a running recording, `delete` the relay's call, hand the segments over."""
        rec = self.calls.pop(conn_id, None)
        if rec is not None and rec.started_at is not None:
            rec.wanted = False
            if rec.task is not None and not rec.task.done():
                await asyncio.gather(rec.task, return_exceptions=True)
            if rec.on_relay:
                await self._apply(conn_id, rec)
        await delete()
        media = self.anchor.media
        if rec is None or rec.started_at is None or media is None:
            return
        await self._hand_over(media, conn_id, rec.operation_id, rec.customer_port(), rec.started_at, self.clock(),
                              tuple(rec.pauses))

    async def _hand_over(self, media: Media, conn_id: str, operation_id: str, customer_port: int | None,
                         started_at: float, ended_at: float, pauses: tuple[tuple[float, float], ...]) -> None:
        """The relay's segments of a finished recording, found on disk (off the loop), to the sink."""
        if self.sink is None:
            return
        try:
            segments, leftovers = await asyncio.to_thread(media.recording_files, conn_id)
        except OSError as exc:
            log.warning("call %s: the recording's segments cannot be listed (%s)", conn_id, exc)
            return
        self.sink.recording_finished(FinishedRecording(
            conn_id, operation_id, tuple(segments), tuple(leftovers), customer_port, started_at, ended_at, pauses))
