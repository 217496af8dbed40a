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

Costs: with thousands of agents and calls, each routing decision is O(log n) — `IdleAgents` keeps the available
agents of each queue ordered by idle time, `QueueBook` the waiting calls in arrival order — never a scan of the
operation's agents or calls.

This module is pure: it orders; `acd` offers, rings and times.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass


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


class QueueBook:
    """The calls waiting, per (operation, queue), in arrival order. A call waits in at most one queue.

    Each queue is an insertion-ordered dict (conn_id -> arrival number), so adding and removing a call are O(1)
    and the oldest call of a queue is its first entry not skipped.
    """

    __slots__ = ("_counter", "_queues", "_where")

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], dict[str, int]] = {}
        self._where: dict[str, tuple[str, str]] = {}
        self._counter = 0

    def add(self, operation_id: str, queue: str, conn_id: str) -> None:
        if conn_id in self._where:
            raise ValueError(f"call {conn_id} is already waiting")
        self._counter += 1
        key = (operation_id, queue)
        waiting = self._queues.get(key)
        if waiting is None:
            waiting = self._queues[key] = {}
        waiting[conn_id] = self._counter
        self._where[conn_id] = key

    def remove(self, conn_id: str) -> bool:
        key = self._where.pop(conn_id, None)
        if key is None:
            return False
        waiting = self._queues[key]
        del waiting[conn_id]
        if not waiting:
            del self._queues[key]
        return True

    def __contains__(self, conn_id: object) -> bool:
        return conn_id in self._where

    def waiting(self, operation_id: str, queue: str) -> list[str]:
        return list(self._queues.get((operation_id, queue), ()))

    def oldest(self, operation_id: str, queues: Iterable[str], skip: Container[str] = frozenset()) -> str | None:
        """The longest-waiting call among `queues` of the operation, skipping `skip` (calls being offered)."""
        best: tuple[int, str] | None = None
        for q in queues:
            for conn_id, order in self._queues.get((operation_id, q), {}).items():
                if conn_id not in skip:
                    if best is None or order < best[0]:
                        best = (order, conn_id)
                    break
        return best[1] if best else None


class IdleAgents:
    """The agents who may take a call, per (operation, queue), longest idle first: O(log n) to add and to take.

    A heap of (idle_since, extension) per queue with lazy deletion: an agent is added each time it may have become
    available (ready, registered, its call over) and is never removed when it stops being available; `take` pops
    entries until one passes the caller's check of the agent as it is now. An agent's newest entry per queue is
    remembered (`_entered`), so adding it again with the same idle time adds nothing, an older entry of an agent
    is skipped when it surfaces, and a heap grown with such entries is rebuilt from the newest ones. Ties of
    idle time go to the lowest extension, as `longest_idle` decides.
    """

    __slots__ = ("_entered", "_heaps")

    def __init__(self) -> None:
        self._heaps: dict[tuple[str, str], list[tuple[float, str]]] = {}
        self._entered: dict[tuple[str, str], dict[str, float]] = {}

    def add(self, operation_id: str, queue: str, extension: str, idle_since: float) -> None:
        key = (operation_id, queue)
        entered = self._entered.get(key)
        if entered is None:
            entered = self._entered[key] = {}
            self._heaps[key] = []
        if entered.get(extension) == idle_since:
            return
        entered[extension] = idle_since
        heap = self._heaps[key]
        heapq.heappush(heap, (idle_since, extension))
        if len(heap) > 2 * len(entered) + 64:  # mostly superseded entries: keep the newest of each agent
            heap[:] = sorted((since, ext) for ext, since in entered.items())  # a sorted list is a heap

    def take(self, operation_id: str, queue: str, available: Callable[[str, float], bool]) -> str | None:
        """Pop the longest-idle agent of the queue for which `available(extension, idle_since)` holds."""
        key = (operation_id, queue)
        heap = self._heaps.get(key)
        if not heap:
            return None
        entered = self._entered[key]
        while heap:
            since, extension = heapq.heappop(heap)
            if entered.get(extension) != since:
                continue  # superseded by a newer entry of the same agent
            del entered[extension]
            if available(extension, since):
                return extension
        return None

    def clear(self) -> None:
        self._heaps.clear()
        self._entered.clear()

    def __len__(self) -> int:
        """Entries that may still be taken (an agent counted once per queue)."""
        return sum(len(e) for e in self._entered.values())
