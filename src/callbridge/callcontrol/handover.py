"""Handing an operation over to another cluster node with its calls (docs/cluster.md, "Moving and draining").

Theory of operation. When this node is asked to give an operation up while it is still live (`callbridge admin
cluster move`, `drain`, or SIGTERM with another node to take over), its calls must survive the change of owner:
the records already hold everything the new owner needs (the calls, their legs and dialogs, the agents' states,
written through), and the new owner adopts them exactly as it adopts a dead node's (`adoption.py`,
`cluster.adopt`). What this node must do is stop acting for them first, so that no two nodes ever drive one call:
1. it stops taking new calls for the operation (the switch refuses them, 503 with Retry-After);
2. it waits until the operation's calls are settled (`settled`): every live call connected, no transfer and no
   API action of it in flight, no agent of it being rung. A call in setup (queued, ringing) cannot be adopted, so
   waiting a little lets it connect (or end) rather than be ended by the new owner; the wait is bounded by the
   caller (`cluster.handover`);
3. it forgets the operation (`forget`): its calls, their legs and timers, and its agents' live state leave this
   node's memory without anything being sent, recorded or published (the SIP side forgets the dialogs the same
   way). The records stay as they are: the new owner re-owns them.
Only then is the lease released (the writer flushed first), and the target takes it in its next round.
"""

from __future__ import annotations

from callbridge.callcontrol.agents import AgentDesk
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.live import LiveState
from callbridge.callcontrol.records import LOGOUT, RINGING


class Handover:
    """Bound by the service as `handover`."""

    def __init__(self, state: LiveState, agents: AgentDesk, kernel: Kernel) -> None:
        self._state = state
        self._agents = agents
        self._k = kernel

    def unsettled(self, operation_id: str) -> list[str]:
        """The conn_ids of the operation's live calls that are not yet adoptable as they stand: not connected, or
        with a transfer or an API action in flight, or with an agent of the operation being rung for them."""
        state = self._state
        busy = {run.record.conn_id for run in state.transfers.values()}
        busy |= {action.conn_id for action in state.actions.values()}
        busy |= {rt.conn_id for rt in self._agents.of_operation(operation_id)
                 if rt.state == RINGING and rt.conn_id is not None}
        return sorted(conn_id for conn_id, call in state.calls.items() if call.operation_id == operation_id
                      and (call.state != "connected" or conn_id in busy))

    def forget(self, operation_id: str) -> tuple[list[str], list[str]]:
        """Drop the operation's live state from memory (see the module docstring, step 3); (the conn_ids of its
        calls, their leg ids, for the SIP side to forget). Nothing is recorded or published."""
        state = self._state
        legs: list[str] = []
        calls = sorted(c for c, call in state.calls.items() if call.operation_id == operation_id)
        for conn_id in calls:
            call = state.calls.pop(conn_id)
            self._k.disarm(f"queue:{conn_id}")
            for leg_id in call.legs:
                state.leg_calls.pop(leg_id, None)
                self._k.disarm(f"ring:{leg_id}")
                legs.append(leg_id)
        for tid in [t for t, run in state.transfers.items() if run.record.operation_id == operation_id]:
            del state.transfers[tid]
            self._k.disarm(f"transfer:{tid}")
        for action_id in [a for a, act in state.actions.items() if act.operation_id == operation_id]:
            del state.actions[action_id]
            self._k.disarm(f"action:{action_id}")
        for rid in [r for r, recall in state.recalls.items() if recall.operation_id == operation_id]:
            del state.recalls[rid]
            self._k.disarm(f"recall:{rid}")
        for rt in self._agents.of_operation(operation_id):
            self._k.disarm(self._agents.acw_key(rt))
            # logged out here without a record: the idle index drops it lazily, and the new owner holds its state
            rt.state, rt.reason, rt.registered = LOGOUT, "handed over", False
            rt.conn_id = rt.leg_id = None
        return calls, legs
