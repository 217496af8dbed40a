"""What a restart does to agents (`callcontrol.restart`: the rule, `AgentDesk.restore`: the states set in memory),
and the SIGTERM drain refusing logins while logged-in agents keep moving. In memory, with the fakes."""

from __future__ import annotations

import pytest
from callcontrol_fakes import OP, T0, World, expect

from callbridge.callcontrol.events import AgentStateChanged
from callbridge.callcontrol.restart import REGISTRATION_EXPIRED, RESTART, AgentRestart, state_after_restart

# --- the rule -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("before", "registered", "after"), [
    ("logout", True, ("logout", None)),
    ("logout", False, ("logout", None)),
    ("ready", True, ("ready", None)),
    ("aux:2", True, ("aux:2", None)),
    ("ringing", True, ("ready", "restart")),
    ("on_call", True, ("ready", "restart")),
    ("acw", True, ("ready", "restart")),
    ("ready", False, ("logout", "registration expired")),
    ("aux:2", False, ("logout", "registration expired")),
    ("ringing", False, ("logout", "registration expired")),
    ("on_call", False, ("logout", "registration expired")),
    ("acw", False, ("logout", "registration expired")),
])
def test_the_state_after_a_restart(before: str, registered: bool, after: tuple[str, str | None]) -> None:
    assert state_after_restart(before, registered) == after


def test_a_kept_state_keeps_its_time_and_reason_a_changed_one_takes_the_restart() -> None:
    kept = AgentRestart.of(OP, "1001", "ready", "api", T0 - 50, True, T0)
    assert (kept.state, kept.reason, kept.since, kept.changed) == ("ready", "api", T0 - 50, False)
    moved = AgentRestart.of(OP, "1002", "on_call", "answered", T0 - 5, True, T0)
    assert (moved.previous, moved.state, moved.reason, moved.since, moved.changed) == (
        "on_call", "ready", RESTART, T0, True)
    gone = AgentRestart.of(OP, "1003", "aux:2", "api", T0 - 5, False, T0)
    assert (gone.previous, gone.state, gone.reason, gone.since, gone.changed) == (
        "aux:2", "logout", REGISTRATION_EXPIRED, T0, True)


# --- restore: the states in memory, nothing recorded or published again ----------------------------------------


def test_restored_agents_take_their_states_and_the_longest_idle_is_offered_first(world: World) -> None:
    svc = world.service
    svc.restore_agents([
        AgentRestart.of(OP, "1001", "on_call", "answered", T0 - 5, True, T0),  # ready now: idle since the restart
        AgentRestart.of(OP, "1002", "ready", "api", T0 - 100, True, T0),  # ready since before: idle longest
        AgentRestart.of(OP, "1003", "aux:2", "api", T0 - 30, True, T0),
        AgentRestart.of(OP, "1999", "ready", "api", T0 - 30, True, T0),  # no longer in the directory: skipped
    ])
    assert world.events.events == [] and world.states.changes == []  # reconciliation wrote those
    assert [(a.extension, a.state, a.state_since, a.registered) for a in svc.list_agents(OP)] == [
        ("1001", "ready", T0, False), ("1002", "ready", T0 - 100, False), ("1003", "aux:2", T0 - 30, False)]
    for ext in ("1001", "1002", "1003"):  # the restored registrations are reported afterwards
        svc.on_registration_changed(OP, ext, True)
    assert [a.available for a in svc.list_agents(OP)] == [True, True, False]
    world.inbound()
    assert world.signalling.last_originate().destination == "1002"
    assert world.state("1002") == "ringing"


def test_a_call_waiting_before_a_restored_agents_registration_is_reported_is_offered_when_it_is(
        world: World) -> None:
    """A takeover may put a customer in a queue (a transfer failed with its node, its agent gone) before the
    restored registrations are reported: the agent that becomes available by its registration takes the waiting
    call then, not at its next state change."""
    svc = world.service
    svc.restore_agents([AgentRestart.of(OP, "1001", "ready", "api", T0 - 5, True, T0)])
    conn_id, _ = world.inbound()
    assert world.signalling.originates() == [] and svc.get_call(OP, conn_id).state == "queued"
    svc.on_registration_changed(OP, "1001", True)
    assert world.signalling.last_originate().destination == "1001"
    assert world.state("1001") == "ringing" and svc.get_call(OP, conn_id).state == "offering"


def test_an_agent_restored_ready_whose_phone_then_goes_is_logged_out(world: World) -> None:
    svc = world.service
    svc.restore_agents([AgentRestart.of(OP, "1001", "ready", "api", T0 - 5, True, T0)])
    svc.on_registration_changed(OP, "1001", True)
    svc.on_registration_changed(OP, "1001", False)
    assert [(e.previous, e.state, e.reason) for e in world.events.of(AgentStateChanged)] == [
        ("ready", "logout", "registration_lost")]


# --- the drain: no new logins ---------------------------------------------------------------------------------


def test_while_draining_a_logged_out_agent_cannot_log_in(world: World) -> None:
    svc = world.service
    svc.on_registration_changed(OP, "1001", True)
    world.signalling.draining = True
    expect(world, "CALL_CONTROL_UNAVAILABLE", svc.change_status, OP, "1001", "ready")
    expect(world, "CALL_CONTROL_UNAVAILABLE", svc.change_status, OP, "1001", "2")
    # the contract's precedence: the state checks come first
    expect(world, "INVALID_PARAMETER", svc.change_status, OP, "1001", "lunch", parameter="status")
    expect(world, "PHONE_NOT_REGISTERED", svc.change_status, OP, "1002", "ready")
    assert svc.change_status(OP, "1001", "logout") == "logout"  # staying out is no login
    assert world.state("1001") == "logout" and world.events.of(AgentStateChanged) == []
    world.signalling.draining = False
    assert svc.change_status(OP, "1001", "ready") == "ready"


def test_while_draining_a_logged_in_agent_keeps_changing_state(world: World) -> None:
    svc = world.service
    world.login("1001")
    world.signalling.draining = True
    assert svc.change_status(OP, "1001", "2") == "aux:2"
    assert svc.change_status(OP, "1001", "ready") == "ready"
    assert svc.change_status(OP, "1001", "logout") == "logout"
    expect(world, "CALL_CONTROL_UNAVAILABLE", svc.change_status, OP, "1001", "ready")  # out now: no way back in
    assert [(e.previous, e.state, e.reason) for e in world.events.of(AgentStateChanged)] == [
        ("logout", "ready", "api"), ("ready", "aux:2", "api"), ("aux:2", "ready", "api"), ("ready", "logout", "api")]
