"""Occupancy: how many agents are in each state, how many calls are live and how long callers wait, per operation,
read from the live state for the node's gauges (`/metrics`).

Every operation of the directory is counted, every one of its agents (an agent never touched since start-up is
`logout`) and every one of its queues (an empty queue waits 0 callers for 0 s), so a gauge reads 0 rather than
vanishing. A caller waits from the moment the call entered its current queue (its last `queued` history entry) until
an agent answers: a call being offered still waits. Reads only; nothing here changes state.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from callbridge.callcontrol.agents import AgentDesk
from callbridge.callcontrol.calls import Call
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.live import LiveState
from callbridge.callcontrol.ports import Ports


@dataclass(frozen=True, slots=True)
class QueueWait:
    waiting: int  # callers in the queue, being offered or not
    longest_wait_s: float  # how long the first of them has waited; 0 when none waits


class Occupancy:
    def __init__(self, state: LiveState, ports: Ports, kernel: Kernel, agents: AgentDesk) -> None:
        self._state = state
        self._ports = ports
        self._k = kernel
        self._agents = agents

    def agent_states(self) -> dict[tuple[str, str], int]:
        """(operation id, domain state name) -> number of agents; aux states keep their `aux:<id>` name."""
        counts: Counter[tuple[str, str]] = Counter()
        for op in self._ports.directory.list_operations():
            for rt in self._agents.of_operation(op.id):
                counts[(op.id, rt.state)] += 1
        return dict(counts)

    def live_calls(self) -> dict[str, int]:
        """Operation id -> calls not ended yet (every operation of the directory, 0 included)."""
        counts = dict.fromkeys((op.id for op in self._ports.directory.list_operations()), 0)
        for call in self._state.calls.values():
            counts[call.operation_id] = counts.get(call.operation_id, 0) + 1
        return counts

    def queue_waits(self) -> dict[tuple[str, str], QueueWait]:
        """(operation id, queue name) -> its callers and the longest wait, now."""
        now = self._k.now()
        book, calls = self._state.book, self._state.calls
        out: dict[tuple[str, str], QueueWait] = {}
        for op in self._ports.directory.list_operations():
            for queue in self._ports.directory.list_queues(op.id):
                waiting = [calls[c] for c in book.waiting(op.id, queue.name) if c in calls]
                longest = max((now - _queued_at(call) for call in waiting), default=0.0)
                out[(op.id, queue.name)] = QueueWait(len(waiting), max(0.0, longest))
        return out


def _queued_at(call: Call) -> float:
    for entry in reversed(call.history):
        if entry.what == "queued":
            return entry.at
    return call.created_at
