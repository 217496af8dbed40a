"""Audio files for the relay: what is refused (with the file and the reason), what is converted (rate, channels,
width) and the built-in hold music and ringback, measured with the phone's spectrum analyser."""

from __future__ import annotations

import io
import math
import struct
import wave
from array import array
from pathlib import Path

import pytest

from callbridge.media.audio import (
    HOLD_MUSIC_NOTES,
    RATE,
    Audio,
    AudioError,
    hold_music,
    load_wav,
    resample,
    ringback,
    tone_samples,
    wav_from_bytes,
)
from callbridge.phone.spectrum import analyse


def wav_file(path: Path, frames: bytes, *, channels: int = 1, width: int = 2, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return path


def sine(hz: float, rate: int, seconds: float, peak: float = 8000.0) -> list[int]:
    return [round(peak * math.sin(2 * math.pi * hz * i / rate)) for i in range(int(rate * seconds))]


def pcm16(values: list[int]) -> bytes:
    return struct.pack(f"<{len(values)}h", *values)


def middle(audio: Audio, seconds: float = 0.1) -> list[int]:
    n = int(RATE * seconds)
    start = (len(audio.samples) - n) // 2
    return list(audio.samples[start: start + n])


# --- refusals ---------------------------------------------------------------------------------------------------
def refusal(path: Path, **options: float) -> str:
    with pytest.raises(AudioError) as caught:
        load_wav(path, **options)
    assert caught.value.path == str(path)
    assert str(caught.value) == f"{path}: {caught.value.reason}"
    return caught.value.reason


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    assert refusal(tmp_path / "nothing.wav") == "cannot read the file: No such file or directory"


def test_not_riff_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "song.mp3"
    path.write_bytes(b"ID3\x03\x00" + bytes(100))
    assert refusal(path) == "not a WAV file: it does not start with RIFF"
    path.write_bytes(b"RIFF\x10\x00\x00\x00AVI LIST")
    assert refusal(path) == "not a WAV file: a RIFF file of another form than WAVE"
    path.write_bytes(b"")
    assert refusal(path) == "not a WAV file: it does not start with RIFF"


def test_unsupported_sample_width_is_refused(tmp_path: Path) -> None:
    path = wav_file(tmp_path / "24bit.wav", bytes(3 * 800), width=3)
    assert refusal(path) == "unsupported sample width: 24 bits (8- or 16-bit PCM only)"


def test_a_float_wav_is_refused_as_not_pcm(tmp_path: Path) -> None:
    data = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + 8, b"WAVE", b"fmt ", 16, 3, 1, 8000, 32000, 4, 32,
                       b"data", 8) + bytes(8)
    path = tmp_path / "float.wav"
    path.write_bytes(data)
    assert refusal(path) == "not a readable WAV file: unsupported encoding (unknown format: 3; only PCM, format 1)"


def test_zero_frames_is_refused(tmp_path: Path) -> None:
    assert refusal(wav_file(tmp_path / "empty.wav", b"")) == "no audio: zero frames"


def test_too_long_is_refused(tmp_path: Path) -> None:
    path = wav_file(tmp_path / "long.wav", bytes(2 * 8000 * 3))
    assert refusal(path, max_seconds=2) == "too long: 3.0 s (at most 2 s)"
    assert load_wav(path, max_seconds=3).duration == 3.0


def test_a_bad_rate_and_a_truncated_file_are_refused(tmp_path: Path) -> None:
    path = wav_file(tmp_path / "slow.wav", bytes(200), rate=500)
    assert refusal(path) == "unsupported sample rate: 500 Hz (1000..192000 Hz)"
    whole = wav_file(tmp_path / "whole.wav", pcm16(sine(440, 8000, 0.5))).read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: 44 + 1000])
    assert refusal(cut) == "truncated: the header says 4000 frames, the file holds 500"
    cut.write_bytes(whole[:30])
    assert refusal(cut).startswith("not a readable WAV file: ")


# --- conversions ------------------------------------------------------------------------------------------------
def test_44k1_stereo_comes_out_8k_mono_with_the_tone_kept(tmp_path: Path) -> None:
    left = sine(1000, 44100, 1.0)
    right = sine(1000, 44100, 1.0)
    frames = pcm16([v for pair in zip(left, right, strict=True) for v in pair])
    audio = load_wav(wav_file(tmp_path / "cd.wav", frames, channels=2, rate=44100))
    assert audio.rate == 8000 and len(audio.samples) == 8000
    spectrum = analyse(middle(audio))
    assert spectrum.dominant_hz == pytest.approx(1000, abs=1.0)
    assert spectrum.level_dbfs == pytest.approx(20 * math.log10(8000 / 32768), abs=0.2)
    # and it is a WAV of that shape when written back
    with wave.open(io.BytesIO(audio.wav_bytes()), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (1, 2, 8000, 8000)


def test_downmix_is_the_mean_of_the_channels(tmp_path: Path) -> None:
    tone = sine(600, 8000, 0.5)
    frames = pcm16([v for s in tone for v in (s, 0)])  # left plays, right is silent
    audio = load_wav(wav_file(tmp_path / "left.wav", frames, channels=2))
    assert list(audio.samples[:50]) == [round(s / 2) for s in tone[:50]]
    assert analyse(middle(audio)).level_dbfs == pytest.approx(20 * math.log10(4000 / 32768), abs=0.1)


def test_8_bit_unsigned_and_16k_are_converted(tmp_path: Path) -> None:
    eight = bytes(128 + round(100 * math.sin(2 * math.pi * 800 * i / 8000)) for i in range(8000))
    audio = load_wav(wav_file(tmp_path / "u8.wav", eight, width=1))
    assert audio.samples[0] == 0 and max(audio.samples) == (max(eight) - 128) * 256
    assert analyse(middle(audio)).dominant_hz == pytest.approx(800, abs=1.0)
    wide = load_wav(wav_file(tmp_path / "16k.wav", pcm16(sine(3000, 16000, 0.5)), rate=16000))
    assert len(wide.samples) == 4000
    assert analyse(middle(wide)).dominant_hz == pytest.approx(3000, abs=1.0)


def test_what_8k_cannot_carry_is_filtered_not_aliased() -> None:
    # 6 kHz at 44.1 kHz would alias to 2 kHz in a naive decimation; the filter removes it
    out = resample(sine(6000, 44100, 0.5), 44100)
    assert analyse(list(out[1000:1800])).level_dbfs < -60
    # an upsampled tone keeps its frequency
    up = resample(sine(1000, 8000, 0.5), 8000, 16000)
    assert len(up) == 8000
    assert analyse(list(up[3000:4600]), 16000).dominant_hz == pytest.approx(1000, abs=1.0)


def test_tone_samples_are_phase_continuous() -> None:
    whole = tone_samples((440.0,), -6.0, 320)
    halves = tone_samples((440.0,), -6.0, 160) + tone_samples((440.0,), -6.0, 160, start=160)
    assert whole == halves
    assert max(whole) == round(32768 * 10 ** (-6 / 20))


# --- built-in sounds ---------------------------------------------------------------------------------------------
def test_hold_music_plays_its_documented_notes() -> None:
    music = hold_music()
    assert music.duration == 2.0 and music == hold_music()  # deterministic
    heard = []
    start = 0.0
    for hz, seconds in HOLD_MUSIC_NOTES:
        centre = int((start + seconds / 2) * RATE)
        spectrum = analyse(list(music.samples[centre - 400: centre + 400]))
        heard.append((round(spectrum.dominant_hz or 0), hz))
        assert spectrum.level_dbfs == pytest.approx(-16.0, abs=0.1)
        start += seconds
    assert heard == [(400, 400.0), (600, 600.0), (800, 800.0), (600, 600.0)]


def test_ringback_cadences() -> None:
    etsi = ringback()
    assert etsi.duration == 5.0
    assert analyse(list(etsi.samples[3600:4400])).dominant_hz == pytest.approx(425, abs=1.0)
    assert set(etsi.samples[8000:]) == {0}  # 4 s off
    us = ringback("us")
    assert us.duration == 6.0
    both = analyse(list(us.samples[8000:8800])).peaks(2)
    assert sorted(round(p.hz) for p in both) == [440, 480]
    assert set(us.samples[16000:]) == {0}
    with pytest.raises(ValueError, match="unknown ringback style 'uk' \\(one of etsi, us\\)"):
        ringback("uk")


def test_bytes_entry_point_names_the_source() -> None:
    with pytest.raises(AudioError, match=r"^upload: not a WAV file"):
        wav_from_bytes(b"nope", name="upload")
    assert array("h", wav_from_bytes(Audio(array("h", [1, -1, 2])).wav_bytes()).samples) == array("h", [1, -1, 2])
