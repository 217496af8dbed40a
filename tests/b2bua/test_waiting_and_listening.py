"""A queue caller's early media and a supervisor's subscription, in memory (the Media port faked): the relay steps
`QueueWaiting` and `CallListeners` ask for, in order, and the SDP they write (b2bua/waiting.py, b2bua/monitor.py).
Timing (the announcement's interval) is measured through a real rtpengine in tests/integration."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media_fake import FakeMedia
from test_hearing import SDP, Operations, leg, step

from callbridge.b2bua.anchor import MediaAnchor
from callbridge.b2bua.legs import SipLeg
from callbridge.b2bua.monitor import every_stream_to, first_stream
from callbridge.b2bua.waiting import PLAY_REPEAT, STAND_IN, stand_in_answer
from callbridge.callcontrol.model import Operation, Queue
from callbridge.media.audio import Audio, hold_music, tone_samples
from callbridge.sip.sdp import SessionDescription

RELAY_OFFER = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\n"
               b"m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
               b"a=sendrecv\r\na=rtcp:30001\r\na=ptime:20\r\n")


def wav(hz: float) -> bytes:
    return Audio(tone_samples((hz,), -12.0, 4000)).wav_bytes()


def test_the_stand_in_answers_the_relays_offer_toward_the_discard_port_with_its_codecs() -> None:
    answer = SessionDescription.parse(stand_in_answer(RELAY_OFFER))
    [m] = answer.media
    assert (answer.connection_for(m).address, m.port, m.formats, answer.direction(m)) == (
        "127.0.0.1", 9, ["0", "101"], "sendrecv")
    assert m.attribute("rtcp") is None and m.attribute("rtpmap") == "0 PCMU/8000"


async def waiting(queue: Queue, **operation: object) -> tuple[MediaAnchor, FakeMedia, list[bytes]]:
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop(),
                         directory=Operations(Operation("0042", "a.test", **operation)))  # type: ignore[arg-type]
    customer = leg("cust")
    anchor.adopt("c1", customer)
    early: list[bytes] = []
    anchor.waiting.start("c1", "cust", SDP, "0042", queue, early.append)
    await anchor.settle()
    return anchor, media, early


@pytest.mark.parametrize(("queue", "operation", "music"), [
    (Queue("0042", "q", music=wav(500)), {"hold_music": wav(550)}, wav(500)),
    (Queue("0042", "q"), {"hold_music": wav(550)}, wav(550)),
    (Queue("0042", "q"), {}, None),
])
async def test_a_waiting_customer_gets_the_relays_sdp_then_the_queue_music_or_what_it_falls_back_on(
        queue: Queue, operation: dict[str, object], music: bytes | None) -> None:
    anchor, media, early = await waiting(queue, **operation)
    from callbridge.media.audio import wav_from_bytes
    sound = (wav_from_bytes(music) if music is not None else hold_music()).ulaw_wav_bytes()
    assert media.ops == [("offer", "c1", "cust", None), ("answer", "c1", "cust", STAND_IN),
                         ("block", "c1", "cust", STAND_IN), ("play_wav", "c1", "cust", sound, PLAY_REPEAT)]
    [sdp] = early  # the 183's body: the relay's side facing the customer
    assert b"c=IN IP4 127.0.0.99" in sdp and f"m=audio {media.port_for('c1', 'cust')}".encode() in sdp
    assert anchor.waiting.waiting("c1") and "c1" in anchor.waiting.placed


async def test_the_agents_answer_stops_the_sound_and_unblocks_the_customer_once() -> None:
    anchor, media, _ = await waiting(Queue("0042", "q"))  # (with an announcement its task would sleep on)
    media.ops.clear()
    customer, agent = leg("cust"), leg("agent")
    await step(anchor.offer, "c1", customer, None, SDP)  # the agent is rung: the sound goes on
    assert anchor.waiting.waiting("c1")
    await step(anchor.answer, "c1", customer, agent, SDP)
    await anchor.settle()
    assert media.ops == [("offer", "c1", "cust", None), ("answer", "c1", "cust", "agent"),
                         ("stop_playing", "c1", "cust"), ("unblock", "c1", "cust", STAND_IN)]
    assert not anchor.waiting.waiting("c1") and not anchor.waiting.placed  # the stand-in stays on the relay
    anchor.waiting.stop("c1", "cust")
    await anchor.settle()
    assert media.ops[-1] == ("unblock", "c1", "cust", STAND_IN)  # nothing more


async def test_a_customer_hanging_up_as_the_agent_answers_ends_the_waiting_without_a_media_failure() -> None:
    # SIPp's caller in bench/media_cps.py hangs up the moment the agent answers: the call's delete frees the
    # stand-in and the block, so the unblock is not sent (on a real relay it would find "Unknown call-ID")
    anchor, media, _ = await waiting(Queue("0042", "q"))
    media.ops.clear()
    customer, agent = leg("cust"), leg("agent")
    await step(anchor.offer, "c1", customer, None, SDP)
    await step(anchor.answer, "c1", customer, agent, SDP)
    anchor.leg_ended(customer)
    await anchor.settle()
    assert media.ops == [("offer", "c1", "cust", None), ("answer", "c1", "cust", "agent"),
                         ("stop_playing", "c1", "cust"), ("delete", "c1")]
    assert anchor.stats["media_failures"] == 0 and not anchor.waiting.placed


async def test_a_caller_an_agent_takes_within_the_music_delay_costs_the_relay_no_stand_in() -> None:
    """`queue_music_delay_seconds`: the stand-in, its block and the music come only after the delay; a caller whose
    agent answers before it never had them (three relay commands a call, not nine), and gets no 183."""
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop(), directory=Operations(Operation("0042", "a.test")))
    anchor.waiting.delay = 30.0  # longer than the test: only the agent's answer ends it
    customer, agent = leg("cust"), leg("agent")
    anchor.adopt("c1", customer)
    early: list[bytes] = []
    anchor.waiting.start("c1", "cust", SDP, "0042", Queue("0042", "q"), early.append)
    await asyncio.sleep(0)
    assert anchor.waiting.waiting("c1") and media.ops == []
    await step(anchor.offer, "c1", customer, None, SDP)
    await step(anchor.answer, "c1", customer, agent, SDP)
    await anchor.settle()
    assert media.ops == [("offer", "c1", "cust", None), ("answer", "c1", "cust", "agent")]
    assert early == [] and not anchor.waiting.waiting("c1") and not anchor.waiting.placed
    # after the delay, the caller still waiting gets the stand-in and the music, as with no delay
    anchor.waiting.delay = 0.05
    anchor.adopt("c2", leg("cust2"))
    anchor.waiting.start("c2", "cust2", SDP, "0042", Queue("0042", "q"), early.append)
    await anchor.settle()
    assert [op[:4] for op in media.ops[2:]] == [("offer", "c2", "cust2", None), ("answer", "c2", "cust2", STAND_IN),
                                                 ("block", "c2", "cust2", STAND_IN), ("play_wav", "c2", "cust2",
                                                                                     hold_music().ulaw_wav_bytes())]
    assert len(early) == 1


async def test_a_relay_that_does_not_keep_up_defers_the_music_and_the_caller_rings_on() -> None:
    """Music gives way first: while the relay has commands waiting behind its window, no stand-in is placed (the
    caller rings); it is placed once the backlog is gone, and the deferral is counted once."""
    media = FakeMedia()
    media.busy = True
    anchor = MediaAnchor(media, asyncio.get_running_loop(), directory=Operations(Operation("0042", "a.test")))
    anchor.waiting.delay = 0.05
    anchor.adopt("c1", leg("cust"))
    early: list[bytes] = []
    anchor.waiting.start("c1", "cust", SDP, "0042", Queue("0042", "q"), early.append)
    await asyncio.sleep(0.3)
    assert (media.ops, early, anchor.stats["queue_music_deferred"]) == ([], [], 1)
    media.busy = False
    await anchor.settle()  # the next check, a second after the first
    assert [op[:4] for op in media.ops] == [("offer", "c1", "cust", None), ("answer", "c1", "cust", STAND_IN),
                                            ("block", "c1", "cust", STAND_IN),
                                            ("play_wav", "c1", "cust", hold_music().ulaw_wav_bytes())]
    assert len(early) == 1 and anchor.stats["queue_music_deferred"] == 1


async def test_a_relay_failing_the_stand_in_is_counted_and_no_183_is_sent() -> None:
    media = FakeMedia()
    media.refusing.add("answer")
    anchor = MediaAnchor(media, asyncio.get_running_loop(), directory=Operations(Operation("0042", "a.test")))
    anchor.adopt("c1", leg("cust"))
    early: list[bytes] = []
    anchor.waiting.start("c1", "cust", SDP, "0042", Queue("0042", "q"), early.append)
    await anchor.settle()
    assert early == [] and anchor.stats["media_failures"] == 1


def test_the_listeners_offer_is_the_first_stream_and_its_answer_serves_every_stream() -> None:
    offer = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.9\r\ns=-\r\nt=0 0\r\n"
             b"m=audio 30000 RTP/AVP 0\r\nc=IN IP4 127.0.0.9\r\na=sendonly\r\n"
             b"m=audio 30002 RTP/AVP 0\r\nc=IN IP4 127.0.0.9\r\na=sendonly\r\n")
    assert first_stream(offer) == offer[:offer.index(b"m=audio 30002")]
    answer = (b"v=0\r\no=- 7 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
              b"m=audio 41000 RTP/AVP 0\r\na=recvonly\r\n")
    both = SessionDescription.parse(every_stream_to(offer, answer))
    assert [(m.port, both.direction(m), both.connection_for(m).address) for m in both.media] == [
        (41000, "recvonly", "127.0.0.3"), (41000, "recvonly", "127.0.0.3")]


async def test_a_listener_is_subscribed_to_the_customer_and_its_peer_and_unsubscribed_at_its_end() -> None:
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop(), directory=Operations(Operation("0042", "a.test")))
    customer, agent = leg("cust"), leg("agent")
    assert not anchor.listeners.can_listen("c1")
    anchor.adopt("c1", customer)
    await step(anchor.offer, "c1", customer, None, SDP)
    await step(anchor.answer, "c1", customer, agent, SDP)
    assert anchor.listeners.can_listen("c1")
    media.ops.clear()
    listener = SipLeg("m1", "0042", "out", 0.0, conn_id="c1", listener=True)
    offered: list[bytes] = []
    anchor.listeners.subscribe("c1", listener, offered.append, lambda: None)
    await anchor.settle()
    assert media.ops == [("subscribe", "c1", ("cust", "agent"), "m1")] and offered == [b"v=0\r\n"]
    anchor.listeners.answered(listener, b"v=0\r\n")
    anchor.leg_ended(listener)
    await anchor.settle()
    assert media.ops[1:] == [("subscribe_answer", "c1", "m1", b"v=0\r\n"), ("unsubscribe", "c1", "m1")]
    assert "c1" in anchor.calls and anchor.peers["c1"] == "agent"  # the parties' call is untouched


async def test_a_page_listener_gets_a_webrtc_offer_answers_once_and_is_unsubscribed_on_release() -> None:
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop(), directory=Operations(Operation("0042", "a.test")))
    customer, agent = leg("cust"), leg("agent")
    anchor.adopt("c1", customer)
    await step(anchor.offer, "c1", customer, None, SDP)
    await step(anchor.answer, "c1", customer, agent, SDP)
    media.ops.clear()
    told: list[str] = []
    listeners = anchor.listeners
    listeners.subscribe_page("c1", "m1", lambda: told.append("answered"), lambda: told.append("failed"))
    assert await listeners.page_offer("m1") == b"v=0\r\n"
    assert media.ops == [("subscribe", "c1", ("cust", "agent"), "m1", "webrtc")]  # the browser's profile
    assert await listeners.page_answer("m1", b"v=0\r\nm=audio 9 x\r\n") == "invalid"  # the offer has none
    assert await listeners.page_answer("m1", b"v=0\r\nanswer") == "taken"
    assert await listeners.page_answer("m1", b"v=0\r\nagain") == "refused"  # once only
    assert await listeners.page_answer("m9", b"v=0\r\n") == "refused" and await listeners.page_offer("m9") is None
    assert told == ["answered"]
    assert listeners.release_page("m1") is True and listeners.release_page("m1") is False
    await anchor.settle()
    assert media.ops[1:] == [("subscribe_answer", "c1", "m1", b"v=0\r\nanswer"), ("unsubscribe", "c1", "m1")]
    assert listeners.pages == {} and "c1" in anchor.calls and anchor.peers["c1"] == "agent"


async def test_a_page_listener_the_relay_refuses_is_reported_failed_and_has_no_offer() -> None:
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop(), directory=Operations(Operation("0042", "a.test")))
    customer, agent = leg("cust"), leg("agent")
    anchor.adopt("c1", customer)
    await step(anchor.offer, "c1", customer, None, SDP)
    await step(anchor.answer, "c1", customer, agent, SDP)
    told: list[str] = []
    media.refusing.add("subscribe")
    anchor.listeners.subscribe_page("c1", "m1", lambda: told.append("answered"), lambda: told.append("failed"))
    assert await anchor.listeners.page_offer("m1") is None
    await anchor.settle()
    assert told == ["failed"] and anchor.listeners.pages == {} and anchor.stats["media_failures"] == 1
    media.refusing = {"subscribe_answer"}  # the offer comes, the browser's answer is refused
    anchor.listeners.subscribe_page("c1", "m2", lambda: told.append("answered"), lambda: told.append("failed"))
    assert await anchor.listeners.page_offer("m2") == b"v=0\r\n"
    assert await anchor.listeners.page_answer("m2", b"v=0\r\n") == "refused"
    assert told == ["failed", "failed"] and anchor.listeners.pages == {} and anchor.stats["media_failures"] == 2
