"""Queues and ACD: who gets the next call, and which call an agent who frees up gets.

Rules (issue [3/6] item 5):
- A queued call is offered to the *available* agent (registered, `ready`, not already ringing or talking) of its
  queue who has been idle longest. Idle time counts from the moment the agent last became ready, or last let an
  offer ring out: an agent who does not answer goes to the back of the line, so ring-no-answer moves to the next
  agent rather than back to the same one.
- An agent who becomes available is offered the call that has waited longest among its queues (an agent listed in
  no queue serves the operation's default queue).
- Nobody available: the call waits, up to the queue's `max_wait_seconds`, then it is rejected (the adapter answers
  480 with Retry-After). A call being offered when its wait runs out is rejected if that offer fails.
- An agent with several registered phones is one agent: forking to them is the adapter's business.

This module is pure: it orders; the service offers, rings and times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Candidate:
    """An available agent, as the selection sees it."""

    extension: str
    idle_since: float


def longest_idle(candidates: Iterable[Candidate]) -> Candidate | None:
    """The agent idle longest; ties go to the lowest extension, so the choice is deterministic."""
    best: Candidate | None = None
    for c in candidates:
        if best is None or (c.idle_since, c.extension) < (best.idle_since, best.extension):
            best = c
    return best


def serves(agent_queues: Iterable[str], default_queue: str | None, queue: str) -> bool:
    """Whether an agent in `agent_queues` takes calls of `queue` (no queues at all: the default queue)."""
    queues = tuple(agent_queues)
    if queues:
        return queue in queues
    return default_queue is not None and queue == default_queue


@dataclass(slots=True)
class _Waiting:
    conn_id: str
    order: int  # arrival order: FIFO across queues


@dataclass(slots=True)
class QueueBook:
    """The calls waiting, per (operation, queue), in arrival order. A call waits in at most one queue."""

    _queues: dict[tuple[str, str], list[_Waiting]] = field(default_factory=dict)
    _where: dict[str, tuple[str, str]] = field(default_factory=dict)
    _counter: int = 0

    def add(self, operation_id: str, queue: str, conn_id: str) -> None:
        if conn_id in self._where:
            raise ValueError(f"call {conn_id} is already waiting")
        self._counter += 1
        key = (operation_id, queue)
        self._queues.setdefault(key, []).append(_Waiting(conn_id, self._counter))
        self._where[conn_id] = key

    def remove(self, conn_id: str) -> bool:
        key = self._where.pop(conn_id, None)
        if key is None:
            return False
        waiting = self._queues[key]
        waiting[:] = [w for w in waiting if w.conn_id != conn_id]
        if not waiting:
            del self._queues[key]
        return True

    def __contains__(self, conn_id: object) -> bool:
        return conn_id in self._where

    def waiting(self, operation_id: str, queue: str) -> list[str]:
        return [w.conn_id for w in self._queues.get((operation_id, queue), [])]

    def oldest(self, operation_id: str, queues: Iterable[str], skip: frozenset[str] = frozenset()) -> str | None:
        """The longest-waiting call among `queues` of the operation, skipping `skip` (calls being offered)."""
        best: _Waiting | None = None
        for q in queues:
            first = next((w for w in self._queues.get((operation_id, q), []) if w.conn_id not in skip), None)
            if first is not None and (best is None or first.order < best.order):
                best = first
        return best.conn_id if best else None
