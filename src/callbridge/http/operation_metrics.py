"""The operations' gauges on `/metrics`: agents per state, live calls, and each queue's callers and longest wait,
per operation, read from call control's occupancy (`callcontrol/occupancy.py`) at scrape time.

    callbridge_agents{operation="0042",state="ready"} 3
    callbridge_calls{operation="0042"} 2
    callbridge_queue_callers{operation="0042",queue="support"} 1
    callbridge_queue_longest_wait_seconds{operation="0042",queue="support"} 12.5

Agent states are the API's (`logout`, `ready`, `aux`, `ringing`, `on_call`, `acw`: every auxiliary state counts as
`aux`, so the label's values stay few), each one present for every operation, 0 included.
"""

from __future__ import annotations

from typing import Protocol

from callbridge.callcontrol.occupancy import QueueWait
from callbridge.http.metrics import MetricsRegistry
from callbridge.http.resources import agent_state

AGENT_STATES = ("logout", "ready", "aux", "ringing", "on_call", "acw")


class OccupancyReads(Protocol):
    def agent_states(self) -> dict[tuple[str, str], int]: ...

    def live_calls(self) -> dict[str, int]: ...

    def queue_waits(self) -> dict[tuple[str, str], QueueWait]: ...


def agents_by_state(reads: OccupancyReads) -> dict[tuple[str, str], int]:
    counts = {(op, state): 0 for op in reads.live_calls() for state in AGENT_STATES}
    for (op, state), n in reads.agent_states().items():
        key = (op, agent_state(state)[0])
        counts[key] = counts.get(key, 0) + n
    return counts


def register_operation_metrics(registry: MetricsRegistry, reads: OccupancyReads) -> None:
    registry.gauge("callbridge_agents", "agents per operation and state", lambda: agents_by_state(reads),
                   labels=("operation", "state"))
    registry.gauge("callbridge_calls", "live calls per operation", reads.live_calls, label="operation")
    registry.gauge("callbridge_queue_callers", "callers waiting in each queue (being offered or not)",
                   lambda: {key: wait.waiting for key, wait in reads.queue_waits().items()},
                   labels=("operation", "queue"))
    registry.gauge("callbridge_queue_longest_wait_seconds", "how long the first caller of each queue has waited",
                   lambda: {key: round(wait.longest_wait_s, 3) for key, wait in reads.queue_waits().items()},
                   labels=("operation", "queue"))
