"""Two phones on loopback sockets, in a call: hold and resume (RFC 3264), DTMF by INFO, blind and attended REFER."""

from __future__ import annotations

import asyncio

import pytest
from conftest import PhoneFactory

from callbridge.phone import (
    Call,
    CallEnded,
    DtmfReceived,
    Held,
    IncomingCall,
    InfoReceived,
    Phone,
    ReferReceived,
    ReInviteReceived,
    Resumed,
    TransferDone,
    TransferProgress,
)
from callbridge.sip import SessionDescription

pytestmark = pytest.mark.timeout(30)


def directions(sd: SessionDescription | None) -> list[str]:
    assert sd is not None
    return [f"a={a.name}" for m in sd.media for a in m.attributes
            if a.name in ("sendrecv", "sendonly", "recvonly", "inactive")]


async def connect(caller: Phone, callee: Phone) -> tuple[Call, Call]:
    call = await caller.call(callee.uri, timeout=5)
    incoming = await callee.wait_for(IncomingCall, where=lambda e: e.call.call_id == call.call_id, timeout=5)
    await incoming.call.wait_answered(5)
    return call, incoming.call


async def test_hold_and_resume(make_phone: PhoneFactory) -> None:
    alice = await make_phone("1001")
    bob = await make_phone("2002", answer="auto")
    call, callee = await connect(alice, bob)
    assert directions(call.local_sdp) == ["a=sendrecv"] and directions(callee.local_sdp) == ["a=sendrecv"]
    assert call.local_sdp is not None
    version = call.local_sdp.origin.sess_version
    session = call.local_sdp.origin.sess_id
    bob_version = callee.local_sdp.origin.sess_version if callee.local_sdp else -1

    await call.hold()
    held = await bob.wait_for(Held, call=callee, timeout=5)
    assert held.direction == "sendonly"
    await bob.wait_for(ReInviteReceived, call=callee, timeout=5)
    assert directions(call.local_sdp) == ["a=sendonly"]       # alice's offer
    assert directions(callee.remote_sdp) == ["a=sendonly"]    # as bob saw it
    assert directions(callee.local_sdp) == ["a=recvonly"]     # bob's answer (RFC 3264 §6.1)
    assert directions(call.remote_sdp) == ["a=recvonly"]      # as alice saw it
    assert call.local_sdp.origin.sess_version == version + 1
    assert call.local_sdp.origin.sess_id == session
    assert callee.local_sdp is not None and callee.local_sdp.origin.sess_version == bob_version + 1
    assert call.on_hold

    await call.resume()
    resumed = await bob.wait_for(Resumed, call=callee, timeout=5)
    assert resumed.direction == "sendrecv"
    assert directions(call.local_sdp) == ["a=sendrecv"] and directions(callee.remote_sdp) == ["a=sendrecv"]
    assert directions(callee.local_sdp) == ["a=sendrecv"] and directions(call.remote_sdp) == ["a=sendrecv"]
    assert call.local_sdp.origin.sess_version == version + 2
    assert callee.local_sdp.origin.sess_version == bob_version + 2
    assert not call.on_hold
    await call.hangup()


async def test_dtmf_digits_arrive_in_order(make_phone: PhoneFactory) -> None:
    alice = await make_phone("1001")
    bob = await make_phone("2002", answer="auto")
    call, callee = await connect(alice, bob)
    await call.send_dtmf("12#9*0")
    digits = [(await bob.wait_for(DtmfReceived, call=callee, timeout=5)).digit for _ in range(6)]
    assert digits == ["1", "2", "#", "9", "*", "0"]
    assert await call.info(b"hello", "text/plain") == 200
    info = await bob.wait_for(InfoReceived, call=callee, timeout=5)
    assert info.request.body == b"hello"
    with pytest.raises(ValueError):
        await call.send_dtmf("1x")


async def test_blind_transfer_is_followed(make_phone: PhoneFactory) -> None:
    customer = await make_phone("1001")              # the transferee
    agent = await make_phone("2002", answer="auto")  # the transferor
    target = await make_phone("3003", answer="auto")
    to_agent, at_agent = await connect(customer, agent)

    status = await at_agent.refer(target.uri)
    assert status == 202
    refer = await customer.wait_for(ReferReceived, call=to_agent, timeout=5)
    assert target.uri.split(";")[0] in refer.refer_to
    progress = await agent.wait_for(TransferProgress, call=at_agent, timeout=5)
    assert progress.status == 100
    done = await agent.wait_for(TransferDone, call=at_agent, timeout=5)
    assert done.status == 200 and done.succeeded
    incoming = await target.wait_for(IncomingCall, timeout=5)
    assert incoming.request.headers.get("Referred-By") is not None
    new_call = next(c for c in customer.calls if c is not to_agent)
    assert new_call.referred_by is to_agent and new_call.dialog is not None

    await at_agent.hangup()  # the transferor leaves after success
    assert (await customer.wait_for(CallEnded, call=to_agent, timeout=5)).by == "remote"
    assert customer.calls == [new_call]
    assert [c.state.value for c in target.calls] == ["established"]
    await new_call.hangup()
    await target.wait_for(CallEnded, call=incoming.call, timeout=5)


async def test_failed_blind_transfer_reports_the_status(make_phone: PhoneFactory) -> None:
    customer = await make_phone("1001")
    agent = await make_phone("2002", answer="auto")
    busy = await make_phone("3003", answer="auto", auto_answer_status=486)
    to_agent, at_agent = await connect(customer, agent)
    await at_agent.refer(busy.uri)
    done = await agent.wait_for(TransferDone, call=at_agent, timeout=5)
    assert done.status == 486 and not done.succeeded
    assert to_agent.state.value == "established"  # the original call survives


async def test_attended_transfer_with_replaces(make_phone: PhoneFactory) -> None:
    customer = await make_phone("1001")              # the transferee
    agent = await make_phone("2002", answer="auto")  # the transferor
    target = await make_phone("3003", answer="auto")
    to_agent, at_agent = await connect(customer, agent)
    await at_agent.hold()
    consult, consult_at_target = await connect(agent, target)

    await at_agent.refer(target.uri, replaces=consult)
    refer = await customer.wait_for(ReferReceived, call=to_agent, timeout=5)
    assert "Replaces=" in refer.refer_to
    replacing = await target.wait_for(IncomingCall, where=lambda e: e.replaces is not None, timeout=5)
    assert replacing.replaces is consult_at_target
    assert replacing.request.replaces is not None
    assert replacing.request.replaces.call_id == consult.call_id
    done = await agent.wait_for(TransferDone, call=at_agent, timeout=5)
    assert done.status == 200
    # the target's consult call was replaced: it ends there, and the agent sees its consult call ended by BYE
    replaced = await target.wait_for(CallEnded, call=consult_at_target, timeout=5)
    assert (replaced.reason, replaced.by) == ("replaced", "remote")
    consult_end = await agent.wait_for(CallEnded, call=consult, timeout=5)
    assert (consult_end.reason, consult_end.by) == ("bye", "remote")
    await at_agent.hangup()
    await customer.wait_for(CallEnded, call=to_agent, timeout=5)
    await asyncio.sleep(0.05)
    assert [c.state.value for c in customer.calls] == ["established"]
    assert [c.state.value for c in target.calls] == ["established"]
    assert agent.calls == []


async def test_refer_not_followed_when_switched_off(make_phone: PhoneFactory) -> None:
    customer = await make_phone("1001", follow_refer=False)
    agent = await make_phone("2002", answer="auto")
    target = await make_phone("3003", answer="auto")
    to_agent, at_agent = await connect(customer, agent)
    await at_agent.refer(target.uri)
    await customer.wait_for(ReferReceived, call=to_agent, timeout=5)
    await asyncio.sleep(0.2)
    assert customer.calls == [to_agent] and target.calls == []
