"""The tenant matrix of the agentbox API, for every verb, on a live node with real calls up in both operations.

Two operations (agentbox_world): A = `0042` (agents 1001-1003, a trunk) and B = `0077` (agents 1001 and 2001).
A trunk call is up on A's 1002; B's 1001 is talking to B's 2001 (an agent-to-agent call). For each of the twelve
verbs, with parameters well formed so that nothing but the agent decides the answer:
- a token of A naming 2001 (an agent of B only) answers byte for byte as a token of A naming 9999 (nobody's):
  404 AGENT DOES NOT EXIST; a token of B naming 1002 (A's agent, on a call) as one of B naming 9999 (the same 404,
  except where B's own configuration answers first for both: B has no activity codes, so `type` and
  `hang_type_ready` answer 400 for the code);
- a token of A with `wolkvox_server: 0077` answers 403 PLEASE VALIDATE TOKEN, byte for byte the same whether the
  extension is B's only (2001), in both (1001), A's only (1002) or nobody's (9999);
- and none of it sends any SIP: `callbridge_transport_total{counter="datagrams_out"}` on /metrics is unchanged
  over the whole matrix, and both calls are still up afterwards.
"Byte for byte": the status, every header but uvicorn's `date` (its clock), and the body.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))  # agentbox_world, callnode

from agentbox_world import OP, OTHER_DOMAIN, OTHER_OP, AgentboxNode, until

from callbridge.http import contract
from callbridge.phone import IncomingCall, Phone

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

# Well-formed parameters for each verb (contract.VERBS' required ones), so that only the agent decides.
PARAMS: dict[str, dict[str, str]] = {
    "transfer": {"customer_phone": "3105551234"},
    "dial": {"customer_phone": "3105551234"},
    "hang": {},
    "hold": {},
    "mute": {},
    "change_status": {"status": "ready"},
    "type": {"cod_act": "SALE", "cod_act_2": "NEW"},
    "hang_type_ready": {"cod_act": "SALE"},
    "dtmf": {"tones": "123"},
    "aux_call": {"customer_phone": "3105551234"},
    "agent_display": {"display": "show", "button": "dial"},
    "recall": {"customer_phone": "3105551234", "date": "20991231120000", "type_recall": "auto"},
}


def wire(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((k.lower(), v) for k, v in response.headers.items() if k.lower() != "date")
    return response.status_code, headers, response.content


async def datagrams_out(world: AgentboxNode) -> int:
    text = (await world.client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith('callbridge_transport_total{counter="datagrams_out"} '):
            return int(float(line.split()[1]))
    raise AssertionError(text)


async def other_agent(world: AgentboxNode, extension: str) -> Phone:
    phone = await Phone.start(host="127.0.0.1", user=extension, domain=OTHER_DOMAIN, password=f"other-{extension}",
                              name=f"other-{extension}", answer="auto")
    world.phones.append(phone)
    await phone.register(world.node.sip_address, expires=300)
    await until(lambda: world.service.get_agent(OTHER_OP, extension).registered, what=f"{extension} registered")
    world.service.change_status(OTHER_OP, extension, "ready")
    return phone


def test_params_cover_every_verb() -> None:
    assert set(PARAMS) == set(contract.VERBS)
    for verb, params in PARAMS.items():
        assert set(contract.VERBS[verb].required) == {"agent_id", *params}


async def test_tenant_matrix_on_live_calls(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent_a = await world.agent("1002", answer="auto")
        await world.talking(agent_a, "1002")
        caller_b, callee_b = await other_agent(world, "1001"), await other_agent(world, "2001")
        await caller_b.call(f"sip:2001@{OTHER_DOMAIN}", dest=world.node.sip_address, timeout=5)
        await callee_b.wait_for(IncomingCall, timeout=5)
        await until(lambda: world.state("1001", OTHER_OP) == "on_call" and world.state("2001", OTHER_OP) == "on_call",
                    what="B's call up")
        legs = world.node.live_legs
        assert legs == 4
        await asyncio.sleep(1.0)  # every 2xx ACKed: nothing left that retransmits on its own
        token_a, token_b = world.tokens[OP][0], world.tokens[OTHER_OP][0]
        sent_before = await datagrams_out(world)

        for verb, params in PARAMS.items():
            missing = wire(await world.box(verb, token=token_a, server=OP, agent_id="9999", **params))
            status, _, body = missing
            assert status == 404 and b'"AGENT DOES NOT EXIST"' in body, (verb, body)
            foreign = wire(await world.box(verb, token=token_a, server=OP, agent_id="2001", **params))
            assert foreign == missing, verb
            # B has no activity codes: its `type` answers 400 for the code, before any agent, for both alike
            missing_b = wire(await world.box(verb, token=token_b, server=OTHER_OP, agent_id="9999", **params))
            assert missing_b == missing or verb in ("type", "hang_type_ready"), (verb, missing_b)
            foreign_b = wire(await world.box(verb, token=token_b, server=OTHER_OP, agent_id="1002", **params))
            assert foreign_b == missing_b, verb

            refused = [wire(await world.box(verb, token=token_a, server=OTHER_OP, agent_id=ext, **params))
                       for ext in ("2001", "1001", "1002", "9999")]
            status, _, body = refused[0]
            assert status == 403 and b'"PLEASE VALIDATE TOKEN"' in body, (verb, body)
            assert all(r == refused[0] for r in refused), verb

        assert await datagrams_out(world) == sent_before
        assert world.node.live_legs == legs
        assert world.state("1002") == "on_call"
        assert (world.state("1001", OTHER_OP), world.state("2001", OTHER_OP)) == ("on_call", "on_call")
