"""What a restart does to an agent's state: the rule start-up reconciliation applies (docs/operations.md, "Restart
semantics"; docs/design.md, "Storage").

Live state is in memory, so a node that stops (kill -9, power loss, or a SIGTERM drain) forgets its agents; the
records keep each agent's last state and its phone's registration. At start-up, for every agent whose last state
recorded by this node is not `logout`:

| last state                | phone's registration at start-up | state after the restart | reason                 |
|---------------------------|----------------------------------|-------------------------|------------------------|
| `ready`, `aux:<id>`       | still valid                      | the same (no change)    | none: no event         |
| `ringing`, `on_call`, `acw` | still valid                    | `ready`                 | `restart`              |
| anything                  | expired (or none)                | `logout`                | `registration expired` |

Why these:
- A registered phone is an agent at their desk: a restart of the server is not theirs to notice, so an agent who
  was `ready` or taking a break (`aux`) is still so, with the time they entered it.
- A call the agent was on (or being rung for) was ended by reconciliation (BYE on every leg left from before), and
  after-call work's timer died with the process. When a call ends the product moves the agent on to `ready` (after
  ACW, whose length the operation bounds): the restart took the call, so the agent is `ready` at once, with reason
  `restart`. Going back to the state before the call (an `aux` the agent dialled from, say) would need a state the
  records do not keep, and the product after a call always lands on `ready` anyway.
- A phone whose registration ran out while the node was down cannot be reached: the agent cannot take calls, so it
  is logged out, as a registration lost while running does (`states`, REGISTRATION_LOST), with reason
  `registration expired`.

Each agent whose state changes gets a state row and an `agent.state_changed` event with the reason, both in
reconciliation's own transaction; an unchanged agent gets neither (storage/reconcile.py, bootstrap `_reconcile`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from callbridge.callcontrol.records import AUX_PREFIX, LOGOUT, READY

RESTART: Final = "restart"
REGISTRATION_EXPIRED: Final = "registration expired"


def state_after_restart(state: str, registered: bool) -> tuple[str, str | None]:
    """(state after a restart, reason), the reason None when the state is kept (see the module's table)."""
    if state == LOGOUT:
        return LOGOUT, None
    if not registered:
        return LOGOUT, REGISTRATION_EXPIRED
    if state == READY or state.startswith(AUX_PREFIX):
        return state, None
    return READY, RESTART


@dataclass(frozen=True, slots=True)
class AgentRestart:
    """One logged-in agent's passage through a restart: its last recorded state and what it comes back in.

    `since` is when the agent entered `state`: the recorded time for a kept state (an agent ready before keeps its
    idle time, so the longest idle is still offered first), the restart's time for a changed one. `reason` is the
    restart's reason for a change, else the reason recorded with the kept state."""

    operation_id: str
    extension: str
    previous: str
    state: str
    reason: str
    since: float
    changed: bool

    @classmethod
    def of(cls, operation_id: str, extension: str, previous: str, previous_reason: str, entered_at: float,
           registered: bool, now: float) -> AgentRestart:
        state, reason = state_after_restart(previous, registered)
        if reason is None:
            return cls(operation_id, extension, previous, state, previous_reason, entered_at, False)
        return cls(operation_id, extension, previous, state, reason, now, True)
