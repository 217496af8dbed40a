"""What an anchored call's customer hears, in memory (the Media port faked): the relay steps `CustomerHearing` asks
for, in order, for a hold, a transfer's ringing, an attended consultation, the customer joining a party, a hold
made on the agent's phone, and a relay failing (docs/operations.md, "Audio: what each party hears")."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media_fake import FakeMedia

from callbridge.b2bua.anchor import MediaAnchor
from callbridge.b2bua.hearing import PLAY_REPEAT
from callbridge.b2bua.legs import SipLeg
from callbridge.callcontrol.model import Operation
from callbridge.media.audio import Audio, hold_music, ringback, tone_samples

SDP = (b"v=0\r\no=x 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=sendrecv\r\n")
MUSIC = ("play_wav", "c1", "cust", hold_music().ulaw_wav_bytes(), PLAY_REPEAT)
RINGBACK = ("play_wav", "c1", "cust", ringback("etsi").ulaw_wav_bytes(), PLAY_REPEAT)
BLOCK = ("block", "c1", "agent", "cust")  # the agent's media toward the customer only
UNBLOCK = ("unblock", "c1", "agent", "cust")
STOP = ("stop_playing", "c1", "cust")


class Operations:
    def __init__(self, operation: Operation) -> None:
        self.operation = operation

    def get_operation(self, operation_id: str) -> Operation | None:
        return self.operation if operation_id == self.operation.id else None


def leg(leg_id: str) -> SipLeg:
    return SipLeg(leg_id, "0042", "in", 0.0, conn_id="c1")


async def step(call, *args) -> None:  # an offer or answer through the anchor, its SDP handed on
    got: list[bytes] = []
    call(*args, got.append)
    for _ in range(20):
        if got:
            return
        await asyncio.sleep(0)
    raise AssertionError("the SDP never came through")


async def talking(**operation: object) -> tuple[MediaAnchor, FakeMedia]:
    """A customer and an agent anchored, talking; the relay's log emptied."""
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop(),
                         directory=Operations(Operation("0042", "a.test", **operation)))  # type: ignore[arg-type]
    customer, agent = leg("cust"), leg("agent")
    anchor.adopt("c1", customer)
    await step(anchor.offer, "c1", customer, None, SDP)
    await step(anchor.answer, "c1", customer, agent, SDP)
    media.ops.clear()
    return anchor, media


async def test_hold_blocks_the_agent_toward_the_customer_and_plays_the_music_unhold_undoes_it() -> None:
    anchor, media = await talking()
    anchor.hearing.hold("c1")
    await anchor.settle()
    assert media.ops == [BLOCK, MUSIC]
    anchor.hearing.hold("c1")  # already held: nothing more
    await anchor.settle()
    assert media.ops == [BLOCK, MUSIC]
    anchor.hearing.unhold("c1")
    await anchor.settle()
    assert media.ops == [BLOCK, MUSIC, STOP, UNBLOCK]


@pytest.mark.parametrize(("transfer_audio", "played"), [("ringback", RINGBACK), ("music", MUSIC)])
async def test_a_transfer_target_ringing_plays_ringback_or_the_music_and_a_failure_brings_the_agent_back(
        transfer_audio: str, played: tuple[object, ...]) -> None:
    anchor, media = await talking(transfer_audio=transfer_audio)
    anchor.hearing.hold("c1")  # the transfer holds the customer and rings the target on one loop turn
    anchor.hearing.target_ringing("c1")
    await anchor.settle()
    assert media.ops == [BLOCK, played]  # no music first when the tone is ringback
    anchor.hearing.unhold("c1")  # busy: the customer goes back to the agent
    await anchor.settle()
    assert media.ops == [BLOCK, played, STOP, UNBLOCK]


async def test_a_target_rung_while_the_customer_is_not_held_changes_nothing() -> None:
    anchor, media = await talking()
    anchor.hearing.target_ringing("c1")
    await anchor.settle()
    assert media.ops == []


async def test_the_music_stops_only_once_the_customer_is_re_targeted_to_the_transfer_target() -> None:
    anchor, media = await talking()
    anchor.hearing.hold("c1")
    anchor.hearing.target_ringing("c1")
    await anchor.settle()
    anchor.hearing.bridged("c1", "cust", "target")
    await anchor.settle()
    assert media.ops == [BLOCK, RINGBACK]  # the customer's media still goes to the agent: keep ringing
    await step(anchor.offer, "c1", leg("target"), leg("cust"), SDP)
    await step(anchor.answer, "c1", leg("target"), leg("cust"), SDP)
    await anchor.settle()
    assert media.ops[2:] == [("offer", "c1", "target", "cust"), ("answer", "c1", "target", "cust"), STOP, UNBLOCK]


async def test_an_attended_consultation_plays_the_music_and_unblocks_the_agent_once_it_talks_to_the_target() -> None:
    anchor, media = await talking()
    anchor.hearing.hold("c1")
    anchor.hearing.target_ringing("c1")
    await anchor.settle()
    anchor.hearing.bridged("c1", "agent", "target")  # the target answered: the agent consults it
    await anchor.settle()
    assert media.ops == [BLOCK, RINGBACK, MUSIC]  # the agent stays blocked until it is re-targeted
    await step(anchor.offer, "c1", leg("target"), leg("agent"), SDP)
    await step(anchor.answer, "c1", leg("target"), leg("agent"), SDP)
    await anchor.settle()
    assert media.ops[3:] == [("offer", "c1", "target", "agent"), ("answer", "c1", "target", "agent"), UNBLOCK]
    anchor.hearing.bridged("c1", "cust", "target")  # completed
    await step(anchor.offer, "c1", leg("target"), leg("cust"), SDP)
    await step(anchor.answer, "c1", leg("target"), leg("cust"), SDP)
    await anchor.settle()
    assert media.ops[6:] == [("offer", "c1", "target", "cust"), ("answer", "c1", "target", "cust"), STOP]


async def test_the_operations_own_music_is_played_converted_for_the_relay() -> None:
    own = Audio(tone_samples((500.0,), -12.0, 8000))
    anchor, media = await talking(hold_music=own.wav_bytes())
    anchor.hearing.hold("c1")
    await anchor.settle()
    assert media.ops == [BLOCK, ("play_wav", "c1", "cust", own.ulaw_wav_bytes(), PLAY_REPEAT)]


@pytest.mark.parametrize(("direction", "held"), [("sendonly", True), ("inactive", True), ("recvonly", False)])
async def test_a_hold_made_on_the_agents_phone_plays_the_music(direction: str, held: bool) -> None:
    anchor, media = await talking()
    anchor.hearing.peer_offered("c1", "agent", SDP.replace(b"a=sendrecv", f"a={direction}".encode()))
    await anchor.settle()
    assert media.ops == ([BLOCK, MUSIC] if held else [])
    anchor.hearing.peer_offered("c1", "target", SDP.replace(b"a=sendrecv", b"a=sendonly"))  # not the peer
    anchor.hearing.peer_offered("c1", "agent", SDP)  # resumed
    await anchor.settle()
    assert media.ops == ([BLOCK, MUSIC, STOP, UNBLOCK] if held else [])


async def test_a_relay_failing_to_play_is_counted_and_the_call_goes_on() -> None:
    anchor, media = await talking()
    media.failing.add("play_wav")
    anchor.hearing.hold("c1")
    await anchor.settle()
    assert media.ops == [BLOCK, MUSIC] and anchor.stats["media_failures"] == 1
    media.failing.clear()
    anchor.hearing.unhold("c1")
    await anchor.settle()
    assert media.ops[2:] == [UNBLOCK] and anchor.stats["media_failures"] == 1


async def test_the_call_ending_forgets_what_its_customer_heard() -> None:
    anchor, media = await talking()
    anchor.hearing.hold("c1")
    await anchor.settle()
    anchor.leg_ended(leg("cust"))
    await anchor.settle()
    assert anchor.hearing.calls == {} and media.ops[-1] == ("delete", "c1")


async def test_music_that_no_longer_reads_plays_the_built_in_music(caplog: pytest.LogCaptureFixture) -> None:
    anchor, media = await talking(hold_music=b"RIFF damaged")
    anchor.hearing.hold("c1")
    await anchor.settle()
    assert media.ops == [BLOCK, MUSIC]
    assert "operation 0042's hold music: not a WAV file" in caplog.text


async def test_a_re_targeting_the_relay_fails_stops_the_sound_rather_than_play_it_over_the_call() -> None:
    anchor, media = await talking()
    anchor.hearing.hold("c1")
    anchor.hearing.target_ringing("c1")
    await anchor.settle()
    anchor.hearing.bridged("c1", "cust", "target")
    media.failing.add("offer")
    await step(anchor.offer, "c1", leg("target"), leg("cust"), SDP)  # goes direct
    await anchor.settle()
    assert media.ops[2:] == [("offer", "c1", "target", "cust"), STOP, UNBLOCK]
    assert anchor.stats["media_failures"] == 1
