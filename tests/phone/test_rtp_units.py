"""The RTP pieces without sockets: packet format and its refusals (RFC 3550 §5.1), receiver statistics (A.1, A.3,
A.8), RFC 4733 events as sent and as received, looped tone frames, and the listener's windows and summaries."""

from __future__ import annotations

import math

import pytest

from callbridge.media.g711 import alaw_encode, ulaw_decode, ulaw_encode
from callbridge.phone.listen import Listener
from callbridge.phone.rtp import ReceiverStats, RtpError, build, parse
from callbridge.phone.telephone_event import TelephoneEventReceiver, decode_event, encode_event, event_packets
from callbridge.phone.tone import FRAME, FrameSource, silence, tone


# --- packets ------------------------------------------------------------------------------------------------------
def test_build_and_parse_round_trip() -> None:
    data = build(8, 65535, 0xFFFFFFFF, 0xDEADBEEF, b"\x01\x02", marker=True)
    assert data[:2] == b"\x80\x88" and len(data) == 14
    packet = parse(data)
    assert (packet.payload_type, packet.marker, packet.sequence, packet.timestamp, packet.ssrc, packet.payload) == (
        8, True, 65535, 0xFFFFFFFF, 0xDEADBEEF, b"\x01\x02")


def test_csrc_extension_and_padding_are_stripped() -> None:
    header = bytes([0x80 | 0x20 | 0x10 | 0x02, 0]) + bytes(10)  # padding, extension, 2 CSRCs
    csrcs = bytes(8)
    extension = b"\xbe\xde\x00\x01" + bytes(4)  # one 32-bit word of extension
    packet = parse(header + csrcs + extension + b"audio" + b"\x00\x00\x03")
    assert packet.payload == b"audio"


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x80\x00", "2 bytes: shorter than the 12-byte RTP header"),
    (b"\x40" + bytes(11), "RTP version 1, not 2"),
    (b"\x8f" + bytes(11), "CSRC list, extension or padding longer than the packet"),
    (b"\x90" + bytes(11), "header extension beyond the packet"),
    (b"\xa0" + bytes(11) + b"\x00", "padding bit set with a padding count of 0"),
    (b"\xa0" + bytes(11) + b"\x05", "CSRC list, extension or padding longer than the packet"),
])
def test_malformed_packets_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError) as caught:
        parse(data)
    assert str(caught.value) == reason


# --- receiver statistics ------------------------------------------------------------------------------------------
def test_losses_duplicates_and_wrap_around() -> None:
    stats = ReceiverStats(1)
    arrival = 0.0
    for seq in [65533, 65534, 65535, 0, 2, 3, 3, 1, 4]:  # 1 late (not lost), 3 duplicated
        arrival += 0.02
        stats.on_packet(seq, 160 * ((seq - 65533) % 65536), arrival)
    assert stats.received == 8 and stats.duplicates == 1
    assert stats.expected == 8 and stats.lost == 0
    stats.on_packet(10, 160 * 13, arrival + 0.02)  # 5..9 lost
    assert stats.expected == 14 and stats.lost == 5


def test_jitter_follows_rfc3550_a8() -> None:
    steady = ReceiverStats(1)
    for k in range(50):
        steady.on_packet(k, 160 * k, 10 + 0.02 * k)
    assert steady.jitter == pytest.approx(0.0, abs=1e-6)
    wobbly = ReceiverStats(2)
    expected = 0.0
    for k in range(200):
        wobbly.on_packet(k, 160 * k, 10 + 0.02 * k + (0.005 if k % 2 else 0.0))
        if k:
            expected += (40 - expected) / 16  # |D| = 5 ms = 40 timestamp units every packet
    assert wobbly.jitter == pytest.approx(expected) and wobbly.jitter_ms == pytest.approx(5.0, abs=0.01)


# --- RFC 4733 -----------------------------------------------------------------------------------------------------
def test_event_payload() -> None:
    assert encode_event(11, end=True, volume=10, duration=800) == b"\x0b\x8a\x03\x20"
    assert decode_event(b"\x0b\x8a\x03\x20") == (11, True, 10, 800)
    with pytest.raises(RtpError, match="telephone-event payload of 3 bytes"):
        decode_event(b"\x01\x02\x03")
    with pytest.raises(ValueError, match=r"volume 64 outside 0\.\.63"):
        encode_event(1, end=False, volume=64, duration=0)


def test_a_digit_is_sent_as_updates_then_three_final_packets() -> None:
    packets = list(event_packets("5", 100))
    assert [marker for marker, _ in packets] == [True] + [False] * 6
    assert [decode_event(p) for _, p in packets] == [
        (5, False, 10, 160), (5, False, 10, 320), (5, False, 10, 480), (5, False, 10, 640),
        (5, True, 10, 800), (5, True, 10, 800), (5, True, 10, 800)]
    with pytest.raises(ValueError, match="not a DTMF digit: 'E'"):
        list(event_packets("E", 100))


def test_the_receiver_ends_an_event_once() -> None:
    receiver = TelephoneEventReceiver()
    ended = [receiver.on_payload(p, 1000, 0.02 * i) for i, (_, p) in enumerate(event_packets("#", 60))]
    assert [e is not None for e in ended] == [False, False, True, False, False]
    receiver.on_payload(encode_event(1, end=True, volume=10, duration=160), 2000, 1.0)
    assert [(e.digit, e.duration_ms, e.ended) for e in receiver.events] == [("#", 60.0, True), ("1", 20.0, True)]
    assert receiver.events[0].started_at == 0.0 and receiver.events[0].ended_at == pytest.approx(0.04)


# --- sources ------------------------------------------------------------------------------------------------------
def test_a_looped_tone_is_phase_continuous_across_its_seam() -> None:
    source = tone(440)
    assert source.frames == 5
    decoded = [v for i in range(12) for v in ulaw_decode(source.payload("PCMU", i) or b"")]
    ideal = [round(32768 * 10 ** (-12 / 20) * math.sin(2 * math.pi * 440 * n / 8000)) for n in range(len(decoded))]
    assert max(abs(a - b) for a, b in zip(decoded, ideal, strict=True)) < 300  # G.711 steps, no jump at the seam


def test_sources_refuse_and_end() -> None:
    with pytest.raises(ValueError, match="4100 Hz cannot be carried at 8 kHz"):
        tone(4100)
    with pytest.raises(ValueError, match="at least one frequency"):
        tone()
    once = FrameSource([1000] * (FRAME + 10), loop=False)
    assert once.frames == 2 and once.payload("PCMA", 1) is not None and once.payload("PCMA", 2) is None
    assert silence().payload("PCMU", 99) == b"\xff" * FRAME


# --- listening ----------------------------------------------------------------------------------------------------
def frame(hz: float, k: int, peak: float = 8000.0) -> bytes:
    return ulaw_encode(round(peak * math.sin(2 * math.pi * hz * (160 * k + i) / 8000)) for i in range(160))


def test_windows_and_a_summary_over_a_range() -> None:
    listener = Listener()
    t = 100.0
    for k in range(50):  # 1 s of 1000 Hz
        listener.feed(t + 0.02 * k, frame(1000, k))
    for k in range(50, 75):  # then 0.5 s of 600 Hz
        listener.feed(t + 0.02 * k, frame(600, k))
    windows = listener.windows()
    assert len(windows) == 15
    heard = listener.heard(t, t + 1.0)
    assert heard.expected == 9 and len(heard.windows) == 10  # aligned to the range here: all ten fit
    assert heard.share(1000) == 1.0 and heard.dominant_hz == pytest.approx(1000, abs=1)
    assert heard.level_dbfs == pytest.approx(20 * math.log10(8000 / 32768), abs=0.1)
    assert str(heard) == "between 100.00 and 101.00 s: 1000 Hz at -12.3 dBFS in 100% of 10 windows"  # after mu-law
    later = listener.heard(t + 1.0, t + 1.5)
    assert later.share(600) == 1.0 and later.share(1000) == 0.0
    assert listener.packets_between(t + 1.0, t + 1.49) == 25


def test_a_stream_that_stops_scores_by_expected_windows_and_gaps_split_windows() -> None:
    listener = Listener()
    for k in range(10):  # 0.2 s, then nothing
        listener.feed(10 + 0.02 * k, frame(1000, k))
    heard = listener.heard(10.0, 11.0)
    assert heard.expected == 9 and len(heard.windows) == 2 and heard.share(1000) == pytest.approx(2 / 9)
    # a 0.15 s gap in the arrivals discards the partial window instead of spanning the gap
    listener = Listener()
    for k in range(3):
        listener.feed(20 + 0.02 * k, frame(1000, k))
    for k in range(5):
        listener.feed(20.2 + 0.02 * k, frame(1000, k))
    assert [round(w.start, 2) for w in listener.windows()] == [20.2]
    silent = Listener()
    silent.feed(1.0, b"\xff" * 1600)
    assert str(silent.heard(0.0, 2.0)) == "between 0.00 and 2.00 s: no tone in 1 windows of 19 expected"
    with pytest.raises(ValueError, match="must be after since"):
        silent.heard(2.0, 1.0)
    # a change of codec closes the window too; PCMA windows decode as PCMA
    mixed = Listener()
    for k in range(3):
        mixed.feed(30 + 0.02 * k, frame(1000, k))
    for k in range(5):
        mixed.feed(30.06 + 0.02 * k, alaw_encode(list(ulaw_decode(frame(700, k)))), "PCMA")
    [window] = mixed.windows()
    assert window.codec == "PCMA" and window.hz == pytest.approx(700, abs=1)
