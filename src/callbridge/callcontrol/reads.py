"""Reads: agents, calls and transfers as the native API and the agentbox see them, from the live state.

Views are snapshots (`commands.AgentView`, `CallView`); transfer records are immutable. An ended call, a finished
transfer stays readable for a while (the last 1000 of each).
"""

from __future__ import annotations

from callbridge.callcontrol.agents import AgentDesk
from callbridge.callcontrol.commands import AgentView, CallFacts, CallView
from callbridge.callcontrol.errors import AgentNotFound, CallNotFound, TransferNotFound
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.live import AgentRuntime, LiveState
from callbridge.callcontrol.records import TransferRecord


class Reads:
    def __init__(self, state: LiveState, kernel: Kernel, agents: AgentDesk) -> None:
        self._k = kernel
        self._agents = agents
        self._calls = state.calls
        self._ended_calls = state.ended_calls
        self._transfers = state.transfers
        self._finished_transfers = state.finished_transfers

    def get_transfer(self, operation_id: str, transfer_id: str) -> TransferRecord:
        run = self._transfers.get(transfer_id)
        record = run.record if run is not None else self._finished_transfers.get(transfer_id)
        if record is None or record.operation_id != operation_id:
            raise TransferNotFound()
        return record

    def list_agents(self, operation_id: str) -> list[AgentView]:
        return [self._agent_view(rt) for rt in self._agents.of_operation(operation_id)]

    def get_agent(self, operation_id: str, extension: str) -> AgentView:
        return self._agent_view(self._agents.require_agent(operation_id, extension)[1])

    @staticmethod
    def _agent_view(rt: AgentRuntime) -> AgentView:
        return AgentView(rt.operation_id, rt.extension, rt.agent.name, rt.state, rt.state_since, rt.reason,
                         rt.registered, rt.available, rt.conn_id, rt.agent.queues, tuple(sorted(rt.display.items())))

    def list_calls(self, operation_id: str) -> list[CallView]:
        return [CallView.of(c) for c in self._k.live_calls(operation_id)]

    def get_call(self, operation_id: str, conn_id: str) -> CallView:
        call = self._calls.get(conn_id) or self._ended_calls.get(conn_id)
        if call is None or call.operation_id != operation_id:
            raise CallNotFound()
        return CallView.of(call)

    # --- what the event log's wire data reads, per event: one field, not a whole view ------------------------

    def agent_registered(self, operation_id: str, extension: str) -> bool | None:
        """`get_agent(...).registered`, or None where get_agent raises AgentNotFound."""
        try:
            return self._agents.require_agent(operation_id, extension)[1].registered
        except AgentNotFound:
            return None

    def call_facts(self, operation_id: str, conn_id: str) -> CallFacts | None:
        """The fields of `get_call(...)` in CallFacts, or None where get_call raises CallNotFound."""
        call = self._calls.get(conn_id) or self._ended_calls.get(conn_id)
        if call is None or call.operation_id != operation_id:
            return None
        return CallFacts(call.direction, call.queue, call.agent, call.created_at, call.ended_at)
