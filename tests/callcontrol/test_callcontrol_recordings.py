"""A call's recording as the domain decides it (issue #13): `always` starts at the first answer and only once across
transfers, `on_demand` follows the verbs, `never` refuses them; the checks' order and errors; nothing changes on a
refusal."""

from __future__ import annotations

from dataclasses import replace

import pytest
from callcontrol_fakes import OP, OTHER_OP, World, expect

from callbridge.callcontrol.directory import RecordingPolicy
from callbridge.callcontrol.errors import RecordingUnavailable


def world_with(policy: RecordingPolicy, queue_policy: RecordingPolicy | None = None) -> World:
    world = World(recording=policy)
    if queue_policy is not None:
        queue = world.directory.queues[(OP, "sales")]
        world.directory.queues[(OP, "sales")] = replace(queue, recording=queue_policy)
    world.login("1001", "1002")
    return world


def records(world: World) -> list[tuple[object, ...]]:
    return world.signalling.of("record")


def test_always_records_from_the_first_answer_and_once_across_a_transfer() -> None:
    world = world_with("always")
    conn_id, _, _ = world.connected_call("1001")
    assert records(world) == [("record", conn_id, True)]
    assert world.service.recording_state(OP, conn_id).state == "recording"
    world.service.transfer(OP, "1001", "1002")
    world.service.on_leg_answered(world.offer_leg("1002"))
    assert records(world) == [("record", conn_id, True)]  # the same recording goes on
    view = world.service.pause_recording(OP, conn_id, True)
    assert (view.policy, view.state) == ("always", "paused")
    assert world.service.pause_recording(OP, conn_id, False).state == "recording"
    assert records(world) == [("record", conn_id, True), ("record", conn_id, False), ("record", conn_id, True)]
    expect(world, "RECORDING_NOT_ALLOWED", world.service.stop_recording, OP, conn_id)
    expect(world, "RECORDING_NOT_ALLOWED", world.service.start_recording, OP, conn_id)


def test_the_queues_policy_wins_over_the_operations() -> None:
    world = world_with("never", queue_policy="always")  # the DID routes to "sales"
    conn_id, _, _ = world.connected_call("1001")
    assert records(world) == [("record", conn_id, True)]


def test_on_demand_records_only_when_asked() -> None:
    world = world_with("on_demand")
    conn_id, _, _ = world.connected_call("1001")
    assert records(world) == []
    assert world.service.recording_state(OP, conn_id).state == "off"
    expect(world, "RECORDING_NOT_STARTED", world.service.pause_recording, OP, conn_id, True)
    expect(world, "RECORDING_NOT_STARTED", world.service.stop_recording, OP, conn_id)
    assert world.service.start_recording(OP, conn_id).state == "recording"
    assert world.service.start_recording(OP, conn_id).state == "recording"  # again: nothing more asked
    assert world.service.pause_recording(OP, conn_id, True).state == "paused"
    assert world.service.stop_recording(OP, conn_id).state == "stopped"  # paused, then stopped: one "off"
    assert world.service.start_recording(OP, conn_id).state == "recording"
    assert records(world) == [("record", conn_id, True), ("record", conn_id, False), ("record", conn_id, True)]


def test_never_refuses_every_verb_with_the_reason() -> None:
    world = world_with("never")
    conn_id, _, _ = world.connected_call("1001")
    expect(world, "RECORDING_NOT_ALLOWED", world.service.start_recording, OP, conn_id)
    expect(world, "RECORDING_NOT_ALLOWED", world.service.pause_recording, OP, conn_id, True)
    with pytest.raises(Exception, match=r"^recording is off for this call \(policy never\): it cannot be started$"):
        world.service.start_recording(OP, conn_id)
    assert records(world) == []


def test_unknown_other_operation_ended_and_unanchored_calls() -> None:
    world = world_with("on_demand")
    expect(world, "CALL_NOT_FOUND", world.service.start_recording, OP, "nope")
    conn_id, cust, _ = world.connected_call("1001")
    expect(world, "CALL_NOT_FOUND", world.service.start_recording, OTHER_OP, conn_id)
    world.signalling.recordable = False  # its media does not go through a relay: the adapter did nothing
    with pytest.raises(RecordingUnavailable):
        world.service.start_recording(OP, conn_id)
    assert world.service.recording_state(OP, conn_id).state == "off"
    world.signalling.recordable = True
    world.service.on_leg_ended(cust)
    expect(world, "CALL_ENDED", world.service.start_recording, OP, conn_id)
    expect(world, "CALL_NOT_FOUND", world.service.start_recording, OTHER_OP, conn_id)


def test_a_call_not_answered_yet_cannot_be_recorded() -> None:
    world = world_with("on_demand")
    conn_id, _ = world.inbound()
    expect(world, "RECORDING_UNAVAILABLE", world.service.start_recording, OP, conn_id)
