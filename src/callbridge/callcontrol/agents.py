"""The agent desk: agents' live state, moved only through the agent table (`states`), and the idle index kept with it.

Ordering rules that the tests pin down:
- an agent whose offer rang out is put back to `ready` with a fresh idle time and the call is re-dispatched before
  that agent is offered anything, so ring-no-answer moves to the next agent (`dispatch=False`, then the ACD);
- an agent freed by the end of a call is freed after the call's legs are released (`lifecycle.end_call`), so it is
  never offered the call that is ending.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from callbridge.callcontrol.calls import Call, Leg
from callbridge.callcontrol.directory import Agent, Operation
from callbridge.callcontrol.errors import AgentNotFound, AgentNotLoggedIn
from callbridge.callcontrol.events import AgentStateChanged
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.live import AgentRuntime, LiveState
from callbridge.callcontrol.ports import Ports
from callbridge.callcontrol.records import LOGOUT, ON_CALL, READY, RINGING, AgentStateChange
from callbridge.callcontrol.restart import AgentRestart
from callbridge.callcontrol.states import AgentAction, AgentInput, agent_transition, is_logged_in

if TYPE_CHECKING:
    from callbridge.callcontrol.acd import Acd


class AgentDesk:
    acd: Acd  # wired by the service: an agent that becomes available is offered a call

    def __init__(self, state: LiveState, ports: Ports, kernel: Kernel) -> None:
        self._ports = ports
        self._k = kernel
        self._agents = state.agents
        self._idle = state.idle

    def require_agent(self, operation_id: str, agent_id: str) -> tuple[Operation, AgentRuntime]:
        op = self._ports.directory.get_operation(operation_id)
        rt = self.find(operation_id, agent_id) if op is not None else None
        if op is None or rt is None:
            raise AgentNotFound()
        return op, rt

    def require_logged_in(self, operation_id: str, agent_id: str) -> tuple[Operation, AgentRuntime]:
        op, rt = self.require_agent(operation_id, agent_id)
        if not is_logged_in(rt.state):
            raise AgentNotLoggedIn()
        return op, rt

    def runtime(self, agent: Agent) -> AgentRuntime:
        key = (agent.operation_id, agent.extension)
        rt = self._agents.get(key)
        if rt is None:
            now = self._k.now()
            rt = self._agents[key] = AgentRuntime(agent, state_since=now, idle_since=now)
        elif rt.agent is not agent:
            queues_changed = rt.agent.queues != agent.queues
            rt.agent = agent  # the directory may have changed (queues, name)
            if queues_changed:
                self.index(rt)
        return rt

    def find(self, operation_id: str, extension: str) -> AgentRuntime | None:
        agent = self._ports.directory.get_agent(operation_id, extension)
        return None if agent is None else self.runtime(agent)

    def of_operation(self, operation_id: str) -> list[AgentRuntime]:
        return [self.runtime(a) for a in self._ports.directory.list_agents(operation_id)]

    @staticmethod
    def queues_of(rt: AgentRuntime, op: Operation) -> tuple[str, ...]:
        """The queues the agent serves: its own, else the operation's default queue."""
        return rt.agent.queues or ((op.default_queue,) if op.default_queue else ())

    def index(self, rt: AgentRuntime) -> None:
        """An agent that may have become available joins the idle index of its queues (routing.IdleAgents).

        Called wherever availability may begin: the state table's move to `ready`, a first registration, the end
        of its part in a call, a change of its queues. Entries of agents who stop being available are dropped
        lazily, when a dispatch meets them."""
        if not rt.available:
            return
        op = self._ports.directory.get_operation(rt.operation_id)
        if op is None:
            return
        for queue in self.queues_of(rt, op):
            self._idle.add(op.id, queue, rt.extension, rt.idle_since)

    def reindex(self) -> None:
        """Rebuild the idle index from the directory (after the directory was reloaded: queues may have moved)."""
        self._idle.clear()
        for op in self._ports.directory.list_operations():
            for rt in self.of_operation(op.id):
                self.index(rt)

    def restore(self, restarts: Iterable[AgentRestart]) -> None:
        """At start-up, before the restored registrations are reported: each agent in the state the restart rule
        gave it (`callcontrol.restart`). Nothing is recorded or published here: reconciliation wrote the rows and
        events of the changes in its own transaction. An agent the directory no longer has is skipped; a `ready`
        one joins the idle index once its registration is reported (`index`)."""
        for restart in restarts:
            rt = self.find(restart.operation_id, restart.extension)
            if rt is None or rt.conn_id is not None:
                continue
            rt.state, rt.state_since, rt.reason = restart.state, restart.since, restart.reason
            if restart.state == READY:
                rt.idle_since = restart.since

    def input(self, rt: AgentRuntime, event: AgentInput, reason: str, *, aux_id: str | None = None,
              dispatch: bool = True) -> None:
        """Apply the agent table's move for `event`, then its action (ACW timer, offer a waiting call)."""
        action, nxt = agent_transition(rt.state, event, aux_id)
        prev = rt.state
        now = self._k.now()
        if action in (AgentAction.END_ACW, AgentAction.END_ACW_AVAILABLE):
            self._k.disarm(self.acw_key(rt))
        if nxt != prev:
            rt.state, rt.state_since, rt.reason = nxt, now, reason
            if nxt == READY:
                rt.idle_since = now
                self.index(rt)
            self._ports.states.record_agent_state(
                AgentStateChange(rt.operation_id, rt.extension, nxt, reason, now, prev, rt.conn_id))
            self._k.emit(AgentStateChanged(operation_id=rt.operation_id, agent=rt.extension, state=nxt,
                                           previous=prev, reason=reason))
        if action is AgentAction.START_ACW:
            acw = self._k.operation(rt.operation_id).acw_seconds
            if acw <= 0:
                self.input(rt, AgentInput.ACW_TIMEOUT, "acw_end", dispatch=dispatch)
            else:
                self._k.arm(self.acw_key(rt), acw, lambda: self.input(rt, AgentInput.ACW_TIMEOUT, "acw_end"))
        elif action in (AgentAction.AVAILABLE, AgentAction.END_ACW_AVAILABLE) and dispatch:
            self.acd.agent_available(rt)

    @staticmethod
    def acw_key(rt: AgentRuntime) -> str:
        return f"acw:{rt.operation_id}:{rt.extension}"

    def answered(self, call: Call, leg: Leg) -> None:
        """The agent this leg rings answered: on_call, and one of the call's agents."""
        rt = self._agents.get((call.operation_id, leg.agent)) if leg.agent else None
        if rt is None or rt.leg_id != leg.leg_id or rt.state == ON_CALL:
            return
        self.input(rt, AgentInput.ANSWER, "answered")
        rt.untyped_conn_id = call.conn_id
        if rt.extension not in call.agents:
            call.agents.append(rt.extension)

    def leg_over(self, call: Call, leg: Leg | None, reason: str, *, to_ready: bool = False,
                 dispatch: bool = True) -> AgentRuntime | None:
        """The agent this leg drives is done with the call; returns it."""
        if leg is None or leg.agent is None:
            return None
        rt = self._agents.get((call.operation_id, leg.agent))
        if rt is None or rt.leg_id != leg.leg_id:
            return None
        rt.conn_id = rt.leg_id = None
        if rt.state == ON_CALL:
            rt.last_conn_id, rt.last_call_ended_at = call.conn_id, self._k.now()
            event = AgentInput.RELEASE_TO_READY if (to_ready or rt.ready_after_call) else AgentInput.CALL_END
            rt.ready_after_call = False
        elif rt.state == RINGING:
            event = AgentInput.NO_ANSWER
        elif rt.state == LOGOUT:
            event = AgentInput.CALL_END
        else:
            self.index(rt)  # e.g. ready while reserved for a transfer that did not happen
            return rt
        self.input(rt, event, reason, dispatch=dispatch)
        return rt
