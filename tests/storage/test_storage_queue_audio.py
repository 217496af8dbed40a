"""A queue's audio (docs/operations.md, "Audio"), on SQLite and PostgreSQL: the music and the announcement a waiting
caller hears, given as WAV files, are converted once at load and stored; a file that cannot be played, or an interval
that leaves no music between two announcements, is refused with the reason and nothing changes; the operation file
sets them and a changed file is an update shown as "(changed)"; migration 0016 adds the columns and takes them away."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from callbridge.media.audio import wav_from_bytes
from callbridge.storage import admin_apply as ap
from callbridge.storage import admin_changes as ch
from callbridge.storage import administration as admin
from callbridge.storage.directory import Directory
from callbridge.storage.migrate import alembic_config, upgrade
from storage.test_storage_operation_audio import EXAMPLE, write_wav


def test_the_queue_music_and_announcement_are_converted_once_and_stored(engine: Engine, tmp_path: Path) -> None:
    music = write_wav(tmp_path / "wait.wav", hz=500, seconds=2)
    notice = write_wav(tmp_path / "notice.wav", hz=900, seconds=1.5, rate=8000, channels=1)
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test")
        created = admin.create_queue(conn, "0042", "support", music=str(music), announcement=str(notice),
                                     announcement_interval=12)
        admin.create_queue(conn, "0042", "sales")
    support, = [q for q in Directory(engine).load().list_queues("0042") if q.name == "support"]
    assert created == support
    assert (support.music_name, support.announcement_name, support.announcement_interval) == (
        "wait.wav", "notice.wav", 12.0)
    assert wav_from_bytes(support.music or b"").duration == 2.0
    assert wav_from_bytes(support.announcement or b"").duration == 1.5
    sales, = [q for q in Directory(engine).load().list_queues("0042") if q.name == "sales"]
    assert (sales.music, sales.music_name, sales.announcement, sales.announcement_name,
            sales.announcement_interval) == (None, "", None, "", 30.0)  # the operation's music, no announcement


@pytest.mark.parametrize(("field", "content", "reason"), [
    ("music", None, "cannot read the file: No such file or directory"),
    ("announcement", b"hello", "not a WAV file: it does not start with RIFF"),
    ("music", "long", "too long: 9.0 s (at most 8 s)"),
])
def test_a_queue_audio_file_that_cannot_be_played_is_refused_with_the_file_and_why(
        engine: Engine, tmp_path: Path, field: str, content: bytes | str | None, reason: str) -> None:
    path = tmp_path / "audio.wav"
    if content == "long":
        write_wav(path, hz=500, seconds=9, rate=8000, channels=1)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test")
    with engine.begin() as conn, pytest.raises(admin.AdminError) as refused:
        admin.create_queue(conn, "0042", "support", **{field: str(path)})
    assert str(refused.value) == f"{field}: {path}: {reason}"
    assert Directory(engine).load().list_queues("0042") == []


@pytest.mark.parametrize(("interval", "message"), [
    (4, "announcement_interval: 4 is below 5"),
    ("often", "announcement_interval: 'often' is not a number"),
    (6, "announcement_interval: 6 s is not longer than the announcement (7.0 s): no music would play between two "
        "announcements"),
])
def test_an_interval_that_leaves_no_music_is_refused(engine: Engine, tmp_path: Path, interval: Any,
                                                      message: str) -> None:
    notice = write_wav(tmp_path / "notice.wav", hz=900, seconds=7, rate=8000, channels=1)
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test")
    with engine.begin() as conn, pytest.raises(admin.AdminError) as refused:
        admin.create_queue(conn, "0042", "support", announcement=str(notice), announcement_interval=interval)
    assert str(refused.value) == message
    assert Directory(engine).load().list_queues("0042") == []


def test_update_sets_and_clears_the_queue_audio(engine: Engine, tmp_path: Path) -> None:
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test")
        admin.create_queue(conn, "0042", "support")
        queue = ch.update_queue(conn, "0042", "support", music=str(write_wav(tmp_path / "m.wav", hz=500, seconds=1)))
    assert queue.music_name == "m.wav" and wav_from_bytes(queue.music or b"").duration == 1.0
    with engine.begin() as conn:
        queue = ch.update_queue(conn, "0042", "support", music="")
    assert (queue.music, queue.music_name) == (None, "")


def test_the_operation_file_sets_the_queue_audio_and_a_changed_file_is_an_update(engine: Engine,
                                                                                 tmp_path: Path) -> None:
    doc: dict[str, Any] = ap.read_operation_file(EXAMPLE)
    queue = doc["queues"][0]
    queue["music"] = str(write_wav(tmp_path / "a.wav", hz=500, seconds=1))
    queue["announcement"] = str(write_wav(tmp_path / "n.wav", hz=900, seconds=1))
    queue["announcement_interval"] = 10
    ap.execute(engine, doc)
    assert ap.plan_lines(engine, doc) == []  # the same files convert to the same bytes: nothing to change
    stored = Directory(engine).load().get_queue("0042", queue["name"])
    assert stored is not None and (stored.music_name, stored.announcement_name, stored.announcement_interval) == (
        "a.wav", "n.wav", 10.0)

    changed = copy.deepcopy(doc)
    changed["queues"][0]["music"] = str(write_wav(tmp_path / "b.wav", hz=700, seconds=2))
    changed["queues"][0]["announcement_interval"] = 20
    assert ap.execute(engine, changed).lines() == [
        f"update queue {queue['name']!r}: music (changed), announcement_interval 10.0 -> 20"]

    broken = copy.deepcopy(changed)
    (tmp_path / "c.wav").write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    broken["queues"][0]["announcement"] = str(tmp_path / "c.wav")
    with pytest.raises(admin.AdminError) as refused:
        ap.execute(engine, broken)
    assert str(refused.value).startswith(f"queues[0].announcement: {tmp_path / 'c.wav'}: ")
    stored = Directory(engine).load().get_queue("0042", queue["name"])
    assert stored is not None and stored.announcement_name == "n.wav"  # nothing changed

    back = copy.deepcopy(changed)
    for key in ("music", "announcement", "announcement_interval"):
        del back["queues"][0][key]
    ap.execute(engine, back)
    stored = Directory(engine).load().get_queue("0042", queue["name"])
    assert stored is not None and (stored.music, stored.announcement, stored.announcement_interval) == (
        None, None, 30.0)


def test_0016_adds_the_queue_audio_columns_and_takes_them_away(tmp_path: Path) -> None:
    from alembic import command

    names = {"music", "music_name", "announcement", "announcement_name", "announcement_interval"}
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        upgrade(engine, "0015")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test')"))
            conn.execute(text("INSERT INTO queues (operation_id, name) VALUES ('0042', 'support')"))
        upgrade(engine, "0016")
        assert names <= {c["name"] for c in inspect(engine).get_columns("queues")}
        with engine.connect() as conn:  # a queue from before: the operation's music, no announcement
            assert tuple(conn.execute(text(
                "SELECT music, music_name, announcement, announcement_name, announcement_interval FROM queues"
            )).one()) == (None, "", None, "", 30.0)
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0015")
        assert not names & {c["name"] for c in inspect(engine).get_columns("queues")}
    finally:
        engine.dispose()
