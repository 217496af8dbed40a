"""Every entry of every state table, and every missing entry, walked."""

from __future__ import annotations

import pytest

from callbridge.callcontrol.errors import InvalidTransition
from callbridge.callcontrol.model import ACW, LOGOUT, ON_CALL, READY, RINGING, TransferKind, TransferState
from callbridge.callcontrol.states import (
    AGENT_TABLE,
    AUX,
    CALL_TABLE,
    LEG_TABLE,
    AgentAction,
    AgentInput,
    CallInput,
    LegInput,
    agent_state_kind,
    agent_transition,
    call_transition,
    is_busy,
    is_logged_in,
    leg_transition,
)
from callbridge.callcontrol.transfer_table import (
    TRANSFER_TABLE,
    TransferAction,
    TransferInput,
    outcome_for_status,
    transfer_transition,
)

AGENT_STATES = (LOGOUT, READY, "aux:2", RINGING, ON_CALL, ACW)
LEG_STATES = ("calling", "ringing", "up", "ended")
CALL_STATES = ("queued", "offering", "dialing", "connected", "transferring", "ended")
TRANSFER_STATES: tuple[TransferState, ...] = ("created", "trying", "ringing", "consulting", "completed", "failed",
                                              "cancelled")
KINDS: tuple[TransferKind, ...] = ("blind", "attended")


@pytest.mark.parametrize("state", AGENT_STATES)
@pytest.mark.parametrize("event", list(AgentInput))
def test_agent_table_every_pair(state: str, event: AgentInput) -> None:
    entry = AGENT_TABLE.get((agent_state_kind(state), event))
    if entry is None:
        with pytest.raises(InvalidTransition) as info:
            agent_transition(state, event, "3")
        assert info.value.error_id == "INVALID_TRANSITION"
        assert info.value.machine == "agent"
    else:
        action, nxt = agent_transition(state, event, "3")
        assert action is entry[0]
        assert nxt == ("aux:3" if entry[1] == AUX else entry[1])


def test_agent_table_the_call_cycle() -> None:
    assert agent_transition(LOGOUT, AgentInput.LOGIN_READY) == (AgentAction.AVAILABLE, READY)
    assert agent_transition(READY, AgentInput.OFFER) == (AgentAction.NONE, RINGING)
    assert agent_transition(RINGING, AgentInput.ANSWER) == (AgentAction.NONE, ON_CALL)
    assert agent_transition(ON_CALL, AgentInput.CALL_END) == (AgentAction.START_ACW, ACW)
    assert agent_transition(ACW, AgentInput.ACW_TIMEOUT) == (AgentAction.AVAILABLE, READY)
    assert agent_transition(ON_CALL, AgentInput.RELEASE_TO_READY) == (AgentAction.AVAILABLE, READY)
    assert agent_transition(RINGING, AgentInput.NO_ANSWER) == (AgentAction.AVAILABLE, READY)
    assert agent_transition("aux:2", AgentInput.SET_AUX, "5") == (AgentAction.NONE, "aux:5")
    assert agent_transition(ACW, AgentInput.SET_AUX, "2") == (AgentAction.END_ACW, "aux:2")
    assert agent_transition(ACW, AgentInput.LOGIN_READY) == (AgentAction.END_ACW_AVAILABLE, READY)


@pytest.mark.parametrize("state", [READY, "aux:2", RINGING, ON_CALL, ACW, LOGOUT])
def test_losing_the_registration_logs_out_from_anywhere(state: str) -> None:
    assert agent_transition(state, AgentInput.REGISTRATION_LOST)[1] == LOGOUT


@pytest.mark.parametrize(("state", "event"), [
    (LOGOUT, AgentInput.OFFER), (LOGOUT, AgentInput.DIAL), ("aux:2", AgentInput.OFFER), (ACW, AgentInput.OFFER),
    (RINGING, AgentInput.OFFER), (ON_CALL, AgentInput.OFFER), (ON_CALL, AgentInput.LOGIN_READY),
    (RINGING, AgentInput.SET_AUX), (ON_CALL, AgentInput.LOGOUT), (READY, AgentInput.ANSWER),
    (READY, AgentInput.ACW_TIMEOUT), (ON_CALL, AgentInput.DIAL),
])
def test_agent_table_refuses(state: str, event: AgentInput) -> None:
    with pytest.raises(InvalidTransition):
        agent_transition(state, event, "2")


def test_set_aux_needs_an_id() -> None:
    with pytest.raises(InvalidTransition):
        agent_transition(READY, AgentInput.SET_AUX)


def test_agent_predicates() -> None:
    assert [is_logged_in(s) for s in AGENT_STATES] == [False, True, True, True, True, True]
    assert [is_busy(s) for s in AGENT_STATES] == [False, False, False, True, True, False]


@pytest.mark.parametrize("state", LEG_STATES)
@pytest.mark.parametrize("event", list(LegInput))
def test_leg_table_every_pair(state: str, event: LegInput) -> None:
    entry = LEG_TABLE.get((state, event))
    if entry is None:
        with pytest.raises(InvalidTransition):
            leg_transition(state, event)
    else:
        assert leg_transition(state, event) == entry


def test_leg_table_shape() -> None:
    assert leg_transition("calling", LegInput.RING)[1] == "ringing"
    assert leg_transition("ringing", LegInput.ANSWER)[1] == "up"
    assert leg_transition("up", LegInput.END)[1] == "ended"
    assert not any(s == "ended" for s, _ in LEG_TABLE)  # nothing leaves "ended"
    assert ("up", LegInput.ANSWER) not in LEG_TABLE and ("up", LegInput.FAIL) not in LEG_TABLE


@pytest.mark.parametrize("state", CALL_STATES)
@pytest.mark.parametrize("event", list(CallInput))
def test_call_table_every_pair(state: str, event: CallInput) -> None:
    entry = CALL_TABLE.get((state, event))
    if entry is None:
        with pytest.raises(InvalidTransition):
            call_transition(state, event)
    else:
        assert call_transition(state, event) == entry


def test_every_live_call_state_can_end_and_ended_is_final() -> None:
    for state in CALL_STATES[:-1]:
        assert call_transition(state, CallInput.END)[1] == "ended"
    assert not any(s == "ended" for s, _ in CALL_TABLE)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("state", TRANSFER_STATES)
@pytest.mark.parametrize("event", list(TransferInput))
def test_transfer_table_every_triple(kind: TransferKind, state: TransferState, event: TransferInput) -> None:
    entry = TRANSFER_TABLE.get((kind, state, event))
    if entry is None:
        with pytest.raises(InvalidTransition):
            transfer_transition(kind, state, event)
    else:
        assert transfer_transition(kind, state, event) == entry


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("state", ["completed", "failed", "cancelled"])
def test_finished_transfers_take_no_input(kind: TransferKind, state: TransferState) -> None:
    assert not any(k == kind and s == state for k, s, _ in TRANSFER_TABLE)


@pytest.mark.parametrize("state", ["trying", "ringing"])
def test_transfer_failure_paths_return_the_customer(state: TransferState) -> None:
    for kind in KINDS:
        for event in (TransferInput.TARGET_FAILED, TransferInput.TIMEOUT):
            assert transfer_transition(kind, state, event) == (TransferAction.RETURN_CUSTOMER, "failed")
        assert transfer_transition(kind, state, TransferInput.CANCEL) == (TransferAction.RETURN_CUSTOMER,
                                                                          "cancelled")
        assert transfer_transition(kind, state, TransferInput.CUSTOMER_HANGUP) == (TransferAction.RELEASE_ALL,
                                                                                   "failed")
        assert transfer_transition(kind, state, TransferInput.AGENT_HANGUP) == (TransferAction.NONE, state)


def test_blind_and_attended_differ_on_answer() -> None:
    assert transfer_transition("blind", "ringing", TransferInput.TARGET_ANSWERED) == (
        TransferAction.CONNECT_CUSTOMER_TO_TARGET, "completed")
    assert transfer_transition("attended", "ringing", TransferInput.TARGET_ANSWERED) == (
        TransferAction.CONNECT_AGENT_TO_TARGET, "consulting")
    assert transfer_transition("attended", "consulting", TransferInput.COMPLETE)[1] == "completed"
    assert transfer_transition("attended", "consulting", TransferInput.CANCEL) == (
        TransferAction.RECONNECT_AGENT, "cancelled")
    with pytest.raises(InvalidTransition):
        transfer_transition("blind", "ringing", TransferInput.COMPLETE)
    with pytest.raises(InvalidTransition):
        transfer_transition("attended", "ringing", TransferInput.COMPLETE)


@pytest.mark.parametrize(("status", "outcome"), [
    (486, "busy"), (600, "busy"), (603, "rejected"), (403, "rejected"), (408, "unreachable"),
    (503, "unreachable"), (500, "unreachable"), (404, "unreachable"), (None, "unreachable"), (487, "cancelled"),
    (488, "failed"), (415, "failed"),
])
def test_outcome_for_status(status: int | None, outcome: str) -> None:
    assert outcome_for_status(status) == outcome
