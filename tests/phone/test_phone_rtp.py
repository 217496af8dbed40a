"""Two phones sending real RTP over loopback, judged by measurement: each hears the other's frequency and level,
hold stops the held side's stream (RFC 3264 §8.4), a re-INVITE moves the stream, RFC 4733 digits arrive, PCMA
works, and sequence numbers and timestamps stay continuous."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from callbridge.media.audio import hold_music
from callbridge.phone import Call, Held, IncomingCall, Phone, Resumed
from callbridge.phone.rtp import parse

pytestmark = pytest.mark.timeout(30)

MediaPhoneFactory = Callable[..., Awaitable[Phone]]


@pytest.fixture
async def media_phone() -> AsyncIterator[MediaPhoneFactory]:
    phones: list[Phone] = []

    async def make(user: str, **options: Any) -> Phone:
        phone = await Phone.start(host="127.0.0.1", port=0, user=user, name=f"rtp-{user}", media=True, **options)
        phones.append(phone)
        return phone

    yield make
    for phone in phones:
        await phone.close()


async def connect(caller: Phone, callee: Phone) -> tuple[Call, Call]:
    call = await caller.call(callee.uri, timeout=5)
    incoming = await callee.wait_for(IncomingCall, where=lambda e: e.call.call_id == call.call_id, timeout=5)
    await incoming.call.wait_answered(5)
    return call, incoming.call


async def listen(phone: Phone, seconds: float) -> tuple[float, float]:
    """Wait ``seconds``; the range to judge (the first 100 ms left out: the stream may be starting)."""
    start = phone.now()
    await asyncio.sleep(seconds)
    return start + 0.1, phone.now()


@pytest.mark.serial  # judges the jitter (under 20 ms)
async def test_each_side_hears_the_others_tone(media_phone: MediaPhoneFactory) -> None:
    alice = await media_phone("1001")
    bob = await media_phone("2002", answer="auto")
    call, callee = await connect(alice, bob)
    assert call.rtp is not None and callee.rtp is not None
    call.rtp.play_tone(1000, dbfs=-12)
    callee.rtp.play_tone(440, dbfs=-20)
    since, until = await listen(alice, 1.2)
    at_bob = callee.rtp.heard(since, until)
    at_alice = call.rtp.heard(since, until)
    assert at_bob.expected == int((until - since) / 0.1) - 1 >= 9
    assert at_bob.share(1000, tolerance=3) >= 0.9, str(at_bob)
    assert at_bob.dominant_hz == pytest.approx(1000, abs=3)
    assert at_bob.level_dbfs == pytest.approx(-12, abs=0.5)
    assert at_alice.share(440, tolerance=3) >= 0.9, str(at_alice)
    assert at_alice.level_dbfs == pytest.approx(-20, abs=0.5)
    assert at_alice.share(1000) == 0.0  # each hears the other, not itself
    # the stream itself: one SSRC each way, nothing lost on loopback, continuous sequence numbers
    stats = callee.rtp.stats
    assert stats is not None and stats.ssrc == call.rtp.ssrc
    assert stats.lost == 0 and stats.duplicates == 0
    assert stats.received >= 50 and stats.jitter_ms < 20
    assert call.rtp.last_destination == callee.rtp.local_address
    assert str(at_bob).endswith(f"1000 Hz at {at_bob.level_dbfs:.1f} dBFS in {at_bob.share(1000):.0%} of "
                               f"{max(at_bob.expected, len(at_bob.windows))} windows")


async def test_silence_and_stop_are_heard_as_such(media_phone: MediaPhoneFactory) -> None:
    alice = await media_phone("1001")
    bob = await media_phone("2002", answer="auto")
    call, callee = await connect(alice, bob)
    assert call.rtp is not None and callee.rtp is not None
    call.rtp.play_silence()
    since, until = await listen(alice, 0.6)
    heard = callee.rtp.heard(since, until)
    assert heard.dominant_hz is None and heard.level_dbfs < -60
    assert callee.rtp.packets_between(since, until) >= 20  # packets flowed, and they were silent
    call.rtp.stop()
    await asyncio.sleep(0.1)
    since, until = await listen(alice, 0.5)
    assert callee.rtp.packets_between(since, until) == 0
    assert callee.rtp.heard(since, until).share(1000) == 0.0


async def test_hold_stops_the_held_side_and_resume_brings_it_back(media_phone: MediaPhoneFactory) -> None:
    alice = await media_phone("1001")
    bob = await media_phone("2002", answer="auto")
    call, callee = await connect(alice, bob)
    assert call.rtp is not None and callee.rtp is not None
    call.rtp.play_tone(1000)
    callee.rtp.play_tone(600)
    await asyncio.sleep(0.3)
    await call.hold()  # alice offers sendonly; bob answers recvonly: bob must stop sending, alice goes on
    await bob.wait_for(Held, call=callee, timeout=5)
    await asyncio.sleep(0.1)
    since, until = await listen(alice, 0.6)
    assert call.rtp.packets_between(since, until) == 0  # alice (holding) hears nothing from the held side
    assert call.rtp.heard(since, until).share(600) == 0.0
    assert callee.rtp.heard(since, until).share(1000, tolerance=3) >= 0.8  # the holder's audio still arrives
    sequence_before = callee.rtp.sequence
    await call.resume()
    await bob.wait_for(Resumed, call=callee, timeout=5)
    await asyncio.sleep(0.1)
    since, until = await listen(alice, 0.6)
    assert call.rtp.heard(since, until).share(600, tolerance=3) >= 0.8
    # bob's stream went on where it stopped: no sequence number skipped or repeated across the hold
    stats = call.rtp.stats
    assert stats is not None and stats.lost == 0 and stats.duplicates == 0
    assert callee.rtp.sequence != sequence_before


async def test_inactive_stops_both_directions(media_phone: MediaPhoneFactory) -> None:
    alice = await media_phone("1001")
    bob = await media_phone("2002", answer="auto")
    call, callee = await connect(alice, bob)
    assert call.rtp is not None and callee.rtp is not None
    call.rtp.play_tone(1000)
    callee.rtp.play_tone(600)
    # bob holds alice too: alice (already sendonly towards bob) ends up inactive both ways
    await call.hold()
    await callee.hold()
    await asyncio.sleep(0.1)
    since, until = await listen(alice, 0.5)
    assert call.rtp.packets_between(since, until) == 0
    assert callee.rtp.packets_between(since, until) == 0


async def test_rfc4733_digits_arrive_with_their_duration(media_phone: MediaPhoneFactory) -> None:
    alice = await media_phone("1001")
    bob = await media_phone("2002", answer="auto")
    call, callee = await connect(alice, bob)
    assert call.rtp is not None and callee.rtp is not None
    call.rtp.play_tone(1000)
    await call.rtp.send_digits("1#9*D", duration_ms=100)
    assert await callee.rtp.wait_digits(5, timeout=5) == "1#9*D"
    events = callee.rtp.events
    assert [e.ended for e in events] == [True] * 5
    assert [e.duration for e in events] == [800] * 5  # 100 ms at 8 kHz, the final packet's duration
    assert len({e.timestamp for e in events}) == 5
    stats = callee.rtp.stats
    assert stats is not None and stats.lost == 0 and stats.duplicates == 0  # 3 final packets, each its own seq
    with pytest.raises(ValueError, match="not a DTMF digit: 'x'"):
        await call.rtp.send_digits("1x")


async def test_pcma_is_negotiated_and_heard(media_phone: MediaPhoneFactory) -> None:
    alice = await media_phone("1001", codecs=("PCMA", "PCMU"))
    bob = await media_phone("2002", answer="auto", codecs=("PCMA",))
    call, callee = await connect(alice, bob)
    assert call.rtp is not None and callee.rtp is not None
    assert callee.remote_sdp is not None and callee.remote_sdp.media[0].formats == ["8", "0", "101"]
    assert call.remote_sdp is not None and call.remote_sdp.media[0].formats == ["8", "101"]
    call.rtp.play_tone(1500)
    since, until = await listen(alice, 0.6)
    assert callee.rtp.heard(since, until).share(1500, tolerance=3) >= 0.8
    # what went on the wire: payload type 8 only (each side's 101 was offered, no digit sent)
    assert list(callee.rtp.payload_types) == [8] and callee.rtp.payload_types[8] >= 25


async def test_reinvite_to_a_new_address_moves_the_stream(media_phone: MediaPhoneFactory) -> None:
    alice = await media_phone("1001")
    bob = await media_phone("2002", answer="auto")
    call, callee = await connect(alice, bob)
    assert call.rtp is not None and callee.rtp is not None
    call.rtp.play_tone(1000)
    await asyncio.sleep(0.2)
    # bob moves his media to a socket the test owns: his next offer names its port (a new o= version)
    received: list[bytes] = []

    class Spy(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            received.append(data)

    spy_transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Spy, local_addr=("127.0.0.1", 0))
    try:
        callee.media.rtp_port = spy_transport.get_extra_info("sockname")[1]
        await callee.resume()  # a re-INVITE with a sendrecv offer on the new port
        await asyncio.sleep(0.5)
        assert call.rtp.destination == ("127.0.0.1", callee.media.rtp_port)
        assert len(received) >= 15
        packets = [parse(d) for d in received]
        assert {p.ssrc for p in packets} == {call.rtp.ssrc}
        sequences = [p.sequence for p in packets]
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
        stamps = [p.timestamp for p in packets]
        assert [b - a for a, b in itertools.pairwise(stamps)] == [160] * (len(stamps) - 1)
    finally:
        spy_transport.close()


async def test_the_built_in_hold_music_is_heard_note_by_note(media_phone: MediaPhoneFactory) -> None:
    alice = await media_phone("1001")
    bob = await media_phone("2002", answer="auto")
    call, callee = await connect(alice, bob)
    assert call.rtp is not None and callee.rtp is not None
    callee.rtp.play(hold_music())  # 400, 600, 800, 600 Hz, 0.5 s each, -16 dBFS (media/audio.py)
    since, until = await listen(alice, 2.3)
    heard = call.rtp.heard(since, until)
    notes = [round(w.hz) for w in heard.windows if w.hz is not None]
    # every window is one of the notes, and the notes come in the documented order
    assert set(notes) == {400, 600, 800}
    changes = [hz for i, hz in enumerate(notes) if i == 0 or notes[i - 1] != hz]
    order = [400, 600, 800, 600] * 3
    start = next(i for i in range(4) if order[i: i + len(changes)] == changes)
    assert changes == order[start: start + len(changes)] and len(changes) >= 4
    assert heard.share(600, tolerance=2) >= 0.35  # two of the four notes
    assert heard.level_dbfs == pytest.approx(-16, abs=0.5)
