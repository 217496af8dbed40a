"""What a customer waiting in a queue hears (docs/operations.md, "Audio: what each party hears"), measured on the
customer's phone (callbridge.phone, real RTP) through a real userspace rtpengine, with real SIP on loopback: the
call is not answered while it waits, the customer gets a 183 with the relay's SDP (early media) and hears the queue's
music, the queue's announcement at its interval, and the agent once an agent answers; without queue music, the
operation's hold music, else the built-in music.

Tones: queue music 500 Hz, announcement 900 Hz, the operation's hold music 550 Hz, the agent 1000 Hz, the customer
700 Hz; the built-in music is 400/600/800 Hz."""

from __future__ import annotations

import asyncio
import math
import struct
import sys
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from anchored import anchored_node  # noqa: E402
from callnode import OP, did_uri, operation_doc, until  # noqa: E402

from callbridge.bootstrap import Node  # noqa: E402
from callbridge.media.audio import HOLD_MUSIC_NOTES  # noqa: E402
from callbridge.phone import Call, CallEnded, Established, IncomingCall, Phone  # noqa: E402
from callbridge.phone.listen import Heard, Window  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

MUSIC_HZ, ANNOUNCEMENT_HZ, OPERATION_HZ, AGENT_HZ, CUSTOMER_HZ = 500.0, 900.0, 550.0, 1000.0, 700.0
BUILT_IN_HZ = sorted({hz for hz, _ in HOLD_MUSIC_NOTES})  # 400, 600, 800
INTERVAL, ANNOUNCEMENT_SECONDS = 5.0, 1.0
SETTLE = 0.3


def write_wav(path: Path, hz: float, seconds: float) -> str:
    """A sine at -12 dBFS, 8 kHz mono 16-bit."""
    frames = b"".join(struct.pack("<h", int(8200 * math.sin(2 * math.pi * hz * i / 8000)))
                      for i in range(int(seconds * 8000)))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(frames)
    return str(path)


@dataclass
class World:
    node: Node
    customer: Phone
    agent: Phone
    call: Call


@asynccontextmanager
async def world(tmp_path: Path, *, queue: dict[str, Any], operation: dict[str, Any]) -> AsyncIterator[World]:
    doc = operation_doc(max_wait=60)
    doc["queues"][0].update(queue)
    doc["operation"].update(operation)
    async with anchored_node(tmp_path, doc) as a:
        agent = await a.agent(ready=False)  # nobody takes it yet
        customer = await a.customer()
        call = await customer.call(did_uri(a.node), wait_answer=False)
        await until(lambda: call.remote_sdp is not None, what="the 183 with the relay's SDP")
        assert call.rtp is not None
        call.rtp.play_tone(CUSTOMER_HZ)
        yield World(a.node, customer, agent, call)
        assert a.node.switch.anchor.stats["media_failures"] == 0


async def listen(w: World, seconds: float) -> Heard:
    assert w.call.rtp is not None
    await asyncio.sleep(SETTLE)
    start = w.customer.now()
    await asyncio.sleep(seconds)
    return w.call.rtp.heard(start, w.customer.now())


def tones(heard: Heard) -> set[int]:
    return {int(round(w.hz / 25.0) * 25) for w in heard.windows if w.hz is not None and w.dbfs > -50}


def runs(windows: list[Window]) -> list[tuple[int, float, float]]:
    """The windows as runs of one tone: (tone rounded to 25 Hz, first window's start, seconds of audio in the run).
    Seconds of audio, not of arrival: rtpengine 10.5 sends the first 0.3 s of each `play media` at once (a 1 s
    sound's 50 packets arrive within 0.71 s), so arrival times would make every sound 0.3 s shorter."""
    out: list[tuple[int, float, float]] = []
    for w in windows:
        hz = int(round(w.hz / 25.0) * 25) if w.hz is not None and w.dbfs > -50 else 0
        seconds = len(w.payload) / 8000
        if out and out[-1][0] == hz:
            out[-1] = (hz, out[-1][1], out[-1][2] + seconds)
        else:
            out.append((hz, w.start, seconds))
    return out


async def test_a_waiting_caller_hears_the_queue_music_its_announcement_at_the_interval_then_the_agent(
        tmp_path: Path) -> None:
    queue = {"music": write_wav(tmp_path / "wait.wav", MUSIC_HZ, 2.0),
             "announcement": write_wav(tmp_path / "notice.wav", ANNOUNCEMENT_HZ, ANNOUNCEMENT_SECONDS),
             "announcement_interval": INTERVAL}
    async with world(tmp_path, queue=queue, operation={}) as w:
        assert w.call.rtp is not None
        start = w.customer.now()
        assert w.call.state.value == "alerting"  # not answered: the customer waits with early media
        call_id = w.node.service.get_agent(OP, "1001").conn_id
        assert call_id is None
        await asyncio.sleep(2 * INTERVAL + ANNOUNCEMENT_SECONDS + 0.6)
        timeline = runs(w.call.rtp.windows(start, w.customer.now()))
        heard = [hz for hz, _, _ in timeline if hz]
        # music, the announcement, music, the announcement, music: nothing else, in that order
        assert heard == [MUSIC_HZ, ANNOUNCEMENT_HZ, MUSIC_HZ, ANNOUNCEMENT_HZ, MUSIC_HZ], timeline
        music_start = timeline[[hz for hz, _, _ in timeline].index(MUSIC_HZ)][1]
        announcements = [(begin, seconds) for hz, begin, seconds in timeline if hz == ANNOUNCEMENT_HZ]
        first, second = announcements
        assert first[0] - music_start == pytest.approx(INTERVAL, abs=0.3), timeline
        assert second[0] - first[0] == pytest.approx(INTERVAL, abs=0.3), timeline
        for _, seconds in announcements:  # all of it, once (the windows on its edges may hold some music)
            assert seconds == pytest.approx(ANNOUNCEMENT_SECONDS, abs=0.15), timeline

        w.node.service.change_status(OP, "1001", "ready")  # the agent's phone answers at once
        agent_call = (await w.agent.wait_for(IncomingCall, timeout=5)).call
        await w.agent.wait_for(Established, call=agent_call, timeout=5)
        await w.call.wait_answered(5)
        assert agent_call.rtp is not None
        agent_call.rtp.play_tone(AGENT_HZ)
        now = await listen(w, 1.0)
        assert now.share(AGENT_HZ, tolerance=3) >= 0.9 and tones(now) == {int(AGENT_HZ)}, str(now)
        start = w.agent.now()
        await asyncio.sleep(0.6)
        back = agent_call.rtp.heard(start, w.agent.now())
        assert back.share(CUSTOMER_HZ, tolerance=3) >= 0.9 and tones(back) == {int(CUSTOMER_HZ)}, str(back)
        anchor = w.node.switch.anchor
        conn_id = w.node.service.get_agent(OP, "1001").conn_id
        assert conn_id is not None and not anchor.waiting.waiting(conn_id) and conn_id not in anchor.waiting.placed


@pytest.mark.parametrize("fallback", ["operation", "built-in"])
async def test_without_queue_music_the_operations_hold_music_then_the_built_in_one(tmp_path: Path,
                                                                                    fallback: str) -> None:
    operation = {"hold_music": write_wav(tmp_path / "hold.wav", OPERATION_HZ, 2.0)} if fallback == "operation" else {}
    async with world(tmp_path, queue={}, operation=operation) as w:
        heard = await listen(w, 1.6)
        if fallback == "operation":
            assert heard.share(OPERATION_HZ, tolerance=3) >= 0.9 and tones(heard) == {int(OPERATION_HZ)}, str(heard)
        else:
            assert sum(heard.share(hz, tolerance=3) for hz in BUILT_IN_HZ) >= 0.9, str(heard)
            assert tones(heard) <= set(BUILT_IN_HZ) and len(tones(heard)) >= 2, str(heard)
        assert w.call.state.value == "alerting"
        conn_id = next(iter(w.node.switch.anchor.waiting.tasks))
        await w.call.hangup()  # CANCEL while waiting: the waiting ends with the relay's call
        await w.customer.wait_for(CallEnded, call=w.call, timeout=5)
        await until(lambda: conn_id not in w.node.switch.anchor.calls and not w.node.switch.anchor.waiting.tasks,
                    what="the waiting over")
