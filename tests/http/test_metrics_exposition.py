"""`/metrics` of the application, parsed strictly (`promtext`): types right (counters end in `_total`, live things
are gauges), the agentbox latency histogram per verb cumulative with its count equal to the requests made, and the
operations' gauges (agents per state, live calls, queue callers and longest wait) exactly what the service holds."""

from __future__ import annotations

import httpx
from http_world import OP, OTHER_OP, World, box
from promtext import histogram, parse

from callbridge.callcontrol.model import Queue


async def test_every_family_is_typed_and_counters_end_in_total(client: httpx.AsyncClient) -> None:
    families = parse((await client.get("/metrics")).text)
    kinds = {name: f.type for name, f in families.items()}
    for name, kind in kinds.items():
        assert (kind == "counter") == name.endswith("_total"), name
    assert kinds["callbridge_http_requests_in_flight"] == "gauge"
    assert kinds["callbridge_event_streams"] == "gauge"
    assert kinds["callbridge_agents"] == kinds["callbridge_calls"] == "gauge"
    assert kinds["callbridge_queue_callers"] == kinds["callbridge_queue_longest_wait_seconds"] == "gauge"
    assert kinds["callbridge_agentbox_request_duration_seconds"] == "histogram"
    assert families["callbridge_event_streams"].by("transport") == {("http",): 0, ("websocket",): 0}


async def test_the_agentbox_histogram_counts_each_request_by_verb(client: httpx.AsyncClient, world: World) -> None:
    world.login("1001")
    for status in ("2", "ready", "2"):
        assert (await box(client, "change_status", agent_id="1001", status=status)).status_code == 200
    for _ in range(2):
        assert (await box(client, "hang", agent_id="1001")).status_code == 409  # no call
    assert (await box(client, "fly", agent_id="1001")).status_code == 400
    assert (await client.post("/api/v2/agentbox.php", params={"api": "hang"})).status_code == 401
    families = parse((await client.get("/metrics")).text)
    seen = histogram(families["callbridge_agentbox_request_duration_seconds"], "api")
    assert {api: count for api, (_, _, count) in seen.items()} == {"change_status": 3, "hang": 2, "-": 2}
    requests = families["callbridge_agentbox_requests_total"].by("api")
    assert requests == {("change_status",): 3, ("hang",): 2, ("-",): 2}
    for api, (buckets, total, count) in seen.items():
        assert 0 < total < 5.0 * count, api  # seconds, each request well under the 60 s limit
        assert [le for le, _ in buckets][:3] == [0.001, 0.0025, 0.005]
        assert dict(buckets)[32.0] == count  # nothing took longer than the last finite bound
    assert families["callbridge_agentbox_responses_total"].by("status") == {("200",): 3, ("409",): 2, ("400",): 1,
                                                                            ("401",): 1}


async def test_agents_calls_and_queues_are_what_the_service_holds(client: httpx.AsyncClient, world: World) -> None:
    world.directory.queues[(OP, "vip")] = Queue(OP, "vip", max_wait_seconds=60.0)
    families = parse((await client.get("/metrics")).text)
    agents = families["callbridge_agents"].by("operation", "state")
    assert agents == {(op, state): (3 if (op, state) == (OP, "logout") else 1 if (op, state) == (OTHER_OP, "logout")
                                    else 0)
                      for op in (OP, OTHER_OP) for state in ("logout", "ready", "aux", "ringing", "on_call", "acw")}
    assert families["callbridge_calls"].by("operation") == {(OP,): 0, (OTHER_OP,): 0}
    assert families["callbridge_queue_callers"].by("operation", "queue") == {
        (OP, "sales"): 0, (OP, "vip"): 0, (OTHER_OP, "support"): 0}

    world.login("1001", "1002")
    await box(client, "change_status", agent_id="1002", status="2")  # aux "2": counted as aux
    world.connected_call("1001")
    world.service.on_inbound_call(OP, "5550100", "cust-waiting", "3001230000")  # nobody ready: it waits
    first = parse((await client.get("/metrics")).text)
    agents = first["callbridge_agents"].by("operation", "state")
    assert {k: v for k, v in agents.items() if k[0] == OP and v} == {(OP, "on_call"): 1, (OP, "aux"): 1,
                                                                     (OP, "logout"): 1}
    assert first["callbridge_calls"].by("operation") == {(OP,): 2, (OTHER_OP,): 0}
    assert first["callbridge_queue_callers"].by("operation", "queue") == {
        (OP, "sales"): 1, (OP, "vip"): 0, (OTHER_OP, "support"): 0}
    waited = first["callbridge_queue_longest_wait_seconds"].value(operation=OP, queue="sales")
    assert 0 <= waited < 5
    assert first["callbridge_queue_longest_wait_seconds"].value(operation=OP, queue="vip") == 0
    await box(client, "change_status", agent_id="1002", status="ready")  # takes the waiting caller (offered)
    then = parse((await client.get("/metrics")).text)
    assert then["callbridge_agents"].value(operation=OP, state="ringing") == 1
    assert then["callbridge_queue_callers"].value(operation=OP, queue="sales") == 1  # offered: still waiting
    assert then["callbridge_queue_longest_wait_seconds"].value(operation=OP, queue="sales") >= waited
    world.service.on_leg_answered(world.signalling.last_originate("1002").leg_id)
    answered = parse((await client.get("/metrics")).text)
    assert answered["callbridge_queue_callers"].value(operation=OP, queue="sales") == 0
    assert answered["callbridge_agents"].value(operation=OP, state="on_call") == 2
