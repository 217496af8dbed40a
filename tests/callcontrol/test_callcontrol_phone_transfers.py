"""Transfers made on the agent's phone: REFER (blind) and a consultation call then REFER with Replaces."""

from __future__ import annotations

import pytest
from callcontrol_fakes import OP, World, expect

from callbridge.callcontrol.events import TransferCompleted, TransferCreated


@pytest.fixture
def talking(world: World) -> tuple[World, str, str, str]:
    world.login("1001")
    conn_id, cust, agent_leg = world.connected_call("1001")
    world.login("1002")
    return world, conn_id, cust, agent_leg


def test_refer_runs_the_blind_transfer_engine(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, _cust, agent_leg = talking
    record = world.service.on_refer(agent_leg, "1002")
    assert (record.conn_id, record.kind, record.agent, record.state) == (conn_id, "blind", "1001", "trying")
    world.service.on_leg_answered(record.target_leg_id or "")
    assert world.service.get_transfer(OP, record.id).state == "completed"
    assert world.service.get_call(OP, conn_id).agent == "1002"


def test_refer_errors(talking: tuple[World, str, str, str]) -> None:
    world, _, cust, agent_leg = talking
    expect(world, "NO_ACTIVE_CALL", world.service.on_refer, cust, "1002")  # not an agent's leg
    expect(world, "NO_ACTIVE_CALL", world.service.on_refer, "nope", "1002")
    expect(world, "TARGET_NOT_AVAILABLE", world.service.on_refer, agent_leg, "1003")
    expect(world, "NUMBER_NOT_ALLOWED", world.service.on_refer, agent_leg, "12")


def test_consultation_then_refer_with_replaces(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, cust, agent_leg = talking
    svc = world.service
    consult = svc.on_agent_call(OP, "1001", "consult-leg", "1002")
    assert world.state("1001") == "on_call"  # a consultation does not move the agent
    out = world.signalling.last_originate()
    assert (out.destination, out.offer_from_leg) == ("1002", "consult-leg")
    svc.on_leg_answered(out.leg_id)
    assert svc.get_call(OP, consult).state == "connected" and world.state("1002") == "on_call"
    expect(world, "ALREADY_ON_CALL", svc.on_agent_call, OP, "1001", "third-leg", "3007654321")
    mark = len(world.signalling.requests)
    record = svc.on_refer_replaces("consult-leg", agent_leg)  # either of the agent's dialogs may carry it
    assert world.signalling.since(mark) == [("bridge", cust, out.leg_id), ("release", agent_leg, None, None),
                                            ("release", "consult-leg", None, None)]
    assert (record.kind, record.state, record.target, record.target_kind, record.conn_id) == (
        "attended", "completed", "1002", "agent", conn_id)
    assert world.records.transfer_states(record.id) == ["created", "consulting", "completed"]
    assert [type(e) for e in world.events.events[-8:] if type(e).__name__.startswith("Transfer")] == [
        TransferCreated, TransferCompleted]
    view = svc.get_call(OP, conn_id)
    assert (view.agent, view.transfer_count) == ("1002", 1)
    assert [(leg.role, leg.party) for leg in view.legs] == [("customer", "3001234567"), ("agent", "1001"),
                                                            ("target", "1002")]
    assert world.state("1001") == "acw" and world.state("1002") == "on_call"
    assert world.service.get_agent(OP, "1002").conn_id == conn_id
    consult_cdr = world.records.cdrs[-1]
    assert (consult_cdr.conn_id, consult_cdr.related_conn_id, consult_cdr.direction) == (consult, conn_id,
                                                                                        "internal")
    assert [leg.leg_id for leg in consult_cdr.legs] == ["consult-leg"]
    svc.on_leg_ended(cust)
    assert world.state("1002") == "acw"
    assert world.records.cdrs[-1].agents == ("1001", "1002")


def test_refer_with_replaces_needs_a_consultation_pair(talking: tuple[World, str, str, str]) -> None:
    world, _, cust, agent_leg = talking
    expect(world, "NO_ACTIVE_CALL", world.service.on_refer_replaces, agent_leg, cust)
    expect(world, "NO_ACTIVE_CALL", world.service.on_refer_replaces, agent_leg, "nope")
    world.service.on_agent_call(OP, "1001", "consult-leg", "3007654321")
    expect(world, "TARGET_NOT_AVAILABLE", world.service.on_refer_replaces, agent_leg, "consult-leg")  # not up


def test_blind_refer_on_a_consultation_leg_moves_nothing(talking: tuple[World, str, str, str]) -> None:
    """Regression: a REFER without Replaces on the consultation call used to transfer the customer's call."""
    world, conn_id, _cust, _agent_leg = talking
    world.login("1003")
    world.service.on_agent_call(OP, "1001", "consult-leg", "1002")
    world.service.on_leg_answered(world.signalling.last_originate().leg_id)
    mark = len(world.signalling.requests)
    expect(world, "NO_ACTIVE_CALL", world.service.on_refer, "consult-leg", "1003")
    assert world.signalling.since(mark) == []
    assert world.service.get_call(OP, conn_id).state == "connected"
