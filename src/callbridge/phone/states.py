"""The life of one call, as the phone sees it: a table ``(state, input) -> next state``.

States: ``calling`` (our INVITE is out, nothing heard), ``alerting`` (it got a provisional), ``incoming`` (an
INVITE arrived, unanswered), ``ringing`` (we sent 180/183), ``connecting`` (we sent 2xx, its ACK is awaited),
``established``, ``ending`` (we sent BYE or CANCEL), ``ended``. An input missing from the table is a misuse
(answering a call that already ended, holding one that is not established): `CallStateError`.
"""

from __future__ import annotations

import enum

__all__ = ["CALL_TABLE", "CallInput", "CallState", "CallStateError", "next_state"]


class CallStateError(Exception):
    """The call's state does not allow this (e.g. ``answer()`` on an outgoing or ended call)."""


class CallState(enum.Enum):
    CALLING = "calling"
    ALERTING = "alerting"
    INCOMING = "incoming"
    RINGING = "ringing"
    CONNECTING = "connecting"
    ESTABLISHED = "established"
    ENDING = "ending"
    ENDED = "ended"


class CallInput(enum.Enum):
    RECV_1XX = "RECV_1XX"  # provisional to our INVITE
    RECV_2XX = "RECV_2XX"  # 2xx to our INVITE
    RECV_FINAL = "RECV_FINAL"  # non-2xx final to our INVITE, or its time-out
    SEND_1XX = "SEND_1XX"  # we ring
    SEND_2XX = "SEND_2XX"  # we answer
    SEND_FINAL = "SEND_FINAL"  # we reject
    RECV_ACK = "RECV_ACK"  # ACK for our 2xx
    RECV_CANCEL = "RECV_CANCEL"
    HANGUP = "HANGUP"  # we send BYE or CANCEL
    TERMINATED = "TERMINATED"  # the dialog ended: BYE received, our BYE sent, time-out, replaced
    MODIFY = "MODIFY"  # a re-INVITE, INFO, REFER in either direction (state unchanged)


S, In = CallState, CallInput
CALL_TABLE: dict[tuple[CallState, CallInput], CallState] = {
    (S.CALLING, In.RECV_1XX): S.ALERTING,
    (S.CALLING, In.RECV_2XX): S.ESTABLISHED,
    (S.CALLING, In.RECV_FINAL): S.ENDED,
    (S.CALLING, In.HANGUP): S.ENDING,  # CANCEL as soon as a provisional arrives (§9.1)
    (S.CALLING, In.TERMINATED): S.ENDED,
    (S.ALERTING, In.RECV_1XX): S.ALERTING,
    (S.ALERTING, In.RECV_2XX): S.ESTABLISHED,
    (S.ALERTING, In.RECV_FINAL): S.ENDED,
    (S.ALERTING, In.HANGUP): S.ENDING,
    (S.ALERTING, In.TERMINATED): S.ENDED,
    (S.INCOMING, In.SEND_1XX): S.RINGING,
    (S.INCOMING, In.SEND_2XX): S.CONNECTING,
    (S.INCOMING, In.SEND_FINAL): S.ENDED,
    (S.INCOMING, In.RECV_CANCEL): S.ENDED,
    (S.INCOMING, In.TERMINATED): S.ENDED,
    (S.RINGING, In.SEND_1XX): S.RINGING,
    (S.RINGING, In.SEND_2XX): S.CONNECTING,
    (S.RINGING, In.SEND_FINAL): S.ENDED,
    (S.RINGING, In.RECV_CANCEL): S.ENDED,
    (S.RINGING, In.TERMINATED): S.ENDED,
    (S.CONNECTING, In.RECV_ACK): S.ESTABLISHED,
    (S.CONNECTING, In.HANGUP): S.ENDED,  # BYE ends the dialog at once
    (S.CONNECTING, In.TERMINATED): S.ENDED,
    (S.CONNECTING, In.MODIFY): S.CONNECTING,
    (S.ESTABLISHED, In.RECV_ACK): S.ESTABLISHED,  # the ACK of a 2xx to a re-INVITE
    (S.ESTABLISHED, In.RECV_2XX): S.ESTABLISHED,  # a retransmitted or forked 2xx
    (S.ESTABLISHED, In.HANGUP): S.ENDED,
    (S.ESTABLISHED, In.TERMINATED): S.ENDED,
    (S.ESTABLISHED, In.MODIFY): S.ESTABLISHED,
    (S.ENDING, In.RECV_1XX): S.ENDING,
    (S.ENDING, In.RECV_2XX): S.ENDING,  # 2xx crossed our CANCEL: the endpoint BYEs it
    (S.ENDING, In.RECV_FINAL): S.ENDED,  # 487
    (S.ENDING, In.HANGUP): S.ENDING,
    (S.ENDING, In.TERMINATED): S.ENDED,
}


def next_state(state: CallState, event: CallInput) -> CallState:
    try:
        return CALL_TABLE[(state, event)]
    except KeyError:
        raise CallStateError(f"{event.value} not allowed in call state {state.value}") from None
