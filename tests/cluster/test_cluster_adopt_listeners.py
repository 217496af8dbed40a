"""What a node taking a call over makes of the call's dialogs (cluster/adopt.py `LeftCall`), in memory: the
customer's and the agent's make it adoptable; a dialog that is none of its parties' is a supervisor's phone
listening, carried over when the event log shows its listening started, hung up otherwise; a call missing one of
its parties' dialogs is not adoptable."""

from __future__ import annotations

from dataclasses import replace

from callbridge.callcontrol.records import CallRecord, LegRecord, TransferRecord
from callbridge.cluster.adopt import LeftCall
from callbridge.storage.sip_state import DialogRecord

CALL = CallRecord("c1", "0042", "a", "inbound", "3105550000", "connected", "support", "1001", 100.0, 101.0, None,
                  None, None, 0, None)
LEGS = [LegRecord("cust", "c1", "customer", "3105550000", "up", None, 100.0, 100.5, None, None, None),
        LegRecord("agent", "c1", "agent", "1001", "up", "1001", 100.2, 101.0, None, None, None)]


def dialog(leg_id: str) -> DialogRecord:
    return DialogRecord(leg_id, "c1", f"call-{leg_id}", "lt", "rt", "sip:a@x", "sip:b@y", 1, 1, "sip:b@y", (),
                        "127.0.0.2", 5060, "udp", 100.0, 101.0, "127.0.0.1:2223")


def test_the_parties_dialogs_make_a_connected_call_adoptable() -> None:
    left = LeftCall(CALL, LEGS, [dialog("cust"), dialog("agent")])
    assert left.adoptable and left.listeners == [] and left.strays == [] and left.relay == "127.0.0.1:2223"
    assert not LeftCall(CALL, LEGS, [dialog("cust")]).adoptable  # the agent's dialog was never written


def test_a_listener_whose_start_the_log_shows_is_carried_over_and_one_it_does_not_is_hung_up() -> None:
    dialogs = [dialog("cust"), dialog("agent"), dialog("m1"), dialog("m2")]
    left = LeftCall(CALL, LEGS, dialogs, monitors={"m1": ("1002", 102.0)})
    assert left.adoptable
    assert [d.leg_id for d in left.listeners] == ["m1"] and [d.leg_id for d in left.strays] == ["m2"]


def transfer(state: str) -> TransferRecord:
    return TransferRecord("t1", "c1", "0042", "blind", "1001", "1002", "agent", state, 102.0, 102.5,  # type: ignore[arg-type]
                          target_leg_id="tgt")


def test_a_call_whose_transfer_target_was_still_rung_is_adopted_and_the_targets_early_dialog_hung_up() -> None:
    """The transfer's INVITE died with the node: the call is adopted with its transfer (cluster/adopt.py fails it
    once restored) and a dialog of the target (an early one: RFC 3261 §15 lets its caller BYE it) is hung up; so
    is a consultation (its target's dialog hung up too), unless its agent had left; the customer's leg alone is
    adopted for a transfer still rung whose agent had left."""
    legs = [*LEGS, LegRecord("tgt", "c1", "target", "1002", "ringing", "1002", 102.1, None, None, None, None)]
    dialogs = [dialog("cust"), dialog("agent"), dialog("tgt")]
    for state in ("trying", "ringing"):
        left = LeftCall(CALL, legs, dialogs, transfer=transfer(state))
        assert left.adoptable and [d.leg_id for d in left.strays] == ["tgt"] and left.listeners == []
    consulting = LeftCall(CALL, legs, dialogs, transfer=transfer("consulting"))  # its agent and target talking
    assert consulting.adoptable and [d.leg_id for d in consulting.strays] == ["tgt"]
    agent_gone = [legs[0], LegRecord("agent", "c1", "agent", "1001", "ended", "1001", 100.2, 101.0, 103.0, None,
                                     "agent"), legs[2]]
    assert LeftCall(CALL, agent_gone, [dialogs[0], dialogs[2]], transfer=transfer("ringing")).adoptable
    assert not LeftCall(CALL, agent_gone, [dialogs[0], dialogs[2]], transfer=transfer("consulting")).adoptable
    assert not LeftCall(CALL, legs, dialogs, transfer=transfer("completed")).adoptable
    transferring = replace(CALL, state="transferring")
    assert LeftCall(transferring, legs, dialogs, transfer=transfer("ringing")).adoptable
    assert not LeftCall(transferring, legs, dialogs).adoptable  # in a transfer nobody wrote: nothing to fail
    assert LeftCall(CALL, LEGS, dialogs[:2]).adoptable and LeftCall(CALL, LEGS, dialogs[:2]).strays == []
