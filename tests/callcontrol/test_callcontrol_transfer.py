"""The transfer engine: every path of docs/design.md "Transfer semantics", blind and attended."""

from __future__ import annotations

import pytest
from callcontrol_fakes import OP, OTHER_OP, World, expect

from callbridge.callcontrol.events import (
    TransferAnswered,
    TransferCancelled,
    TransferCompleted,
    TransferCreated,
    TransferFailed,
    TransferRinging,
)
from callbridge.callcontrol.model import Trunk


@pytest.fixture
def talking(world: World) -> tuple[World, str, str, str]:
    """1001 talks with a customer; 1002 is ready (and 1003 not logged in)."""
    world.login("1001")
    conn_id, cust, agent_leg = world.connected_call("1001")
    world.login("1002")
    return world, conn_id, cust, agent_leg


def _customer_released(world: World, cust: str) -> bool:
    return any(r[0] in ("release", "reject") and r[1] == cust for r in world.signalling.requests)


def test_blind_to_an_agent_completes(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, cust, agent_leg = talking
    svc = world.service
    mark = len(world.signalling.requests)
    record = svc.transfer(OP, "1001", "1002")
    assert (record.conn_id, record.kind, record.target_kind, record.state, record.timeout) == (
        conn_id, "blind", "agent", "trying", 30.0)
    hold, originate = world.signalling.since(mark)
    assert hold[:2] == ("hold", cust)
    req = originate[1]
    assert (req.kind, req.destination, req.offerless, req.caller_id, req.diverted_from, req.timeout) == (
        "agent", "1002", True, "3001234567", "1001", 30.0)
    assert req.leg_id == record.target_leg_id
    assert world.state("1002") == "ringing" and world.state("1001") == "on_call"
    svc.on_leg_ringing(req.leg_id)
    assert svc.get_transfer(OP, record.id).state == "ringing"
    mark = len(world.signalling.requests)
    svc.on_leg_answered(req.leg_id)
    assert world.signalling.since(mark) == [("bridge", cust, req.leg_id), ("release", agent_leg, None, None)]
    done = svc.get_transfer(OP, record.id)
    assert (done.state, done.outcome, done.sip_cause) == ("completed", "completed", None)
    assert done.ended_at == world.clock.t
    view = svc.get_call(OP, conn_id)
    assert (view.state, view.agent, view.transfer_count, view.transfer_id) == ("connected", "1002", 1, None)
    assert world.state("1001") == "acw" and world.state("1002") == "on_call"
    assert world.records.transfer_states(record.id) == ["created", "trying", "ringing", "completed"]
    assert [type(e) for e in world.events.events if type(e).__name__.startswith("Transfer")] == [
        TransferCreated, TransferRinging, TransferAnswered, TransferCompleted]
    # the call is the same call: it ends with one CDR linking every leg
    svc.on_leg_ended(cust)
    cdr = world.records.cdrs[-1]
    assert (cdr.conn_id, cdr.agents, cdr.transfer_count, cdr.hangup_by) == (conn_id, ("1001", "1002"), 1,
                                                                            "customer")
    assert [(leg.role, leg.party, leg.state) for leg in cdr.legs] == [
        ("customer", "3001234567", "ended"), ("agent", "1001", "ended"), ("target", "1002", "ended")]
    assert world.state("1002") == "acw"


def test_blind_to_a_number_goes_through_the_trunk(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, _cust, _ = talking
    record = world.service.transfer(OP, "1001", "3007654321")
    req = world.signalling.last_originate()
    assert (record.target_kind, record.dialled) == ("number", "93007654321")
    assert (req.kind, req.trunk, req.destination, req.caller_id, req.diverted_from, req.offerless) == (
        "trunk", "carrier", "93007654321", "3001234567", "1001", True)
    world.service.on_leg_answered(req.leg_id)
    view = world.service.get_call(OP, conn_id)
    assert (view.agent, view.state) == (None, "connected")
    assert world.state("1001") == "acw"


@pytest.mark.parametrize("policy, expected", [("agent", "1001"), ("fixed", "6015550000")])
def test_caller_id_policy(world: World, policy: str, expected: str) -> None:
    trunk = world.directory.trunks[OP][0]
    world.directory.trunks[OP] = [Trunk(OP, trunk.name, trunk.host, dial_plan=trunk.dial_plan,
                                        caller_id_policy=policy, caller_id_number="6015550000")]  # type: ignore[arg-type]
    world.login("1001")
    world.connected_call()
    world.service.transfer(OP, "1001", "3007654321")
    assert world.signalling.last_originate().caller_id == expected


@pytest.mark.parametrize("status, outcome", [(486, "busy"), (603, "rejected"), (408, "unreachable"),
                                             (503, "unreachable")])
def test_failed_target_brings_the_customer_back(talking: tuple[World, str, str, str], status: int,
                                                outcome: str) -> None:
    world, conn_id, cust, _agent_leg = talking
    svc = world.service
    record = svc.transfer(OP, "1001", "1002")
    svc.on_leg_ringing(record.target_leg_id or "")
    mark = len(world.signalling.requests)
    svc.on_leg_failed(record.target_leg_id or "", status)
    (unhold,) = world.signalling.since(mark)
    assert unhold[:2] == ("unhold", cust)
    failed = svc.get_transfer(OP, record.id)
    assert (failed.state, failed.outcome, failed.sip_cause, failed.customer_requeued) == (
        "failed", outcome, status, False)
    event = world.events.of(TransferFailed)[-1]
    assert (event.outcome, event.sip_cause, event.customer_requeued) == (outcome, status, False)
    view = svc.get_call(OP, conn_id)
    assert (view.state, view.agent, view.held, view.transfer_count) == ("connected", "1001", False, 0)
    assert world.state("1001") == "on_call" and world.state("1002") == "ready"
    assert not _customer_released(world, cust)
    # the agent may try again
    again = svc.transfer(OP, "1001", "1002")
    assert again.id != record.id


def test_no_answer_within_the_timeout(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, cust, _ = talking
    svc = world.service
    record = svc.transfer(OP, "1001", "3007654321", timeout=10)
    world.scheduler.advance(9.9)
    assert svc.get_transfer(OP, record.id).state == "trying"
    mark = len(world.signalling.requests)
    world.scheduler.advance(0.1)
    released, unhold = world.signalling.since(mark)
    assert released == ("release", record.target_leg_id, 408, None)
    assert unhold[:2] == ("unhold", cust)
    failed = svc.get_transfer(OP, record.id)
    assert (failed.outcome, failed.sip_cause) == ("no_answer", 408)
    assert svc.get_call(OP, conn_id).state == "connected"
    # a late answer from the released target changes nothing
    svc.on_leg_answered(record.target_leg_id or "")
    assert svc.get_call(OP, conn_id).agent == "1001"


def test_customer_hangs_up_mid_transfer(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, cust, agent_leg = talking
    svc = world.service
    record = svc.transfer(OP, "1001", "1002")
    svc.on_leg_ended(cust)
    assert ("release", record.target_leg_id, None, None) in world.signalling.requests
    assert ("release", agent_leg, None, None) in world.signalling.requests
    failed = svc.get_transfer(OP, record.id)
    assert (failed.state, failed.outcome) == ("failed", "customer_hangup")
    cdr = world.records.cdrs[-1]
    assert (cdr.conn_id, cdr.hangup_by) == (conn_id, "customer")
    assert all(leg.state == "ended" for leg in cdr.legs)
    assert world.state("1001") == "acw" and world.state("1002") == "ready"
    assert world.scheduler.pending() == [10.0]  # only 1001's ACW: the transfer timer is gone


def test_agent_hangs_up_mid_transfer_and_the_transfer_completes(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, cust, agent_leg = talking
    svc = world.service
    record = svc.transfer(OP, "1001", "1002")
    svc.on_leg_ended(agent_leg)
    assert world.state("1001") == "acw"
    assert svc.get_transfer(OP, record.id).state == "trying"
    expect(world, "NO_ACTIVE_CALL", svc.hold, OP, "1001")
    svc.on_leg_answered(record.target_leg_id or "")
    assert svc.get_transfer(OP, record.id).state == "completed"
    assert world.signalling.of("bridge")[-1] == ("bridge", cust, record.target_leg_id)
    assert svc.get_call(OP, conn_id).agent == "1002"


def test_agent_leaves_then_the_transfer_fails_customer_goes_to_the_queue(
        talking: tuple[World, str, str, str]) -> None:
    world, conn_id, cust, agent_leg = talking
    svc = world.service
    record = svc.transfer(OP, "1001", "3007654321")
    svc.on_leg_ended(agent_leg)
    world.login("1003")
    svc.on_leg_failed(record.target_leg_id or "", 486)
    failed = svc.get_transfer(OP, record.id)
    assert (failed.outcome, failed.customer_requeued) == ("busy", True)
    # the call waits in its queue again and 1002 (idle longest) is offered it, offer-less: the customer is up
    offer = world.signalling.last_originate()
    assert (offer.destination, offer.offerless, offer.offer_from_leg, offer.conn_id) == ("1002", True, None,
                                                                                         conn_id)
    assert not _customer_released(world, cust)
    svc.on_leg_answered(offer.leg_id)
    assert world.signalling.of("bridge")[-1] == ("bridge", cust, offer.leg_id)
    view = svc.get_call(OP, conn_id)
    assert (view.state, view.agent, view.queue) == ("connected", "1002", "sales")


def test_hang_verb_mid_transfer_releases_only_the_agent(talking: tuple[World, str, str, str]) -> None:
    world, _conn_id, cust, agent_leg = talking
    svc = world.service
    record = svc.transfer(OP, "1001", "1002")
    ticket = svc.hang(OP, "1001")
    assert ("release", agent_leg, None, ticket.action_id) in world.signalling.requests
    assert not _customer_released(world, cust)
    assert world.state("1001") == "acw"
    assert svc.get_transfer(OP, record.id).state == "trying"
    svc.on_leg_answered(record.target_leg_id or "")
    assert svc.get_transfer(OP, record.id).outcome == "completed"


def test_dialled_call_without_a_queue_falls_back_to_the_default_queue(world: World) -> None:
    world.login("1001")
    svc = world.service
    conn_id = svc.dial(OP, "1001", "3001234567")
    agent_leg = world.offer_leg("1001")
    svc.on_leg_answered(agent_leg)
    cust = world.signalling.last_originate().leg_id
    svc.on_leg_answered(cust)
    record = svc.transfer(OP, "1001", "3007654321")
    svc.on_leg_ended(agent_leg)
    svc.on_leg_failed(record.target_leg_id or "", 503)
    view = svc.get_call(OP, conn_id)
    assert (view.state, view.queue) == ("queued", "sales")


def test_no_queue_anywhere_is_the_only_way_a_failed_transfer_drops() -> None:
    w = World(default_queue=None)
    w.login("1001")
    conn_id = w.service.dial(OP, "1001", "3001234567")
    agent_leg = w.offer_leg("1001")
    w.service.on_leg_answered(agent_leg)
    cust = w.signalling.last_originate().leg_id
    w.service.on_leg_answered(cust)
    record = w.service.transfer(OP, "1001", "3007654321")
    w.service.on_leg_ended(agent_leg)
    w.service.on_leg_failed(record.target_leg_id or "", 486)
    assert ("release", cust, 480, None) in w.signalling.requests
    assert w.records.cdrs[-1].conn_id == conn_id and w.records.cdrs[-1].sip_cause == 480


def test_cancel_a_ringing_blind_transfer(talking: tuple[World, str, str, str]) -> None:
    world, _, cust, _ = talking
    svc = world.service
    record = svc.transfer(OP, "1001", "1002")
    cancelled = svc.cancel_transfer(OP, record.id)
    assert (cancelled.state, cancelled.outcome) == ("cancelled", "cancelled")
    assert ("release", record.target_leg_id, 487, None) in world.signalling.requests
    assert world.signalling.requests[-1][:2] == ("unhold", cust)
    assert world.events.of(TransferCancelled)[-1].transfer_id == record.id
    expect(world, "TRANSFER_FINISHED", svc.cancel_transfer, OP, record.id)


def test_after_transfer_state_ready() -> None:
    w = World(after_transfer_state="ready")
    w.login("1001")
    w.connected_call()
    w.login("1002")
    record = w.service.transfer(OP, "1001", "1002")
    w.service.on_leg_answered(record.target_leg_id or "")
    assert w.state("1001") == "ready"
    assert w.states.history("1001")[-2:] == ["on_call", "ready"]


def test_hop_limit() -> None:
    w = World(max_transfers=1)
    w.login("1001")
    conn_id, _, _ = w.connected_call()
    w.login("1002")
    first = w.service.transfer(OP, "1001", "1002")
    w.service.on_leg_answered(first.target_leg_id or "")
    w.login("1003")
    expect(w, "TRANSFER_LIMIT", w.service.transfer, OP, "1002", "1003")
    assert w.service.get_call(OP, conn_id).transfer_count == 1


def test_transfer_errors_in_precedence(talking: tuple[World, str, str, str]) -> None:
    world, _, _, _ = talking
    svc = world.service
    expect(world, "INVALID_PARAMETER", svc.transfer, OP, "1999", "30x", parameter="customer_phone")
    expect(world, "INVALID_PARAMETER", svc.transfer, OP, "1001", "1002", 0, parameter="timeout")
    expect(world, "AGENT_NOT_FOUND", svc.transfer, OP, "1999", "12")
    expect(world, "AGENT_NOT_FOUND", svc.transfer, OTHER_OP, "1001", "1002")
    expect(world, "AGENT_NOT_LOGGED_IN", svc.transfer, OP, "1003", "12")
    expect(world, "NO_ACTIVE_CALL", svc.transfer, OP, "1002", "1003")  # 1002 is ready, without a call
    # target not available: logged out (1003), aux, unregistered, oneself
    world.signalling.available = False
    expect(world, "TARGET_NOT_AVAILABLE", svc.transfer, OP, "1001", "1003")
    expect(world, "NUMBER_NOT_ALLOWED", svc.transfer, OP, "1001", "12", parameter="customer_phone")
    expect(world, "CALL_CONTROL_UNAVAILABLE", svc.transfer, OP, "1001", "1002")
    world.signalling.available = True
    expect(world, "TARGET_NOT_AVAILABLE", svc.transfer, OP, "1001", "1001")
    svc.change_status(OP, "1002", "2")
    expect(world, "TARGET_NOT_AVAILABLE", svc.transfer, OP, "1001", "1002")
    svc.change_status(OP, "1002", "ready")
    svc.on_registration_changed(OP, "1002", False)
    expect(world, "TARGET_NOT_AVAILABLE", svc.transfer, OP, "1001", "1002")
    assert world.records.transfers == []


def test_a_second_transfer_and_toggles_while_one_runs(talking: tuple[World, str, str, str]) -> None:
    world, _, _, _ = talking
    svc = world.service
    world.login("1003")
    svc.transfer(OP, "1001", "1002")
    svc.on_registration_changed(OP, "1003", False)
    # transfer in progress wins over the target being unavailable
    expect(world, "TRANSFER_IN_PROGRESS", svc.transfer, OP, "1001", "1003")
    expect(world, "TRANSFER_IN_PROGRESS", svc.start_transfer, OP, "1001", "3007654321", kind="attended")
    expect(world, "TRANSFER_IN_PROGRESS", svc.hold, OP, "1001")
    expect(world, "TRANSFER_IN_PROGRESS", svc.mute, OP, "1001")
    expect(world, "TRANSFER_IN_PROGRESS", svc.dtmf, OP, "1001", "5")


# --- attended -------------------------------------------------------------------------------------------------


def _attended(world: World) -> tuple[str, str]:
    record = world.service.start_transfer(OP, "1001", "1002", kind="attended")
    assert record.kind == "attended"
    target = record.target_leg_id or ""
    expect(world, "TRANSFER_NOT_ANSWERED", world.service.complete_transfer, OP, record.id)
    world.service.on_leg_answered(target)
    return record.id, target


def test_attended_consult_then_complete(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, cust, agent_leg = talking
    svc = world.service
    tid, target = _attended(world)
    assert world.signalling.of("bridge")[-1] == ("bridge", agent_leg, target)
    assert svc.get_transfer(OP, tid).state == "consulting"
    assert world.state("1002") == "on_call" and world.state("1001") == "on_call"
    mark = len(world.signalling.requests)
    done = svc.complete_transfer(OP, tid)
    assert done.state == "completed"
    assert world.signalling.since(mark) == [("bridge", cust, target), ("release", agent_leg, None, None)]
    assert world.state("1001") == "acw"
    assert svc.get_call(OP, conn_id).agent == "1002"
    assert world.records.transfer_states(tid) == ["created", "trying", "consulting", "completed"]
    expect(world, "TRANSFER_FINISHED", svc.complete_transfer, OP, tid)


def test_attended_cancel_reconnects_the_agent(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, cust, agent_leg = talking
    svc = world.service
    tid, target = _attended(world)
    mark = len(world.signalling.requests)
    cancelled = svc.cancel_transfer(OP, tid)
    assert cancelled.state == "cancelled"
    assert world.signalling.since(mark) == [("release", target, None, None), ("bridge", cust, agent_leg)]
    assert world.state("1002") == "acw" and world.state("1001") == "on_call"
    view = svc.get_call(OP, conn_id)
    assert (view.state, view.agent, view.held, view.transfer_count) == ("connected", "1001", False, 0)


def test_attended_target_hangs_up_while_consulting(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, cust, agent_leg = talking
    tid, target = _attended(world)
    world.service.on_leg_ended(target)
    failed = world.service.get_transfer(OP, tid)
    assert (failed.state, failed.outcome) == ("failed", "target_hangup")
    assert world.signalling.requests[-1] == ("bridge", cust, agent_leg)
    assert world.service.get_call(OP, conn_id).state == "connected"


def test_attended_agent_hangs_up_while_consulting_completes(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, cust, agent_leg = talking
    tid, target = _attended(world)
    world.service.on_leg_ended(agent_leg)
    assert world.service.get_transfer(OP, tid).state == "completed"
    assert world.signalling.of("bridge")[-1] == ("bridge", cust, target)
    assert world.service.get_call(OP, conn_id).agent == "1002"


def test_transfers_are_scoped_to_their_operation(talking: tuple[World, str, str, str]) -> None:
    world, _, _, _ = talking
    record = world.service.transfer(OP, "1001", "1002")
    expect(world, "TRANSFER_NOT_FOUND", world.service.get_transfer, OTHER_OP, record.id)
    expect(world, "TRANSFER_NOT_FOUND", world.service.cancel_transfer, OTHER_OP, record.id)
    expect(world, "TRANSFER_NOT_FOUND", world.service.get_transfer, OP, "t999")
    expect(world, "CALL_NOT_FOUND", world.service.get_call, OTHER_OP, record.conn_id)


def test_attended_agent_leaves_while_the_target_rings(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, cust, agent_leg = talking
    record = world.service.start_transfer(OP, "1001", "1002", kind="attended")
    world.service.on_leg_ended(agent_leg)
    world.service.on_leg_answered(record.target_leg_id or "")
    assert world.service.get_transfer(OP, record.id).state == "completed"
    assert world.signalling.of("bridge") == [("bridge", cust, agent_leg), ("bridge", cust, record.target_leg_id)]
    assert world.service.get_call(OP, conn_id).agent == "1002"


def test_requeued_customer_waits_then_is_released_with_480(talking: tuple[World, str, str, str]) -> None:
    world, conn_id, cust, agent_leg = talking
    svc = world.service
    svc.change_status(OP, "1002", "2")
    record = svc.transfer(OP, "1001", "3007654321")
    svc.on_leg_ended(agent_leg)
    svc.change_status(OP, "1001", "logout")  # from ACW: nobody left to take the call
    svc.on_leg_failed(record.target_leg_id or "", 486)
    assert svc.get_call(OP, conn_id).state == "queued"
    world.scheduler.advance(60)
    assert ("release", cust, 480, None) in world.signalling.requests  # answered before: BYE, not a 480 response
    assert world.signalling.of("reject") == []
    assert world.records.cdrs[-1].sip_cause == 480
