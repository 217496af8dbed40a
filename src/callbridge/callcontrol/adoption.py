"""Adoption: a call another node held, taken into this node's live state so that the API controls it from now on.

Theory of operation (docs/cluster.md, "Failover"): when a node of a cluster dies, the node that takes one of its
operations over reads that node's open calls from the records. A call that was connected (a customer leg and an
agent's leg both up) is adopted: it becomes a live call of this service, in state `connected`, with its two legs,
its agent `on_call` on it, exactly as if this node had bridged it. Nothing is recorded or published here (the
records already say connected; the adopting node changes their `node_id` in its own transaction), and the SIP
side restores the two dialogs with the same leg ids (`cluster.adopt`). From then on `hang`, `transfer` and the
reads work on it, and its end writes the CDR as for any call.

A call in a transfer whose target was still being rung (`LEFT_TRANSFER_STATES`) is adopted too, with the
customer on hold and its transfer: the INVITE ringing the target died with the node, so the adopting node fails
the transfer at once through the transfer table (`CallControlService.fail_left_transfer`): the customer back with
its agent, as for a target that did not answer, or, when the agent had left during the transfer, into the call's
queue (`adopted_legs`: the customer's leg alone). A consultation already up (an attended transfer's agent and
target talking) ends likewise: the target's dialog is hung up by the adopting node, and the transfer fails as
when the target hangs up while consulting, the customer bridged with its agent again. A failed transfer never
drops the customer.

Calls in any other state (queued, offered, dialling, consulting) are not adopted: their setup died with the node,
and the adopting node ends them cleanly (`cluster.adopt`).
"""

from __future__ import annotations

from collections.abc import Sequence

from callbridge.callcontrol.agents import AgentDesk
from callbridge.callcontrol.calls import Call, CallHistoryEntry, Leg, RecordingState
from callbridge.callcontrol.live import LiveState, TransferRun
from callbridge.callcontrol.records import ON_CALL, CallRecord, LegRecord, TransferRecord

ADOPTED = "adopted"
LEFT_TRANSFER_STATES = frozenset({"trying", "ringing", "consulting"})  # a transfer adopted (and failed)


def adoptable_legs(record: CallRecord, legs: Sequence[LegRecord]) -> tuple[LegRecord, LegRecord] | None:
    """The customer's leg and the agent's leg of a connected call (or one in a transfer: see `left_transfer`),
    both up; None when the call is not adoptable."""
    if record.state not in ("connected", "transferring") or record.agent is None or record.ended_at is not None:
        return None
    customer = [leg for leg in legs if leg.role == "customer" and leg.state == "up"]
    agent = [leg for leg in legs if leg.role == "agent" and leg.state == "up" and leg.agent == record.agent]
    if len(customer) != 1 or len(agent) != 1:
        return None
    return customer[0], agent[0]


def left_transfer_ok(record: CallRecord, transfer: TransferRecord | None) -> bool:
    """A call with `transfer` open (or none) can be adopted: connected with none, or in a transfer whose target was
    still being rung (the call's record may say connected: its state is not written at a transfer's start, the
    transfer's record is)."""
    if transfer is None:
        return record.state == "connected"
    return (record.state in ("connected", "transferring") and transfer.conn_id == record.conn_id
            and transfer.state in LEFT_TRANSFER_STATES)


def adopted_legs(record: CallRecord, legs: Sequence[LegRecord],
                 transfer: TransferRecord | None) -> tuple[LegRecord, LegRecord | None] | None:
    """The legs a call another node left goes on with: its customer's and its agent's (`adoptable_legs`), or, in
    a transfer its agent had left (the transfer goes on without it, transfer_table rule 2), the customer's alone
    (its transfer then fails into a queue); None when the call is not adopted."""
    if not left_transfer_ok(record, transfer):
        return None
    pair = adoptable_legs(record, legs)
    if pair is not None or transfer is None or record.ended_at is not None:
        return pair
    customer = [leg for leg in legs if leg.role == "customer" and leg.state == "up"]
    if len(customer) == 1 and transfer.state != "consulting" and not any(
            leg.role == "agent" and leg.state == "up" for leg in legs):
        return customer[0], None
    return None


class Adoption:
    """Bound by the service as `adopt_call`."""

    def __init__(self, state: LiveState, agents: AgentDesk) -> None:
        self._state = state
        self._agents = agents

    def adopt_call(self, record: CallRecord, legs: Sequence[LegRecord], since: float, now: float, *,
                   held: bool = False, muted: bool = False, recording: RecordingState = "off",
                   transfer: TransferRecord | None = None) -> bool:
        """Make `record` (a connected call of another node) one of this service's live calls; False when it is
        not adoptable (see `adoptable_legs`), its agent is unknown or busy here, or the call is here already.
        `since` is when its agent went on the call (the agent's recorded state time); `held` and `muted` what the
        SIP side found its dialogs in (the next `hold` or `mute` takes the call off it, as on the old node);
        `recording` the state of its recording in progress (the relay records it, or not since a pause or stop);
        `transfer` the call's open transfer (`left_transfer_ok`): the call is adopted in it, its target's leg with
        it, for `fail_left_transfer` to fail it."""
        pair = adopted_legs(record, legs, transfer)
        state = self._state
        if pair is None or record.conn_id in state.calls:
            return False
        customer, agent_leg = pair
        rt = None
        if agent_leg is not None:
            assert record.agent is not None
            rt = self._agents.find(record.operation_id, record.agent)
            if rt is None or rt.conn_id is not None:
                return False
        call = Call(record.conn_id, record.operation_id, record.direction, record.customer_number, record.created_at,
                    node_id=state.node_id, state="connected", queue=record.queue, customer_leg_id=customer.leg_id,
                    agent_leg_id=agent_leg.leg_id if agent_leg is not None else None,
                    agent=record.agent if agent_leg is not None else None,
                    agents=[record.agent] if record.agent else [],
                    answered_at=record.answered_at, transfer_count=record.transfer_count,
                    related_conn_id=record.related_conn_id, held=held, muted=muted, recording=recording)
        for leg in (customer, agent_leg):
            if leg is None:
                continue
            call.legs[leg.leg_id] = Leg(leg.leg_id, record.conn_id, leg.role, leg.party, "up", leg.agent,
                                        leg.created_at, leg.answered_at)
            state.leg_calls[leg.leg_id] = record.conn_id
        if transfer is not None:  # the customer on hold for it; its target's leg, to be released with it
            call.state, call.transfer_id, call.held = "transferring", transfer.id, True
            target = next((leg for leg in legs if leg.leg_id == transfer.target_leg_id and leg.ended_at is None), None)
            if target is not None:
                call.legs[target.leg_id] = Leg(target.leg_id, record.conn_id, target.role, target.party, target.state,
                                               target.agent, target.created_at, target.answered_at)
                state.leg_calls[target.leg_id] = record.conn_id
            state.transfers[transfer.id] = TransferRun(transfer)
        call.history.append(CallHistoryEntry(now, ADOPTED, record.node_id))
        state.calls[record.conn_id] = call
        if rt is not None and agent_leg is not None:
            rt.state, rt.state_since, rt.reason = ON_CALL, since, "answered"
            rt.conn_id, rt.leg_id = record.conn_id, agent_leg.leg_id
        return True
