"""What a block of audio sounds like: its level in dBFS and its dominant frequencies, in pure Python.

Method: the block (typically 100 ms, 800 samples at 8 kHz) is weighted with a Hann window, zero-padded to a power
of two (1024) and transformed by an iterative radix-2 FFT; the peak bin's frequency is refined by Gaussian
(log-parabolic) interpolation between its neighbours, which with a Hann window lands within about 1 Hz of a pure
tone's frequency (the bins are 7.8 Hz apart). About 3 ms per 100 ms block on one core, and it runs only when a test
asks what was heard, never per packet.

Rules
- Level: RMS in dBFS where a full-scale sine (peak 32767) is 0 dBFS (AES17), so a sine of peak ``A`` is
  ``20 log10(A / 32768)`` dBFS. Digital silence is ``-inf``.
- A block has a dominant tone only when it is louder than ``SILENCE_DBFS`` and at least ``TONAL_SHARE`` of its
  energy (DC and below 50 Hz excluded) lies within ±2 bins of the peak: white noise spreads its energy over all 512
  bins (a peak holds a few percent), a tone concentrates it (a pure tone: over 95%; two equal tones: ~50% each).
- ``peaks(n)`` gives up to ``n`` tones, strongest first, each a local maximum at least 4 bins (31 Hz) from a
  stronger one and itself holding ``TONAL_SHARE`` / 2 of the energy (two mixed tones are both found).
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["SILENCE_DBFS", "TONAL_SHARE", "Peak", "Spectrum", "analyse", "level_dbfs"]

SILENCE_DBFS = -60.0
TONAL_SHARE = 0.30
_LOBE = 2  # bins either side of a peak counted as the peak's energy (Hann main lobe, widened by the zero padding)
_SEPARATION = 4
_LOW_CUT_HZ = 50.0
_FULL_SCALE = 32768.0


@dataclass(frozen=True, slots=True)
class Peak:
    hz: float
    share: float  # of the block's energy (above 50 Hz)


@lru_cache(maxsize=8)
def _plan(n: int) -> tuple[tuple[int, ...], tuple[complex, ...]]:
    bits = n.bit_length() - 1
    reverse = tuple(int(f"{i:0{bits}b}"[::-1], 2) for i in range(n))
    twiddles = tuple(cmath.exp(-2j * math.pi * k / n) for k in range(n // 2))
    return reverse, twiddles


@lru_cache(maxsize=8)
def _hann(length: int) -> tuple[float, ...]:
    if length == 1:
        return (1.0,)
    return tuple(0.5 - 0.5 * math.cos(2 * math.pi * i / (length - 1)) for i in range(length))


def _power_spectrum(samples: Sequence[float], n: int) -> list[float]:
    """|X[k]|^2 for k = 0..n/2 of the Hann-weighted, zero-padded samples."""
    reverse, twiddles = _plan(n)
    window = _hann(len(samples))
    x = [0j] * n
    for i, (s, w) in enumerate(zip(samples, window, strict=True)):
        x[i] = complex(s * w)
    a = [x[r] for r in reverse]
    size = 2
    while size <= n:
        half = size >> 1
        stride = n // size
        for start in range(0, n, size):
            k = 0
            for j in range(start, start + half):
                t = twiddles[k] * a[j + half]
                u = a[j]
                a[j] = u + t
                a[j + half] = u - t
                k += stride
        size <<= 1
    return [abs(v) ** 2 for v in a[: n // 2 + 1]]


def level_dbfs(samples: Sequence[float]) -> float:
    """RMS level in dBFS (full-scale sine = 0 dBFS); ``-inf`` for digital silence or no samples."""
    if not samples:
        return -math.inf
    mean_square = sum(s * s for s in samples) / len(samples)
    if mean_square <= 0:
        return -math.inf
    return 10 * math.log10(mean_square * 2 / (_FULL_SCALE * _FULL_SCALE))


@dataclass(frozen=True, slots=True)
class Spectrum:
    """The analysis of one block."""

    level_dbfs: float
    peaks_found: tuple[Peak, ...]

    @property
    def dominant(self) -> Peak | None:
        """The strongest tone when the block is tonal (see the module rules), else None (silence, noise)."""
        if self.peaks_found and self.peaks_found[0].share >= TONAL_SHARE:
            return self.peaks_found[0]
        return None

    @property
    def dominant_hz(self) -> float | None:
        peak = self.dominant
        return peak.hz if peak is not None else None

    def peaks(self, count: int = 2) -> list[Peak]:
        return list(self.peaks_found[:count])


def _interpolate(power: list[float], k: int) -> float:
    """The peak's position in bins, refined between its neighbours (Gaussian interpolation)."""
    if 0 < k < len(power) - 1:
        a, b, c = power[k - 1], power[k], power[k + 1]
        if a > 0 and b > 0 and c > 0:
            la, lb, lc = math.log(a), math.log(b), math.log(c)
            denominator = la - 2 * lb + lc
            if denominator < 0:
                return k + 0.5 * (la - lc) / denominator
    return float(k)


def analyse(samples: Sequence[float], rate: int = 8000, *, max_peaks: int = 4) -> Spectrum:
    """The level and the tones of ``samples`` (at ``rate`` Hz)."""
    level = level_dbfs(samples)
    if level < SILENCE_DBFS or len(samples) < 16:
        return Spectrum(level, ())
    n = 1 << max(8, (len(samples) - 1).bit_length())
    power = _power_spectrum(samples, n)
    low = int(_LOW_CUT_HZ * n / rate) + 1
    for k in range(low):
        power[k] = 0.0
    total = sum(power)
    if total <= 0:
        return Spectrum(level, ())
    maxima = sorted((k for k in range(low, len(power) - 1) if power[k] >= power[k - 1] and power[k] > power[k + 1]),
                    key=lambda k: power[k], reverse=True)
    found: list[Peak] = []
    taken: list[int] = []
    for k in maxima:
        if len(found) >= max_peaks:
            break
        if any(abs(k - other) < _SEPARATION for other in taken):
            continue
        share = sum(power[max(0, k - _LOBE): k + _LOBE + 1]) / total
        if share < TONAL_SHARE / 2:
            break  # sorted by power: the rest are weaker still
        taken.append(k)
        found.append(Peak(_interpolate(power, k) * rate / n, share))
    return Spectrum(level, tuple(found))
