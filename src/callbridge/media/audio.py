"""Audio for the media relay: WAV files loaded and converted once, tones, and the built-in hold music and ringback.

Everything the relay plays is 8 kHz mono 16-bit PCM (`Audio`), what G.711 carries. `load_wav` reads a file with the
standard `wave` module and converts it once at load: downmix (the mean of the channels), sample width (8-bit WAV is
unsigned, RIFF convention) and rate (`resample`). What cannot be read is refused with `AudioError`, which names the
file and the reason; nothing is returned half-converted.

Resampling: windowed-sinc interpolation (Hann window, 8 zero crossings each side) with its cut-off at 90% of the
lower Nyquist frequency, so a 44.1 kHz file loses what 8 kHz cannot carry instead of folding it back as aliases.
The fractional position of each output sample is quantised to 1/256 of an input sample and the taps of each of
those 256 phases are computed once per conversion; each output sample is then one dot product (98 taps from
second of 44.1 kHz audio on one core: 0.13 s). Load files at start-up or in ``asyncio.to_thread``, never on the loop.

Built-in sounds, generated deterministically (same samples on every call, so tests can measure them):
- Hold music (`hold_music`): a 2 s phrase repeated, four notes of 500 ms each: 400, 600, 800, 600 Hz, each a pure
  sine at -16 dBFS with 10 ms linear fades at both ends (no clicks). Any 100 ms window inside a note hears that
  note's frequency.
- Ringback (`ringback`), ITU-T E.180 (Supplement 2 lists each country's tone): ``"etsi"`` (the default, most of
  Europe, ETSI ES 201 970): 425 Hz, 1 s on, 4 s off; ``"us"`` (North America): 440 Hz + 480 Hz together, 2 s on,
  4 s off. One full cadence period is returned; the player loops it. Level -16 dBFS per tone.
"""

from __future__ import annotations

import io
import math
import operator
import struct
import sys
import wave
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from callbridge.media.g711 import ulaw_encode

__all__ = ["HOLD_MUSIC_NOTES", "RATE", "RELAY_MAX_SECONDS", "RINGBACK", "Audio", "AudioError", "hold_music", "load_wav",
           "resample", "ringback", "tone_samples", "wav_from_bytes"]

RATE = 8000
MAX_SECONDS = 600.0
# What the relay plays is sent in one ng datagram as mu-law WAV (8,000 bytes a second): at most 8 s. Music loops.
RELAY_MAX_SECONDS = 8.0
MIN_RATE, MAX_RATE = 1000, 192000
HOLD_MUSIC_NOTES: tuple[tuple[float, float], ...] = ((400.0, 0.5), (600.0, 0.5), (800.0, 0.5), (600.0, 0.5))
HOLD_MUSIC_DBFS = -16.0
# name -> (frequencies played together, seconds on, seconds off)
RINGBACK: dict[str, tuple[tuple[float, ...], float, float]] = {
    "etsi": ((425.0,), 1.0, 4.0),
    "us": ((440.0, 480.0), 2.0, 4.0),
}
RINGBACK_DBFS = -16.0
_ZERO_CROSSINGS = 8
_PHASES = 256
_FULL_SCALE = 32768.0


class AudioError(ValueError):
    """A file that is not audio the relay can play: ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class Audio:
    """8 kHz mono 16-bit PCM samples."""

    samples: array[int]
    rate: int = RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate

    def ulaw_wav_bytes(self) -> bytes:
        """The samples as a G.711 mu-law WAV file (format 7, 8 bits a sample, RFC 2361 / the RIFF spec's fact
        chunk): what the relay is sent to play (half the bytes of 16-bit PCM, and what the call carries anyway)."""
        if self.rate != RATE:
            raise ValueError(f"mu-law WAV is {RATE} Hz audio, not {self.rate} Hz")
        data = ulaw_encode(self.samples)
        fmt = struct.pack("<HHIIHHH", 7, 1, RATE, RATE, 1, 8, 0)  # mu-law, mono, byte rate, align 1, 8 bits, cb 0
        fact = struct.pack("<I", len(data))
        body = b"".join((b"WAVE", b"fmt ", struct.pack("<I", len(fmt)), fmt, b"fact", struct.pack("<I", len(fact)),
                         fact, b"data", struct.pack("<I", len(data)), data, b"\0" * (len(data) % 2)))
        return b"RIFF" + struct.pack("<I", len(body)) + body

    def wav_bytes(self) -> bytes:
        """The samples as a WAV file (RIFF, PCM, mono, 16-bit)."""
        out = io.BytesIO()
        with wave.open(out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.rate)
            wav.writeframes(_little_endian(self.samples))
        return out.getvalue()


def _little_endian(samples: array[int]) -> bytes:
    if sys.byteorder == "little":
        return samples.tobytes()
    swapped = array("h", samples)
    swapped.byteswap()
    return swapped.tobytes()


def _clip(value: float) -> int:
    v = round(value)
    return 32767 if v > 32767 else -32768 if v < -32768 else v


def tone_samples(frequencies: Sequence[float], dbfs: float, count: int, *, rate: int = RATE, start: int = 0,
                 fade: int = 0) -> array[int]:
    """``count`` samples of the sum of sines at ``frequencies``, each at ``dbfs`` (peak ``32768 * 10^(dbfs/20)``),
    from sample index ``start`` (phase-continuous across calls), with ``fade`` samples of linear fade in and out."""
    peak = _FULL_SCALE * 10 ** (dbfs / 20)
    steps = [2 * math.pi * f / rate for f in frequencies]
    out = array("h", bytes(2 * count))
    for i in range(count):
        n = start + i
        value = sum(math.sin(step * n) for step in steps) * peak
        if fade:
            value *= min(1.0, (i + 1) / fade, (count - i) / fade)
        out[i] = _clip(value)
    return out


def hold_music() -> Audio:
    """The built-in hold music: one 2 s phrase (see the module docstring); the player loops it."""
    samples = array("h")
    fade = RATE // 100
    for hz, seconds in HOLD_MUSIC_NOTES:
        samples.extend(tone_samples((hz,), HOLD_MUSIC_DBFS, int(seconds * RATE), fade=fade))
    return Audio(samples)


def ringback(style: str = "etsi") -> Audio:
    """One cadence period of the ringback tone ``style`` ("etsi" or "us", ITU-T E.180)."""
    try:
        frequencies, on, off = RINGBACK[style]
    except KeyError:
        raise ValueError(f"unknown ringback style {style!r} (one of {', '.join(sorted(RINGBACK))})") from None
    samples = tone_samples(frequencies, RINGBACK_DBFS, int(on * RATE), fade=RATE // 200)
    samples.extend(array("h", bytes(2 * int(off * RATE))))
    return Audio(samples)


# --- conversion -------------------------------------------------------------------------------------------------
def _taps(phase: float, half: int, cutoff: float) -> list[float]:
    """Windowed-sinc taps for input samples at offsets -half+1..half around a point ``phase`` (0..1) past the
    first of the two central samples; normalised to unity gain at DC."""
    taps = []
    for j in range(-half + 1, half + 1):
        t = j - phase
        x = cutoff * t
        sinc = 1.0 if x == 0 else math.sin(math.pi * x) / (math.pi * x)
        window = 0.5 + 0.5 * math.cos(math.pi * t / half) if abs(t) < half else 0.0
        taps.append(sinc * window)
    total = sum(taps)
    return [tap / total for tap in taps]


def resample(samples: Sequence[int], rate_in: int, rate_out: int = RATE) -> array[int]:
    """``samples`` at ``rate_in`` converted to ``rate_out`` (see the module docstring for the filter)."""
    if rate_in == rate_out:
        return array("h", samples)
    if not samples:
        return array("h")
    ratio = rate_in / rate_out  # input samples per output sample
    cutoff = min(1.0, 1 / ratio) * 0.9  # of the input Nyquist frequency
    half = max(2, math.ceil(_ZERO_CROSSINGS / cutoff))
    bank = [_taps(p / _PHASES, half, cutoff) for p in range(_PHASES)]
    padded = [0] * half + list(samples) + [0] * (half + 1)
    count = int(len(samples) / ratio)
    out = array("h", bytes(2 * count))
    mul = operator.mul
    for n in range(count):
        position = n * ratio
        base = int(position)
        phase = int((position - base) * _PHASES)
        # input indices base-half+1 .. base+half, shifted by the padding
        window = padded[base + 1: base + 2 * half + 1]
        out[n] = _clip(sum(map(mul, bank[phase], window)))
    return out


def _frames_to_mono(data: bytes, width: int, channels: int) -> list[int]:
    if width == 1:
        values = [(b - 128) << 8 for b in data]  # 8-bit WAV is unsigned
    else:
        pcm = array("h")
        pcm.frombytes(data[: len(data) - len(data) % 2])
        if sys.byteorder != "little":
            pcm.byteswap()
        values = list(pcm)
    if channels == 1:
        return values
    return [round(sum(values[i: i + channels]) / channels) for i in range(0, len(values) - channels + 1, channels)]


def load_wav(path: str | Path, *, max_seconds: float = MAX_SECONDS) -> Audio:
    """The WAV file at ``path`` as 8 kHz mono 16-bit `Audio`; raises `AudioError` naming the file and the reason."""
    try:
        with open(path, "rb") as f:
            data = f.read(int(max_seconds * MAX_RATE * 8 * 4) + 1024)
    except OSError as exc:
        raise AudioError(path, f"cannot read the file: {exc.strerror or exc}") from exc
    return wav_from_bytes(data, name=str(path), max_seconds=max_seconds)


def wav_from_bytes(data: bytes, *, name: str = "<bytes>", max_seconds: float = MAX_SECONDS) -> Audio:
    """`load_wav` on bytes already read (``name`` is used in errors)."""
    if len(data) < 12 or data[:4] != b"RIFF":
        raise AudioError(name, "not a WAV file: it does not start with RIFF")
    if data[8:12] != b"WAVE":
        raise AudioError(name, "not a WAV file: a RIFF file of another form than WAVE")
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels, width, rate, frames = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(),
                                             wav.getnframes())
            if width not in (1, 2):
                raise AudioError(name, f"unsupported sample width: {width * 8} bits (8- or 16-bit PCM only)")
            if not MIN_RATE <= rate <= MAX_RATE:
                raise AudioError(name, f"unsupported sample rate: {rate} Hz ({MIN_RATE}..{MAX_RATE} Hz)")
            if frames == 0:
                raise AudioError(name, "no audio: zero frames")
            if frames / rate > max_seconds:
                raise AudioError(name, f"too long: {frames / rate:.1f} s (at most {max_seconds:g} s)")
            raw = wav.readframes(frames)
    except wave.Error as exc:
        reason = str(exc)
        if reason.startswith("unknown format"):
            reason = f"unsupported encoding ({reason}; only PCM, format 1)"
        raise AudioError(name, f"not a readable WAV file: {reason}") from exc
    except EOFError as exc:
        raise AudioError(name, "not a readable WAV file: it ends inside its header") from exc
    got = len(raw) // (width * channels)
    if got == 0:
        raise AudioError(name, "no audio: the data chunk is empty")
    if got < frames:
        raise AudioError(name, f"truncated: the header says {frames} frames, the file holds {got}")
    mono = _frames_to_mono(raw, width, channels)
    return Audio(resample(mono, rate, RATE))
