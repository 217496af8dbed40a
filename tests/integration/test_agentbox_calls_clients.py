"""Clients written for Wolkvox, on a live node: PHP's cURL and a curl command line (POST with no body, both
headers) transfer a real call; and the tenant matrix with a second operation, where nothing crosses and no SIP
is sent."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from agentbox_world import OP, OTHER_OP, AgentboxNode, envelope, until

from callbridge.phone import CallEnded, IncomingCall

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

# Written the way Wolkvox's documentation shows its PHP example (CURLOPT_CUSTOMREQUEST POST, no body).
PHP_TRANSFER = r"""<?php
$curl = curl_init();
curl_setopt_array($curl, array(
  CURLOPT_URL => $argv[1] . '/api/v2/agentbox.php?api=transfer&agent_id=1001&customer_phone=' . $argv[3],
  CURLOPT_RETURNTRANSFER => true,
  CURLOPT_ENCODING => '',
  CURLOPT_MAXREDIRS => 10,
  CURLOPT_TIMEOUT => 0,
  CURLOPT_FOLLOWLOCATION => true,
  CURLOPT_HTTP_VERSION => CURL_HTTP_VERSION_1_1,
  CURLOPT_CUSTOMREQUEST => 'POST',
  CURLOPT_HTTPHEADER => array(
    'wolkvox_server: 0042',
    'wolkvox-token: ' . $argv[2]
  ),
));
$response = curl_exec($curl);
curl_close($curl);
echo $response;
"""


async def run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.parametrize("client", ["php", "curl"])
async def test_a_wolkvox_client_transfers_a_real_call(tmp_path: Path, client: str) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        target = await world.agent("1002", answer="auto")
        _customer, call, agent_call = await world.talking(agent)
        conn_id = world.conn_id()
        token = world.tokens[OP][0]
        if client == "php":
            php = shutil.which("php")
            assert php is not None, "php-cli is not installed (scripts/setup --test)"
            script = tmp_path / "transfer.php"
            script.write_text(PHP_TRANSFER)
            body = await run(php, str(script), world.http.url, token, "1002")
        else:
            curl = shutil.which("curl")
            assert curl is not None, "curl is not installed (scripts/setup --test)"
            body = await run(curl, "--silent", "--location", "--request", "POST",
                             f"{world.http.url}/api/v2/agentbox.php?api=transfer&agent_id=1001&customer_phone=1002",
                             "--header", "wolkvox_server: 0042", "--header", f"wolkvox-token: {token}")
        assert body == ('{"code":"200","error":null,"msg":"Call has been transfer to 1002 number",'
                        f'"data":{{"conn_id":"{conn_id}"}}}}')
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        await until(lambda: call.remote_sdp is not None and call.remote_sdp.media[0].port == target.rtp_port,
                    what="the customer with 1002")
        await call.hangup()
        await target.wait_for(CallEnded, call=target_call, timeout=5)


async def test_tenant_matrix_on_a_live_node(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        await world.agent("1002", answer="auto")
        customer, call, agent_call = await world.talking(agent)
        conn_id = world.conn_id()
        ours, theirs = world.tokens[OP][0], world.tokens[OTHER_OP][0]
        before = (world.node.runtime.metrics()["datagrams_out"], world.node.endpoint.transaction_count,
                  world.node.events.last_seq(OP))
        verbs = [("transfer", {"customer_phone": "1002"}), ("hang", {}), ("hold", {}), ("mute", {}),
                 ("dtmf", {"tones": "1"}), ("dial", {"customer_phone": "3105550199"}),
                 ("change_status", {"status": "logout"})]
        missing = await world.box("hang", token=ours, agent_id="9999")
        assert envelope(missing)[:4] == (404, "404", "NOT FOUND", "AGENT DOES NOT EXIST")
        for api, params in verbs:
            # the other operation's own extension: byte for byte a missing one
            foreign = await world.box(api, token=ours, agent_id="2001", **params)
            assert (foreign.status_code, foreign.content) == (404, missing.content), api
            # a wolkvox_server naming the other operation: 403 whether or not the agent exists
            for agent_id in ("1001", "2001", "9999"):
                wrong = await world.box(api, token=ours, server=OTHER_OP, agent_id=agent_id, **params)
                assert envelope(wrong)[:4] == (403, "403", "FORBIDDEN", "PLEASE VALIDATE TOKEN"), (api, agent_id)
            # the other operation's token on the same extension reaches its own 1001, who is logged out
            other = await world.box(api, token=theirs, server=OTHER_OP, agent_id="1001", **params)
            if api == "change_status":  # logging out a logged-out agent is allowed (no state change)
                assert envelope(other)[:4] == (200, "200", None, "Agent status has been changed to logout")
            else:
                assert envelope(other)[:4] == (409, "409", "CONFLICT", "AGENT IS NOT LOGGED IN"), api
            # the other operation's token without wolkvox_server: still its own agents only
            bare = await world.box(api, token=theirs, server=None, agent_id="1002", **params)
            assert (bare.status_code, bare.content) == (404, missing.content), api
        after = (world.node.runtime.metrics()["datagrams_out"], world.node.endpoint.transaction_count,
                 world.node.events.last_seq(OP))
        assert after == before  # no SIP sent, no event in operation 0042
        view = world.service.get_call(OP, conn_id)
        assert (view.state, view.held, view.muted, view.transfer_id) == ("connected", False, False, None)
        assert world.state("1001") == "on_call" and world.state("1002") == "ready"
        assert world.state("1001", OTHER_OP) == "logout"
        await call.hangup()
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        assert customer.calls == []
