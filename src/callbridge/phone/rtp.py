"""What a receiver counts about one RTP stream: packets, losses, jitter (RFC 3550 §6.4.1, A.3, A.8).

`ReceiverStats` follows one synchronisation source (SSRC): the extended highest sequence number with wrap-around
(A.1), ``expected - received`` as losses (A.3; duplicates are counted apart, never as received twice), and the
interarrival jitter in timestamp units, ``J += (|D| - J) / 16`` (A.8), given in milliseconds too. The packet format
itself is `callbridge.media.rtp_packet` (re-exported here).
"""

from __future__ import annotations

from collections import deque

from callbridge.media.rtp_packet import HEADER, RtpError, RtpPacket, build, parse

__all__ = ["HEADER", "ReceiverStats", "RtpError", "RtpPacket", "build", "parse"]

_SEQ_MOD = 1 << 16
_RECENT = 512  # sequence numbers remembered to recognise duplicates


class ReceiverStats:
    """Reception of one SSRC; `on_packet` per packet with its arrival time in seconds."""

    __slots__ = ("_base", "_cycles", "_last_transit", "_max_seq", "_recent", "_recent_set", "clock_rate",
                 "duplicates", "jitter", "received", "ssrc")

    def __init__(self, ssrc: int, clock_rate: int = 8000) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.received = 0
        self.duplicates = 0
        self.jitter = 0.0  # timestamp units
        self._base: int | None = None
        self._max_seq = 0
        self._cycles = 0
        self._last_transit: float | None = None
        self._recent: deque[int] = deque()
        self._recent_set: set[int] = set()

    def on_packet(self, sequence: int, timestamp: int, arrival: float) -> bool:
        """Count a packet; False when it is a duplicate (already counted)."""
        if self._base is None:
            self._base = sequence
            self._max_seq = sequence
            extended = sequence
        else:
            delta = (sequence - self._max_seq) % _SEQ_MOD
            if delta < _SEQ_MOD // 2:  # ahead (possibly wrapping): A.1's in-order case
                if sequence < self._max_seq:
                    self._cycles += _SEQ_MOD
                self._max_seq = sequence
                extended = self._cycles + sequence
            else:  # behind: late or duplicate
                extended = self._cycles + sequence - (_SEQ_MOD if sequence > self._max_seq else 0)
        if extended in self._recent_set:
            self.duplicates += 1
            return False
        self._recent.append(extended)
        self._recent_set.add(extended)
        if len(self._recent) > _RECENT:
            self._recent_set.discard(self._recent.popleft())
        self.received += 1
        transit = arrival * self.clock_rate - timestamp
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            if d < self.clock_rate * 10:  # a timestamp jump (a new talk spurt's clock) is not jitter
                self.jitter += (d - self.jitter) / 16
        self._last_transit = transit
        return True

    @property
    def expected(self) -> int:
        if self._base is None:
            return 0
        return self._cycles + self._max_seq - self._base + 1

    @property
    def lost(self) -> int:
        """Expected minus received (A.3); negative never (late duplicates are not received)."""
        return max(0, self.expected - self.received)

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000 / self.clock_rate

    def __repr__(self) -> str:
        return (f"<ReceiverStats ssrc={self.ssrc:#010x} received={self.received} lost={self.lost} "
                f"duplicates={self.duplicates} jitter={self.jitter_ms:.2f} ms>")
