"""Occupancy, the reads behind the agent, call and queue gauges: every operation, agent and queue counted, waits
measured with the domain's clock."""

from __future__ import annotations

from callcontrol_fakes import OP, OTHER_OP, World

from callbridge.callcontrol.occupancy import QueueWait


def test_every_agent_is_counted_in_its_state(world: World) -> None:
    assert world.service.agent_states() == {(OP, "logout"): 3, (OTHER_OP, "logout"): 1}
    world.login("1001", "1002")
    world.service.change_status(OP, "1002", "2")  # aux state "2"
    assert world.service.agent_states() == {(OP, "ready"): 1, (OP, "aux:2"): 1, (OP, "logout"): 1,
                                            (OTHER_OP, "logout"): 1}
    world.connected_call("1001")
    assert world.service.agent_states()[(OP, "on_call")] == 1
    assert (OP, "ready") not in world.service.agent_states()


def test_callers_waiting_and_the_longest_wait(world: World) -> None:
    empty = {(OP, "sales"): QueueWait(0, 0.0), (OP, "vip"): QueueWait(0, 0.0)}
    assert world.service.queue_waits() == empty
    assert world.service.live_calls() == {OP: 0, OTHER_OP: 0}
    world.inbound()  # nobody is ready: it waits in sales
    world.clock.t += 4.0
    world.inbound(number="3001234568")
    world.clock.t += 1.5
    assert world.service.queue_waits() == {(OP, "sales"): QueueWait(2, 5.5), (OP, "vip"): QueueWait(0, 0.0)}
    assert world.service.live_calls() == {OP: 2, OTHER_OP: 0}
    world.login("1001")  # takes the first caller (offered: still waiting until answered)
    world.service.on_leg_answered(world.offer_leg("1001"))
    assert world.service.queue_waits()[(OP, "sales")] == QueueWait(1, 1.5 + 1.0)  # login moved the clock 1 s
