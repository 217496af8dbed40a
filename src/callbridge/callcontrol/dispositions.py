"""A call's disposition (api=type, api=hang_type_ready): the activity codes an agent types after a call.

Rules (docs/agentbox-contract.md, "type" and "hang_type_ready")
- The codes are checked before anything else that could fail: each is a well-formed code (400 on `cod_act` or
  `cod_act_2`) and one of the operation's activity codes of its group (group 1 for `cod_act`, 2 for `cod_act_2`).
- `type` types the agent's last call not yet typed (NoCallToType otherwise); a disposition is stored, then
  published as `Dispositioned`, and the call is no longer the agent's untyped one.
- A verb that raises has changed nothing.
"""

from __future__ import annotations

from callbridge.callcontrol.agents import AgentDesk
from callbridge.callcontrol.commands import check_agent_id, check_code
from callbridge.callcontrol.errors import InvalidParameter, NoCallToType
from callbridge.callcontrol.events import Dispositioned
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.live import AgentRuntime
from callbridge.callcontrol.ports import Ports
from callbridge.callcontrol.records import Disposition


class Dispositions:
    def __init__(self, ports: Ports, kernel: Kernel, agents: AgentDesk) -> None:
        self._ports = ports
        self._k = kernel
        self._agents = agents

    def check_codes(self, operation_id: str, cod_act: str, cod_act_2: str | None) -> None:
        check_code(cod_act, "cod_act")
        if cod_act_2 is not None:
            check_code(cod_act_2, "cod_act_2")
        codes = self._ports.directory.list_activity_codes(operation_id)
        if not any(c.group == 1 and c.code == cod_act for c in codes):
            raise InvalidParameter("cod_act")
        if cod_act_2 is not None and not any(c.group == 2 and c.code == cod_act_2 for c in codes):
            raise InvalidParameter("cod_act_2")

    def type(self, operation_id: str, agent_id: str, cod_act: str, cod_act_2: str,
             comments: str = "") -> Disposition:
        """api=type: the disposition of the agent's last call not yet typed."""
        check_agent_id(agent_id)
        self.check_codes(operation_id, cod_act, cod_act_2)
        _, rt = self._agents.require_logged_in(operation_id, agent_id)
        if rt.untyped_conn_id is None:
            raise NoCallToType()
        return self.record(rt, rt.untyped_conn_id, cod_act, cod_act_2, comments)

    def record(self, rt: AgentRuntime, conn_id: str, cod_act: str, cod_act_2: str, comments: str) -> Disposition:
        disposition = Disposition(rt.operation_id, conn_id, rt.extension, cod_act, cod_act_2, comments, self._k.now())
        self._ports.records.save_disposition(disposition)
        if rt.untyped_conn_id == conn_id:
            rt.untyped_conn_id = None
        self._k.emit(Dispositioned(operation_id=rt.operation_id, agent=rt.extension, conn_id=conn_id,
                                   cod_act=cod_act, cod_act_2=cod_act_2))
        return disposition
