"""Fencing: every write a node makes carries the epochs of the leases it holds, and PostgreSQL refuses the stale.

How (the database's half is the trigger of migration 0010): at the start of each writer batch, in the batch's
transaction, the node declares itself with `set_config('callbridge.node', ...)` and the epochs it holds with
`set_config('callbridge.fence', '{"0042": 7, ...}')` (both local to the transaction). A trigger on every table of
an operation's live state (calls, legs, dialogs, transfers, CDRs, dispositions, recalls, registrations, agent
states, events) looks the operation's lease up FOR SHARE and raises SQLSTATE `CBF01` unless the row names this
node, the declared epoch and an unexpired lease. So:
- a node whose lease was taken over (it was paused past its lease, its network was cut) cannot write a row of
  that operation after the takeover: the new owner's take bumped the epoch, and the trigger sees it;
- a takeover waits for a batch already holding the lease row FOR SHARE: a write lands before the takeover or not
  at all, never after it;
- the writer's batch fails, its writes are retried one by one and each refused one is counted and dropped
  (`Writer`'s rules); `Fence.refused` tells the cluster member, which stops acting for the operation at once and
  re-reads the leases (`member.py`).
The epochs a batch declares are those held when the batch starts: an operation dropped meanwhile is refused.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from sqlalchemy import Connection, text

FENCE_SQLSTATE = "CBF01"

_DECLARE = text("SELECT set_config('callbridge.node', :node, true), set_config('callbridge.fence', :fence, true)")


class Fence:
    """The epochs this node holds, read by the writer thread at each batch; changed by the cluster member."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._epochs: dict[str, int] = {}
        self._lock = threading.Lock()
        self.on_refused: Callable[[], None] | None = None  # called on the writer thread after a refused write
        self.refusals = 0

    def hold(self, operation_id: str, epoch: int) -> None:
        with self._lock:
            self._epochs[operation_id] = epoch

    def drop(self, operation_id: str) -> None:
        with self._lock:
            self._epochs.pop(operation_id, None)

    def epochs(self) -> dict[str, int]:
        with self._lock:
            return dict(self._epochs)

    def declare(self, conn: Connection) -> None:
        """Run first in a batch's transaction: this node and its epochs, for the fencing trigger."""
        conn.execute(_DECLARE, {"node": self.node_id, "fence": json.dumps(self.epochs(), sort_keys=True)})

    def refused(self, exc: BaseException) -> bool:
        """Whether a failed write was refused by the fence; if so, count it and tell the member."""
        if not is_fence_refusal(exc):
            return False
        self.refusals += 1
        if self.on_refused is not None:
            self.on_refused()
        return True


def is_fence_refusal(exc: BaseException) -> bool:
    """True when `exc` (a SQLAlchemy error or the driver's) is the fencing trigger's refusal."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) == FENCE_SQLSTATE:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False
