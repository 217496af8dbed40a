"""The domain's half of a cluster handover (`callcontrol.handover`): which calls of an operation are not settled
yet, and forgetting an operation's live state without recording or publishing anything."""

from __future__ import annotations

import pytest
from callcontrol_fakes import OP, OTHER_OP, World

from callbridge.callcontrol.errors import CallControlError


def test_a_queued_or_ringing_call_is_unsettled_a_connected_one_is_settled(world: World) -> None:
    world.login("1001", "1002")
    connected, _, _ = world.connected_call("1001")
    assert world.service.handover.unsettled(OP) == []
    queued, _ = world.inbound()
    assert world.service.handover.unsettled(OP) == [queued]
    world.offer_leg("1002")  # ringing at 1002
    assert world.state("1002") == "ringing"
    assert world.service.handover.unsettled(OP) == [queued]
    assert world.service.handover.unsettled(OTHER_OP) == []
    assert connected not in world.service.handover.unsettled(OP)


def test_a_connected_call_with_an_action_in_flight_is_unsettled(world: World) -> None:
    world.login("1001")
    conn_id, _, _ = world.connected_call("1001")
    world.service.hold(OP, "1001")  # the action waits for the signalling's result
    assert world.service.handover.unsettled(OP) == [conn_id]


def test_forgetting_an_operation_drops_its_calls_agents_and_timers_and_records_nothing(world: World) -> None:
    world.login("1001", "1002")
    world.login("2001", op=OTHER_OP)
    conn_id, customer_leg, agent_leg = world.connected_call("1001")
    events, records = len(world.events.events), dict(world.records.calls)
    history = world.states.history("1002")
    calls, legs = world.service.handover.forget(OP)
    assert (calls, sorted(legs)) == ([conn_id], sorted([customer_leg, agent_leg]))
    assert len(world.events.events) == events and world.records.calls == records  # nothing recorded or published
    assert world.states.history("1002") == history
    with pytest.raises(CallControlError):
        world.service.hang(OP, "1001")  # the call is not this node's any more
    assert world.state("1001") == world.state("1002") == "logout"
    assert world.state("2001", op=OTHER_OP) == "ready"  # another operation is untouched
    assert world.scheduler.pending() == []
    # the leg's later reports are not this node's business: they change nothing
    world.service.on_leg_ended(customer_leg)
    assert len(world.events.events) == events and world.records.cdrs == []
    assert world.service.handover.forget(OP) == ([], [])
