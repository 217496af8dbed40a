"""Two phones on loopback sockets (UDP and TCP): calls, ringing, answers, rejections, CANCEL, hang-ups."""

from __future__ import annotations

import pytest
from conftest import PhoneFactory

from callbridge.phone import (
    Answered,
    CallEnded,
    CallError,
    CallFailed,
    CallState,
    CallStateError,
    Established,
    IncomingCall,
    Ringing,
)

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("hangup_by", ["caller", "callee"])
async def test_call_ring_answer_hangup(make_phone: PhoneFactory, hangup_by: str) -> None:
    alice = await make_phone("1001")
    bob = await make_phone("2002")
    call = await alice.call(bob.uri, wait_answer=False)
    incoming = await bob.wait_for(IncomingCall, timeout=5)
    callee = incoming.call
    assert incoming.request.from_.uri.user == "1001"
    assert callee.state is CallState.INCOMING and callee.remote_sdp is not None
    await callee.ring()
    ringing = await alice.wait_for(Ringing, call=call, timeout=5)
    assert ringing.status == 180 and call.state is CallState.ALERTING
    await callee.answer()
    await call.wait_answered(5)
    answered = await alice.wait_for(Answered, call=call, timeout=5)
    assert answered.response.status == 200
    await bob.wait_for(Established, call=callee, timeout=5)
    assert call.state is CallState.ESTABLISHED and callee.state is CallState.ESTABLISHED
    # a well-formed offer/answer: PCMU/8000 on each phone's own RTP port
    assert call.remote_sdp is not None and callee.remote_sdp is not None
    assert call.remote_sdp.media[0].port == bob.rtp_port and callee.remote_sdp.media[0].port == alice.rtp_port
    assert call.remote_sdp.media[0].formats == ["0"] and call.remote_sdp.media[0].attribute("rtpmap") == "0 PCMU/8000"
    assert call.dialog is not None and callee.dialog is not None
    assert call.dialog.call_id == callee.dialog.call_id

    hanging, other, other_phone, hanging_phone = (
        (call, callee, bob, alice) if hangup_by == "caller" else (callee, call, alice, bob))
    await hanging.hangup()
    mine = await hanging_phone.wait_for(CallEnded, call=hanging, timeout=5)
    theirs = await other_phone.wait_for(CallEnded, call=other, timeout=5)
    assert (mine.reason, mine.by) == ("bye", "local")
    assert (theirs.reason, theirs.by) == ("bye", "remote")
    assert alice.calls == [] and bob.calls == []
    with pytest.raises(CallStateError):
        await hanging.hold()


@pytest.mark.parametrize("status", [486, 603])
async def test_reject(make_phone: PhoneFactory, status: int) -> None:
    alice = await make_phone("1001")
    bob = await make_phone("2002")
    call = await alice.call(bob.uri, wait_answer=False)
    callee = (await bob.wait_for(IncomingCall, timeout=5)).call
    await callee.reject(status)
    failed = await alice.wait_for(CallFailed, call=call, timeout=5)
    ended = await alice.wait_for(CallEnded, call=call, timeout=5)
    assert failed.status == status
    assert (ended.reason, ended.status, ended.by) == ("rejected", status, "remote")
    mine = await bob.wait_for(CallEnded, call=callee, timeout=5)
    assert (mine.reason, mine.status, mine.by) == ("rejected", status, "local")
    with pytest.raises(CallError) as info:
        await call.wait_answered(1)
    assert info.value.status == status


async def test_wait_answer_raises_with_the_rejection(make_phone: PhoneFactory) -> None:
    alice = await make_phone("1001")
    callee_phone = await make_phone("2002", answer="auto", auto_answer_status=486)
    with pytest.raises(CallError) as info:
        await alice.call(callee_phone.uri, timeout=5)
    assert info.value.status == 486


async def test_cancel_while_ringing(make_phone: PhoneFactory) -> None:
    alice = await make_phone("1001")
    bob = await make_phone("2002", answer="auto", auto_answer_status=180)  # rings, never answers
    call = await alice.call(bob.uri, wait_answer=False)
    await alice.wait_for(Ringing, call=call, timeout=5)
    callee = (await bob.wait_for(IncomingCall, timeout=5)).call
    assert callee.state is CallState.RINGING
    await call.hangup()
    assert call.state is CallState.ENDING
    mine = await alice.wait_for(CallEnded, call=call, timeout=5)
    theirs = await bob.wait_for(CallEnded, call=callee, timeout=5)
    assert (mine.reason, mine.status, mine.by) == ("cancelled", 487, "local")
    assert (theirs.reason, theirs.status, theirs.by) == ("cancelled", 487, "remote")
    assert alice.endpoint.dialog_count == 0 and bob.endpoint.dialog_count == 0


async def test_auto_answer_with_ring_delay(make_phone: PhoneFactory) -> None:
    alice = await make_phone("1001")
    bob = await make_phone("2002", answer="auto", ring_delay=0.2)
    call = await alice.call(bob.uri, wait_answer=False)
    await alice.wait_for(Ringing, call=call, timeout=5)
    assert call.state is CallState.ALERTING
    await call.wait_answered(5)
    await call.hangup()
    ended = await bob.wait_for(CallEnded, timeout=5)
    assert ended.by == "remote"


async def test_answering_an_outgoing_call_is_refused(make_phone: PhoneFactory) -> None:
    alice = await make_phone("1001")
    bob = await make_phone("2002", answer="auto")
    call = await alice.call(bob.uri, timeout=5)
    with pytest.raises(CallStateError):
        await call.answer()
    await call.hangup()
