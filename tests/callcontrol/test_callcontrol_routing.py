"""Queues and ACD: longest idle first, ring-no-answer to the next agent, wait then 480, freed agents take waiters."""

from __future__ import annotations

import pytest
from callcontrol_fakes import OP, World

from callbridge.callcontrol.errors import DidNotFound
from callbridge.callcontrol.events import CallOffered, CallQueued
from callbridge.callcontrol.model import Agent
from callbridge.callcontrol.routing import Candidate, QueueBook, longest_idle, serves


def test_longest_idle_pure() -> None:
    assert longest_idle([]) is None
    assert longest_idle([Candidate("1002", 5.0), Candidate("1001", 7.0), Candidate("1003", 6.0)]) == Candidate(
        "1002", 5.0)
    assert longest_idle([Candidate("1003", 5.0), Candidate("1002", 5.0)]) == Candidate("1002", 5.0)


def test_serves() -> None:
    assert serves(("sales",), "support", "sales")
    assert not serves(("sales",), "support", "support")
    assert serves((), "support", "support")
    assert not serves((), None, "support")


def test_queue_book_fifo_across_queues_with_skip() -> None:
    book = QueueBook()
    book.add(OP, "sales", "c1")
    book.add(OP, "vip", "c2")
    book.add(OP, "sales", "c3")
    assert book.waiting(OP, "sales") == ["c1", "c3"]
    assert book.oldest(OP, ["vip", "sales"]) == "c1"
    assert book.oldest(OP, ["vip", "sales"], skip=frozenset({"c1"})) == "c2"
    assert book.oldest(OP, ["sales"], skip=frozenset({"c1"})) == "c3"
    assert book.oldest("0077", ["sales"]) is None
    with pytest.raises(ValueError):
        book.add(OP, "vip", "c1")
    assert book.remove("c1") and not book.remove("c1")
    assert "c1" not in book and "c3" in book


def test_inbound_call_goes_to_the_agent_idle_longest(world: World) -> None:
    world.login("1002", "1001", "1003")  # 1002 became ready first
    conn_id, cust = world.inbound()
    offer = world.signalling.last_originate()
    assert offer.destination == "1002" and offer.kind == "agent"
    assert offer.offer_from_leg == cust and not offer.offerless  # the customer's offer goes to the agent
    assert offer.caller_id == "3001234567" and offer.timeout == 15.0
    assert world.state("1002") == "ringing"
    assert world.service.get_call(OP, conn_id).state == "offering"
    world.service.on_leg_ringing(offer.leg_id)
    world.service.on_leg_answered(offer.leg_id)
    assert world.signalling.of("bridge")[-1] == ("bridge", cust, offer.leg_id)
    view = world.service.get_call(OP, conn_id)
    assert (view.state, view.agent) == ("connected", "1002")
    assert [leg.state for leg in view.legs] == ["up", "up"]
    assert world.state("1002") == "on_call"
    # the next call goes to the next longest idle
    world.inbound()
    assert world.signalling.last_originate().destination == "1001"


def test_ring_no_answer_moves_to_the_next_agent(world: World) -> None:
    world.login("1001", "1002")
    conn_id, _ = world.inbound()
    first = world.signalling.last_originate()
    assert first.destination == "1001"
    world.scheduler.advance(15.0)
    assert ("release", first.leg_id, 408, None) in world.signalling.requests
    second = world.signalling.last_originate()
    assert second.destination == "1002"
    assert world.state("1001") == "ready"  # back in line, at the end
    assert world.states.history("1001")[-2:] == ["ringing", "ready"]
    world.service.on_leg_answered(second.leg_id)
    assert world.service.get_call(OP, conn_id).agent == "1002"
    legs = {leg.leg_id: leg for leg in world.service.get_call(OP, conn_id).legs}
    assert legs[first.leg_id].state == "ended" and legs[first.leg_id].sip_status == 408


def test_busy_agent_moves_to_the_next_one(world: World) -> None:
    world.login("1001", "1002")
    world.inbound()
    first = world.signalling.last_originate()
    world.service.on_leg_failed(first.leg_id, 486)
    assert world.signalling.last_originate().destination == "1002"
    assert world.state("1001") == "ready"


def test_only_agent_is_offered_again_after_no_answer(world: World) -> None:
    world.login("1001")
    world.inbound()
    first = world.signalling.last_originate()
    world.scheduler.advance(15.0)
    again = world.signalling.last_originate()
    assert again.destination == "1001" and again.leg_id != first.leg_id


def test_nobody_available_waits_then_480_with_retry_after(world: World) -> None:
    conn_id, cust = world.inbound()
    assert world.signalling.originates() == []
    assert world.service.get_call(OP, conn_id).state == "queued"
    world.scheduler.advance(59.0)
    assert world.signalling.of("reject") == []
    world.scheduler.advance(1.0)
    assert world.signalling.of("reject") == [("reject", cust, 480, 30)]
    cdr = world.records.cdrs[-1]
    assert (cdr.conn_id, cdr.hangup_by, cdr.sip_cause, cdr.answered_at, cdr.agents) == (
        conn_id, "system", 480, None, ())
    assert world.service.list_calls(OP) == []


def test_wait_expiring_during_an_offer_rejects_when_the_offer_fails(world: World) -> None:
    conn_id, cust = world.inbound(did="5550199")  # vip: 20 s limit; agents serve "sales" only
    world.directory.agents[(OP, "1001")] = Agent(OP, "1001", queues=("sales", "vip"))
    world.clock.t += 10
    world.login("1001")
    offer = world.signalling.last_originate()
    world.scheduler.advance(15.0)  # ring timeout at +25 s, past the 20 s limit
    assert world.signalling.of("reject") == [("reject", cust, 480, 60)]
    assert world.records.cdrs[-1].conn_id == conn_id
    assert world.state("1001") == "ready"
    assert world.signalling.last_originate() == offer  # not offered again


def test_an_agent_freed_takes_the_longest_waiting_call(world: World) -> None:
    first, _ = world.inbound(number="111")
    world.clock.t += 1
    second, _ = world.inbound(number="222")
    world.service.on_registration_changed(OP, "1001", True)
    world.service.change_status(OP, "1001", "ready")
    offer = world.signalling.last_originate()
    assert offer.destination == "1001" and offer.caller_id == "111"
    assert world.service.get_call(OP, first).state == "offering"
    assert world.service.get_call(OP, second).state == "queued"


def test_agent_back_from_acw_takes_the_waiting_call(world: World) -> None:
    world.login("1001")
    _conn_id, cust, _agent_leg = world.connected_call()
    waiting, _ = world.inbound(number="222")
    world.service.on_leg_ended(cust)
    assert world.state("1001") == "acw"
    world.scheduler.advance(9.0)
    assert world.service.get_call(OP, waiting).state == "queued"
    world.scheduler.advance(1.0)
    assert world.state("1001") == "ringing"
    assert world.signalling.last_originate().caller_id == "222"


def test_customer_hangs_up_while_ringing_frees_the_agent(world: World) -> None:
    world.login("1001")
    _conn_id, cust = world.inbound()
    offer = world.signalling.last_originate()
    world.service.on_leg_ended(cust)
    assert ("release", offer.leg_id, None, None) in world.signalling.requests
    assert world.state("1001") == "ready"
    cdr = world.records.cdrs[-1]
    assert (cdr.hangup_by, cdr.answered_at) == ("customer", None)
    world.scheduler.advance(100)
    assert world.signalling.of("reject") == []  # the queue timer died with the call


def test_unknown_did_changes_nothing(world: World) -> None:
    with pytest.raises(DidNotFound) as info:
        world.service.on_inbound_call(OP, "999", "x", "123")
    assert info.value.error_id == "DID_NOT_FOUND"
    with pytest.raises(DidNotFound):
        world.service.on_inbound_call("0077", "5550100", "x", "123")  # another operation's DID
    assert world.events.events == [] and world.records.calls == {}


def test_aux_and_unregistered_agents_are_not_offered(world: World) -> None:
    world.login("1001", "1002")
    world.service.change_status(OP, "1001", "2")
    world.service.on_registration_changed(OP, "1002", False)
    assert world.state("1002") == "logout"
    conn_id, _ = world.inbound()
    assert world.signalling.originates() == []
    assert world.events.of(CallQueued)[-1].conn_id == conn_id
    world.service.on_registration_changed(OP, "1002", True)  # registering is not being ready
    assert world.signalling.originates() == []
    world.service.change_status(OP, "1002", "ready")
    assert world.events.of(CallOffered)[-1].agent == "1002"




def test_a_call_left_waiting_with_no_agent_rung_is_told_to_wait_with_its_queues_audio(world: World) -> None:
    """`Signalling.waiting` (the queue's music, b2bua/waiting.py): when nobody is rung; not when an agent is rung
    at once (its ringing is what the customer gets), nor when the call is offered again after a ring-no-answer."""
    conn_id, cust = world.inbound()
    assert world.signalling.waits == [(cust, "sales")] and world.signalling.originates() == []
    world.login("1001")  # takes the waiting call
    first = world.signalling.last_originate("1001")
    assert world.signalling.waits == [(cust, "sales")]
    world.scheduler.advance(15.0)  # no answer: 1001 is back in line and rung again at once
    assert ("release", first.leg_id, 408, None) in world.signalling.requests
    assert world.signalling.waits == [(cust, "sales")]
    assert world.signalling.last_originate("1001").leg_id != first.leg_id
    _, second = world.inbound()  # nobody free: it waits too
    assert world.signalling.waits[-1] == (second, "sales")
    world.service.on_leg_answered(world.signalling.last_originate("1001").leg_id)
    assert world.service.get_call(OP, conn_id).state == "connected"


def test_a_call_rung_at_once_is_not_told_to_wait(world: World) -> None:
    world.login("1001")
    world.inbound()
    assert world.signalling.waits == [] and world.signalling.last_originate().destination == "1001"
