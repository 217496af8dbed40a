"""What the customer hears on an anchored call (docs/operations.md, "Audio: what each party hears"), measured on the
customer's phone (callbridge.phone with real RTP, its `heard` API) through a real userspace rtpengine, with real SIP
between phones and callbridge on loopback: the agent's voice, hold music instead of it, ringback while a transfer
target rings, the target's voice once it answers, and the first agent's again after a failed transfer.

Each party plays a tone of its own, away from the music's notes (400/600/800 Hz) and the ringback (425 Hz): the
agent 1000 Hz, a transfer target 1500 Hz, the outside number (the trunk's gateway) 1300 Hz."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from callnode import (  # noqa: E402
    GATEWAY_HOST,
    OP,
    agent_phone,
    customer_phone,
    did_uri,
    load,
    operation_doc,
    until,
)

from callbridge.bootstrap import Node, bootstrap  # noqa: E402
from callbridge.config import Settings  # noqa: E402
from callbridge.media.audio import HOLD_MUSIC_NOTES  # noqa: E402
from callbridge.phone import Call, CallEnded, Established, Held, IncomingCall, Phone, Resumed  # noqa: E402
from callbridge.phone.listen import Heard  # noqa: E402
from peers.ports import free_port  # noqa: E402
from peers.rtpengine import Rtpengine  # noqa: E402

# serial: each check wants 90 % of its 80 ms windows on the right tone; beside another worker's tests, on a busy
# machine, a window or two came late (scripts/test).
pytestmark = [pytest.mark.peers, pytest.mark.timeout(90), pytest.mark.serial]

AGENT_HZ, TARGET_HZ, OUTSIDE_HZ = 1000.0, 1500.0, 1300.0
MUSIC_HZ = sorted({hz for hz, _ in HOLD_MUSIC_NOTES})  # 400, 600, 800
RINGBACK_HZ = 425.0  # ETSI, the default ringback tone (media/audio.py)
# A voice is judged over 1.2 s (11 windows of 100 ms): one window late on a loaded machine still leaves 91 %, above
# the 90 % asserted; over 0.6 s (5 windows) it left 80 % and failed.
VOICE_S = 1.2
SETTLE = 0.3  # what the relay plays changes within one ng round trip and a few 20 ms frames; skip past it


@dataclass
class World:
    node: Node
    relay: Rtpengine
    customer: Phone
    agent: Phone
    gateway_port: int
    phones: list[Phone] = field(default_factory=list)
    call: Call | None = None
    agent_call: Call | None = None


@asynccontextmanager
async def world(tmp_path: Path, **operation: Any) -> AsyncIterator[World]:
    gateway_port = free_port(GATEWAY_HOST, udp=True, tcp=False)
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    doc = operation_doc(gateway_port=gateway_port)
    doc["operation"].update(operation)
    doc["operation"]["transfer_timeout"] = 5
    await asyncio.to_thread(load, url, doc)
    with Rtpengine(workdir=tmp_path / "rtpengine") as relay:
        node = await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                        rtpengine=(f"udp:{relay.host}:{relay.ng_port}",)))
        phones: list[Phone] = []
        try:
            await until(lambda: node.switch.anchor.media is not None and node.switch.anchor.media.available(),
                        what="the relay up")
            agent = await agent_phone(node, "1001", answer="auto", media=True)
            phones.append(agent)
            customer = await customer_phone(media=True)
            phones.append(customer)
            w = World(node, relay, customer, agent, gateway_port, phones)
            w.call = await customer.call(did_uri(node), timeout=5)
            w.agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
            await agent.wait_for(Established, call=w.agent_call, timeout=5)
            assert w.call.rtp is not None and w.agent_call.rtp is not None
            w.agent_call.rtp.play_tone(AGENT_HZ)
            w.call.rtp.play_tone(700)
            assert node.switch.anchor.anchored(node.service.get_agent(OP, "1001").conn_id)
            yield w
            assert node.switch.anchor.stats["media_failures"] == 0
        finally:
            for phone in phones:
                await phone.close()
            await node.close()


async def listen(w: World, seconds: float) -> Heard:
    """What the customer hears over the next `seconds` (after SETTLE)."""
    assert w.call is not None and w.call.rtp is not None
    await asyncio.sleep(SETTLE)
    start = w.customer.now()
    await asyncio.sleep(seconds)
    return w.call.rtp.heard(start, w.customer.now())


def tones(heard: Heard) -> set[int]:
    """The frequencies heard, window by window, rounded to 25 Hz (the windows with a tone in them)."""
    return {int(round(w.hz / 25.0) * 25) for w in heard.windows if w.hz is not None and w.dbfs > -50}


def assert_voice(heard: Heard, hz: float) -> None:
    assert heard.share(hz, tolerance=3) >= 0.9, str(heard)
    assert tones(heard) == {int(hz)}, str(heard)


def assert_music(heard: Heard) -> None:
    """The built-in hold music: its notes only, every one of them over 1.6 s, at its documented level."""
    assert sum(heard.share(hz, tolerance=3) for hz in MUSIC_HZ) >= 0.9, str(heard)
    assert tones(heard) <= set(MUSIC_HZ) and len(tones(heard)) >= 2, str(heard)
    assert heard.share(AGENT_HZ, tolerance=20) == 0.0, str(heard)
    assert heard.level_dbfs == pytest.approx(-16, abs=1.0), str(heard)


def assert_ringback(heard: Heard) -> None:
    """ETSI ringback: 425 Hz (1 s on, 4 s off) and nothing else; the first second is all tone."""
    assert heard.share(RINGBACK_HZ, tolerance=3) >= 0.6, str(heard)
    assert tones(heard) == {int(RINGBACK_HZ)}, str(heard)


async def test_hold_plays_the_music_instead_of_the_agent_and_unhold_brings_the_agent_back(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        assert w.agent_call is not None and w.agent_call.rtp is not None
        assert_voice(await listen(w, VOICE_S), AGENT_HZ)
        assert_voice(w.agent_call.rtp.heard(w.agent.now() - 0.5, w.agent.now()), 700)

        action = w.node.service.hold(OP, "1001").action_id
        await w.customer.wait_for(Held, call=w.call, timeout=5)  # the SIP hold is as it was: a=sendonly
        await until(lambda: w.node.service.action_outcome(action) is not None, what="hold done")
        assert_music(await listen(w, 1.6))

        w.node.service.hold(OP, "1001")  # toggles back
        await w.customer.wait_for(Resumed, call=w.call, timeout=5)
        assert_voice(await listen(w, VOICE_S), AGENT_HZ)
        start = w.agent.now()
        await asyncio.sleep(0.5)
        assert_voice(w.agent_call.rtp.heard(start, w.agent.now()), 700)  # both directions are back


async def test_the_agents_phone_holding_plays_the_music_too(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        assert w.agent_call is not None
        await w.agent_call.hold()  # re-INVITE a=sendonly from the agent's phone, relayed to the customer
        await w.customer.wait_for(Held, call=w.call, timeout=5)
        assert_music(await listen(w, 1.6))
        await w.agent_call.resume()
        await w.customer.wait_for(Resumed, call=w.call, timeout=5)
        assert_voice(await listen(w, VOICE_S), AGENT_HZ)


async def rung(w: World, phone: Phone) -> Call:
    """The transfer target's phone got the INVITE and rings (180)."""
    incoming = (await phone.wait_for(IncomingCall, timeout=5)).call
    await incoming.ring()
    return incoming


async def answered(phone: Phone, call: Call, hz: float) -> None:
    await call.answer()
    await phone.wait_for(Established, call=call, timeout=5)
    assert call.rtp is not None
    call.rtp.play_tone(hz)


async def target_agent(w: World) -> Phone:
    phone = await agent_phone(w.node, "1002", ready=False, answer="manual", media=True)
    w.phones.append(phone)
    w.node.service.change_status(OP, "1002", "ready")
    return phone


async def gateway(w: World, **options: Any) -> Phone:
    phone = await Phone.start(host=GATEWAY_HOST, port=w.gateway_port, user="gateway", name="gateway", media=True,
                              **options)
    w.phones.append(phone)
    return phone


@pytest.mark.parametrize("transfer_audio", ["ringback", "music"])
async def test_a_blind_transfer_to_an_agent_rings_then_the_target_is_heard(tmp_path: Path,
                                                                           transfer_audio: str) -> None:
    async with world(tmp_path, transfer_audio=transfer_audio) as w:
        target = await target_agent(w)
        w.node.service.transfer(OP, "1001", "1002")
        target_call = await rung(w, target)
        if transfer_audio == "ringback":
            assert_ringback(await listen(w, 0.6))
        else:
            assert_music(await listen(w, 1.6))
        await answered(target, target_call, TARGET_HZ)
        await w.agent.wait_for(CallEnded, call=w.agent_call, timeout=5)
        await until(lambda: w.call is not None and w.call.rtp is not None
                    and w.call.rtp.heard(w.customer.now() - 0.2, w.customer.now()).share(TARGET_HZ) >= 0.5,
                    what="the target heard")
        assert_voice(await listen(w, VOICE_S), TARGET_HZ)
        assert target_call.rtp is not None
        start = target.now()
        await asyncio.sleep(0.5)
        assert_voice(target_call.rtp.heard(start, target.now()), 700)  # and the target hears the customer


async def test_a_blind_transfer_to_an_outside_number_rings_then_the_outside_party_is_heard(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        outside = await gateway(w)
        w.node.service.transfer(OP, "1001", "3105550199")
        outside_call = await rung(w, outside)
        assert_ringback(await listen(w, 0.6))
        await answered(outside, outside_call, OUTSIDE_HZ)
        await w.agent.wait_for(CallEnded, call=w.agent_call, timeout=5)
        await until(lambda: w.call is not None and w.call.rtp is not None
                    and w.call.rtp.heard(w.customer.now() - 0.2, w.customer.now()).share(OUTSIDE_HZ) >= 0.5,
                    what="the outside party heard")
        assert_voice(await listen(w, VOICE_S), OUTSIDE_HZ)


async def test_a_transfer_to_a_busy_number_rings_then_the_first_agent_is_heard_again(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await gateway(w, answer="auto", auto_answer_status=486, ring_delay=1.5)  # rings 1.5 s, then busy
        record = w.node.service.transfer(OP, "1001", "3105550486")
        assert_ringback(await listen(w, 0.6))
        await until(lambda: w.node.service.get_transfer(OP, record.id).state == "failed",
                    what="the transfer failed")
        await w.customer.wait_for(Resumed, call=w.call, timeout=5)
        assert_voice(await listen(w, VOICE_S), AGENT_HZ)


async def test_an_attended_transfer_rings_plays_music_while_consulting_then_the_target_is_heard(
        tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        assert w.agent_call is not None and w.agent_call.rtp is not None
        target = await target_agent(w)
        record = w.node.service.start_transfer(OP, "1001", "1002", kind="attended")
        target_call = await rung(w, target)
        assert_ringback(await listen(w, 0.6))
        await answered(target, target_call, TARGET_HZ)
        await until(lambda: w.node.service.get_transfer(OP, record.id).state == "consulting", what="consulting")
        assert_music(await listen(w, 1.6))
        start = w.agent.now()  # meanwhile the agent and the target talk
        await asyncio.sleep(0.5)
        assert_voice(w.agent_call.rtp.heard(start, w.agent.now()), TARGET_HZ)
        assert target_call.rtp is not None
        assert_voice(target_call.rtp.heard(start, target.now()), AGENT_HZ)

        w.node.service.complete_transfer(OP, record.id)
        await w.agent.wait_for(CallEnded, call=w.agent_call, timeout=5)
        await until(lambda: w.node.service.get_transfer(OP, record.id).state == "completed", what="completed")
        await until(lambda: w.call is not None and w.call.rtp is not None
                    and w.call.rtp.heard(w.customer.now() - 0.2, w.customer.now()).share(TARGET_HZ) >= 0.5,
                    what="the target heard")
        assert_voice(await listen(w, VOICE_S), TARGET_HZ)


async def test_an_attended_transfer_the_target_refuses_brings_the_first_agent_back(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        target = await target_agent(w)
        record = w.node.service.start_transfer(OP, "1001", "1002", kind="attended")
        target_call = await rung(w, target)
        assert_ringback(await listen(w, 0.6))
        await target_call.reject(486)
        await until(lambda: w.node.service.get_transfer(OP, record.id).state == "failed", what="failed")
        assert_voice(await listen(w, VOICE_S), AGENT_HZ)


async def test_the_operations_own_music_and_its_ringback_tone_are_what_the_customer_hears(tmp_path: Path) -> None:
    music = tmp_path / "music.wav"
    write_tone_wav(music, 500.0, seconds=1.0, rate=44100)  # converted once at load to 8 kHz
    async with world(tmp_path, hold_music=str(music), ringback_tone="us") as w:
        w.node.service.hold(OP, "1001")
        await w.customer.wait_for(Held, call=w.call, timeout=5)
        heard = await listen(w, 1.0)
        assert heard.share(500, tolerance=3) >= 0.9 and tones(heard) == {500}, str(heard)
        w.node.service.hold(OP, "1001")
        await w.customer.wait_for(Resumed, call=w.call, timeout=5)
        assert_voice(await listen(w, VOICE_S), AGENT_HZ)

        target = await target_agent(w)
        w.node.service.transfer(OP, "1001", "1002")
        await rung(w, target)
        heard = await listen(w, 0.6)  # US ringback: 440 and 480 Hz together, 2 s on
        assert heard.share(440, tolerance=45) >= 0.9 and tones(heard) <= {450, 475}, str(heard)
        assert min(window.dbfs for window in heard.windows) > -20, str(heard)  # both tones, at -16 dBFS each


def write_tone_wav(path: Path, hz: float, *, seconds: float, rate: int) -> None:
    import math
    import struct
    import wave

    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / rate))) * 2
                                 for i in range(int(seconds * rate))))
