"""Recordings in progress written through (storage/open_recordings.py), on SQLite and PostgreSQL: migration 0020 up
and down, the recorder's saves as rows, what a restart of the node finishes (its own calls, never a call another node
holds), and the row leaving in the batch that stores the WAV's."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, inspect, select, text

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from test_storage_recordings import archive, finished, stored  # noqa: E402, F401 (archive: a fixture)

from callbridge.b2bua.ports import FinishedRecording, OpenRecording  # noqa: E402
from callbridge.storage import schema as s  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402
from callbridge.storage.migrate import upgrade  # noqa: E402
from callbridge.storage.open_recordings import RecordingJournalStore, read_left  # noqa: E402
from callbridge.storage.recordings import RecordingArchive  # noqa: E402
from callbridge.storage.writer import Writer  # noqa: E402

T0 = 1_780_000_000.0


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def test_0020_adds_the_call_recordings_table_and_takes_it_away(db_url: str) -> None:
    upgrade(db_url, "0019")
    engine = make_engine(db_url)
    try:
        assert "call_recordings" not in inspect(engine).get_table_names()
        upgrade(engine, "0020")
        columns = [c["name"] for c in inspect(engine).get_columns("call_recordings")]
        assert columns == ["conn_id", "operation_id", "node_id", "started_at", "on_relay", "off_since", "pauses",
                           "customer_port", "updated_at"]
        from alembic import command

        from callbridge.storage.migrate import alembic_config

        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0019")
        assert "call_recordings" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def call_row(conn_id: str, node_id: str, *, ended: bool = False) -> dict[str, object]:
    return {"conn_id": conn_id, "operation_id": "0042", "node_id": node_id, "direction": "inbound",
            "customer_number": "3105550000", "state": "ended" if ended else "connected", "started_at": at(T0),
            "ended_at": at(T0 + 5) if ended else None}


async def test_saves_are_rows_and_a_restart_finishes_its_own_calls_only(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test')"))
        conn.execute(s.calls.insert(), [call_row("mine", "n1"), call_row("ended", "n2", ended=True),
                                        call_row("handed", "n2"), call_row("theirs", "n2")])
    writer = Writer(engine).start()
    clock = iter([T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5])
    mine = RecordingJournalStore(writer, "n1", lambda: next(clock))
    running = OpenRecording("mine", "0042", T0, True, None, ((T0 + 1, T0 + 2.5),), 20000)
    mine.save_recording(OpenRecording("mine", "0042", T0, False, T0 + 1, (), None))
    mine.save_recording(running)  # the same call again: one row, the newest
    mine.save_recording(OpenRecording("ended", "0042", T0, False, T0 + 5, (), 20002))  # its call ended (the join
    # was still to come when the node died)
    mine.save_recording(OpenRecording("handed", "0042", T0, True, None, (), 20004))  # another node holds it now
    RecordingJournalStore(writer, "n2", lambda: T0).save_recording(
        OpenRecording("theirs", "0042", T0, True, None, (), 20006))
    writer.flush()
    writer.close()
    with engine.connect() as conn:
        row = dict(conn.execute(select(s.call_recordings).where(s.call_recordings.c.conn_id == "mine")).mappings()
                   .one())
        assert row == {"conn_id": "mine", "operation_id": "0042", "node_id": "n1", "started_at": at(T0),
                       "on_relay": True, "off_since": None, "pauses": [[T0 + 1, T0 + 2.5]], "customer_port": 20000,
                       "updated_at": at(T0 + 2)}
        # "handed" is n1's row, but n2 holds its call open: n2 adopted it (and re-owns the row), n1 leaves it
        assert read_left(conn, "n1") == [OpenRecording("ended", "0042", T0, False, T0 + 5, (), 20002), running]
        assert read_left(conn, "n1", operations=("0043",)) == []
        assert read_left(conn, "n2") == [OpenRecording("theirs", "0042", T0, True, None, (), 20006)]


def dialog_row(leg_id: str, conn_id: str, sent_sdp: bytes) -> dict[str, object]:
    return {"leg_id": leg_id, "conn_id": conn_id, "call_id": f"call-{leg_id}", "local_tag": "lt", "remote_tag": "rt",
            "local_uri": "sip:a@x", "remote_uri": "sip:b@y", "local_cseq": 1, "remote_cseq": 1,
            "remote_target": "sip:b@y", "route_set": [], "peer_host": "127.0.0.2", "peer_port": 5060,
            "transport": "udp", "sent_sdp": sent_sdp, "node_id": "n1", "created_at": at(T0), "updated_at": at(T0)}


async def test_a_row_without_the_customers_port_is_read_with_the_sdp_the_customer_was_last_sent(
        engine: Engine) -> None:
    """A restart finishing a recording whose row never got the port (recorder.py: the start taken before the
    customer's SDP, the node dead before the row was written again) gets the customer's dialog's last sent SDP to
    read it from; a row with the port gets nothing more, and a call with no customer dialog none."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test')"))
        conn.execute(s.calls.insert(), [call_row("noport", "n1"), call_row("port", "n1"), call_row("bare", "n1")])
        conn.execute(s.legs.insert(), [
            {"leg_id": leg, "conn_id": conn_id, "role": role, "party": "x", "state": "up", "started_at": at(T0)}
            for leg, conn_id, role in (("c1", "noport", "customer"), ("a1", "noport", "agent"),
                                       ("c2", "port", "customer"))])
        conn.execute(s.dialogs.insert(), [dialog_row("c1", "noport", b"customer's"),
                                          dialog_row("a1", "noport", b"agent's"),
                                          dialog_row("c2", "port", b"customer's too")])
    writer = Writer(engine).start()
    journal = RecordingJournalStore(writer, "n1", lambda: T0)
    for conn_id, port in (("noport", None), ("port", 20000), ("bare", None)):
        journal.save_recording(OpenRecording(conn_id, "0042", T0, True, None, (), port))
    writer.flush()
    writer.close()
    with engine.connect() as conn:
        assert {rec.conn_id: (rec.customer_port, rec.customer_sdp) for rec in read_left(conn, "n1")} == {
            "noport": (None, b"customer's"), "port": (20000, None), "bare": (None, None)}


async def test_the_row_leaves_with_the_stored_recording_and_stays_when_the_join_fails(
        archive: RecordingArchive, tmp_path: Path) -> None:  # noqa: F811
    journal = RecordingJournalStore(archive.writer, "n1", lambda: T0)
    for conn_id in ("c1", "c9"):
        journal.save_recording(OpenRecording(conn_id, "0042", T0, True, None, (), 20000))
    archive.writer.flush()
    await stored(archive, finished(tmp_path, "c1"))
    bad = tmp_path / "spool" / "c9-cccccccccccccccc.pcap"
    bad.write_bytes(b"not a pcap")
    await stored(archive, FinishedRecording("c9", "0042", (str(bad),), (), 20000, T0, T0 + 1))
    with archive.engine.connect() as conn:
        assert conn.execute(select(s.recordings.c.conn_id)).scalars().all() == ["c1"]
        # c9's join failed: its recording is still in progress in the records, for the next start to retry
        assert conn.execute(select(s.call_recordings.c.conn_id)).scalars().all() == ["c9"]


async def test_a_wav_found_in_place_with_its_segments_gone_gets_its_row(
        archive: RecordingArchive, tmp_path: Path) -> None:  # noqa: F811
    """The join had renamed the WAV into place and removed the segments when its node died, before the row was
    written: the retry at the next start writes the row from the file."""
    import wave

    folder = tmp_path / "kept" / "0042"
    folder.mkdir(parents=True)
    with wave.open(str(folder / "c7.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0\0\0" * 12000)
    RecordingJournalStore(archive.writer, "n1", lambda: T0).save_recording(
        OpenRecording("c7", "0042", T0, True, None, (), 20000))
    await stored(archive, FinishedRecording("c7", "0042", (), (), 20000, T0, T0 + 2))
    with archive.engine.connect() as conn:
        row = dict(conn.execute(select(s.recordings)).mappings().one())
        assert conn.execute(select(s.call_recordings)).all() == []
    assert (row["conn_id"], row["path"], row["duration"], row["segments"], row["pauses"]) == (
        "c7", str(folder / "c7.wav"), 1.5, [], [])
