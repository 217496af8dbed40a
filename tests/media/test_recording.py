"""Recording segments (pcap files written by the test) into one two-channel WAV: the customer on channel 1, every
other party on channel 2, pauses and the gap between segments as silence in the right place, both link types, IPv4
and IPv6, and every refusal."""

from __future__ import annotations

import io
import math
import wave
from array import array
from pathlib import Path

import pytest
from pcap_writer import LINK_ETHERNET, LINK_RAW, PcapWriter

from callbridge.media.g711 import alaw_encode, decode, ulaw_encode
from callbridge.media.pcap import read_pcap
from callbridge.media.recording import Pause, RecordingError, convert_recording
from callbridge.media.rtp_packet import build
from callbridge.phone.spectrum import analyse

CUSTOMER = ("127.0.0.7", 40000)
AGENT = ("127.0.0.8", 30000)
TARGET = ("127.0.0.9", 31000)
RELAY_A = ("127.0.0.1", 20000)  # rtpengine's port facing the customer
RELAY_B = ("127.0.0.1", 20002)  # ... facing the agents
T0 = 1_780_000_000.0  # the recording's first packet, seconds since the epoch


def frame_of(hz: float, n: int) -> list[int]:
    return [round(8000 * math.sin(2 * math.pi * hz * (n * 160 + i) / 8000)) for i in range(160)]


def stream(writer: PcapWriter, source: tuple[str, int], destination: tuple[str, int], *, hz: float, start: float,
           seconds: float, ssrc: int, seq: int = 1000, ts: int = 5000, pt: int = 0, jitter: float = 0.0) -> None:
    """``seconds`` of a tone as 20 ms packets, captured at ``start`` + k * 20 ms (+ alternating ``jitter``)."""
    encode = ulaw_encode if pt == 0 else alaw_encode
    for k in range(round(seconds * 50)):
        payload = encode(frame_of(hz, k))
        wobble = jitter if k % 2 else -jitter
        writer.add(start + k * 0.02 + wobble, source, destination,
                   build(pt, seq + k, ts + 160 * k, ssrc, payload))


def channels(wav_bytes: bytes) -> tuple[list[int], list[int]]:
    with wave.open(io.BytesIO(wav_bytes), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        samples = array("h", wav.readframes(wav.getnframes()))
    return list(samples[0::2]), list(samples[1::2])


def tone_at(channel: list[int], second: float) -> float | None:
    start = int(second * 8000)
    return analyse(channel[start: start + 800]).dominant_hz


def silent(channel: list[int], start: float, end: float) -> bool:
    return set(channel[int(start * 8000): int(end * 8000)]) == {0}


def test_two_segments_with_a_pause_between(tmp_path: Path) -> None:
    first, second = PcapWriter(), PcapWriter(link_type=LINK_ETHERNET)
    stream(first, CUSTOMER, RELAY_A, hz=1000, start=T0, seconds=1.0, ssrc=0x1111)
    stream(first, AGENT, RELAY_B, hz=500, start=T0, seconds=1.0, ssrc=0x2222)
    # recording paused for 2 s; the streams went on (their timestamps moved on by 3 s)
    stream(second, CUSTOMER, RELAY_A, hz=1000, start=T0 + 3, seconds=1.0, ssrc=0x1111, seq=1150, ts=5000 + 24000)
    stream(second, AGENT, RELAY_B, hz=700, start=T0 + 3, seconds=1.0, ssrc=0x2222, seq=1150, ts=5000 + 24000)
    paths = [tmp_path / "seg-1.pcap", tmp_path / "seg-2.pcap"]
    paths[0].write_bytes(first.to_bytes())
    paths[1].write_bytes(second.to_bytes())
    recording = convert_recording(paths, customer=CUSTOMER)
    assert recording.start == T0 and recording.duration == 4.0
    assert [(s.name, s.start, s.duration, s.packets, s.truncated) for s in recording.segments] == [
        (str(paths[0]), 0.0, 1.0, 100, False), (str(paths[1]), 3.0, 1.0, 100, False)]
    assert recording.pauses == [Pause(1.0, 2.0)]
    customer, others = channels(recording.wav)
    assert len(customer) == len(others) == 32000
    assert tone_at(customer, 0.4) == pytest.approx(1000, abs=1) and tone_at(customer, 3.4) == pytest.approx(1000, abs=1)
    assert tone_at(others, 0.4) == pytest.approx(500, abs=1) and tone_at(others, 3.4) == pytest.approx(700, abs=1)
    assert silent(customer, 1.0, 3.0) and silent(others, 1.0, 3.0)
    # the customer's samples are exactly the decoded packets, end to end
    assert customer[:160] == list(decode("PCMU", ulaw_encode(frame_of(1000, 0))))


def test_a_pause_inside_a_segment_is_placed_by_rtp_timestamps_not_capture_jitter() -> None:
    writer = PcapWriter(nanoseconds=True, big_endian=True)
    stream(writer, CUSTOMER, RELAY_A, hz=1000, start=T0, seconds=0.5, ssrc=7, jitter=0.004)
    # on hold for 0.7 s: nothing sent, the sender's clock moved on by 0.7 s + 0.5 s of the first burst
    stream(writer, CUSTOMER, RELAY_A, hz=1000, start=T0 + 1.2, seconds=0.5, ssrc=7, seq=1025, ts=5000 + 9600,
           jitter=0.004)
    recording = convert_recording([writer.to_bytes()], customer_ssrc=7)
    customer, others = channels(recording.wav)
    assert recording.duration == pytest.approx(1.7, abs=0.01)
    assert recording.pauses == [Pause(0.5, 0.7)]
    assert silent(customer, 0.5, 1.2) and set(others) == {0}
    # capture jitter of ±4 ms moved nothing: the first burst is the 25 packets back to back
    expected = [v for k in range(25) for v in decode("PCMU", ulaw_encode(frame_of(1000, k)))]
    assert customer[:4000] == expected
    assert recording.segments[0].name == "segment 1"


def test_other_parties_are_mixed_on_channel_two_in_time_order() -> None:
    writer = PcapWriter(link_type=LINK_RAW)
    stream(writer, CUSTOMER, RELAY_A, hz=1000, start=T0, seconds=2.0, ssrc=1)
    stream(writer, AGENT, RELAY_B, hz=500, start=T0, seconds=1.0, ssrc=2)          # the agent, then
    stream(writer, TARGET, RELAY_B, hz=1500, start=T0 + 0.5, seconds=1.5, ssrc=3, pt=8)  # a transfer target
    recording = convert_recording([writer.to_bytes()], customer=CUSTOMER)
    customer, others = channels(recording.wav)
    assert tone_at(others, 0.2) == pytest.approx(500, abs=1)
    both = sorted(round(p.hz) for p in analyse(others[int(0.7 * 8000): int(0.8 * 8000)]).peaks(2))
    assert both == [500, 1500]  # the three-way moment: both on channel 2
    assert tone_at(others, 1.5) == pytest.approx(1500, abs=1)
    assert tone_at(customer, 1.5) == pytest.approx(1000, abs=1)
    assert recording.pauses == []


@pytest.mark.parametrize("link_type", [LINK_RAW, LINK_ETHERNET])
def test_ipv6_and_both_link_types(link_type: int) -> None:
    writer = PcapWriter(link_type=link_type, vlan=5 if link_type == LINK_ETHERNET else None)
    customer = ("::1", 40000)
    stream(writer, customer, ("::1", 20000), hz=1000, start=T0, seconds=0.5, ssrc=1)
    stream(writer, ("0:0:0:0:0:0:0:1", 30000), ("::1", 20002), hz=600, start=T0, seconds=0.5, ssrc=2)
    pcap = read_pcap(writer.to_bytes())
    assert pcap.link_type == link_type and len(pcap.packets) == 50 and pcap.skipped == 0
    assert pcap.packets[0].source == ("::1", 40000)
    recording = convert_recording([writer.to_bytes()], customer=("0::1", 40000))
    first, second = channels(recording.wav)
    assert tone_at(first, 0.2) == pytest.approx(1000, abs=1) and tone_at(second, 0.2) == pytest.approx(600, abs=1)


def test_what_the_relay_sent_to_the_customer_is_not_counted_twice() -> None:
    writer = PcapWriter()
    stream(writer, CUSTOMER, RELAY_A, hz=1000, start=T0, seconds=0.5, ssrc=1)
    stream(writer, AGENT, RELAY_B, hz=500, start=T0, seconds=0.5, ssrc=2)
    stream(writer, RELAY_A, CUSTOMER, hz=500, start=T0 + 0.001, seconds=0.5, ssrc=9)  # the same audio, relayed
    recording = convert_recording([writer.to_bytes()], customer=CUSTOMER)
    assert recording.segments[0].packets == 50 and recording.segments[0].skipped == 25
    only_relayed = PcapWriter()
    stream(only_relayed, CUSTOMER, RELAY_A, hz=1000, start=T0, seconds=0.5, ssrc=1)
    stream(only_relayed, RELAY_A, CUSTOMER, hz=500, start=T0, seconds=0.5, ssrc=9)
    _, others = channels(convert_recording([only_relayed.to_bytes()], customer=CUSTOMER).wav)
    assert tone_at(others, 0.2) == pytest.approx(500, abs=1)


def test_duplicates_rtcp_and_events_are_skipped_and_counted() -> None:
    writer = PcapWriter()
    stream(writer, CUSTOMER, RELAY_A, hz=1000, start=T0, seconds=0.2, ssrc=1)
    stream(writer, CUSTOMER, RELAY_A, hz=1000, start=T0, seconds=0.2, ssrc=1)  # every packet again
    writer.add(T0 + 0.05, CUSTOMER, RELAY_A, bytes([0x80, 200]) + bytes(26))  # an RTCP sender report
    writer.add(T0 + 0.06, CUSTOMER, RELAY_A, build(101, 5, 5000, 1, b"\x01\x0a\x00\xa0"))  # telephone-event
    writer.add_frame(T0 + 0.07, b"\x45" + bytes(10))  # not even an IP packet
    recording = convert_recording([writer.to_bytes()], customer=CUSTOMER)
    assert recording.segments[0].packets == 10
    assert recording.segments[0].skipped == 10 + 1 + 1 + 1
    assert recording.duration == 0.2


def test_a_file_cut_inside_its_last_record_keeps_the_rest(tmp_path: Path) -> None:
    writer = PcapWriter()
    stream(writer, CUSTOMER, RELAY_A, hz=1000, start=T0, seconds=0.2, ssrc=1)
    out = tmp_path / "call.wav"
    recording = convert_recording([writer.to_bytes()[:-30]], customer=CUSTOMER, out=out)
    assert recording.wav == b"" and recording.path == out
    assert recording.segments[0].truncated and recording.segments[0].packets == 9
    customer, _ = channels(out.read_bytes())
    assert len(customer) == 9 * 160


def test_refusals_name_the_file_and_the_reason(tmp_path: Path) -> None:
    def refused(segments: list[Path | bytes], **options: object) -> str:
        with pytest.raises(RecordingError) as caught:
            convert_recording(segments, **options)  # type: ignore[arg-type]
        return caught.value.reason

    good = PcapWriter()
    stream(good, AGENT, RELAY_B, hz=500, start=T0, seconds=0.1, ssrc=2)
    assert refused([good.to_bytes()]) == (
        "name the customer's stream: its RTP address and port, its SSRC, or the relay's port")
    assert refused([], customer=CUSTOMER) == "no segments"
    assert refused([good.to_bytes()], customer=("pbx.example", 5)) == (
        "the customer's address 'pbx.example' is not an IP literal")
    text = tmp_path / "notes.txt"
    text.write_bytes(b"hello, this is not a capture")
    assert refused([text], customer=CUSTOMER) == f"{text}: not a pcap file: magic number 68656c6c"
    ng = tmp_path / "x.pcapng"
    ng.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(40))
    assert refused([ng], customer=CUSTOMER) == (
        f"{ng}: a pcapng file: only classic pcap is read (rtpengine writes classic pcap)")
    wifi = PcapWriter(link_type=105)
    assert refused([wifi.to_bytes()], customer=CUSTOMER).startswith(
        "segment 1: unsupported link type 105 (read: 1 Ethernet, 101 raw IP, 113 Linux cooked")
    assert refused([tmp_path / "gone.pcap"], customer=CUSTOMER) == (
        f"{tmp_path / 'gone.pcap'}: cannot read the file: No such file or directory")
    assert refused([b"\xd4\xc3\xb2\xa1"], customer=CUSTOMER) == (
        "segment 1: not a pcap file: 4 bytes, shorter than the 24-byte header")
    assert refused([PcapWriter().to_bytes()], customer=CUSTOMER) == (
        "no G.711 audio (RTP payload type 0 or 8) in the segments")
    far = PcapWriter()
    stream(far, CUSTOMER, RELAY_A, hz=1000, start=T0, seconds=0.1, ssrc=1)
    stream(far, AGENT, RELAY_B, hz=500, start=T0 + 5 * 3600, seconds=0.1, ssrc=2)
    assert refused([far.to_bytes()], customer=CUSTOMER).startswith("the segments span 18000 s (at most 14400 s)")


def test_the_customer_is_recognised_by_the_relays_port_that_received_it() -> None:
    # rtpengine captures what it receives; the customer's source may be anything NAT made of it, but the relay's port
    # facing the customer is the one its SDP named for the whole call
    writer = PcapWriter()
    stream(writer, ("127.0.0.77", 51234), RELAY_A, hz=1000, start=T0, seconds=0.5, ssrc=1)
    stream(writer, AGENT, RELAY_B, hz=500, start=T0, seconds=0.5, ssrc=2)
    recording = convert_recording([writer.to_bytes()], customer_port=RELAY_A[1])
    customer, others = channels(recording.wav)
    assert tone_at(customer, 0.2) == pytest.approx(1000, abs=1)
    assert tone_at(others, 0.2) == pytest.approx(500, abs=1)
    assert recording.segments[0].packets == 50
