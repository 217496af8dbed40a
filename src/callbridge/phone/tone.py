"""What a phone's RTP endpoint plays: a tone, silence, or recorded audio, as ready-made G.711 frames.

A source is encoded once per codec into one loop of whole 20 ms frames, so sending a packet is a slice of bytes (no
arithmetic per sample on the 50-packets-per-second path). A tone's loop is the shortest whole number of 20 ms frames
that holds a whole number of its periods (for a frequency ``p/q`` Hz: ``lcm(8000 q / gcd(p, 8000 q), 160)``
samples; 1000 Hz is one frame, 425 Hz two, 440 Hz five), so a looped tone is phase-continuous: no click at the
seam, nothing the far end's spectrum would see. Frequencies are rounded to 0.1 Hz for that.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from fractions import Fraction

from callbridge.media.audio import tone_samples
from callbridge.media.g711 import encode

__all__ = ["FRAME", "FrameSource", "silence", "tone"]

FRAME = 160  # samples per 20 ms packet at 8 kHz (RFC 3551 §4.5: ptime 20 is the G.711 default)
RATE = 8000


class FrameSource:
    """Audio to send, frame by frame; ``loop=False`` plays once then reports ``finished``."""

    def __init__(self, samples: Sequence[int], *, loop: bool = True, name: str = "audio") -> None:
        pad = (-len(samples)) % FRAME
        self.samples = array("h", samples)
        self.samples.extend([0] * pad)
        if not self.samples:
            self.samples.extend([0] * FRAME)
        self.loop = loop
        self.name = name
        self.frames = len(self.samples) // FRAME
        self._encoded: dict[str, bytes] = {}

    def payload(self, codec: str, index: int) -> bytes | None:
        """The ``index``-th frame (from 0) encoded with ``codec``; None when a non-looping source is over."""
        if index >= self.frames and not self.loop:
            return None
        encoded = self._encoded.get(codec)
        if encoded is None:
            encoded = self._encoded[codec] = encode(codec, self.samples)
        start = (index % self.frames) * FRAME
        return encoded[start: start + FRAME]

    def __repr__(self) -> str:
        return f"<FrameSource {self.name} {self.frames} frames{' looped' if self.loop else ''}>"


def _loop_samples(frequencies: Sequence[float]) -> int:
    length = FRAME
    for hz in frequencies:
        f = Fraction(round(hz * 10), 10)
        period = RATE * f.denominator // math.gcd(f.numerator, RATE * f.denominator)
        length = length * period // math.gcd(length, period)
    return length


def tone(*frequencies: float, dbfs: float = -12.0) -> FrameSource:
    """The sum of sines at ``frequencies`` (Hz), each at ``dbfs`` (peak ``32768 * 10^(dbfs/20)``), looped."""
    if not frequencies:
        raise ValueError("a tone needs at least one frequency")
    for hz in frequencies:
        if not 0 < hz < RATE / 2:
            raise ValueError(f"{hz} Hz cannot be carried at 8 kHz (0 < f < 4000)")
    rounded = [round(hz * 10) / 10 for hz in frequencies]
    count = _loop_samples(rounded)
    return FrameSource(tone_samples(rounded, dbfs, count), name="+".join(f"{hz:g} Hz" for hz in rounded))


def silence() -> FrameSource:
    return FrameSource([0] * FRAME, name="silence")
