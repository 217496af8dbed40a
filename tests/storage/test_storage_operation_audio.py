"""An operation's audio settings, on SQLite and PostgreSQL (docs/operations.md, "Audio"): the hold music given as a
WAV file is converted once at load (8 kHz mono 16-bit) and stored; a file that cannot be played is refused with the
file and the reason and nothing is created; transfer_audio and ringback_tone are checked; the operation file sets
them, and a changed music file is an update shown as "(changed)"."""

from __future__ import annotations

import copy
import io
import math
import struct
import wave
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from callbridge.media.audio import wav_from_bytes
from callbridge.storage import admin_apply as ap
from callbridge.storage import administration as admin
from callbridge.storage.directory import Directory

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "operation.toml"


def write_wav(path: Path, *, hz: float, seconds: float, rate: int = 16000, channels: int = 2) -> Path:
    """A sine at -6 dBFS as 16-bit PCM, in every channel."""
    frames = bytearray()
    for i in range(int(seconds * rate)):
        value = int(16384 * math.sin(2 * math.pi * hz * i / rate))
        frames += struct.pack("<h", value) * channels
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(bytes(frames))
    return path


def test_the_hold_music_file_is_converted_once_and_stored(engine: Engine, tmp_path: Path) -> None:
    music = write_wav(tmp_path / "hold.wav", hz=500, seconds=1.5)
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test", hold_music=str(music), transfer_audio="music",
                               ringback_tone="us")
        admin.create_operation(conn, id="0043", sip_domain="b.test")
    first, second = Directory(engine).load().list_operations()
    assert (first.hold_music_name, first.transfer_audio, first.ringback_tone) == ("hold.wav", "music", "us")
    assert first.hold_music is not None and first.hold_music[:4] == b"RIFF"
    with wave.open(io.BytesIO(first.hold_music)) as stored:
        assert (stored.getframerate(), stored.getnchannels(), stored.getsampwidth()) == (8000, 1, 2)
        assert stored.getnframes() == 12000  # 1.5 s at 8 kHz
    assert wav_from_bytes(first.hold_music).duration == 1.5
    assert (second.hold_music, second.hold_music_name, second.transfer_audio, second.ringback_tone) == (
        None, "", "ringback", "etsi")  # the built-in music, ringback while a transfer rings


@pytest.mark.parametrize(("content", "reason"), [
    (None, "cannot read the file: No such file or directory"),
    (b"hello", "not a WAV file: it does not start with RIFF"),
    ("long", "too long: 9.0 s (at most 8 s)"),
])
def test_a_music_file_that_cannot_be_played_is_refused_with_the_file_and_why(
        engine: Engine, tmp_path: Path, content: bytes | str | None, reason: str) -> None:
    path = tmp_path / "music.wav"
    if content == "long":
        write_wav(path, hz=500, seconds=9, rate=8000, channels=1)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with engine.begin() as conn, pytest.raises(admin.AdminError) as refused:
        admin.create_operation(conn, id="0042", sip_domain="a.test", hold_music=str(path))
    assert str(refused.value) == f"hold_music: {path}: {reason}"
    assert Directory(engine).load().list_operations() == []


@pytest.mark.parametrize(("field", "value", "message"), [
    ("transfer_audio", "silence", "transfer_audio: 'silence' is not 'ringback' or 'music'"),
    ("ringback_tone", "uk", "ringback_tone: 'uk' is not 'etsi' or 'us'"),
])
def test_the_transfer_audio_and_ringback_tone_are_checked(engine: Engine, field: str, value: str,
                                                          message: str) -> None:
    with engine.begin() as conn, pytest.raises(admin.AdminError) as refused:
        admin.create_operation(conn, id="0042", sip_domain="a.test", **{field: value})
    assert str(refused.value) == message
    assert Directory(engine).load().list_operations() == []


def test_the_operation_file_sets_the_music_and_a_changed_file_is_an_update(engine: Engine, tmp_path: Path) -> None:
    doc: dict[str, Any] = ap.read_operation_file(EXAMPLE)
    doc["operation"]["hold_music"] = str(write_wav(tmp_path / "a.wav", hz=500, seconds=1))
    ap.execute(engine, doc)
    assert ap.plan_lines(engine, doc) == []  # the same file converts to the same bytes: nothing to change
    [op] = Directory(engine).load().list_operations()
    assert op.hold_music_name == "a.wav" and wav_from_bytes(op.hold_music or b"").duration == 1.0

    changed = copy.deepcopy(doc)
    changed["operation"]["hold_music"] = str(write_wav(tmp_path / "b.wav", hz=700, seconds=2))
    assert ap.execute(engine, changed).lines() == [
        "update operation '0042': hold_music (changed), hold_music_name 'a.wav' -> 'b.wav'"]
    [op] = Directory(engine).load().list_operations()
    assert op.hold_music_name == "b.wav" and wav_from_bytes(op.hold_music or b"").duration == 2.0

    broken = copy.deepcopy(doc)
    (tmp_path / "c.wav").write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    broken["operation"]["hold_music"] = str(tmp_path / "c.wav")
    with pytest.raises(admin.AdminError) as refused:
        ap.execute(engine, broken)
    assert str(refused.value).startswith(f"operation.hold_music: {tmp_path / 'c.wav'}: ")
    [op] = Directory(engine).load().list_operations()
    assert op.hold_music_name == "b.wav"  # nothing changed

    back = copy.deepcopy(doc)
    del back["operation"]["hold_music"]
    assert ap.execute(engine, back).lines() == [
        "update operation '0042': hold_music (changed), hold_music_name 'b.wav' -> ''"]
    [op] = Directory(engine).load().list_operations()
    assert op.hold_music is None  # the built-in music again
