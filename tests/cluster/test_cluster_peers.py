"""The cluster with the SIP world's own peers (issue #15): a carrier's customer played by SIPp and an agent's
softphone played by baresip, both through Kamailio, and a node killed under their call.

Two `serve --cluster` nodes (127.0.0.11-12) on one PostgreSQL, Kamailio (127.0.0.10) in front, its tables kept in
step by a `kamailio-sync` loop. baresip (agent 1001) registers through Kamailio (its outbound proxy: Kamailio adds
Path, the owner keeps it); agent 1002 is `callbridge.phone`, registered the same way. SIPp calls the DID through
Kamailio from the trunk's network (the proxy) and follows Kamailio's Record-Route, or (the second run) ignores it
and sends its ACK and BYE to Kamailio with the answering node's Contact as Request-URI and no Route: Kamailio then
finds the operation by the DID in To. baresip answers by itself, then:

- `kill -9` of node a: node b takes the operation over and adopts the call; neither SIPp nor baresip sees it end;
- `api=transfer` of 1001 to 1002, sent to node b: SIPp is held while 1002 rings (a=sendonly), 1002 answers, SIPp
  is re-offered 1002's media (a=sendrecv), and baresip gets b's BYE through Kamailio (its dialog's route set) and
  closes its call;
- `api=hold` of 1002, sent to node b: SIPp gets b's re-INVITE with a=sendonly (its scenario checks it), answers
  recvonly, then hangs up: its BYE goes through Kamailio to b, which ends 1002's leg;
- the records: one CDR by node b naming both agents, one transfer, hung up by the customer; baresip's
  registration now lives on node b and 1001 is still logged in.

Every process is started by the test and stopped by its PID; all traffic is on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import httpx
import pytest

CLUSTER = Path(__file__).resolve().parent
if str(CLUSTER) not in sys.path:
    sys.path.insert(0, str(CLUSTER))

from cluster_nodes import Serve, loaded_database  # noqa: E402
from cluster_world import AGENTBOX, DID, DOMAIN, LEASE, NODE_A, NODE_B, OP, World, operation_doc, until  # noqa: E402
from kamailio_proxy import Proxy  # noqa: E402

from callbridge.phone import CallEnded, IncomingCall  # noqa: E402
from peers.baresip import Baresip  # noqa: E402
from peers.sipp import Sipp  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.peers]

PROXY, CUSTOMER_HOST, AGENT_2_HOST = "127.0.0.10", "127.0.0.13", "127.0.0.15"
SCENARIO = CLUSTER / "scenarios" / "customer_kept_held_bye.xml"


async def box(client: httpx.AsyncClient, token: str, name: str, **params: str) -> dict[str, object]:
    answer = await client.post(AGENTBOX, params={"api": name, **params},
                               headers={"wolkvox-token": token, "wolkvox_server": OP})
    assert answer.status_code == 200, answer.text
    body = dict(answer.json())
    assert str(body.get("code")) == "200", body
    return body


def scenario(tmp_path: Path, route_set: bool) -> Path:
    """The customer's scenario; without `route_set`, a copy that ignores Kamailio's Record-Route (no route set, no
    Route header: its ACK and BYE name the answering node's Contact and are still sent to Kamailio, SIPp's remote)
    as some carriers' equipment does against RFC 3261 §12.1.2."""
    if route_set:
        return SCENARIO
    answered = '<recv response="200" rtd="true" rrs="true"/>'
    # the remote target from the 2xx's Contact, by hand: SIPp fills [next_url] only with rrs
    target = ('<recv response="200" rtd="true"><action><ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:"'
              ' check_it="true" assign_to="target"/></action></recv>')
    text = SCENARIO.read_text()
    assert text.count(answered) == 1 and text.count("[next_url]") == 2
    text = text.replace(answered, target).replace("[next_url]", "[$target]").replace("[routes]\n", "")
    assert "rrs=\"true\"" not in text.split("-->", 1)[1] and "\n[routes]" not in text
    copy = tmp_path / "customer_without_route_set.xml"
    copy.write_text(text)
    return copy


@pytest.mark.timeout(120)
@pytest.mark.parametrize("route_set", [True, False], ids=["route-set", "ignores-record-route"])
async def test_a_sipp_customer_and_a_baresip_agent_through_kamailio_keep_their_call_across_a_kill_9(
        postgres_url: str, tmp_path: Path, route_set: bool) -> None:
    doc = operation_doc(["1001", "1002"], trunk_network=f"{PROXY}/32")
    with loaded_database(postgres_url, doc) as (url, [token]):
        world = World(url, token, tmp_path)
        proxy: Proxy | None = None
        syncing: asyncio.Task[None] | None = None
        softphone: Baresip | None = None
        customer: Sipp | None = None
        try:
            nodes = {}
            for name, host in (("a", NODE_A), ("b", NODE_B)):
                serve = Serve(name, host, url, tmp_path, lease_seconds=LEASE)
                world.nodes.append(serve)
                serve.wait_ready()
                nodes[name] = serve
            a, b = nodes["a"], nodes["b"]
            proxy = Proxy(PROXY, tmp_path)
            proxy.start()
            await proxy.synced(world.engine)

            syncing = proxy.keep_synced(world.engine)
            await until(lambda: world.owner() == "a", "node a holding the operation")

            account = (f"<sip:1001@{DOMAIN}>;auth_pass=secret-1001;outbound=\"sip:{proxy.host}:{proxy.port}\""
                       ";regint=300;answermode=auto")
            softphone = Baresip(user="1001", accounts=[account], workdir=tmp_path / "baresip-1001")
            await softphone.start()
            await until(lambda: world.rows("SELECT node_id FROM registrations WHERE extension = '1001'")
                        == [("a",)], "baresip registered through Kamailio on node a")
            target = await world.agent("1002", proxy.address, host=AGENT_2_HOST)
            async with httpx.AsyncClient(base_url=a.http, timeout=10, trust_env=False) as client:
                await box(client, token, "change_status", agent_id="1001", status="ready")

            customer = Sipp(scenario(tmp_path, route_set), remote=proxy.address, host=CUSTOMER_HOST, service=DID,
                            calls=1, timeout=90, extra_args=["-trace_msg"], workdir=tmp_path / "sipp-customer").start()
            await softphone.wait_event("CALL_ESTABLISHED", timeout=15)
            await until(lambda: world.rows("SELECT count(*) FROM dialogs") == [(2,)], "both dialogs written")
            [(conn_id,)] = world.rows("SELECT conn_id FROM calls WHERE ended_at IS NULL")

            a.kill()
            await until(lambda: f"took operation {OP} over from a: 1 calls adopted, 0 ended" in b.output(),
                        "node b adopting the call", timeout=4 * LEASE + 10)
            await until(lambda: world.rows(f"SELECT node_id FROM calls WHERE conn_id = '{conn_id}'") == [("b",)],
                        "the call re-owned by node b", timeout=5)
            assert not [e for e in softphone.all_events if e.get("type") == "CALL_CLOSED"]

            # one connection per request: a keep-alive connection idle across the phases may be closed under it
            async with httpx.AsyncClient(base_url=b.http, timeout=10, trust_env=False,
                                         limits=httpx.Limits(max_keepalive_connections=0)) as client:
                await box(client, token, "change_status", agent_id="1002", status="ready")
                await box(client, token, "transfer", agent_id="1001", customer_phone="1002")
                offered = await target.wait_for(IncomingCall, timeout=15)
                await offered.call.wait_answered(15)
                closed = await softphone.wait_event("CALL_CLOSED", timeout=15)
                assert closed.get("type") == "CALL_CLOSED"
                await until(lambda: world.rows(f"SELECT transfer_count FROM calls WHERE conn_id = '{conn_id}'")
                            == [(1,)], "the transfer recorded")
                await box(client, token, "hold", agent_id="1002")
                ended = await target.wait_for(CallEnded, call=offered.call, timeout=15)
                assert (ended.reason, ended.by) == ("bye", "remote")
            result = await customer.wait_async()
            assert result.returncode == 0, result.summary()
            assert (result.successful, result.failed) == (1, 0), result.summary()

            await until(lambda: world.rows("SELECT count(*) FROM cdrs") == [(1,)], "the CDR")
            [(hangup_by, node, transfers, agents)] = world.rows(
                "SELECT hangup_by, node_id, transfer_count, agents FROM cdrs")
            assert (hangup_by, node, transfers, list(agents)) == ("customer", "b", 1, ["1001", "1002"])
            # baresip stayed logged in: its registration (with Kamailio's Path) was restored on node b
            assert world.rows("SELECT extension, node_id FROM registrations ORDER BY extension") == [
                ("1001", "b"), ("1002", "b")]
            [(state,)] = world.rows("SELECT state FROM agent_state_history WHERE extension = '1001' "
                                    "ORDER BY id DESC LIMIT 1")
            assert state != "logout"
        finally:
            if customer is not None:
                customer.stop()
            if softphone is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(softphone.aclose(), 10)
            if syncing is not None:
                syncing.cancel()
            await world.close()
            if proxy is not None:
                proxy.stop()
