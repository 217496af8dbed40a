"""RFC 4733 telephone-events (DTMF) in RTP: the payload, what a sender emits per digit, what a receiver makes of it.

Payload (§2.3): event (8 bits), E end bit, R reserved, volume (6 bits, -dBm0), duration (16 bits, timestamp units).
Events 0-9 are the digits, 10 ``*``, 11 ``#``, 12-15 ``A``-``D`` (§3.2, Table 7).

Sender (§2.5.1): every packet of one event carries the timestamp of the event's start; the first has the marker
bit; each 20 ms update carries the duration so far; the final packet (E set, the full duration) is sent three times
(§2.5.1.4), each with its own sequence number, so the stream's sequence stays continuous.

Receiver (§2.5.2): an event is identified by its RTP timestamp; updates raise its duration; the first packet with E
ends it, and its retransmissions change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from callbridge.phone.rtp import RtpError

__all__ = ["DIGIT_CODES", "ReceivedEvent", "TelephoneEventReceiver", "decode_event", "encode_event",
           "event_packets"]

DIGIT_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
CODE_DIGITS = {code: digit for digit, code in DIGIT_CODES.items()}
FINAL_REPEATS = 3


def encode_event(event: int, *, end: bool, volume: int, duration: int) -> bytes:
    if not 0 <= volume <= 63:
        raise ValueError(f"volume {volume} outside 0..63 (-dBm0)")
    return bytes([event & 0xFF, (0x80 if end else 0) | volume]) + min(duration, 0xFFFF).to_bytes(2, "big")


def decode_event(payload: bytes) -> tuple[int, bool, int, int]:
    """(event, end, volume, duration) of a telephone-event payload."""
    if len(payload) < 4:
        raise RtpError(f"telephone-event payload of {len(payload)} bytes (4 needed)")
    return payload[0], bool(payload[1] & 0x80), payload[1] & 0x3F, int.from_bytes(payload[2:4], "big")


def event_packets(digit: str, duration_ms: int, *, volume: int = 10, frame: int = 160) -> Iterator[tuple[bool, bytes]]:
    """(marker, payload) of each 20 ms packet of one digit, final packet repeats included."""
    code = DIGIT_CODES.get(digit.upper())
    if code is None:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    total = max(frame, duration_ms * 8)
    duration = frame
    first = True
    while duration < total:
        yield first, encode_event(code, end=False, volume=volume, duration=duration)
        first = False
        duration += frame
    for _ in range(FINAL_REPEATS):
        yield first, encode_event(code, end=True, volume=volume, duration=total)
        first = False


@dataclass
class ReceivedEvent:
    digit: str  # "?" for an event code that is not a DTMF digit
    code: int
    timestamp: int
    volume: int
    duration: int  # timestamp units (1/8000 s for 8 kHz audio)
    ended: bool
    started_at: float  # arrival time of its first packet (the phone's clock)
    ended_at: float | None = None

    @property
    def duration_ms(self) -> float:
        return self.duration / 8


class TelephoneEventReceiver:
    """Events of one stream, in the order they started (bounded to the last ``keep``)."""

    def __init__(self, keep: int = 1000) -> None:
        self.events: list[ReceivedEvent] = []
        self._keep = keep

    def on_payload(self, payload: bytes, timestamp: int, arrival: float) -> ReceivedEvent | None:
        """Feed one packet; returns the event when this packet ended it (once), else None."""
        code, end, volume, duration = decode_event(payload)
        current = self.events[-1] if self.events else None
        if current is None or current.timestamp != timestamp or current.code != code:
            if any(e.timestamp == timestamp and e.code == code for e in self.events[-4:]):
                return None  # a late packet of an earlier event
            current = ReceivedEvent(CODE_DIGITS.get(code, "?"), code, timestamp, volume, duration, False, arrival)
            self.events.append(current)
            if len(self.events) > self._keep:
                del self.events[0]
        if current.ended:
            return None
        current.duration = max(current.duration, duration)
        if end:
            current.ended = True
            current.ended_at = arrival
            return current
        return None
