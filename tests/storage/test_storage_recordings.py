"""Recordings kept (issue #13): migration 0013 up and down, the archive joining a finished call's segments into one
WAV with its row (and the relay's files removed), a join that fails keeping the segments, the reads the API uses,
and retention deleting file and row by the operation's days; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import math
import sys
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, select, text

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS / "media") not in sys.path:
    sys.path.insert(0, str(TESTS / "media"))

from pcap_writer import PcapWriter  # noqa: E402

from callbridge.b2bua.ports import FinishedRecording  # noqa: E402
from callbridge.media.g711 import ulaw_encode  # noqa: E402
from callbridge.media.rtp_packet import build  # noqa: E402
from callbridge.storage import administration as admin  # noqa: E402
from callbridge.storage import schema as s  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402
from callbridge.storage.history import History, TimeRange  # noqa: E402
from callbridge.storage.migrate import upgrade  # noqa: E402
from callbridge.storage.recordings import RecordingArchive  # noqa: E402
from callbridge.storage.writer import Writer  # noqa: E402

T0 = 1_780_000_000.0
CUSTOMER, AGENT = ("127.0.0.7", 40000), ("127.0.0.8", 30000)
RELAY_CUSTOMER, RELAY_AGENT = ("127.0.0.1", 20000), ("127.0.0.1", 20002)


def test_0013_adds_the_recordings_table_and_takes_it_away(db_url: str) -> None:
    from alembic import command

    from callbridge.storage.migrate import alembic_config

    upgrade(db_url, "0012")
    engine = make_engine(db_url)
    try:
        assert "recordings" not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test')"))
        upgrade(engine, "0013")
        columns = [c["name"] for c in inspect(engine).get_columns("recordings")]
        assert columns == ["conn_id", "operation_id", "path", "started_at", "duration", "segments", "pauses",
                           "created_at"]
        with engine.begin() as conn:
            conn.execute(s.recordings.insert().values(
                conn_id="c1", operation_id="0042", path="/r/c1.wav", started_at=datetime.fromtimestamp(T0, UTC),
                duration=1.5, segments=[{"file": "a.pcap"}], pauses=[], created_at=datetime.fromtimestamp(T0, UTC)))
            conn.execute(text("DELETE FROM operations WHERE id = '0042'"))  # the operation's recordings go with it
            assert conn.execute(text("SELECT count(*) FROM recordings")).scalar_one() == 0
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0012")
        assert "recordings" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def tone_segment(path: Path, start: float, seconds: float, *, seq: int) -> Path:
    """One rtpengine-like segment: what the relay received from the customer (700 Hz) and the agent (1000 Hz)."""
    writer = PcapWriter()
    for k in range(round(seconds * 50)):
        for source, destination, hz, ssrc in ((CUSTOMER, RELAY_CUSTOMER, 700.0, 1), (AGENT, RELAY_AGENT, 1000.0, 2)):
            samples = [round(8000 * math.sin(2 * math.pi * hz * (k * 160 + i) / 8000)) for i in range(160)]
            writer.add(start + k * 0.02, source, destination,
                       build(0, seq + k, 160 * (seq + k), ssrc, ulaw_encode(samples)))
    path.write_bytes(writer.to_bytes())
    return path


@pytest.fixture
def archive(engine: Engine, tmp_path: Path) -> RecordingArchive:
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test", recording="always", recording_retention_days=30)
        admin.create_operation(conn, id="0043", sip_domain="b.test", recording="always")
    writer = Writer(engine).start()
    return RecordingArchive(tmp_path / "kept", writer, engine, clock=lambda: T0 + 10)


def finished(tmp_path: Path, conn_id: str = "c1", operation_id: str = "0042") -> FinishedRecording:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    first = tone_segment(spool / f"{conn_id}-aaaaaaaaaaaaaaaa.pcap", T0, 1.0, seq=100)
    second = tone_segment(spool / f"{conn_id}-bbbbbbbbbbbbbbbb.pcap", T0 + 1.5, 1.0, seq=200)
    meta = spool / f"rtpengine-meta-{conn_id}-aaaaaaaaaaaaaaaa.txt"
    meta.write_text(str(first))
    return FinishedRecording(conn_id, operation_id, (str(second), str(first)), (str(meta),), RELAY_CUSTOMER[1],
                             started_at=T0 - 0.01, ended_at=T0 + 3, pauses=((T0 + 1.0, T0 + 1.5),))


async def stored(archive: RecordingArchive, done: FinishedRecording) -> None:
    archive.recording_finished(done)
    await archive.settle()
    archive.writer.flush()


async def test_a_finished_recording_is_joined_stored_and_its_segments_removed(archive: RecordingArchive,
                                                                              tmp_path: Path) -> None:
    done = finished(tmp_path)
    await stored(archive, done)
    with archive.engine.connect() as conn:
        row = dict(conn.execute(select(s.recordings)).mappings().one())
    path = tmp_path / "kept" / "0042" / "c1.wav"
    assert row == {
        "conn_id": "c1", "operation_id": "0042", "path": str(path), "started_at": datetime.fromtimestamp(T0, UTC),
        "duration": 2.5, "created_at": datetime.fromtimestamp(T0 + 10, UTC),
        "segments": [{"file": "c1-aaaaaaaaaaaaaaaa.pcap", "start": 0.0, "duration": 1.0, "packets": 100},
                     {"file": "c1-bbbbbbbbbbbbbbbb.pcap", "start": 1.5, "duration": 1.0, "packets": 100}],
        "pauses": [{"offset": 1.0, "duration": 0.5}]}
    with wave.open(io.BytesIO(path.read_bytes()), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getnframes()) == (2, 8000, 20000)
    assert [p.name for p in (tmp_path / "kept" / "0042").iterdir()] == ["c1.wav"]  # no partial file left
    assert list((tmp_path / "spool").iterdir()) == []  # the segments and the relay's metadata removed
    assert archive.stats == {"stored": 1, "failed": 0, "pruned": 0}


async def test_a_join_that_fails_keeps_the_segments_and_writes_no_row(archive: RecordingArchive,
                                                                     tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    bad = spool / "c9-cccccccccccccccc.pcap"
    bad.write_bytes(b"not a pcap")
    await stored(archive, FinishedRecording("c9", "0042", (str(bad),), (), 20000, T0, T0 + 1))
    await stored(archive, FinishedRecording("c8", "0042", (), (), 20000, T0, T0 + 1))
    with archive.engine.connect() as conn:
        assert conn.execute(select(s.recordings)).all() == []
    assert bad.exists() and archive.stats["failed"] == 2
    assert list((tmp_path / "kept" / "0042").iterdir()) == []


async def test_the_reads_are_scoped_to_the_operation_and_paged_by_time(archive: RecordingArchive,
                                                                      tmp_path: Path) -> None:
    await stored(archive, finished(tmp_path, "c1"))
    await stored(archive, finished(tmp_path, "c2"))
    await stored(archive, finished(tmp_path, "c3", "0043"))
    history = History(archive.engine)
    assert history.recording("0042", "c1") is not None and history.recording("0043", "c1") is None
    assert [r.conn_id for r in history.recordings("0042")] == ["c1", "c2"]
    page = history.recordings("0042", limit=1)
    assert [r.conn_id for r in history.recordings("0042", after=page[-1].position)] == ["c2"]
    late = TimeRange(since=datetime.fromtimestamp(T0 + 1, UTC))
    assert history.recordings("0042", span=late) == []
    assert history.recorded("0042", ["c1", "c3", "zz"]) == {"c1"}


async def test_retention_deletes_file_and_row_past_the_operations_days(archive: RecordingArchive,
                                                                       tmp_path: Path) -> None:
    await stored(archive, finished(tmp_path, "c1"))
    await stored(archive, finished(tmp_path, "c3", "0043"))  # kept forever: no retention days
    assert await asyncio.to_thread(archive.prune) == 0  # 10 s old
    archive.clock = lambda: T0 + 10 + 30 * 86400 - 1
    assert await asyncio.to_thread(archive.prune) == 0
    archive.clock = lambda: T0 + 10 + 30 * 86400 + 1
    assert await asyncio.to_thread(archive.prune) == 1
    with archive.engine.connect() as conn:
        assert conn.execute(select(s.recordings.c.conn_id)).scalars().all() == ["c3"]
    assert not (tmp_path / "kept" / "0042" / "c1.wav").exists()
    assert (tmp_path / "kept" / "0043" / "c3.wav").exists()
    assert archive.stats["pruned"] == 1
