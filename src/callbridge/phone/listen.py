"""What a phone heard over time: the audio it received cut into windows (100 ms by default), each analysed for its
level and dominant frequency, and summaries over a time range.

Theory of operation
- Per packet (the hot path) its G.711 payload is appended, still encoded, to the open window and the arrival
  time noted; nothing else (no decoding: one byte a sample kept, decoded when analysed). A window closes when it
  holds ``window`` seconds of samples; it starts at the arrival time of its first packet (the phone's clock,
  ``loop.time()``). A silence in the arrivals longer than one window (hold, a
  pause) discards the partial window, so a window never spans a gap; so does a change of codec.
- Analysis (`callbridge.phone.spectrum`, ~3 ms a window) runs only when `heard` asks, once per window (cached).
- Memory is bounded: the last ``keep`` seconds (30 by default: 240 kB a call) of windows and arrival times.

`Heard` judges a range by *expected* windows, ``floor((until - since) / window) - 1`` (windows are not aligned to
the range, so one may straddle each end): a stream that stopped, or never came, scores low instead of being judged
on the few windows it produced.
"""

from __future__ import annotations

import bisect
import math
import statistics
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from callbridge.media.g711 import PCMU, decode
from callbridge.phone.spectrum import Spectrum, analyse

__all__ = ["Heard", "Listener", "Window"]


@dataclass
class Window:
    start: float
    end: float
    payload: bytes  # G.711, one byte a sample
    codec: str = PCMU
    _spectrum: Spectrum | None = field(default=None, repr=False)

    @property
    def samples(self) -> array[int]:
        return decode(self.codec, self.payload)

    @property
    def spectrum(self) -> Spectrum:
        if self._spectrum is None:
            self._spectrum = analyse(self.samples)
        return self._spectrum

    @property
    def hz(self) -> float | None:
        return self.spectrum.dominant_hz

    @property
    def dbfs(self) -> float:
        return self.spectrum.level_dbfs


@dataclass(frozen=True)
class Heard:
    """Windows heard between ``since`` and ``until`` (the phone's clock)."""

    since: float
    until: float
    windows: Sequence[Window]
    expected: int

    def matching(self, hz: float, tolerance: float = 5.0, min_dbfs: float = -50.0) -> int:
        return sum(1 for w in self.windows
                   if w.hz is not None and abs(w.hz - hz) <= tolerance and w.dbfs >= min_dbfs)

    def share(self, hz: float, tolerance: float = 5.0, min_dbfs: float = -50.0) -> float:
        """Of the expected windows, the share whose dominant tone is ``hz`` ± ``tolerance`` at ``min_dbfs`` or more."""
        return min(1.0, self.matching(hz, tolerance, min_dbfs) / max(1, self.expected, len(self.windows)))

    @property
    def dominant_hz(self) -> float | None:
        """The most frequent dominant tone (windows grouped within 5 Hz), its mean frequency; None if no tone."""
        tones = sorted(w.hz for w in self.windows if w.hz is not None)
        if not tones:
            return None
        groups: list[list[float]] = [[tones[0]]]
        for hz in tones[1:]:
            if hz - groups[-1][0] <= 5.0:
                groups[-1].append(hz)
            else:
                groups.append([hz])
        best = max(groups, key=len)
        return sum(best) / len(best)

    @property
    def level_dbfs(self) -> float:
        """Median level of the windows heard (``-inf`` when none)."""
        if not self.windows:
            return -math.inf
        return statistics.median(w.dbfs for w in self.windows)

    def __str__(self) -> str:
        hz = self.dominant_hz
        if hz is None:
            return (f"between {self.since:.2f} and {self.until:.2f} s: no tone in {len(self.windows)} windows "
                    f"of {self.expected} expected")
        return (f"between {self.since:.2f} and {self.until:.2f} s: {hz:.0f} Hz at {self.level_dbfs:.1f} dBFS in "
                f"{self.share(hz):.0%} of {max(self.expected, len(self.windows))} windows")


class Listener:
    def __init__(self, *, window: float = 0.1, rate: int = 8000, keep: float = 30.0) -> None:
        self.window = window
        self.rate = rate
        self._size = round(window * rate)
        self._windows: deque[Window] = deque(maxlen=max(1, int(keep / window)))
        self._arrivals: deque[float] = deque(maxlen=max(1, int(keep * 50)))
        self._open = bytearray()
        self._open_start = 0.0
        self._codec = PCMU
        self._last = -math.inf

    def feed(self, arrival: float, payload: bytes, codec: str = PCMU) -> None:
        """One packet's G.711 payload (``codec`` "PCMU" or "PCMA"), arrived at ``arrival``."""
        self._arrivals.append(arrival)
        current = self._open
        if arrival - self._last > self.window or codec != self._codec:
            current.clear()
            self._codec = codec
        self._last = arrival
        if not current:
            self._open_start = arrival
        current += payload
        if len(current) >= self._size:
            self._windows.append(Window(self._open_start, arrival, bytes(current[: self._size]), codec))
            del current[: self._size]
            self._open_start = arrival

    def windows(self, since: float = -math.inf, until: float = math.inf) -> list[Window]:
        return [w for w in self._windows if w.start >= since and w.end <= until]

    def heard(self, since: float, until: float) -> Heard:
        if until <= since:
            raise ValueError(f"until ({until}) must be after since ({since})")
        expected = max(0, math.floor((until - since) / self.window) - 1)
        return Heard(since, until, self.windows(since, until), expected)

    def packets_between(self, since: float, until: float) -> int:
        """Audio packets that arrived in ``[since, until]`` (within the kept history)."""
        arrivals = self._arrivals
        return bisect.bisect_right(arrivals, until) - bisect.bisect_left(arrivals, since)
