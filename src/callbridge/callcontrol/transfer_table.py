"""The transfer state machine, as a table (docs/design.md, "Transfer semantics").

Rules:
1. A transfer is validated before anything moves; the API answers at once with the call's conn_id.
2. Blind: hold the customer, keep the agent's leg, ring the target with an offer-less INVITE (RFC 3725 flow I: the
   target makes the offer), for `transfer_timeout` seconds (default 30).
   - target answers: the customer's leg is re-INVITEd with the target's offer, the agent's leg is released, the
     agent goes to ACW (or ready, per operation): `completed`.
   - busy (486/600), rejected (603), failed (408, 404, 5xx...), or no answer in time: the customer is taken off
     hold, back with the agent, and the transfer is `failed` with its SIP cause. A failed transfer never drops the
     customer.
   - the customer hangs up: every leg is released, the transfer is `failed` with outcome `customer_hangup`.
   - the agent hangs up: the transfer goes on. If it then fails, the customer goes to the call's queue (or the
     operation's default queue) instead of back to the agent.
3. Attended: hold the customer, ring the target; when it answers the agent is connected to it (`consulting`).
   Then `COMPLETE` bridges the customer with the target and releases the agent; `CANCEL` releases the target and
   reconnects the customer with the agent. The agent hanging up while consulting completes the transfer (the
   usual PBX behaviour); the target hanging up while consulting reconnects the customer with the agent.
4. Attended on the agent's phone: the phone consults on a call of its own, then sends a REFER with Replaces. The
   consultation is already up, so the transfer starts at `consulting` (`REPLACES`: the consulted party's leg moves
   into the customer's call) and is completed at once (`COMPLETE`).

Theory of operation. The table maps `(kind, state, input) -> (action, next state)`; the engine
(`transfer_engine`) performs the action and writes the next state the table gives, and no other: no step of the
engine names a state. Anything missing is an error (`InvalidTransition`), raised before anything moves.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from callbridge.callcontrol.errors import InvalidTransition
from callbridge.callcontrol.model import TransferKind, TransferOutcome, TransferState


class TransferInput(StrEnum):
    START = "START"
    TARGET_RINGING = "TARGET_RINGING"  # 180/183
    TARGET_ANSWERED = "TARGET_ANSWERED"  # 2xx
    TARGET_FAILED = "TARGET_FAILED"  # a final error, or the target unreachable
    TIMEOUT = "TIMEOUT"  # transfer_timeout elapsed without an answer
    CUSTOMER_HANGUP = "CUSTOMER_HANGUP"
    AGENT_HANGUP = "AGENT_HANGUP"
    TARGET_HANGUP = "TARGET_HANGUP"  # attended: the target hangs up while consulting
    COMPLETE = "COMPLETE"
    CANCEL = "CANCEL"
    REPLACES = "REPLACES"  # a REFER with Replaces: the phone's own consultation becomes the transfer's


class TransferAction(StrEnum):
    NONE = "NONE"
    HOLD_AND_RING = "HOLD_AND_RING"  # hold the customer, originate the target leg, arm the timer
    REPORT_RINGING = "REPORT_RINGING"
    CONNECT_AGENT_TO_TARGET = "CONNECT_AGENT_TO_TARGET"  # attended: the consultation starts
    CONNECT_CUSTOMER_TO_TARGET = "CONNECT_CUSTOMER_TO_TARGET"  # bridge, release the agent, hop count + 1
    RETURN_CUSTOMER = "RETURN_CUSTOMER"  # release the target; unhold to the agent, or requeue if the agent left
    RECONNECT_AGENT = "RECONNECT_AGENT"  # attended: release the target, bridge the customer with the agent again
    RELEASE_ALL = "RELEASE_ALL"  # the customer left: release the target and the agent
    ADOPT_CONSULTATION = "ADOPT_CONSULTATION"  # the consulted party's leg joins the customer's call as the target


_I = TransferInput
_X = TransferAction
_RINGING_STATES: Final[tuple[TransferState, ...]] = ("trying", "ringing")


def _build() -> dict[tuple[TransferKind, TransferState, TransferInput], tuple[TransferAction, TransferState]]:
    table: dict[tuple[TransferKind, TransferState, TransferInput], tuple[TransferAction, TransferState]] = {}
    kinds: tuple[TransferKind, ...] = ("blind", "attended")
    for kind in kinds:
        table[(kind, "created", _I.START)] = (_X.HOLD_AND_RING, "trying")
        table[(kind, "trying", _I.TARGET_RINGING)] = (_X.REPORT_RINGING, "ringing")
        table[(kind, "ringing", _I.TARGET_RINGING)] = (_X.NONE, "ringing")
        for state in _RINGING_STATES:
            table[(kind, state, _I.TARGET_FAILED)] = (_X.RETURN_CUSTOMER, "failed")
            table[(kind, state, _I.TIMEOUT)] = (_X.RETURN_CUSTOMER, "failed")
            table[(kind, state, _I.CANCEL)] = (_X.RETURN_CUSTOMER, "cancelled")
            table[(kind, state, _I.CUSTOMER_HANGUP)] = (_X.RELEASE_ALL, "failed")
            table[(kind, state, _I.AGENT_HANGUP)] = (_X.NONE, state)
        answered: tuple[TransferAction, TransferState] = (
            (_X.CONNECT_CUSTOMER_TO_TARGET, "completed") if kind == "blind"
            else (_X.CONNECT_AGENT_TO_TARGET, "consulting"))
        for state in _RINGING_STATES:
            table[(kind, state, _I.TARGET_ANSWERED)] = answered
    table[("attended", "created", _I.REPLACES)] = (_X.ADOPT_CONSULTATION, "consulting")
    table[("attended", "consulting", _I.COMPLETE)] = (_X.CONNECT_CUSTOMER_TO_TARGET, "completed")
    table[("attended", "consulting", _I.AGENT_HANGUP)] = (_X.CONNECT_CUSTOMER_TO_TARGET, "completed")
    table[("attended", "consulting", _I.CANCEL)] = (_X.RECONNECT_AGENT, "cancelled")
    table[("attended", "consulting", _I.TARGET_HANGUP)] = (_X.RECONNECT_AGENT, "failed")
    table[("attended", "consulting", _I.CUSTOMER_HANGUP)] = (_X.RELEASE_ALL, "failed")
    return table


TRANSFER_TABLE: Final = _build()


def transfer_transition(kind: TransferKind, state: TransferState,
                        event: TransferInput) -> tuple[TransferAction, TransferState]:
    entry = TRANSFER_TABLE.get((kind, state, event))
    if entry is None:
        raise InvalidTransition(f"{kind} transfer", state, event)
    return entry


def outcome_for_status(status: int | None) -> TransferOutcome:
    """What a target's final error means for the record. `None`: no response at all (unreachable)."""
    if status in (486, 600):
        return "busy"
    if status in (603, 403):
        return "rejected"
    if status == 487:
        return "cancelled"
    return "unreachable" if status is None or status in (404, 408, 410, 480, 484) or status >= 500 else "failed"


NO_ANSWER_CAUSE: Final = 408
"""The SIP cause recorded when the target did not answer within the transfer timeout (the leg is CANCELled)."""
