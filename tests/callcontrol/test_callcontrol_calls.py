"""Call lifecycle beyond the verbs: events in order with sequence numbers, CDR contents, agents' own calls,
registrations, reads."""

from __future__ import annotations

from callcontrol_fakes import OP, OTHER_OP, T0, World, expect

from callbridge.callcontrol.events import AgentStateChanged, CallEnded, DomainEvent
from callbridge.callcontrol.model import DialPlan


def test_events_are_numbered_in_order(world: World) -> None:
    world.login("1001")
    conn_id, cust, _ = world.connected_call()
    world.clock.t += 42
    world.service.on_leg_ended(cust)
    events = world.events.events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert world.service.last_seq == len(events)
    assert all(isinstance(e, DomainEvent) and e.operation_id == OP for e in events)
    assert world.events.names() == [
        "agent_state_changed",  # 1001 ready
        "call_queued", "agent_state_changed", "call_offered",  # 1001 ringing
        "agent_state_changed", "call_answered",  # 1001 on_call
        "call_ended", "agent_state_changed",  # 1001 acw
    ]
    ended = world.events.of(CallEnded)[-1]
    assert (ended.conn_id, ended.hangup_by, ended.at) == (conn_id, "customer", T0 + 43)
    world.scheduler.advance(10)
    last = world.events.events[-1]
    assert isinstance(last, AgentStateChanged) and (last.previous, last.state, last.reason) == (
        "acw", "ready", "acw_end")


def test_cdr_of_an_answered_inbound_call(world: World) -> None:
    world.login("1001", "1002")
    world.clock.t = T0 + 100
    conn_id, cust = world.inbound(number="+573001234567")
    first = world.offer_leg("1001")
    world.scheduler.advance(15)  # 1001 does not answer
    second = world.offer_leg("1002")
    world.clock.t = T0 + 120
    world.service.on_leg_answered(second)
    world.clock.t = T0 + 180
    world.service.on_leg_ended(second)  # the agent hangs up
    (cdr,) = world.records.cdrs
    assert (cdr.conn_id, cdr.operation_id, cdr.direction, cdr.customer_number, cdr.queue) == (
        conn_id, OP, "inbound", "+573001234567", "sales")
    assert (cdr.started_at, cdr.answered_at, cdr.ended_at, cdr.duration, cdr.talk_time) == (
        T0 + 100, T0 + 120, T0 + 180, 80.0, 60.0)
    assert (cdr.hangup_by, cdr.sip_cause, cdr.agents, cdr.transfer_count, cdr.node_id) == (
        "agent", None, ("1002",), 0, "local")
    legs = {leg.leg_id: leg for leg in cdr.legs}
    assert [leg.role for leg in cdr.legs] == ["customer", "agent", "agent"]
    assert (legs[first].party, legs[first].answered_at, legs[first].sip_status) == ("1001", None, 408)
    assert (legs[second].ended_by, legs[second].ended_at) == ("agent", T0 + 180)
    assert (legs[cust].ended_by, legs[cust].answered_at) == ("agent", T0 + 120)
    record = world.records.calls[conn_id]
    assert (record.state, record.ended_at, record.hangup_by) == ("ended", T0 + 180, "agent")
    assert world.service.get_call(OP, conn_id).state == "ended"  # recently ended calls stay readable
    assert world.service.list_calls(OP) == []


def test_agent_phone_calls_a_number(world: World) -> None:
    world.login("1001")
    conn_id = world.service.on_agent_call(OP, "1001", "phone-leg", "3001234567")
    out = world.signalling.last_originate()
    assert (out.kind, out.destination, out.offer_from_leg, out.trunk) == ("trunk", "93001234567", "phone-leg",
                                                                          "carrier")
    assert world.state("1001") == "ringing"
    world.service.on_leg_answered(out.leg_id)
    assert world.signalling.requests[-1] == ("bridge", out.leg_id, "phone-leg")
    view = world.service.get_call(OP, conn_id)
    assert (view.state, view.direction) == ("connected", "outbound")
    assert [leg.state for leg in view.legs] == ["up", "up"]
    assert world.state("1001") == "on_call"


def test_agent_calls_another_agent(world: World) -> None:
    world.login("1001", "1002")
    conn_id = world.service.on_agent_call(OP, "1001", "phone-leg", "1002")
    out = world.signalling.last_originate()
    assert (out.kind, out.destination, out.caller_id, out.offer_from_leg) == ("agent", "1002", "1001", "phone-leg")
    assert world.state("1002") == "ringing"
    world.service.on_leg_answered(out.leg_id)
    assert world.state("1001") == "on_call" and world.state("1002") == "on_call"
    world.service.on_leg_ended(out.leg_id)
    assert world.state("1001") == "acw" and world.state("1002") == "acw"
    assert world.records.cdrs[-1].conn_id == conn_id and world.records.cdrs[-1].direction == "internal"


def test_agent_calls_refused(world: World) -> None:
    svc = world.service
    expect(world, "AGENT_NOT_LOGGED_IN", svc.on_agent_call, OP, "1001", "p", "1002")
    world.login("1001")
    expect(world, "TARGET_NOT_AVAILABLE", svc.on_agent_call, OP, "1001", "p", "1002")
    expect(world, "NUMBER_NOT_ALLOWED", svc.on_agent_call, OP, "1001", "p", "55")
    expect(world, "INVALID_PARAMETER", svc.on_agent_call, OP, "1001", "p", "sip:a@b", parameter="dialled")


def test_losing_the_last_registration_logs_out_and_the_call_goes_on(world: World) -> None:
    world.login("1001")
    conn_id, cust, _ = world.connected_call()
    world.service.on_registration_changed(OP, "1001", False)
    assert world.state("1001") == "logout"
    assert world.service.get_call(OP, conn_id).state == "connected"
    world.service.on_leg_ended(cust)
    assert world.state("1001") == "logout"
    assert world.states.history("1001") == ["ready", "ringing", "on_call", "logout"]


def test_registration_lost_while_in_acw_disarms_the_timer(world: World) -> None:
    world.login("1001")
    _, cust, _ = world.connected_call()
    world.service.on_leg_ended(cust)
    world.service.on_registration_changed(OP, "1001", False)
    assert world.scheduler.pending() == []
    assert world.state("1001") == "logout"


def test_unknown_agents_and_legs_are_ignored(world: World) -> None:
    world.service.on_registration_changed(OP, "9999", True)
    for report in (world.service.on_leg_ringing, world.service.on_leg_answered, world.service.on_leg_ended):
        report("nope")
    world.service.on_leg_failed("nope", 500)
    world.service.on_action_result("nope", True, 200)
    assert world.events.events == [] and world.signalling.requests == []


def test_reads(world: World) -> None:
    world.login("1001")
    conn_id, _, _ = world.connected_call()
    agents = {a.extension: a for a in world.service.list_agents(OP)}
    assert sorted(agents) == ["1001", "1002", "1003"]
    a = agents["1001"]
    assert (a.state, a.registered, a.available, a.conn_id, a.queues) == ("on_call", True, False, conn_id,
                                                                          ("sales",))
    assert agents["1002"].state == "logout" and not agents["1002"].available
    assert [c.conn_id for c in world.service.list_calls(OP)] == [conn_id]
    assert world.service.list_calls(OTHER_OP) == []
    history = [what for _, what, _ in world.service.get_call(OP, conn_id).history]
    assert history == ["inbound", "queued", "offered", "answered"]
    expect(world, "AGENT_NOT_FOUND", world.service.get_agent, OTHER_OP, "1001")


def test_dial_plan() -> None:
    plan = DialPlan(allowed_patterns=(r"0[0-9]{9}",), strip=1, prefix="+57", min_length=12, max_length=13)
    assert plan.apply("0300123456") == "+57300123456"
    assert plan.apply("1300123456") is None  # pattern
    assert plan.apply("03001234") is None  # pattern (length)
    assert plan.apply("0300a23456") is None
    open_plan = DialPlan(min_length=3, max_length=5)
    assert open_plan.apply("+123") == "+123"
    assert open_plan.apply("12") is None and open_plan.apply("123456") is None


def test_event_as_dict(world: World) -> None:
    world.login("1001")
    event = world.events.events[0]
    assert event.as_dict() == {"type": "agent_state_changed", "operation_id": OP, "seq": 1, "at": T0,
                               "agent": "1001", "state": "ready", "previous": "logout", "reason": "api"}


def test_no_acw_configured_goes_straight_back_to_ready() -> None:
    w = World(acw_seconds=0)
    w.login("1001")
    _, cust, _ = w.connected_call()
    waiting, _ = w.inbound(number="222")
    w.service.on_leg_ended(cust)
    assert w.states.history("1001") == ["ready", "ringing", "on_call", "acw", "ready", "ringing"]
    assert w.signalling.last_originate().conn_id == waiting


def test_agent_leg_ending_while_offered_moves_on(world: World) -> None:
    world.login("1001", "1002")
    world.inbound()
    world.service.on_leg_ended(world.offer_leg("1001"))
    assert world.signalling.last_originate().destination == "1002"
    assert world.state("1001") == "ready"


def test_one_toggle_of_each_kind_at_a_time(world: World) -> None:
    world.login("1001")
    world.connected_call()
    world.service.mute(OP, "1001")
    expect(world, "CALL_NOT_UPDATED", world.service.mute, OP, "1001")
    world.service.hold(OP, "1001")  # another kind may go at the same time


def test_a_report_that_comes_back_at_once_is_not_lost(world: World) -> None:
    world.login("1001")
    conn_id, _, _ = world.connected_call()
    svc = world.service

    def answering_hold(leg_id: str, action_id: str) -> None:
        world.signalling.requests.append(("hold", leg_id, action_id))
        svc.on_action_result(action_id, True, 200)

    world.signalling.hold = answering_hold  # type: ignore[method-assign]
    ticket = svc.hold(OP, "1001")
    assert svc.get_call(OP, conn_id).held is True
    assert svc.action_outcome(ticket.action_id) is not None


def test_auto_recall_due_while_the_agent_is_ready_dials_at_once(world: World) -> None:
    world.login("1001")
    recall = world.service.recall(OP, "1001", "3001234567", "20231114171400", "auto")  # T0 + 40 s
    world.scheduler.advance(38.9)
    assert world.recalls.recalls[recall.id].state == "pending"
    world.scheduler.advance(0.1)
    assert world.recalls.recalls[recall.id].state == "dialled"
    assert world.state("1001") == "ringing"


def test_the_wire_datas_narrow_reads_answer_what_the_views_hold(world: World) -> None:
    """`call_facts` and `agent_registered` (what the event log reads per event instead of a whole view) hold the
    same values as `get_call` and `get_agent`, live and ended, and None where those raise."""
    world.login("1001")
    conn_id, cust, _ = world.connected_call()

    def same(conn: str) -> None:
        view, facts = world.service.get_call(OP, conn), world.service.call_facts(OP, conn)
        assert facts is not None
        assert tuple(facts) == (view.direction, view.queue, view.agent, view.created_at, view.ended_at)

    same(conn_id)
    assert world.service.call_facts(OP, conn_id) == ("inbound", "sales", "1001", T0 + 1, None)  # connected_call: 1 s in
    world.clock.t += 42
    world.service.on_leg_ended(cust)
    same(conn_id)
    assert world.service.call_facts(OP, conn_id).ended_at == world.clock.t  # type: ignore[union-attr]
    assert world.service.call_facts(OTHER_OP, conn_id) is None  # another operation's call: unknown
    assert world.service.call_facts(OP, "no-such-call") is None
    assert world.service.agent_registered(OP, "1001") is world.service.get_agent(OP, "1001").registered is True
    world.service.on_registration_changed(OP, "1001", False)
    assert world.service.agent_registered(OP, "1001") is world.service.get_agent(OP, "1001").registered is False
    assert world.service.agent_registered(OP, "9999") is None
    assert world.service.agent_registered(OTHER_OP, "1001") is None
