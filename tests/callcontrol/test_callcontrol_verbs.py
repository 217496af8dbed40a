"""The agentbox verbs (transfer is in test_callcontrol_transfer): success paths, every error with its exact
error_id, and the rule that a refused verb changes nothing."""

from __future__ import annotations

import pytest
from callcontrol_fakes import OP, OTHER_OP, T0, World, expect

from callbridge.callcontrol.events import (
    ActionCompleted,
    ActionFailed,
    AgentStateChanged,
    CallHeld,
    CallMuted,
    DisplayChanged,
    RecallDue,
)

# --- change_status --------------------------------------------------------------------------------------------


def test_change_status_ready_aux_logout(world: World) -> None:
    svc = world.service
    svc.on_registration_changed(OP, "1001", True)
    assert svc.change_status(OP, "1001", "ready") == "ready"
    assert svc.change_status(OP, "1001", "2") == "aux:2"
    assert svc.change_status(OP, "1001", "logout") == "logout"
    assert world.states.history("1001") == ["ready", "aux:2", "logout"]
    changes = world.events.of(AgentStateChanged)
    assert [(e.previous, e.state, e.reason) for e in changes] == [
        ("logout", "ready", "api"), ("ready", "aux:2", "api"), ("aux:2", "logout", "api")]
    assert svc.get_agent(OP, "1001").state_since == T0


def test_change_status_errors(world: World) -> None:
    svc = world.service
    expect(world, "INVALID_PARAMETER", svc.change_status, OP, "1001", "lunch", parameter="status")
    expect(world, "INVALID_PARAMETER", svc.change_status, OP, "10a1", "ready", parameter="agent_id")
    expect(world, "AGENT_NOT_FOUND", svc.change_status, OP, "1999", "ready")
    expect(world, "AGENT_NOT_FOUND", svc.change_status, OP, "2001", "ready")  # another operation's agent
    expect(world, "AGENT_NOT_FOUND", svc.change_status, "9999", "1001", "ready")
    expect(world, "PHONE_NOT_REGISTERED", svc.change_status, OP, "1001", "ready")
    expect(world, "PHONE_NOT_REGISTERED", svc.change_status, OP, "1001", "2")
    # precedence: a bad status wins over a missing agent
    expect(world, "INVALID_PARAMETER", svc.change_status, OP, "1999", "lunch", parameter="status")
    # aux ids are per operation
    svc.on_registration_changed(OTHER_OP, "2001", True)
    expect(world, "INVALID_PARAMETER", svc.change_status, OTHER_OP, "2001", "2", parameter="status")
    world.login("1001")
    world.inbound()
    expect(world, "ALREADY_ON_CALL", svc.change_status, OP, "1001", "2")  # ringing
    expect(world, "ALREADY_ON_CALL", svc.change_status, OP, "1001", "logout")


def test_logout_is_allowed_unregistered_and_acw_can_end_early(world: World) -> None:
    svc = world.service
    assert svc.change_status(OP, "1001", "logout") == "logout"
    assert world.states.changes == []  # nothing moved, nothing written
    world.login("1001")
    _, cust, _ = world.connected_call()
    world.service.on_leg_ended(cust)
    assert world.state("1001") == "acw"
    assert svc.change_status(OP, "1001", "ready") == "ready"
    assert world.scheduler.pending() == []  # the ACW timer was disarmed


# --- hold / mute / dtmf ---------------------------------------------------------------------------------------


def test_hold_toggles_only_on_success(world: World) -> None:
    world.login("1001")
    conn_id, cust, _ = world.connected_call()
    svc = world.service
    ticket = svc.hold(OP, "1001")
    assert (ticket.verb, ticket.conn_id, ticket.turning_on) == ("hold", conn_id, True)
    assert world.signalling.requests[-1] == ("hold", cust, ticket.action_id)
    assert svc.get_call(OP, conn_id).held is False  # not before the answer
    expect(world, "CALL_NOT_UPDATED", svc.hold, OP, "1001")  # one toggle at a time
    svc.on_action_result(ticket.action_id, True, 200)
    assert svc.get_call(OP, conn_id).held is True
    outcome = svc.action_outcome(ticket.action_id)
    assert isinstance(outcome, ActionCompleted) and outcome.sip_status == 200
    assert world.events.of(CallHeld)[-1].held is True
    # off hold, refused by the phone: still held
    off = svc.hold(OP, "1001")
    assert off.turning_on is False and world.signalling.requests[-1] == ("unhold", cust, off.action_id)
    svc.on_action_result(off.action_id, False, 488)
    failed = svc.action_outcome(off.action_id)
    assert isinstance(failed, ActionFailed) and failed.sip_status == 488 and failed.error_id == "CALL_NOT_UPDATED"
    assert svc.get_call(OP, conn_id).held is True
    # no answer within 5 s: failed, unchanged; a late answer is ignored
    late = svc.hold(OP, "1001")
    world.scheduler.advance(4.9)
    assert svc.action_outcome(late.action_id) is None
    world.scheduler.advance(0.1)
    timed_out = svc.action_outcome(late.action_id)
    assert isinstance(timed_out, ActionFailed) and timed_out.sip_status is None
    svc.on_action_result(late.action_id, True, 200)
    assert svc.get_call(OP, conn_id).held is True
    assert svc.action_outcome(late.action_id) == timed_out


def test_mute_toggles_on_the_agent_leg(world: World) -> None:
    world.login("1001")
    conn_id, _, agent_leg = world.connected_call()
    svc = world.service
    t1 = svc.mute(OP, "1001")
    assert world.signalling.requests[-1] == ("mute", agent_leg, t1.action_id)
    svc.on_action_result(t1.action_id, True, 200)
    t2 = svc.mute(OP, "1001")
    assert world.signalling.requests[-1] == ("unmute", agent_leg, t2.action_id)
    svc.on_action_result(t2.action_id, True, 200)
    assert [e.muted for e in world.events.of(CallMuted)] == [True, False]
    assert svc.get_call(OP, conn_id).muted is False


def test_dtmf(world: World) -> None:
    world.login("1001")
    conn_id, cust, _ = world.connected_call()
    svc = world.service
    expect(world, "INVALID_PARAMETER", svc.dtmf, OP, "1001", "12x", parameter="tones")
    expect(world, "INVALID_PARAMETER", svc.dtmf, OP, "1999", "", parameter="tones")  # before the agent
    ticket = svc.dtmf(OP, "1001", "0123456789*#ABCD")
    assert world.signalling.requests[-1] == ("dtmf", cust, "0123456789*#ABCD", ticket.action_id)
    svc.on_action_result(ticket.action_id, True, 200)
    done = svc.action_outcome(ticket.action_id)
    assert isinstance(done, ActionCompleted) and done.verb == "dtmf" and done.conn_id == conn_id


@pytest.mark.parametrize("verb", ["hold", "mute", "dtmf", "hang"])
def test_call_verbs_errors(world: World, verb: str) -> None:
    svc = world.service
    args: tuple[str, ...] = ("1",) if verb == "dtmf" else ()
    fn = getattr(svc, verb)
    expect(world, "AGENT_NOT_FOUND", fn, OP, "1999", *args)
    expect(world, "AGENT_NOT_FOUND", fn, OTHER_OP, "1001", *args)
    expect(world, "AGENT_NOT_LOGGED_IN", fn, OP, "1001", *args)
    world.login("1001")
    expect(world, "NO_ACTIVE_CALL", fn, OP, "1001", *args)
    world.inbound()
    expect(world, "NO_ACTIVE_CALL", fn, OP, "1001", *args)  # only ringing
    world.service.on_leg_answered(world.offer_leg("1001"))
    world.signalling.available = False
    expect(world, "CALL_CONTROL_UNAVAILABLE", fn, OP, "1001", *args)


# --- hang -----------------------------------------------------------------------------------------------------


def test_hang_ends_the_call_and_waits_for_the_bye(world: World) -> None:
    world.login("1001")
    conn_id, cust, agent_leg = world.connected_call()
    world.clock.t += 30
    ticket = world.service.hang(OP, "1001")
    assert ("release", cust, None, ticket.action_id) in world.signalling.requests
    assert ("release", agent_leg, None, None) in world.signalling.requests
    assert world.state("1001") == "acw"
    cdr = world.records.cdrs[-1]
    assert (cdr.conn_id, cdr.hangup_by, cdr.agents, cdr.talk_time) == (conn_id, "agent", ("1001",), 30.0)
    world.service.on_action_result(ticket.action_id, True, 200)
    assert isinstance(world.service.action_outcome(ticket.action_id), ActionCompleted)
    expect(world, "NO_ACTIVE_CALL", world.service.hang, OP, "1001")


# --- dial -----------------------------------------------------------------------------------------------------


def test_dial_rings_the_agent_then_the_customer(world: World) -> None:
    world.login("1001")
    svc = world.service
    conn_id = svc.dial(OP, "1001", "3001234567", "crm-9", "Ana")
    agent_offer = world.signalling.last_originate()
    assert (agent_offer.kind, agent_offer.destination, agent_offer.offerless, agent_offer.auto_answer,
            agent_offer.caller_id, agent_offer.conn_id) == ("agent", "1001", True, True, "3001234567", conn_id)
    assert world.state("1001") == "ringing"
    svc.on_leg_answered(agent_offer.leg_id)
    assert world.state("1001") == "on_call"
    out = world.signalling.last_originate()
    assert (out.kind, out.trunk, out.destination, out.offer_from_leg, out.caller_id, out.offerless) == (
        "trunk", "carrier", "93001234567", agent_offer.leg_id, "1001", False)
    assert svc.get_call(OP, conn_id).state == "dialing"
    svc.on_leg_ringing(out.leg_id)
    svc.on_leg_answered(out.leg_id)
    assert world.signalling.requests[-1] == ("bridge", out.leg_id, agent_offer.leg_id)
    view = svc.get_call(OP, conn_id)
    assert (view.state, view.direction, view.agent) == ("connected", "outbound", "1001")
    assert world.events.names()[-4:] == ["agent_state_changed", "call_dialing", "agent_state_changed",
                                         "call_answered"]


def test_dial_customer_busy_ends_the_call_agent_to_acw(world: World) -> None:
    world.login("1001")
    conn_id = world.service.dial(OP, "1001", "3001234567")
    world.service.on_leg_answered(world.offer_leg("1001"))
    world.service.on_leg_failed(world.signalling.last_originate().leg_id, 486)
    cdr = world.records.cdrs[-1]
    assert (cdr.conn_id, cdr.hangup_by, cdr.sip_cause) == (conn_id, "customer", 486)
    assert world.state("1001") == "acw"


def test_dial_agent_does_not_answer(world: World) -> None:
    world.login("1001")
    world.service.dial(OP, "1001", "3001234567")
    world.scheduler.advance(15.0)
    assert world.records.cdrs[-1].sip_cause == 408 and world.records.cdrs[-1].hangup_by == "agent"
    assert world.state("1001") == "ready"
    assert len(world.signalling.originates()) == 1  # the customer was never called


def test_hang_while_dialing_releases_the_agent_phone(world: World) -> None:
    world.login("1001")
    world.service.dial(OP, "1001", "3001234567")
    leg = world.offer_leg("1001")
    ticket = world.service.hang(OP, "1001")
    assert ("release", leg, None, ticket.action_id) in world.signalling.requests
    assert world.state("1001") == "ready"


@pytest.mark.parametrize("number", ["12ab", "sip:1@192.0.2.1", "123\r\nX-A: b", "", "+", "1 2"])
def test_dial_refuses_what_is_not_a_number(world: World, number: str) -> None:
    expect(world, "INVALID_PARAMETER", world.service.dial, OP, "1999", number, parameter="customer_phone")


def test_dial_errors_in_precedence(world: World) -> None:
    svc = world.service
    expect(world, "AGENT_NOT_FOUND", svc.dial, OP, "1999", "123")
    expect(world, "AGENT_NOT_LOGGED_IN", svc.dial, OP, "1001", "123")  # and the number is not allowed
    world.login("1001")
    expect(world, "NUMBER_NOT_ALLOWED", svc.dial, OP, "1001", "123", parameter="customer_phone")
    expect(world, "NUMBER_NOT_ALLOWED", svc.dial, OP, "1001", "+14155550100")  # pattern
    world.signalling.available = False
    expect(world, "NUMBER_NOT_ALLOWED", svc.dial, OP, "1001", "123")
    expect(world, "CALL_CONTROL_UNAVAILABLE", svc.dial, OP, "1001", "3001234567")
    world.signalling.available = True
    world.connected_call()
    expect(world, "ALREADY_ON_CALL", svc.dial, OP, "1001", "123")


# --- type / hang_type_ready -----------------------------------------------------------------------------------


def test_type_the_last_call_once(world: World) -> None:
    svc = world.service
    world.login("1001")
    expect(world, "NO_CALL_TO_TYPE", svc.type, OP, "1001", "10", "20")
    conn_id, cust, _ = world.connected_call()
    world.service.on_leg_ended(cust)
    disposition = svc.type(OP, "1001", "10", "20", "wants a callback")
    assert (disposition.conn_id, disposition.cod_act, disposition.cod_act_2, disposition.comments) == (
        conn_id, "10", "20", "wants a callback")
    assert world.records.dispositions == [disposition]
    expect(world, "NO_CALL_TO_TYPE", svc.type, OP, "1001", "11", "20")


def test_type_errors(world: World) -> None:
    svc = world.service
    expect(world, "INVALID_PARAMETER", svc.type, OP, "1999", "99", "20", parameter="cod_act")
    expect(world, "INVALID_PARAMETER", svc.type, OP, "1001", "20", "20", parameter="cod_act")  # group 2 code
    expect(world, "INVALID_PARAMETER", svc.type, OP, "1001", "10", "10", parameter="cod_act_2")
    expect(world, "INVALID_PARAMETER", svc.type, OP, "1001", "1 0", "20", parameter="cod_act")
    expect(world, "AGENT_NOT_FOUND", svc.type, OP, "1999", "10", "20")
    expect(world, "AGENT_NOT_LOGGED_IN", svc.type, OP, "1001", "10", "20")


def test_hang_type_ready_skips_acw(world: World) -> None:
    svc = world.service
    world.login("1001")
    expect(world, "NO_ACTIVE_CALL", svc.hang_type_ready, OP, "1001", "10")
    conn_id, cust, _ = world.connected_call()
    ticket = svc.hang_type_ready(OP, "1001", "10")
    assert ticket.verb == "hang" and ("release", cust, None, ticket.action_id) in world.signalling.requests
    assert world.records.dispositions[-1].conn_id == conn_id and world.records.dispositions[-1].cod_act_2 == ""
    assert world.state("1001") == "ready"
    assert world.states.history("1001")[-2:] == ["on_call", "ready"]
    expect(world, "NO_CALL_TO_TYPE", svc.type, OP, "1001", "10", "20")


# --- aux_call -------------------------------------------------------------------------------------------------


def test_aux_call_after_a_recent_call(world: World) -> None:
    svc = world.service
    world.login("1001")
    expect(world, "NO_RECENT_CALL", svc.aux_call, OP, "1001", "3007654321")
    first, cust, _ = world.connected_call()
    world.service.on_leg_ended(cust)
    world.clock.t += 599
    conn_id = svc.aux_call(OP, "1001", "3007654321")
    assert world.records.calls[conn_id].related_conn_id == first
    assert world.signalling.last_originate().auto_answer
    expect(world, "ALREADY_ON_CALL", svc.aux_call, OP, "1001", "3007654321")


def test_aux_call_window_is_ten_minutes(world: World) -> None:
    world.login("1001")
    _, cust, _ = world.connected_call()
    world.service.on_leg_ended(cust)
    world.scheduler.advance(601)
    expect(world, "NO_RECENT_CALL", world.service.aux_call, OP, "1001", "3007654321")
    expect(world, "INVALID_PARAMETER", world.service.aux_call, OP, "1001", "30x", parameter="customer_phone")


# --- agent_display / recall -----------------------------------------------------------------------------------


def test_agent_display(world: World) -> None:
    svc = world.service
    change = svc.agent_display(OP, "1001", "hide", "dial")
    assert (change.button, change.visible) == ("dial", False)
    assert world.states.displays == [change]
    assert world.events.of(DisplayChanged)[-1].button == "dial"
    assert svc.get_agent(OP, "1001").display == (("dial", False),)
    expect(world, "INVALID_PARAMETER", svc.agent_display, OP, "1001", "blink", "dial", parameter="display")
    expect(world, "INVALID_PARAMETER", svc.agent_display, OP, "1001", "show", "mute", parameter="button")
    expect(world, "AGENT_NOT_FOUND", svc.agent_display, OP, "2001", "show", "dial")


def test_recall_manual_in_the_operations_time_zone(world: World) -> None:
    # T0 is 2023-11-14 22:13:20 UTC, 17:13:20 in Bogota (UTC-5)
    recall = world.service.recall(OP, "1001", "3001234567", "20231114173320", "manual")
    assert recall.due_at == T0 + 20 * 60 and recall.state == "pending"
    world.scheduler.advance(20 * 60 - 1)
    assert world.events.of(RecallDue) == []
    world.scheduler.advance(1)
    assert world.events.of(RecallDue)[-1].recall_id == recall.id
    assert world.recalls.recalls[recall.id].state == "notified"
    assert world.signalling.originates() == []


def test_recall_auto_dials_once_the_agent_is_ready(world: World) -> None:
    recall = world.service.recall(OP, "1001", "3001234567", "20231114171400", "auto")
    world.scheduler.advance(60)
    assert world.recalls.recalls[recall.id].state == "due"
    assert world.signalling.originates() == []
    world.login("1001")
    offer = world.signalling.last_originate()
    assert (offer.destination, offer.auto_answer, offer.caller_id) == ("1001", True, "3001234567")
    stored = world.recalls.recalls[recall.id]
    assert stored.state == "dialled" and stored.conn_id == offer.conn_id


def test_recall_restored_at_start(world: World) -> None:
    recall = world.service.recall(OP, "1001", "3001234567", "20231114173320", "manual")
    again = World()
    again.recalls.recalls[recall.id] = recall
    again.service.restore()
    again.scheduler.advance(20 * 60)
    assert again.events.of(RecallDue)[-1].recall_id == recall.id


def test_recall_errors(world: World) -> None:
    svc = world.service
    expect(world, "INVALID_PARAMETER", svc.recall, OP, "1001", "300", "2023-11-14", "auto", parameter="date")
    expect(world, "INVALID_PARAMETER", svc.recall, OP, "1001", "300", "20231314000000", "auto", parameter="date")
    expect(world, "INVALID_PARAMETER", svc.recall, OP, "1001", "300", "20231114000000", "soon",
           parameter="type_recall")
    expect(world, "INVALID_PARAMETER", svc.recall, OP, "1001", "3a", "20231114000000", "auto",
           parameter="customer_phone")
    expect(world, "AGENT_NOT_FOUND", svc.recall, OP, "2001", "3001234567", "20231114000000", "auto")
    expect(world, "NUMBER_NOT_ALLOWED", svc.recall, OP, "1001", "12", "20231114000000", "auto")


def test_hang_type_ready_and_aux_call_errors(world: World) -> None:
    svc = world.service
    expect(world, "INVALID_PARAMETER", svc.hang_type_ready, OP, "1999", "20", parameter="cod_act")
    expect(world, "INVALID_PARAMETER", svc.hang_type_ready, OP, "1001", "10", "11", parameter="cod_act_2")
    expect(world, "AGENT_NOT_FOUND", svc.hang_type_ready, OP, "2001", "10")
    expect(world, "AGENT_NOT_LOGGED_IN", svc.hang_type_ready, OP, "1001", "10")
    expect(world, "AGENT_NOT_LOGGED_IN", svc.aux_call, OP, "1001", "3007654321")
    world.login("1001")
    _, cust, _ = world.connected_call()
    world.signalling.available = False
    expect(world, "CALL_CONTROL_UNAVAILABLE", svc.hang_type_ready, OP, "1001", "10", "20")
    world.signalling.available = True
    world.service.on_leg_ended(cust)
    expect(world, "NUMBER_NOT_ALLOWED", svc.aux_call, OP, "1001", "12")
    world.signalling.available = False
    expect(world, "CALL_CONTROL_UNAVAILABLE", svc.aux_call, OP, "1001", "3007654321")
