"""Outbound trunk authentication and registration against a provider played by SIPp (custom scenarios in
scenarios/b2bua_provider_*.xml, credentials checked by SIPp's own `verifyauth`): an agent's call out through a
trunk whose provider answers 401 or 407 is sent again with the trunk's digest credentials and answered; a trunk that
registers to its provider retries after a failure, answers the 401, is registered, and refreshes its binding
before the granted expiry; /metrics shows the trunk's status throughout."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from callnode import DOMAIN, GATEWAY_HOST, OP, agent_phone, cdrs, operation_doc, start_node, until
from test_calls_nat import SendSpy

from callbridge.b2bua.trunks import TrunkRegistrationConfig
from callbridge.bootstrap import Node
from callbridge.phone import CallEnded
from peers.sipp import Sipp

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
TRUNK_KEY = f"{OP}/carrier"


def provider_doc(port: int, *, register: bool, password: str = "trunk-s3cret") -> dict[str, Any]:
    doc = operation_doc(gateway_port=port)
    doc["trunks"][0].update(username="trunkuser", password=password, register=register)
    return doc


async def metrics(node: Node) -> dict[str, float]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app), base_url="http://node") as client:
        text = (await client.get("/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("callbridge_trunk_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def provider(tmp_path: Path, scenario: str, **options: Any) -> Sipp:
    return Sipp(SCENARIOS / scenario, host=GATEWAY_HOST, calls=1, timeout=20, workdir=tmp_path / "provider",
                **options)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_is_right(header: str, method: str, password: str) -> bool:
    """RFC 7616 §3.4.1 with MD5 and qop=auth, computed here (not by callbridge's code) from the header's fields."""
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', header.split(" ", 1)[1]))
    ha1 = _md5(f"{fields['username']}:{fields['realm']}:{password}")
    ha2 = _md5(f"{method}:{fields['uri']}")
    expected = _md5(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:{fields['qop']}:{ha2}")
    return fields["response"] == expected


@pytest.mark.parametrize("challenge", [401, 407])
async def test_call_out_through_a_provider_that_challenges(tmp_path: Path, challenge: int) -> None:
    uas = provider(tmp_path, f"b2bua_provider_invite_{challenge}.xml", extra_args=["-trace_logs"]).start()
    node = await start_node(tmp_path, doc=provider_doc(uas.port, register=False))
    agent = await agent_phone(node, "1001")
    try:
        call = await agent.call(f"sip:3105551234@{DOMAIN}", dest=node.sip_address, timeout=10)
        await until(lambda: node.service.get_agent(OP, "1001").state == "on_call", what="on_call")
        await call.hangup()
        result = await uas.wait_async()
        assert result.returncode == 0, result.summary()
        assert (result.successful, result.failed) == (1, 0), result.summary()
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0, what="tables empty")
        assert (await metrics(node))['callbridge_trunk_auth_total{outcome="challenges_answered"}'] == 1
    finally:
        uas.stop()
        await agent.close()
        await node.close()
    if challenge == 407:  # SIPp's verifyauth reads only Authorization: the logged header is checked here
        assert uas.workdir is not None
        [log] = list(uas.workdir.glob("*_logs.log"))
        [header] = [line.split(" ", 1)[1] for line in log.read_text().splitlines()
                    if line.startswith("PROXY-AUTHORIZATION ")]
        assert 'username="trunkuser"' in header and 'realm="provider.test"' in header
        assert digest_is_right(header, "INVITE", "trunk-s3cret")
        assert not digest_is_right(header, "INVITE", "not-it")


async def test_wrong_trunk_credentials_fail_the_call_once(tmp_path: Path) -> None:
    """verifyauth refuses them: 403 is the call's answer and nothing is sent again (one answer per leg)."""
    uas = provider(tmp_path, "b2bua_provider_invite_401.xml").start()
    node = await start_node(tmp_path, doc=provider_doc(uas.port, register=False, password="not-it"))
    agent = await agent_phone(node, "1001")
    spy = SendSpy(node)
    try:
        call = await agent.call(f"sip:3105551234@{DOMAIN}", dest=node.sip_address, wait_answer=False)
        ended = await agent.wait_for(CallEnded, call=call, timeout=10)
        assert ended.reason == "rejected" and ended.status is not None and ended.status >= 400
        await uas.wait_async()
        await until(lambda: node.live_legs == 0, timeout=10, what="legs released")
        # challenged, sent again once with credentials, refused: no third INVITE
        assert spy.methods_to((GATEWAY_HOST, uas.port)) == ["INVITE", "ACK", "INVITE", "ACK"]
        assert (await metrics(node))['callbridge_trunk_auth_total{outcome="challenges_answered"}'] == 1
    finally:
        uas.stop()
        await agent.close()
        await node.close()
    [cdr] = cdrs(node)
    assert (cdr["sip_cause"], cdr["answered_at"]) == (403, None)  # the provider's refusal is the call's cause


async def test_trunk_registers_after_a_failure_answers_401_and_refreshes(tmp_path: Path) -> None:
    uas = provider(tmp_path, "b2bua_provider_register.xml").start()
    config = TrunkRegistrationConfig(expires=300, retry_seconds=0.5)
    node = await start_node(tmp_path, doc=provider_doc(uas.port, register=True), trunk_registration=config)
    registration = node.switch.trunk_registrations.by_trunk[(OP, "carrier")]
    try:
        # 503 first: failed, and /metrics says so
        await until(lambda: registration.last_status == 503, what="the first REGISTER refused")
        seen = await metrics(node)
        assert seen[f'callbridge_trunk_registered{{trunk="{TRUNK_KEY}"}}'] == 0
        # retried after 0.5 s: 401 answered, then granted 2 s
        await until(lambda: registration.registered, timeout=5, what="registered")
        seen = await metrics(node)
        assert seen[f'callbridge_trunk_registered{{trunk="{TRUNK_KEY}"}}'] == 1
        assert seen['callbridge_trunk_auth_total{outcome="failed"}'] == 1
        assert seen['callbridge_trunk_auth_total{outcome="challenges_answered"}'] == 1
        # refreshed before the 2 s run out (at half), with credentials on the same nonce; granted 60 s then
        result = await uas.wait_async()
        assert result.returncode == 0, result.summary()
        assert (result.successful, result.failed) == (1, 0), result.summary()
        await until(lambda: node.switch.trunk_registrations.stats["registered"] == 2, what="refreshed")
        assert registration.registered and registration.expires_at is not None
        assert registration.expires_at - node.switch.now() > 50
        assert registration.cseq == 4  # 503, 401, 200, refresh: one Call-ID, CSeq + 1 each (§10.2.4)
        seen = await metrics(node)
        assert seen[f'callbridge_trunk_registered{{trunk="{TRUNK_KEY}"}}'] == 1
    finally:
        uas.stop()
        await node.close()
    await asyncio.sleep(0)
