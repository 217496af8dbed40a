"""Recordings kept: each recorded call's segments joined into one two-channel WAV, its row, and their retention.

Rules (docs/operations.md, "Recordings")
- `RecordingArchive.recording_finished` is the B2BUA's `RecordingSink` (b2bua/ports.py): a call that was recorded
  ended, its relay's segments are complete. The join (`callbridge.media.recording.convert_recording`) runs in a
  worker thread, never on the event loop; the WAV is written beside its final name and renamed into place
  (``<recordings dir>/<operation>/<conn_id>.wav``), so a reader never sees half a file; then its row is written
  through the writer thread, in the batch that removes the call's recording in progress (`storage.open_recordings`).
  The relay's segment files are removed once the WAV is in place; a join that fails is logged and leaves them where
  they are (nothing is lost), with no row, and the recording in progress stays recorded for the next start to retry.
  A retry that finds no segment but the call's WAV in place (the join had finished; the row was lost with its
  node) writes the row from the file.
- Offsets in the row (segments' starts, pauses) are seconds from the WAV's first sample. A pause is a span during
  which recording was off on purpose (paused, or stopped and started again); the WAV is silent there.
- Retention: `prune` deletes the recordings (file, then row) older than their operation's
  `recording_retention_days`, by `created_at`; operations without it keep theirs. `prune_every` runs it at start-up
  and then every `interval` seconds, off the loop, like the event log's retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, select

from callbridge.b2bua.ports import FinishedRecording
from callbridge.media.recording import Recording, RecordingError, convert_recording
from callbridge.storage import schema as s
from callbridge.storage.times import to_datetime
from callbridge.storage.writer import Writer

__all__ = ["RECORDING_PRUNE_INTERVAL_S", "RecordingArchive", "recording_row"]

log = logging.getLogger(__name__)

RECORDING_PRUNE_INTERVAL_S = 3600.0


def recording_row(done: FinishedRecording, recording: Recording, path: Path, created_at: float) -> dict[str, Any]:
    """The row of a joined recording: the segments as the WAV places them, the pauses on the WAV's time line."""
    origin = recording.start
    segments = [{"file": Path(info.name).name, "start": info.start, "duration": info.duration,
                 "packets": info.packets}
                for info in sorted(recording.segments, key=lambda info: info.start)]
    pauses = []
    for start, end in done.pauses:
        offset = max(0.0, start - origin)
        span = min(end - origin, recording.duration) - offset
        if span > 0:
            pauses.append({"offset": round(offset, 3), "duration": round(span, 3)})
    return {"conn_id": done.conn_id, "operation_id": done.operation_id, "path": str(path),
            "started_at": to_datetime(origin), "duration": round(recording.duration, 3), "segments": segments,
            "pauses": pauses, "created_at": to_datetime(created_at)}


def placed_row(done: FinishedRecording, path: Path, created_at: float) -> dict[str, Any]:
    """The row of a WAV found in place with its segments gone (the join finished, its row was lost with the node
    that made it): its length from the file; what the segments were is not known any more."""
    try:
        with wave.open(str(path), "rb") as wav:
            duration = wav.getnframes() / wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise RecordingError(f"{path} is in place but not a readable WAV ({exc})") from exc
    return {"conn_id": done.conn_id, "operation_id": done.operation_id, "path": str(path),
            "started_at": to_datetime(done.started_at), "duration": round(duration, 3), "segments": [],
            "pauses": [], "created_at": to_datetime(created_at)}


class RecordingArchive:
    """`RecordingSink` on the recordings directory and the database (module rules)."""

    def __init__(self, directory: Path, writer: Writer, engine: Engine, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.writer = writer
        self.engine = engine
        self.clock = clock
        self.stats = {"stored": 0, "failed": 0, "pruned": 0}
        self._tasks: set[asyncio.Task[None]] = set()

    def recording_finished(self, done: FinishedRecording) -> None:
        task = asyncio.get_running_loop().create_task(self._store(done), name=f"callbridge-recording-{done.conn_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for the joins in flight (closing, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _store(self, done: FinishedRecording) -> None:
        try:
            row = await asyncio.to_thread(self.join, done)
        except (RecordingError, OSError) as exc:
            self.stats["failed"] += 1
            log.warning("call %s: the recording could not be joined (%s); its segments are kept: %s", done.conn_id,
                        exc, ", ".join(done.segments) or "none")
            return
        self.writer.upsert(s.recordings, ("conn_id",), row)
        # in the same loop turn, so in the same batch: the recording is in progress or stored, never neither
        self.writer.delete(s.call_recordings, ("conn_id",), {"conn_id": done.conn_id})
        self.stats["stored"] += 1
        log.info("call %s: recording stored, %.1f s, %d segments, %d pauses: %s", done.conn_id, row["duration"],
                 len(row["segments"]), len(row["pauses"]), row["path"])

    def join(self, done: FinishedRecording) -> dict[str, Any]:
        """Blocking (a worker thread): the WAV written into place, the segments removed; the row to write."""
        folder = self.directory / done.operation_id
        final = folder / f"{done.conn_id}.wav"
        if not done.segments:
            if final.is_file():  # joined and renamed into place by a node that died before writing its row
                return placed_row(done, final, self.clock())
            raise RecordingError("the relay wrote no segment")
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{done.conn_id}.wav.part"
        try:
            recording = convert_recording([Path(p) for p in done.segments], customer_port=done.customer_port,
                                          out=partial)
            os.replace(partial, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        for leftover in (*done.segments, *done.leftovers):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        return recording_row(done, recording, final, self.clock())

    # --- retention ----------------------------------------------------------------------------------------------
    def prune(self) -> int:
        """Blocking: delete every recording older than its operation's retention (file, then row); how many."""
        now = self.clock()
        ops, rec = s.operations, s.recordings
        with self.engine.connect() as conn:
            kept = conn.execute(select(ops.c.id, ops.c.recording_retention_days)
                                .where(ops.c.recording_retention_days.is_not(None))).all()
        pruned = 0
        for operation_id, days in kept:
            horizon = to_datetime(now - float(days) * 86400.0)
            with self.engine.connect() as conn:
                expired = conn.execute(select(rec.c.conn_id, rec.c.path).where(
                    rec.c.operation_id == operation_id, rec.c.created_at < horizon)).all()
            for conn_id, path in expired:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                with self.engine.begin() as conn:
                    conn.execute(delete(rec).where(rec.c.conn_id == conn_id))
                pruned += 1
        self.stats["pruned"] += pruned
        return pruned

    async def prune_every(self, interval: float) -> None:
        while True:
            try:
                pruned = await asyncio.to_thread(self.prune)
                if pruned:
                    log.info("recording retention: %d recordings deleted", pruned)
            except Exception:
                log.exception("recording retention failed; trying again in %.0f s", interval)
            await asyncio.sleep(interval)
