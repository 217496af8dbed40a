"""An agent's own call from a desk phone, anchored on a real userspace rtpengine (b2bua/inbound.py, step 5): the
party it calls is the call's persistent media party, as a customer is on a call that comes in; what each party
hears is measured by tone frequency on its phone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from anchored import anchored_node  # noqa: E402
from callnode import DOMAIN, OP, cdrs, operation_doc, until  # noqa: E402
from test_calls_hearing import assert_music  # noqa: E402
from test_calls_relay_loss import assert_tone, in_range, listen, media_of  # noqa: E402

from callbridge.phone import CallEnded, Established, Held, IncomingCall, Resumed  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

CALLER_HZ, CALLED_HZ = 1000.0, 700.0  # the caller's tone is the one assert_music checks is absent


async def test_a_desk_phones_call_to_another_agent_is_anchored_and_its_hold_plays_music(tmp_path: Path) -> None:
    async with anchored_node(tmp_path, operation_doc()) as a:
        caller = await a.agent("1001", ready=True)
        called = await a.agent("1002", ready=True)
        call = await caller.call(f"sip:1002@{DOMAIN}", dest=a.node.sip_address, timeout=5)
        called_call = (await called.wait_for(IncomingCall, timeout=5)).call
        await called.wait_for(Established, call=called_call, timeout=5)
        conn_id = a.node.service.get_agent(OP, "1001").conn_id
        assert conn_id is not None and a.node.switch.anchor.anchored(conn_id)
        [relay] = a.relays
        # each phone was given the relay's address, not the other phone's
        assert in_range(relay, media_of(call.remote_sdp)) and in_range(relay, media_of(called_call.remote_sdp))
        assert call.rtp is not None and called_call.rtp is not None
        call.rtp.play_tone(CALLER_HZ)
        called_call.rtp.play_tone(CALLED_HZ)
        assert_tone(await listen(caller, call, 1.0), CALLED_HZ)
        assert_tone(await listen(called, called_call, 1.0), CALLER_HZ)

        # the caller's hold: the party it called (the call's persistent party) hears the music, not the caller
        hold = a.node.service.hold(OP, "1001").action_id
        await called.wait_for(Held, call=called_call, timeout=5)
        await until(lambda: a.node.service.action_outcome(hold) is not None, what="hold done")
        assert_music(await listen(called, called_call, 1.6))
        a.node.service.hold(OP, "1001")
        await called.wait_for(Resumed, call=called_call, timeout=5)
        assert_tone(await listen(called, called_call, 1.0), CALLER_HZ)

        await call.hangup()
        await called.wait_for(CallEnded, call=called_call, timeout=5)
        await until(lambda: a.node.live_legs == 0 and not a.node.switch.anchor.calls, what="the call over")
        [cdr] = cdrs(a.node)
        assert (cdr["conn_id"], cdr["hangup_by"]) == (conn_id, "agent")
        assert a.node.switch.anchor.stats["media_failures"] == 0
