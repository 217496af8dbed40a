"""One call's recording segments (rtpengine's pcap files) converted into one two-channel WAV.

    recording = await asyncio.to_thread(convert_recording, [seg1, seg2], customer=("203.0.113.7", 40000))
    recording.wav                      # bytes of a WAV: 8 kHz, 16-bit, 2 channels (or written to ``out``)
    recording.segments, recording.pauses

Channels: channel 1 (left) is the customer's stream, recognised by its RTP source address and port, by its
SSRC, or by the relay's port that received it (``customer_port``: rtpengine captures what it receives, and the port
facing the customer stays the same for the whole call, whatever NAT does to the customer's address); channel 2
(right) is every other party, mixed (summed and clipped), each at its own place in time.
When the customer is known by address, channel 2 takes the packets the other parties sent (neither from nor to the
customer); only if there are none does it take what was sent to the customer (a recorder that captured the
relay's output), so no party is heard twice.

Placing audio in time: the output starts at the first packet of all segments (``recording.start``, the pcap time
in seconds since the epoch). Within one stream (one source, destination and SSRC in one segment), a packet's place
is its stream's anchor (the pcap time of its first packet) plus its RTP timestamp's distance from the anchor's
(modulo 2^32, at 8 kHz): the sender's clock, so capture jitter does not move audio around and a pause in the
sender's stream (hold) stays a pause of the right length. When the timestamp and the capture time disagree by more
than ``REANCHOR_SECONDS`` (a new talk spurt with a new clock, a sender restarted) the stream is anchored again at
that packet's capture time. Between segments, capture time alone places each segment. Anything not covered is
digital silence.

Decoded: G.711 PCMU (payload type 0) and PCMA (8). Other payloads (telephone-event, comfort noise) and RTCP are
skipped and counted. A duplicate (same SSRC, sequence number and timestamp in one stream) is written once.

Reported: each segment (its file, start and duration relative to the output's start, packets used) and the pauses:
every stretch of at least ``PAUSE_SECONDS`` in which neither channel has audio (between segments, and inside one
while nobody sent). Pure: reads the files given, writes only ``out``; run it off the event loop
(``asyncio.to_thread``): it costs about 1.5 CPU-seconds per ten minutes of a two-party call
(bench/recording_conversion.py: 6.6 minutes of WAV per CPU-second, 0.73 of a naive join that places nothing).
"""

from __future__ import annotations

import functools
import io
import ipaddress
import sys
import wave
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from callbridge.media.g711 import PCMA, PCMU, decode
from callbridge.media.pcap import PcapError, PcapFile, UdpPacket, read_pcap
from callbridge.media.rtp_packet import RtpError, is_rtcp, parse

__all__ = ["MAX_SECONDS", "PAUSE_SECONDS", "REANCHOR_SECONDS", "Pause", "Recording", "RecordingError",
           "SegmentInfo", "convert_recording"]

RATE = 8000
PAUSE_SECONDS = 0.2
REANCHOR_SECONDS = 0.5
MAX_SECONDS = 4 * 3600.0  # longer than any call: a bigger span means timestamps gone wrong, not audio
_CODECS = {0: PCMU, 8: PCMA}

Address = tuple[str, int]


class RecordingError(ValueError):
    """The segments cannot be converted: ``reason`` says why (a segment that is not a pcap names its file)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    start: float  # seconds from the recording's start (0 for a segment without audio)
    duration: float
    packets: int  # RTP audio packets written
    skipped: int  # records or packets not written (not UDP, RTCP, other payload types, duplicates)
    truncated: bool


@dataclass(frozen=True)
class Pause:
    start: float  # seconds from the recording's start
    duration: float


@dataclass(frozen=True)
class Recording:
    wav: bytes  # empty when written to ``path``
    path: Path | None
    start: float  # pcap time (seconds since the epoch) of the output's first sample
    duration: float
    segments: list[SegmentInfo] = field(default_factory=list)
    pauses: list[Pause] = field(default_factory=list)


@functools.lru_cache(maxsize=4096)
def _normalise(address: Address) -> Address:
    """The address with its IP written one way (a call has a few addresses: each is parsed once, not per packet)."""
    return (str(ipaddress.ip_address(address[0])), address[1])


@dataclass
class _Placed:
    channel: int
    position: int  # output sample index
    samples: array[int]


def _segment_packets(pcap: PcapFile, customer: Address | None, customer_ssrc: int | None, customer_port: int | None,
                     placed: list[_Placed]) -> tuple[int, int, float | None, float | None]:
    """Place one segment's audio packets (in samples since the epoch); (written, skipped, first, last) in seconds."""
    anchors: dict[tuple[Address, Address, int], tuple[float, int]] = {}
    seen: set[tuple[int, int, int]] = set()
    to_customer: list[_Placed] = []
    written = skipped = 0
    first = last = None
    for udp in pcap.packets:
        item = _place(udp, customer, customer_ssrc, customer_port, anchors, seen)
        if item is None:
            skipped += 1
            continue
        placed_item, towards_customer = item
        if towards_customer:
            to_customer.append(placed_item)
        else:
            placed.append(placed_item)
        written += 1
        start = placed_item.position / RATE
        end = start + len(placed_item.samples) / RATE
        first = start if first is None else min(first, start)
        last = end if last is None else max(last, end)
    if to_customer:
        if any(p.channel == 2 for p in placed):
            skipped += len(to_customer)
            written -= len(to_customer)
        else:
            placed.extend(to_customer)
    return written, skipped, first, last


def _place(udp: UdpPacket, customer: Address | None, customer_ssrc: int | None, customer_port: int | None,
           anchors: dict[tuple[Address, Address, int], tuple[float, int]],
           seen: set[tuple[int, int, int]]) -> tuple[_Placed, bool] | None:
    data = udp.payload
    if is_rtcp(data):
        return None
    try:
        packet = parse(data)
    except RtpError:
        return None
    codec = _CODECS.get(packet.payload_type)
    if codec is None or not packet.payload:
        return None
    key = (packet.ssrc, packet.sequence, packet.timestamp)
    if key in seen:
        return None
    seen.add(key)
    source, destination = _normalise(udp.source), _normalise(udp.destination)
    is_customer = (customer is not None and source == customer) or (
        customer_ssrc is not None and packet.ssrc == customer_ssrc) or (
        customer_port is not None and destination[1] == customer_port)
    towards_customer = not is_customer and customer is not None and destination == customer
    stream = (source, destination, packet.ssrc)
    anchor = anchors.get(stream)
    if anchor is None:
        anchor = anchors[stream] = (udp.time, packet.timestamp)
    elapsed = ((packet.timestamp - anchor[1] + 0x80000000) % 0x100000000 - 0x80000000) / RATE
    when = anchor[0] + elapsed
    if abs(when - udp.time) > REANCHOR_SECONDS:
        anchors[stream] = (udp.time, packet.timestamp)
        when = udp.time
    return _Placed(1 if is_customer else 2, round(when * RATE), decode(codec, packet.payload)), towards_customer


def _read(segment: Path | bytes, number: int) -> PcapFile:
    if isinstance(segment, bytes):
        name = f"segment {number}"
        data = segment
    else:
        name = str(segment)
        try:
            data = Path(segment).read_bytes()
        except OSError as exc:
            raise RecordingError(f"{name}: cannot read the file: {exc.strerror or exc}") from exc
    try:
        return read_pcap(data, name)
    except PcapError as exc:
        raise RecordingError(str(exc)) from exc


def _pauses(coverage: bytearray) -> list[Pause]:
    pauses = []
    minimum = int(PAUSE_SECONDS * RATE)
    position = coverage.find(0)
    while position != -1:
        end = coverage.find(1, position)
        end = len(coverage) if end == -1 else end
        if end - position >= minimum:
            pauses.append(Pause(position / RATE, (end - position) / RATE))
        position = coverage.find(0, end) if end < len(coverage) else -1
    return pauses


def convert_recording(segments: Sequence[Path | bytes], *, customer: Address | None = None,
                      customer_ssrc: int | None = None, customer_port: int | None = None,
                      out: Path | None = None) -> Recording:
    """The segments of one call (pcap files or their bytes, any order) as one two-channel WAV (module docstring).
    Raises `RecordingError` when a segment cannot be read, no customer is named, or nothing is audio."""
    if customer is None and customer_ssrc is None and customer_port is None:
        raise RecordingError("name the customer's stream: its RTP address and port, its SSRC, or the relay's port")
    if not segments:
        raise RecordingError("no segments")
    if customer is not None:
        try:
            customer = _normalise(customer)
        except ValueError as exc:
            raise RecordingError(f"the customer's address {customer[0]!r} is not an IP literal") from exc
    pcaps = [_read(segment, number) for number, segment in enumerate(segments, 1)]
    placed: list[_Placed] = []
    spans: list[tuple[PcapFile, int, int, float | None, float | None]] = []
    for pcap in pcaps:
        written, skipped, first, last = _segment_packets(pcap, customer, customer_ssrc, customer_port, placed)
        spans.append((pcap, written, skipped + pcap.skipped, first, last))
    if not placed:
        raise RecordingError("no G.711 audio (RTP payload type 0 or 8) in the segments")
    origin = min(p.position for p in placed)
    end = max(p.position + len(p.samples) for p in placed)
    total = end - origin
    if total > MAX_SECONDS * RATE:
        raise RecordingError(f"the segments span {total / RATE:.0f} s (at most {MAX_SECONDS:.0f} s): "
                             "their times or RTP timestamps are inconsistent")
    channels = {1: array("h", bytes(2 * total)), 2: array("h", bytes(2 * total))}
    covered = {1: bytearray(total), 2: bytearray(total)}
    for item in sorted(placed, key=lambda p: p.position):
        start = item.position - origin
        samples = item.samples
        n = len(samples)
        target, mask = channels[item.channel], covered[item.channel]
        if mask.find(1, start, start + n) == -1:
            target[start: start + n] = samples
        else:  # another party (or an overlapping packet) already there: mix
            for i, value in enumerate(samples, start):
                mixed = target[i] + value
                target[i] = 32767 if mixed > 32767 else -32768 if mixed < -32768 else mixed
        mask[start: start + n] = b"\x01" * n
    stereo = array("h", bytes(4 * total))
    stereo[0::2] = channels[1]
    stereo[1::2] = channels[2]
    if sys.byteorder != "little":
        stereo.byteswap()
    # either channel has audio: one OR over the two coverage maps as big integers (C speed, not per sample)
    either = bytearray((int.from_bytes(covered[1], "big") | int.from_bytes(covered[2], "big")).to_bytes(total, "big"))
    infos = [SegmentInfo(pcap.name, round(first - origin / RATE, 6) if first is not None else 0.0,
                         round(last - first, 6) if first is not None and last is not None else 0.0, written,
                         skipped, pcap.truncated)
             for pcap, written, skipped, first, last in spans]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(stereo.tobytes())
    data = buffer.getvalue()
    if out is not None:
        out.write_bytes(data)
        data = b""
    return Recording(data, out, origin / RATE, total / RATE, infos, _pauses(either))
