"""`/metrics` of a real node (bootstrap: SQLite, SIP on loopback) while callbridge.phone peers register and a
customer's call waits in the queue and is answered: the SIP transaction histograms count the transactions that
happened (REGISTERs as the registrar counted them, one INVITE each way), the operation's gauges follow the call,
and every family is in docs/operations.md with its type."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
import pytest
from callnode import OP, agent_phone, customer_phone, did_uri, start_node, until

from callbridge.bootstrap import Node
from callbridge.phone import CallEnded, IncomingCall

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
from promtext import Family, histogram, parse

pytestmark = [pytest.mark.timeout(60)]
OPERATIONS_MD = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


async def scrape(node: Node) -> dict[str, Family]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app), base_url="http://node") as client:
        response = await client.get("/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


def counts(family: Family) -> dict[str, float]:
    return {method: count for method, (_, _, count) in histogram(family, "method").items()}


async def test_sip_histograms_and_operation_gauges_of_a_real_node(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    agent = await agent_phone(node, "1001", ready=False)
    customer = await customer_phone()
    try:
        registered = await scrape(node)
        registers = registered["callbridge_registrar_total"].value(outcome="registers")
        assert registers >= 2  # challenged, then accepted
        server = counts(registered["callbridge_sip_server_transaction_seconds"])
        assert server == {"REGISTER": registers}
        assert counts(registered["callbridge_sip_client_transaction_seconds"]) == {}
        assert registered["callbridge_agents"].by("operation", "state")[(OP, "logout")] == 3
        assert registered["callbridge_registrations"].value() == 1
        assert registered["callbridge_sip_tcp_connections"].value() == 0

        call = await customer.call(did_uri(node), wait_answer=False)
        await until(lambda: node.service.queue_waits()[(OP, "support")].waiting == 1, what="the caller waits")
        waiting = await scrape(node)
        assert waiting["callbridge_queue_callers"].value(operation=OP, queue="support") == 1
        assert waiting["callbridge_calls"].value(operation=OP) == 1
        assert 0 <= waiting["callbridge_queue_longest_wait_seconds"].value(operation=OP, queue="support") < 3

        node.service.change_status(OP, "1001", "ready")  # takes the waiting caller
        offered = await agent.wait_for(IncomingCall, timeout=5)
        await offered.call.answer()
        await call.wait_answered(5)
        await until(lambda: node.service.get_agent(OP, "1001").state == "on_call", what="on_call")
        talking = await scrape(node)
        assert talking["callbridge_queue_callers"].value(operation=OP, queue="support") == 0
        assert talking["callbridge_agents"].value(operation=OP, state="on_call") == 1
        assert counts(talking["callbridge_sip_client_transaction_seconds"]) == {"INVITE": 1}  # to the agent
        assert counts(talking["callbridge_sip_server_transaction_seconds"]) == {"REGISTER": registers, "INVITE": 1}

        await call.hangup()
        await agent.wait_for(CallEnded, call=offered.call, timeout=5)
        await until(lambda: node.live_legs == 0, what="legs released")
        ended = await scrape(node)
        assert ended["callbridge_calls"].value(operation=OP) == 0
        assert counts(ended["callbridge_sip_client_transaction_seconds"]) == {"INVITE": 1, "BYE": 1}  # to the agent
        assert counts(ended["callbridge_sip_server_transaction_seconds"]) == {"REGISTER": registers, "INVITE": 1,
                                                                            "BYE": 1}
        for _, (_, total, count) in histogram(ended["callbridge_sip_server_transaction_seconds"], "method").items():
            assert 0 <= total < 5 * count
    finally:
        await customer.close()
        await agent.close()
        await node.close()

    table = OPERATIONS_MD.read_text("utf-8")
    documented = dict(re.findall(r"^\| `(callbridge_[a-z0-9_]+)` \| (gauge|counter|histogram) \|", table,
                                 flags=re.MULTILINE))
    serve_only = {"callbridge_http_connections": "gauge"}  # registered by `callbridge serve` over uvicorn
    # registered only when --rtpengine names a relay (this node has none; bootstrap._media_metrics, _media_watch)
    relay_only = {"callbridge_media_relay_up": "gauge", "callbridge_media_ng_total": "counter",
                  "callbridge_media_watch_total": "counter", "callbridge_media_ng_outstanding": "gauge",
                  "callbridge_media_ng_queued": "gauge"}
    assert {name: family.type for name, family in ended.items()} | serve_only | relay_only == documented
