"""The call's recording on the relay in memory (the Media port faked): on and off in order, pauses kept with their
times, the recording stopped before the relay's call is deleted, and the finished recording handed over once."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media_fake import RELAY, FakeMedia

from callbridge.b2bua.anchor import MediaAnchor
from callbridge.b2bua.legs import SipLeg
from callbridge.b2bua.ports import FinishedRecording, OpenRecording

CUSTOMER_SDP = (b"v=0\r\no=c 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
                b"m=audio 40000 RTP/AVP 0\r\na=sendrecv\r\n")
AGENT_SDP = CUSTOMER_SDP.replace(b"127.0.0.2", b"127.0.0.1").replace(b"40000", b"41000")


class Sink:
    def __init__(self) -> None:
        self.done: list[FinishedRecording] = []

    def recording_finished(self, done: FinishedRecording) -> None:
        self.done.append(done)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def leg(leg_id: str) -> SipLeg:
    return SipLeg(leg_id, "0042", "in", 0.0, conn_id="c1")


async def settled(anchor: MediaAnchor) -> None:
    for _ in range(5):
        await anchor.settle()
        await asyncio.sleep(0)


def recording_anchor(media: FakeMedia) -> tuple[MediaAnchor, Sink, Clock]:
    """An anchor on `media` whose recorder hands finished recordings to a sink and reads a clock of the test's."""
    anchor = MediaAnchor(media, asyncio.get_running_loop())
    sink, clock = Sink(), Clock()
    anchor.recorder.sink, anchor.recorder.clock = sink, clock
    return anchor, sink, clock


async def answered_call(media: FakeMedia) -> tuple[MediaAnchor, Sink, Clock, SipLeg]:
    anchor, sink, clock = recording_anchor(media)
    customer, agent = leg("cust"), leg("agent")
    anchor.adopt("c1", customer)
    anchor.offer("c1", customer, None, CUSTOMER_SDP, lambda _: None)
    await settled(anchor)
    anchor.answer("c1", customer, agent, AGENT_SDP, lambda _: None)
    await settled(anchor)
    return anchor, sink, clock, customer


async def paused_from_1010_to_1012_5(anchor: MediaAnchor, clock: Clock) -> None:
    """Call c1's recording, running, paused at 1010.0 and resumed at 1012.5 (each step settled)."""
    for at, on in ((1010.0, False), (1012.5, True)):
        clock.t = at
        anchor.recorder.want("c1", on)
        await settled(anchor)


def recording_ops(media: FakeMedia) -> list[tuple[object, ...]]:
    return [op for op in media.ops if op[0] in ("start_recording", "stop_recording", "recording_files", "delete")]


async def test_pauses_are_kept_and_the_recording_stops_before_the_delete() -> None:
    media = FakeMedia()
    anchor, sink, clock, customer = await answered_call(media)
    assert anchor.recorder.want("c1", True)
    await settled(anchor)
    assert anchor.recorder.recording("c1")
    await paused_from_1010_to_1012_5(anchor, clock)
    clock.t = 1020.0
    anchor.leg_ended(customer)
    await settled(anchor)
    assert recording_ops(media) == [("start_recording", "c1"), ("stop_recording", "c1"), ("start_recording", "c1"),
                                    ("stop_recording", "c1"), ("delete", "c1"), ("recording_files", "c1")]
    customer_port = media.port_for("c1", "cust")  # the port of the SDP the relay gave the customer
    assert sink.done == [FinishedRecording("c1", "0042", ("/spool/c1-0.pcap", "/spool/c1-1.pcap"),
                                           ("/spool/c1-0.meta", "/spool/c1-1.meta"), customer_port, 1000.0, 1020.0,
                                           ((1010.0, 1012.5),))]


async def test_on_off_on_at_once_is_one_recording_running() -> None:
    media = FakeMedia()
    anchor, _, _, _ = await answered_call(media)
    for on in (True, False, True):
        anchor.recorder.want("c1", on)
    await settled(anchor)
    assert recording_ops(media) == [("start_recording", "c1")]
    assert anchor.recorder.recording("c1")


async def test_a_call_never_recorded_hands_nothing_over() -> None:
    media = FakeMedia()
    anchor, sink, _, customer = await answered_call(media)
    anchor.leg_ended(customer)
    await settled(anchor)
    assert recording_ops(media) == [("delete", "c1")] and sink.done == []


async def test_what_cannot_be_recorded_says_so() -> None:
    media = FakeMedia()
    anchor, _, _, _ = await answered_call(media)
    assert not anchor.recorder.want("c9", True)  # not an anchored call
    media.recording_dir = None  # the node does not know where the relay writes
    assert not anchor.recorder.want("c1", True)
    await settled(anchor)
    assert recording_ops(media) == []


async def test_a_relay_that_fails_to_start_is_counted_and_the_call_goes_on() -> None:
    media = FakeMedia()
    anchor, sink, _, customer = await answered_call(media)
    media.failing.add("start_recording")
    assert anchor.recorder.want("c1", True)
    await settled(anchor)
    assert not anchor.recorder.recording("c1") and anchor.stats["media_failures"] == 1
    anchor.leg_ended(customer)
    await settled(anchor)
    assert sink.done == [] and ("delete", "c1") in media.ops


def relay_sdp(port: int) -> bytes:
    return CUSTOMER_SDP.replace(b"40000", str(port).encode())


async def recorded_with(sdps: list[bytes]) -> FinishedRecording:
    """The recording handed over for an answered call whose customer was then given `sdps` by the relay."""
    anchor, sink, _, customer = await answered_call(FakeMedia())
    for sdp in sdps:
        anchor.recorder.customer_sdp("c1", sdp)
    assert anchor.recorder.want("c1", True)
    await settled(anchor)
    anchor.leg_ended(customer)
    await settled(anchor)
    assert len(sink.done) == 1
    return sink.done[0]


async def test_the_customer_port_is_the_latest_sdp_s_that_names_one() -> None:
    assert (await recorded_with([relay_sdp(30000), relay_sdp(30002)])).customer_port == 30002
    # an SDP that does not parse, or that has no audio port, leaves the port the earlier one gave
    assert (await recorded_with([relay_sdp(30000), b"not an SDP"])).customer_port == 30000
    assert (await recorded_with([relay_sdp(30000), relay_sdp(0)])).customer_port == 30000
    media = FakeMedia()
    anchor, sink, _, customer = await answered_call(media)
    assert anchor.recorder.want("c1", True)
    await settled(anchor)
    anchor.leg_ended(customer)
    await settled(anchor)
    assert sink.done[0].customer_port == media.port_for("c1", "cust")  # the answer's, through the relay


async def test_many_sdps_keep_the_latest_port_whatever_was_read_on_the_way() -> None:
    many = [relay_sdp(30000 + 2 * i) for i in range(10)]
    assert (await recorded_with(many)).customer_port == 30018
    assert (await recorded_with([*many, *[b"not an SDP"] * 9])).customer_port == 30018


class Journal:
    def __init__(self) -> None:
        self.saved: list[OpenRecording] = []

    def save_recording(self, recording: OpenRecording) -> None:
        self.saved.append(recording)


async def test_each_start_and_stop_the_relay_took_is_written_through() -> None:
    media = FakeMedia()
    anchor, _, clock, customer = await answered_call(media)
    journal = anchor.recorder.journal = Journal()
    port = media.port_for("c1", "cust")
    anchor.recorder.want("c1", True)
    await settled(anchor)
    await paused_from_1010_to_1012_5(anchor, clock)
    assert journal.saved == [
        OpenRecording("c1", "0042", 1000.0, True, None, (), port),
        OpenRecording("c1", "0042", 1000.0, False, 1010.0, (), port),
        OpenRecording("c1", "0042", 1000.0, True, None, ((1010.0, 1012.5),), port),
    ]
    clock.t = 1020.0
    anchor.leg_ended(customer)
    await settled(anchor)
    assert journal.saved[-1] == OpenRecording("c1", "0042", 1000.0, False, 1020.0, ((1010.0, 1012.5),), port)


async def test_a_start_taken_before_the_customer_s_sdp_is_written_again_once_its_port_is_known() -> None:
    """The relay may take the start before the exchange that gives the customer its SDP: the row first has no port,
    and is written again, once, when the port is known (a node adopting the call after a crash joins by it)."""
    media = FakeMedia()
    anchor, _, _ = recording_anchor(media)
    journal = anchor.recorder.journal = Journal()
    customer = leg("cust")
    anchor.adopt("c1", customer)
    anchor.offer("c1", customer, None, CUSTOMER_SDP, lambda _: None)  # toward the agent: no SDP for the customer
    await settled(anchor)
    assert anchor.recorder.want("c1", True)
    await settled(anchor)
    anchor.recorder.customer_sdp("c1", relay_sdp(30004))
    anchor.recorder.customer_sdp("c1", relay_sdp(30006))  # known already: the row is not written for each SDP
    assert journal.saved == [OpenRecording("c1", "0042", 1000.0, True, None, (), None),
                             OpenRecording("c1", "0042", 1000.0, True, None, (), 30004)]


async def test_a_start_the_relay_refused_is_not_written() -> None:
    media = FakeMedia()
    anchor, _, _, _ = await answered_call(media)
    journal = anchor.recorder.journal = Journal()
    media.failing.add("start_recording")
    anchor.recorder.want("c1", True)
    await settled(anchor)
    assert journal.saved == []


async def test_a_recording_left_running_by_a_crash_is_stopped_then_deleted_then_handed_over() -> None:
    media = FakeMedia()
    anchor, sink, clock = recording_anchor(media)
    media.segments["c9"] = ["/spool/c9-0.pcap", "/spool/c9-1.pcap"]
    clock.t = 1100.0
    left = OpenRecording("c9", "0042", 1000.0, True, None, ((1010.0, 1012.5),), 40002)
    anchor.finish_left(left, f"{RELAY}:2223")
    await settled(anchor)
    assert [op for op in media.ops if op[0] != "recording_files"] == [
        ("restore", "c9", f"{RELAY}:2223"), ("stop_recording", "c9"), ("delete", "c9")]
    assert sink.done == [FinishedRecording("c9", "0042", ("/spool/c9-0.pcap", "/spool/c9-1.pcap"),
                                           ("/spool/c9-0.meta", "/spool/c9-1.meta"), 40002, 1000.0, 1100.0,
                                           ((1010.0, 1012.5),))]


async def test_a_recording_left_by_a_crash_with_no_port_takes_it_from_the_sdp_the_customer_was_last_sent() -> None:
    """A row written before the customer's SDP and never again (the node died in between): the port comes from the
    SDP the customer's dialog was written with (`open_recordings.read_left`), so the join can name its stream."""
    media = FakeMedia()
    anchor, sink, _ = recording_anchor(media)
    media.segments["c9"] = ["/spool/c9-0.pcap"]
    anchor.finish_left(OpenRecording("c9", "0042", 1000.0, True, None, (), None, relay_sdp(30008)), f"{RELAY}:2223")
    anchor.finish_left(OpenRecording("c8", "0042", 1000.0, True, None, (), None), f"{RELAY}:2223")
    await settled(anchor)
    assert {done.conn_id: done.customer_port for done in sink.done} == {"c9": 30008, "c8": None}


async def test_a_paused_recording_left_by_a_crash_ends_at_its_pause() -> None:
    media = FakeMedia()
    anchor, sink, _clock = recording_anchor(media)
    media.segments["c9"] = ["/spool/c9-0.pcap"]
    left = OpenRecording("c9", "0042", 1000.0, False, 1010.0, (), None)
    anchor.finish_left(left, f"{RELAY}:2223")
    await settled(anchor)
    assert [op[0] for op in media.ops] == ["restore", "delete", "recording_files"]  # not recording: no stop
    assert sink.done == [FinishedRecording("c9", "0042", ("/spool/c9-0.pcap",), ("/spool/c9-0.meta",), None,
                                           1000.0, 1010.0, ())]


async def test_a_recording_adopted_from_another_node_goes_on_from_where_the_relay_has_it() -> None:
    media = FakeMedia()
    anchor, sink, clock = recording_anchor(media)
    journal = anchor.recorder.journal = Journal()
    assert anchor.restore("c1", "0042", "cust", "agent", f"{RELAY}:2223")
    left = OpenRecording("c1", "0042", 1000.0, True, None, (), 40002)
    anchor.recorder.adopt(left)
    assert anchor.recorder.recording("c1") and journal.saved == [left]  # written again, under this node
    clock.t = 1005.0
    anchor.recorder.want("c1", False)  # paused through this node
    await settled(anchor)
    clock.t = 1007.0
    anchor.recorder.want("c1", True)
    await settled(anchor)
    media.segments["c1"] = ["/spool/c1-0.pcap", "/spool/c1-1.pcap"]  # the old node's start, and this node's
    clock.t = 1009.0
    anchor.leg_ended(SipLeg("cust", "0042", "in", 0.0, conn_id="c1"))
    await settled(anchor)
    assert recording_ops(media) == [("stop_recording", "c1"), ("start_recording", "c1"), ("stop_recording", "c1"),
                                    ("delete", "c1"), ("recording_files", "c1")]
    (done,) = sink.done
    assert (done.started_at, done.ended_at, done.pauses, done.customer_port) == (1000.0, 1009.0, ((1005.0, 1007.0),),
                                                                                40002)


async def test_a_relay_that_lost_the_call_left_by_a_crash_does_not_keep_its_segments_from_being_joined() -> None:
    media = FakeMedia()
    anchor, sink, _clock = recording_anchor(media)
    media.segments["c9"] = ["/spool/c9-0.pcap"]
    media.failing.add("stop_recording")  # the relay no longer knows the call (it timed it out meanwhile)
    anchor.finish_left(OpenRecording("c9", "0042", 1000.0, True, None, (), 40002), f"{RELAY}:2223")
    await settled(anchor)
    assert [op[0] for op in media.ops] == ["restore", "stop_recording", "delete", "recording_files"]
    assert anchor.stats["media_failures"] == 1
    assert [done.segments for done in sink.done] == [("/spool/c9-0.pcap",)]


async def test_a_recording_left_on_a_relay_this_node_does_not_know_is_joined_from_what_is_on_disk() -> None:
    media = FakeMedia()
    anchor, sink, _clock = recording_anchor(media)
    media.segments["c9"] = ["/spool/c9-0.pcap"]
    anchor.finish_left(OpenRecording("c9", "0042", 1000.0, True, None, (), 40002), None)
    await settled(anchor)
    assert [op[0] for op in media.ops] == ["recording_files"]
    assert [done.segments for done in sink.done] == [("/spool/c9-0.pcap",)]
