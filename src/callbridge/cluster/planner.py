"""Placement of operations on nodes, sans I/O: what one node should do with each lease in one round.

Every node runs the same planner on the same snapshot (the lease table and the live nodes, as read from
PostgreSQL in one transaction) and acts only on its own lines of the plan; the leases' compare-and-set statements
(`leases.py`) settle any race the snapshot did not see. The rules, as a table of cases (tests/cluster/
test_planner.py has one test per row):

| this node holds it? | the lease row says                       | this node...                              |
|---------------------|------------------------------------------|-------------------------------------------|
| yes, at epoch E     | this node, epoch E, live, no move        | RENEW (draining: RELEASE)                 |
| yes, at epoch E     | this node, epoch E, move_to a live node   | RELEASE (the handover's first half)       |
| yes, at epoch E     | another node, or another epoch, or expired| LOST: stop acting for it, re-sync         |
| no                  | a live node (this one in a past life: TAKE)| nothing: placement is sticky              |
| no                  | free (released, expired, never placed)   | TAKE if the placement picks this node     |

Placement of the free operations: in operation-id order, each goes to the handover target when the row names one
that is live and not draining, else to the least-loaded live node that is not draining (load: live leases it owns
plus what this round already placed on it), ties broken by node id. Every node computes the same placement, so
two nodes starting together split the operations instead of racing for each. Operations without a lease row are
free too (the first placement inserts the row).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    RENEW = "renew"
    RELEASE = "release"
    LOST = "lost"
    TAKE = "take"


@dataclass(frozen=True, slots=True)
class LeaseView:
    """The planner's view of one lease row."""

    node_id: str | None
    epoch: int
    expired: bool
    move_to: str | None = None


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: str
    draining: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    operation_id: str
    epoch: int | None  # the epoch held (RENEW, RELEASE, LOST); for TAKE the epoch held, if any (None)


def plan(me: str, *, draining: bool, operations: Iterable[str], leases: Mapping[str, LeaseView],
         live_nodes: Iterable[NodeView], held: Mapping[str, int]) -> list[Step]:
    """This node's steps for one round, in operation-id order. `held`: operation -> epoch this process holds."""
    nodes = {n.node_id: n for n in live_nodes}
    placeable = sorted(n.node_id for n in nodes.values() if not n.draining)
    load = {n: 0 for n in placeable}
    for row in leases.values():
        if row.node_id in load and not row.expired:
            load[row.node_id] += 1
    steps: list[Step] = []
    for op in sorted(set(operations) | set(held)):
        lease = leases.get(op)
        epoch = held.get(op)
        if epoch is not None:
            steps.extend(_held(me, op, epoch, lease, draining, nodes))
            continue
        if lease is not None and lease.node_id is not None and not lease.expired:
            if lease.node_id == me and not draining:
                steps.append(Step(Action.TAKE, op, None))  # this node's lease from a previous process: adopt
            continue
        target = _place(lease, nodes, load)
        if target is None:
            continue
        load[target] += 1
        if target == me and not draining:
            steps.append(Step(Action.TAKE, op, None))
    return steps


def _held(me: str, op: str, epoch: int, lease: LeaseView | None, draining: bool,
          nodes: Mapping[str, NodeView]) -> list[Step]:
    if lease is None or lease.node_id != me or lease.epoch != epoch or lease.expired:
        return [Step(Action.LOST, op, epoch)]
    target = nodes.get(lease.move_to) if lease.move_to and lease.move_to != me else None
    if draining or (target is not None and not target.draining):
        return [Step(Action.RELEASE, op, epoch)]
    return [Step(Action.RENEW, op, epoch)]


def _place(lease: LeaseView | None, nodes: Mapping[str, NodeView], load: dict[str, int]) -> str | None:
    if lease is not None and lease.move_to is not None:
        wanted = nodes.get(lease.move_to)
        if wanted is not None and not wanted.draining:
            return wanted.node_id
    if not load:
        return None
    return min(load, key=lambda n: (load[n], n))
