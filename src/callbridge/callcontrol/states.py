"""State tables: the agent, the leg and the call. `(state, input) -> (action, next state)`; anything missing from a
table is an error (`InvalidTransition`), so a state the code did not foresee shows up as a failure, not as drift.

Agent (agentbox contract, "Definitions"): `logout`, `ready`, `aux:<id>` (the operation's auxiliary states),
`ringing`, `on_call`, `acw` (after-call work). Logged in = anything but `logout`. Available = registered and
`ready` (the registration is checked by the service, not by the table). The agent's state follows the call:
ready --OFFER--> ringing --ANSWER--> on_call --CALL_END--> acw --ACW_TIMEOUT--> ready. `dial` rings the agent's
own phone first (DIAL). An agent whose last registration goes is logged out whatever it is doing; a call it was on
goes on (the B2BUA's session timer ends it if the phone vanished), and its end leaves the agent logged out.

The table names actions the service performs on the transition:
- `AVAILABLE`: the agent became ready: offer it the call that waits longest in its queues.
- `START_ACW`: arm the after-call-work timer (a length of 0 fires at once).
- `END_ACW`, `END_ACW_AVAILABLE`: leaving ACW early: disarm the timer (and, for the second, offer waiting calls).

Leg: calling --RING--> ringing --ANSWER--> up --END/RELEASE--> ended; FAIL ends a leg that never came up.
Call: queued <-> offering (ACD), dialing (the agent's phone then the customer), connected <-> transferring,
ended. A transfer that fails after the agent has gone sends the call back to `queued`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from callbridge.callcontrol.errors import InvalidTransition
from callbridge.callcontrol.model import (
    ACW,
    AUX_PREFIX,
    LOGOUT,
    ON_CALL,
    READY,
    RINGING,
    CallState,
    LegState,
    aux_state,
)

# --- agent ----------------------------------------------------------------------------------------------------


class AgentInput(StrEnum):
    LOGIN_READY = "LOGIN_READY"  # change_status=ready
    SET_AUX = "SET_AUX"  # change_status=<aux id>
    LOGOUT = "LOGOUT"  # change_status=logout
    OFFER = "OFFER"  # a queue call or a transfer rings the agent's phone
    DIAL = "DIAL"  # dial/aux_call/recall ring the agent's own phone first
    ANSWER = "ANSWER"
    NO_ANSWER = "NO_ANSWER"  # ring timeout, busy, decline, or the phone unreachable
    CALL_END = "CALL_END"
    RELEASE_TO_READY = "RELEASE_TO_READY"  # call transferred away with after_transfer_state=ready; hang_type_ready
    ACW_TIMEOUT = "ACW_TIMEOUT"
    REGISTRATION_LOST = "REGISTRATION_LOST"  # the agent's last registration expired or was removed


class AgentAction(StrEnum):
    NONE = "NONE"
    AVAILABLE = "AVAILABLE"
    START_ACW = "START_ACW"
    END_ACW = "END_ACW"
    END_ACW_AVAILABLE = "END_ACW_AVAILABLE"


AUX: Final = "aux"  # the table's name for any aux:<id>
_A = AgentInput
_X = AgentAction

AGENT_TABLE: Final[dict[tuple[str, AgentInput], tuple[AgentAction, str]]] = {
    (LOGOUT, _A.LOGIN_READY): (_X.AVAILABLE, READY),
    (LOGOUT, _A.SET_AUX): (_X.NONE, AUX),
    (LOGOUT, _A.LOGOUT): (_X.NONE, LOGOUT),
    (LOGOUT, _A.REGISTRATION_LOST): (_X.NONE, LOGOUT),
    # a call that outlived the agent's registration: its events leave the agent logged out
    (LOGOUT, _A.ANSWER): (_X.NONE, LOGOUT),
    (LOGOUT, _A.NO_ANSWER): (_X.NONE, LOGOUT),
    (LOGOUT, _A.CALL_END): (_X.NONE, LOGOUT),
    (LOGOUT, _A.RELEASE_TO_READY): (_X.NONE, LOGOUT),
    (READY, _A.LOGIN_READY): (_X.NONE, READY),
    (READY, _A.SET_AUX): (_X.NONE, AUX),
    (READY, _A.LOGOUT): (_X.NONE, LOGOUT),
    (READY, _A.OFFER): (_X.NONE, RINGING),
    (READY, _A.DIAL): (_X.NONE, RINGING),
    (READY, _A.REGISTRATION_LOST): (_X.NONE, LOGOUT),
    (AUX, _A.LOGIN_READY): (_X.AVAILABLE, READY),
    (AUX, _A.SET_AUX): (_X.NONE, AUX),
    (AUX, _A.LOGOUT): (_X.NONE, LOGOUT),
    (AUX, _A.DIAL): (_X.NONE, RINGING),
    (AUX, _A.REGISTRATION_LOST): (_X.NONE, LOGOUT),
    (RINGING, _A.ANSWER): (_X.NONE, ON_CALL),
    (RINGING, _A.NO_ANSWER): (_X.AVAILABLE, READY),
    (RINGING, _A.CALL_END): (_X.AVAILABLE, READY),  # the caller gave up while the agent's phone rang
    (RINGING, _A.REGISTRATION_LOST): (_X.NONE, LOGOUT),
    (ON_CALL, _A.CALL_END): (_X.START_ACW, ACW),
    (ON_CALL, _A.RELEASE_TO_READY): (_X.AVAILABLE, READY),
    (ON_CALL, _A.REGISTRATION_LOST): (_X.NONE, LOGOUT),
    (ACW, _A.ACW_TIMEOUT): (_X.AVAILABLE, READY),
    (ACW, _A.LOGIN_READY): (_X.END_ACW_AVAILABLE, READY),
    (ACW, _A.SET_AUX): (_X.END_ACW, AUX),
    (ACW, _A.LOGOUT): (_X.END_ACW, LOGOUT),
    (ACW, _A.DIAL): (_X.END_ACW, RINGING),
    (ACW, _A.REGISTRATION_LOST): (_X.END_ACW, LOGOUT),
}


def agent_state_kind(state: str) -> str:
    """The table's name of a state: "aux" for any "aux:<id>"."""
    return AUX if state.startswith(AUX_PREFIX) else state


def agent_transition(state: str, event: AgentInput, aux_id: str | None = None) -> tuple[AgentAction, str]:
    """The action and the next state; SET_AUX needs `aux_id`. Raises InvalidTransition when the table has no entry."""
    entry = AGENT_TABLE.get((agent_state_kind(state), event))
    if entry is None:
        raise InvalidTransition("agent", state, event)
    action, nxt = entry
    if nxt == AUX:
        if not aux_id:
            raise InvalidTransition("agent", state, f"{event} without an aux id")
        nxt = aux_state(aux_id)
    return action, nxt


def is_logged_in(state: str) -> bool:
    return state != LOGOUT


def is_busy(state: str) -> bool:
    """On a call or being rung: `dial` answers ALREADY_ON_CALL, `change_status` cannot move the agent."""
    return state in (RINGING, ON_CALL)


# --- leg ------------------------------------------------------------------------------------------------------


class LegInput(StrEnum):
    RING = "RING"  # 180/183 from the callee
    ANSWER = "ANSWER"  # 2xx
    FAIL = "FAIL"  # a final error response, or no response at all
    END = "END"  # the party hung up (BYE, or CANCEL of an incoming INVITE)
    RELEASE = "RELEASE"  # the domain ends the leg (BYE, CANCEL or a final error)


class LegAction(StrEnum):
    NONE = "NONE"
    RINGING = "RINGING"
    ANSWERED = "ANSWERED"
    FAILED = "FAILED"
    ENDED = "ENDED"


_L = LegInput
LEG_TABLE: Final[dict[tuple[str, LegInput], tuple[LegAction, LegState]]] = {
    ("calling", _L.RING): (LegAction.RINGING, "ringing"),
    ("calling", _L.ANSWER): (LegAction.ANSWERED, "up"),
    ("calling", _L.FAIL): (LegAction.FAILED, "ended"),
    ("calling", _L.END): (LegAction.ENDED, "ended"),
    ("calling", _L.RELEASE): (LegAction.NONE, "ended"),
    ("ringing", _L.RING): (LegAction.NONE, "ringing"),
    ("ringing", _L.ANSWER): (LegAction.ANSWERED, "up"),
    ("ringing", _L.FAIL): (LegAction.FAILED, "ended"),
    ("ringing", _L.END): (LegAction.ENDED, "ended"),
    ("ringing", _L.RELEASE): (LegAction.NONE, "ended"),
    ("up", _L.END): (LegAction.ENDED, "ended"),
    ("up", _L.RELEASE): (LegAction.NONE, "ended"),
}


def leg_transition(state: str, event: LegInput) -> tuple[LegAction, LegState]:
    entry = LEG_TABLE.get((state, event))
    if entry is None:
        raise InvalidTransition("leg", state, event)
    return entry


# --- call -----------------------------------------------------------------------------------------------------


class CallInput(StrEnum):
    OFFER = "OFFER"  # the ACD rings an agent
    OFFER_FAILED = "OFFER_FAILED"  # that agent did not answer: back to waiting
    CONNECT = "CONNECT"  # the customer and an agent (or the dialled party) are bridged
    TRANSFER_START = "TRANSFER_START"
    TRANSFER_END = "TRANSFER_END"  # completed, failed back to the agent, or cancelled
    REQUEUE = "REQUEUE"  # a transfer failed after the agent left: the customer waits in a queue again
    END = "END"


class CallAction(StrEnum):
    NONE = "NONE"
    WRITE_CDR = "WRITE_CDR"


_C = CallInput
_N = CallAction.NONE
CALL_TABLE: Final[dict[tuple[str, CallInput], tuple[CallAction, CallState]]] = {
    ("queued", _C.OFFER): (_N, "offering"),
    ("queued", _C.END): (CallAction.WRITE_CDR, "ended"),
    ("offering", _C.OFFER_FAILED): (_N, "queued"),
    ("offering", _C.CONNECT): (_N, "connected"),
    ("offering", _C.END): (CallAction.WRITE_CDR, "ended"),
    ("dialing", _C.CONNECT): (_N, "connected"),
    ("dialing", _C.END): (CallAction.WRITE_CDR, "ended"),
    ("connected", _C.TRANSFER_START): (_N, "transferring"),
    ("connected", _C.END): (CallAction.WRITE_CDR, "ended"),
    ("transferring", _C.TRANSFER_END): (_N, "connected"),
    ("transferring", _C.REQUEUE): (_N, "queued"),
    ("transferring", _C.END): (CallAction.WRITE_CDR, "ended"),
}


def call_transition(state: str, event: CallInput) -> tuple[CallAction, CallState]:
    entry = CALL_TABLE.get((state, event))
    if entry is None:
        raise InvalidTransition("call", state, event)
    return entry
