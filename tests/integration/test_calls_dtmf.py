"""DTMF on anchored calls (docs/operations.md, "DTMF"), through a real userspace rtpengine, with real SIP and RTP
between `callbridge.phone` phones and callbridge on loopback.

- api=dtmf reaches the customer as RFC 4733 telephone-events in the media (the relay injects them in the agent's
  stream), and as SIP INFO only when the call is direct or the customer's trunk says ``dtmf_mode = "info"``.
- The customer's key presses (RFC 4733 in its RTP) become ``call.dtmf`` events, from the relay's DTMF log
  (``--dtmf-log-dest``) received on callbridge's ``rtpengine_dtmf_listen`` socket.
- Dead media ends calls: a party whose RTP stops for ``media_timeout_seconds`` (the relay's counters, ng
  ``query``) gets the call hung up both ways, CDR end_reason ``media_timeout``; a party on hold is not judged."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from anchored import anchored_node, talking  # noqa: E402
from callnode import GATEWAY_HOST, OP, cdrs, operation_doc, state_history, until  # noqa: E402

from callbridge.bootstrap import Node  # noqa: E402
from callbridge.callcontrol.events import ActionCompleted  # noqa: E402
from callbridge.phone import Call, CallEnded, DtmfReceived, Held, Phone, Resumed  # noqa: E402
from peers.ports import free_port  # noqa: E402
from peers.rtpengine import Rtpengine  # noqa: E402

# serial: digit durations judged to 20 ms and the media timeout to 1 s (scripts/test).
pytestmark = [pytest.mark.peers, pytest.mark.timeout(60), pytest.mark.serial]


@dataclass
class World:
    node: Node
    relay: Rtpengine
    customer: Phone
    agent: Phone
    call: Call
    agent_call: Call


@asynccontextmanager
async def world(tmp_path: Path, *, operation: dict[str, Any] | None = None, trunk: dict[str, Any] | None = None,
                relay_args: tuple[str, ...] = (), **settings: Any) -> AsyncIterator[World]:
    doc = operation_doc(gateway_port=free_port(GATEWAY_HOST, udp=True, tcp=False))
    doc["operation"].update(operation or {})
    doc["trunks"][0].update(trunk or {})
    async with anchored_node(tmp_path, doc, relay_args=relay_args, **settings) as a:
        talk = await talking(a)
        call, agent_call = talk.call, talk.agent_call
        # both phones' RTP through the relay (10.5 injects DTMF only in a stream it has seen)
        await until(lambda: call.rtp is not None and call.rtp.packets_received >= 5
                    and agent_call.rtp is not None and agent_call.rtp.packets_received >= 5, what="RTP flowing")
        yield World(a.node, a.relays[0], talk.customer, talk.agent, call, agent_call)


async def dtmf(w: World, tones: str) -> None:
    """api=dtmf from agent 1001, and its outcome (completed)."""
    action = w.node.service.dtmf(OP, "1001", tones).action_id
    await until(lambda: w.node.service.action_outcome(action) is not None, what="the dtmf action's outcome")
    assert isinstance(w.node.service.action_outcome(action), ActionCompleted)


async def no_info(w: World) -> None:
    with pytest.raises(TimeoutError):
        await w.customer.wait_for(DtmfReceived, call=w.call, timeout=0.5)


async def test_api_dtmf_reaches_an_anchored_customer_as_rfc4733_events_in_the_media(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        conn_id = w.node.service.get_agent(OP, "1001").conn_id
        assert w.node.switch.anchor.anchored(conn_id)
        assert w.call.rtp is not None and w.agent_call.rtp is not None
        await dtmf(w, "1#9*0D")
        assert await w.call.rtp.wait_digits(6, timeout=5) == "1#9*0D"
        events = w.call.rtp.events
        assert [e.digit for e in events] == list("1#9*0D")  # nothing else, each once
        assert all(e.ended for e in events)
        assert all(abs(e.duration_ms - 160) <= 20 for e in events), [e.duration_ms for e in events]
        await no_info(w)
        assert w.agent_call.rtp.events == []  # the agent's phone gets none of it
        await dtmf(w, "42")  # a second command: its digits after the first's
        assert await w.call.rtp.wait_digits(8, timeout=5) == "1#9*0D42"


async def test_a_trunk_with_dtmf_mode_info_gets_sip_info(tmp_path: Path) -> None:
    async with world(tmp_path, trunk={"dtmf_mode": "info"}) as w:
        assert w.node.switch.anchor.anchored(w.node.service.get_agent(OP, "1001").conn_id)
        await dtmf(w, "12#")
        digits = [(await w.customer.wait_for(DtmfReceived, call=w.call, timeout=5)).digit for _ in range(3)]
        assert digits == ["1", "2", "#"]
        await asyncio.sleep(0.5)
        assert w.call.rtp is not None and w.call.rtp.events == []


async def test_a_direct_call_gets_sip_info(tmp_path: Path) -> None:
    async with world(tmp_path, operation={"media_mode": "direct"}) as w:
        assert not w.node.switch.anchor.anchored(w.node.service.get_agent(OP, "1001").conn_id)
        await dtmf(w, "7*")
        digits = [(await w.customer.wait_for(DtmfReceived, call=w.call, timeout=5)).digit for _ in range(2)]
        assert digits == ["7", "*"]
        await asyncio.sleep(0.5)
        assert w.call.rtp is not None and w.call.rtp.events == []


def dtmf_events(w: World) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, e.data) for e in w.node.events.since(OP, 0) if e.type == "call.dtmf"]


async def test_the_customers_key_presses_become_call_dtmf_events_in_order(tmp_path: Path) -> None:
    port = free_port("127.0.0.1", udp=True, tcp=False)
    async with world(tmp_path, relay_args=(f"--dtmf-log-dest=127.0.0.1:{port}",),
                     rtpengine_dtmf_listen=f"127.0.0.1:{port}") as w:
        conn_id = w.node.service.get_agent(OP, "1001").conn_id
        customer_leg = w.node.switch.anchor.calls[conn_id]
        assert w.call.rtp is not None and w.agent_call.rtp is not None
        await w.call.rtp.send_digits("1#9", duration_ms=100)
        assert await w.agent_call.rtp.wait_digits(3, timeout=5) == "1#9"  # the agent hears them, as before
        await until(lambda: len(dtmf_events(w)) >= 3, what="three call.dtmf events")
        assert dtmf_events(w) == [
            ("call.dtmf", {"conn_id": conn_id, "leg_id": customer_leg, "leg": "customer", "digit": digit,
                           "duration_ms": 100}) for digit in "1#9"]
        # api=dtmf's digits go to the customer, and are not the customer's: no event for them
        await dtmf(w, "5")
        assert await w.call.rtp.wait_digits(1, timeout=5) == "5"
        await asyncio.sleep(0.5)
        assert len(dtmf_events(w)) == 3
        assert w.node.dtmf_listener is not None
        assert w.node.dtmf_listener.stats == {"digits": 4, "dropped": 0, "foreign": 0}
        assert w.node.media_watch is not None
        assert (w.node.media_watch.stats["dtmf"], w.node.media_watch.stats["dtmf_ignored"]) == (3, 1)



MEDIA_TIMEOUT = 2.0  # polled every 0.5 s (a quarter of it)
AFTER_A_CALL = [("acw", "call_end"), ("ready", "acw_end")]  # the agent's states after any hang-up (acw_seconds 0)


async def test_a_customer_whose_rtp_stops_is_hung_up_both_ways_with_end_reason_media_timeout(tmp_path: Path) -> None:
    async with world(tmp_path, media_timeout_seconds=MEDIA_TIMEOUT) as w:
        loop = asyncio.get_running_loop()
        conn_id = w.node.service.get_agent(OP, "1001").conn_id
        assert conn_id is not None and w.call.rtp is not None
        await asyncio.sleep(MEDIA_TIMEOUT + 1.0)  # talking for longer than the time-out ends nothing
        assert w.node.service.get_agent(OP, "1001").conn_id == conn_id
        w.call.rtp.stop()  # the customer's phone sends no more RTP (its dialog stays up)
        stopped = loop.time()
        ended = await w.customer.wait_for(CallEnded, call=w.call, timeout=MEDIA_TIMEOUT + 3)
        agent_ended = await w.agent.wait_for(CallEnded, call=w.agent_call, timeout=2)
        elapsed = loop.time() - stopped
        # the relay's counter stops moving at once; one poll interval (0.5 s) and a round trip later it is seen
        assert MEDIA_TIMEOUT <= elapsed <= MEDIA_TIMEOUT + 0.5 + 0.5, elapsed
        assert (ended.reason, ended.by) == ("bye", "remote")  # callbridge's BYE to the customer
        assert (agent_ended.reason, agent_ended.by) == ("bye", "remote")  # ... and to the agent
        await until(lambda: w.node.service.get_agent(OP, "1001").conn_id is None, what="the agent freed")
        assert w.node.service.get_agent(OP, "1001").state == "ready"  # acw_seconds 0: as after any hang-up
        assert state_history(w.node, "1001")[-2:] == AFTER_A_CALL
        [cdr] = cdrs(w.node)
        assert (cdr["conn_id"], cdr["hangup_by"], cdr["end_reason"], cdr["sip_cause"]) == (
            conn_id, "system", "media_timeout", None)
        assert w.node.media_watch is not None and w.node.media_watch.stats["media_timeouts"] == 1
        assert 'callbridge_media_watch_total{counter="media_timeouts"} 1' in w.node.metrics.render()
        def ended_events() -> list[dict[str, Any]]:
            return [e.data for e in w.node.events.since(OP, 0) if e.type == "call.ended"]

        await until(lambda: ended_events() != [], what="call.ended in the event log")
        assert [(e["conn_id"], e["ended_by"], e["end_reason"]) for e in ended_events()] == [
            (conn_id, "system", "media_timeout")]


async def test_a_customer_on_hold_sends_nothing_and_is_not_hung_up(tmp_path: Path) -> None:
    async with world(tmp_path, media_timeout_seconds=MEDIA_TIMEOUT) as w:
        conn_id = w.node.service.get_agent(OP, "1001").conn_id
        assert w.call.rtp is not None
        hold = w.node.service.hold(OP, "1001").action_id
        await w.customer.wait_for(Held, call=w.call, timeout=5)  # it answers recvonly: its phone stops sending
        await until(lambda: w.node.service.action_outcome(hold) is not None, what="hold done")
        sent = w.call.rtp.packets_sent
        await asyncio.sleep(MEDIA_TIMEOUT * 2)
        assert w.call.rtp.packets_sent == sent  # it sent nothing for twice the time-out
        assert w.node.service.get_agent(OP, "1001").conn_id == conn_id  # and the call goes on
        w.node.service.hold(OP, "1001")  # toggles back
        await w.customer.wait_for(Resumed, call=w.call, timeout=5)
        await asyncio.sleep(MEDIA_TIMEOUT + 1.0)
        assert w.node.service.get_agent(OP, "1001").conn_id == conn_id
        await w.call.hangup()
        await w.agent.wait_for(CallEnded, call=w.agent_call, timeout=5)
        await until(lambda: w.node.service.get_agent(OP, "1001").conn_id is None, what="the agent freed")
        assert state_history(w.node, "1001")[-2:] == AFTER_A_CALL
        [cdr] = cdrs(w.node)
        assert (cdr["hangup_by"], cdr["end_reason"]) == ("customer", None)
        assert w.node.media_watch is not None and w.node.media_watch.stats["media_timeouts"] == 0
