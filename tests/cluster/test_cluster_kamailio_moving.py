"""New calls through Kamailio while their operation changes hands (docs/cluster.md, "Kamailio"): the old owner
refuses them `503 Operation Moving` with `Retry-After`. Kamailio does not pass a node's 503 on (tm would make it a
500, RFC 3261 §16.7, which a carrier takes for a failure): when its owners table still names the refusing node it
answers `503 Operation Moving` itself, with the node's Retry-After; when the table names the new owner by the time
the refusal comes back, it sends the request there once, and the call goes through.

Two `callbridge serve --cluster` nodes, a real Kamailio synced by the test (so the test decides when its table
changes), agent 1001 as a `callbridge.phone` registered to node a, and the carrier as a raw UDP socket (to read
the final response's status line and headers) or a `callbridge.phone`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

CLUSTER = Path(__file__).resolve().parent
if str(CLUSTER) not in sys.path:
    sys.path.insert(0, str(CLUSTER))

from cluster_nodes import Serve, loaded_database  # noqa: E402
from cluster_world import DID, LEASE, NODE_A, NODE_B, OP, World, operation_doc, until  # noqa: E402
from kamailio_proxy import Proxy  # noqa: E402

from callbridge.cluster import kamailio, leases  # noqa: E402
from callbridge.phone import Established, IncomingCall, Phone  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

PROXY, CARRIER, LATE = "127.0.0.10", "127.0.0.13", "127.0.0.16"


@pytest.fixture
async def world(postgres_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    # the carrier's calls arrive from the proxy: it is the trunk's inbound network
    with loaded_database(postgres_url, operation_doc(["1001"], trunk_network=f"{PROXY}/32")) as (url, [token]):
        made = World(url, token, tmp_path)
        try:
            yield made
        finally:
            await made.close()


def _invite(proxy: Proxy, timeout: float = 8.0) -> tuple[str, dict[str, str]]:
    """A carrier's INVITE to the DID through the proxy from a raw UDP socket; the final response's status line and
    headers (lower-cased names). The ACK of a non-2xx goes back to the proxy (RFC 3261 §17.1.1.3)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((LATE, 0))
        sock.settimeout(timeout)
        port = sock.getsockname()[1]
        branch, call_id, tag = f"z9hG4bK{uuid.uuid4().hex[:12]}", uuid.uuid4().hex, uuid.uuid4().hex[:8]
        sdp = (f"v=0\r\no=- 1 1 IN IP4 {LATE}\r\ns=-\r\nc=IN IP4 {LATE}\r\nt=0 0\r\n"
               f"m=audio {port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        uri = f"sip:{DID}@{PROXY}:{proxy.port}"
        common = (f"Via: SIP/2.0/UDP {LATE}:{port};branch={branch};rport\r\nMax-Forwards: 70\r\n"
                  f"From: <sip:3105550009@{LATE}>;tag={tag}\r\n")
        invite = (f"INVITE {uri} SIP/2.0\r\n{common}To: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
                  f"Contact: <sip:3105550009@{LATE}:{port}>\r\nContent-Type: application/sdp\r\n"
                  f"Content-Length: {len(sdp)}\r\n\r\n{sdp}")
        sock.sendto(invite.encode(), proxy.address)
        while True:
            data = sock.recv(65535).decode()
            head = data.split("\r\n\r\n", 1)[0].split("\r\n")
            status = head[0]
            if int(status.split()[1]) >= 200:
                break
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        ack = (f"ACK {uri} SIP/2.0\r\n{common}To: {headers['to']}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n"
               f"Content-Length: 0\r\n\r\n")
        sock.sendto(ack.encode(), proxy.address)
        return status, headers
    finally:
        sock.close()


async def test_a_new_call_in_a_handovers_gap_gets_503_with_retry_after_from_kamailio_or_reaches_the_new_owner(
        world: World, tmp_path: Path) -> None:
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    proxy = Proxy(PROXY, tmp_path)
    proxy.start()
    try:
        await proxy.synced(world.engine)
        rpc = (PROXY, proxy.rpc_port)
        slots = dict(world.rows("SELECT node_id, slot FROM cluster_nodes"))
        agent = await world.agent("1001", a)
        agent.answer_mode = "manual"
        async with world.api(a) as api:
            await api.change_status("1001", "ready")
        # a call ringing on a holds the handover back (a keeps the lease until it connects)
        customer = await Phone.start(host=CARRIER, user="3105550000", name="customer")
        world.phones["customer"] = customer
        call = await customer.call(f"sip:{DID}@{PROXY}:{proxy.port}", wait_answer=False)
        offered = await agent.wait_for(IncomingCall, timeout=10)
        with world.engine.begin() as conn:
            assert leases.request_move(conn, OP, "b")
        await until(lambda: f"handing operation {OP} over: no new calls for it here" in a.output(),
                    "the handover begun", timeout=2 * LEASE)

        # 1. the table names a, which refuses: Kamailio's own 503, with a's Retry-After and reason, not a 500
        status, headers = await asyncio.to_thread(_invite, proxy)
        assert status == "SIP/2.0 503 Operation Moving"
        assert headers["retry-after"] == "2"
        assert headers["server"] == "callbridge-kamailio"
        assert world.owner() == "a"
        log = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("kamailio-*.log"))
        assert f"refused 503 by set {slots['a']}, answered 503 here" in log

        # the ringing call connects on a, then the operation goes over to b; Kamailio's table still names a
        await offered.call.answer()
        await call.wait_answered(5)
        await until(lambda: world.owner() == "b", "node b holding the operation", timeout=4 * LEASE)
        await until(lambda: "took operation 0042 over" in b.output(), "the takeover done", timeout=5)
        assert kamailio._dumped(kamailio.rpc(rpc, "htable.dump", "owners"))[f"n:{DID}"] == slots["a"]

        # 2. the request reaches a (paused, so that its refusal comes back after the next sync), a refuses it, and
        #    Kamailio sends it once to b, which the table names by then: the call goes through to the agent
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            late = await Phone.start(host=LATE, user="3105550001", name="late-customer")
            world.phones["late"] = late
            second = await late.call(f"sip:{DID}@{PROXY}:{proxy.port}", wait_answer=False)
            await asyncio.sleep(0.3)  # the INVITE is at a's socket
            await proxy.synced(world.engine)
            assert kamailio._dumped(kamailio.rpc(rpc, "htable.dump", "owners"))[f"n:{DID}"] == slots["b"]
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        await call.hangup()
        rung = await agent.wait_for(IncomingCall, timeout=10)
        await rung.call.answer()
        await late.wait_for(Established, call=second, timeout=10)
        log = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("kamailio-*.log"))
        assert f"refused 503 by set {slots['a']}, tried again at set {slots['b']}" in log
        await until(lambda: ("b",) in world.rows("SELECT node_id FROM calls WHERE ended_at IS NULL"),
                    "the late call written by b")
        await second.hangup()
    finally:
        with contextlib.suppress(Exception):
            proxy.stop()


def _destination_flags(rpc: tuple[str, int], uri: str) -> str:
    """The dispatcher's flags for the destination `uri` ("AP": active and probed, "IP": inactive and probed; ""
    when the list does not hold it), found wherever `dispatcher.list` nests it."""
    def walk(node: object) -> str | None:
        if isinstance(node, dict):
            if node.get("URI") == uri and "FLAGS" in node:
                return str(node["FLAGS"])
            children: list[object] = list(node.values())
        elif isinstance(node, list):
            children = list(node)
        else:
            return None
        return next((found for child in children if (found := walk(child)) is not None), None)
    return walk(kamailio.rpc(rpc, "dispatcher.list")) or ""


async def test_a_node_that_stops_answering_options_gets_no_calls_until_it_answers_again(
        world: World, tmp_path: Path) -> None:
    """Kamailio probes each node with OPTIONS every second (dispatcher, ds_probing_mode 1): a node that stops
    answering (SIGSTOP: alive for the kernel, deaf for SIP) is marked inactive, and a call for its operation gets
    Kamailio's own `503 Operation's Node Unavailable` at once instead of waiting on a node that will not answer;
    once the node answers OPTIONS again (SIGCONT), calls reach it. Its lease is long here, so that the operation
    stays its own throughout: what is tested is the proxy's probing, not a failover."""
    a = Serve("a", NODE_A, world.url, tmp_path, lease_seconds=30)
    world.nodes.append(a)
    a.wait_ready()
    proxy = Proxy(PROXY, tmp_path)
    proxy.start()
    try:
        await proxy.synced(world.engine)
        rpc = (PROXY, proxy.rpc_port)
        target = f"sip:{NODE_A}:{a.port}"
        await until(lambda: _destination_flags(rpc, target).startswith("A"), "node a probed active")
        await world.agent("1001", proxy.address)
        async with world.api(a) as api:
            await api.change_status("1001", "ready")
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            # an OPTIONS probe times out after tm's fr_timer (5 s) with a ping every second
            await until(lambda: _destination_flags(rpc, target).startswith("I"), "node a marked inactive",
                        timeout=10)
            began = time.monotonic()
            status, headers = await asyncio.to_thread(_invite, proxy)
            assert status == "SIP/2.0 503 Operation's Node Unavailable"
            assert headers["server"] == "callbridge-kamailio"
            assert time.monotonic() - began < 1.0  # refused at once, not after a relay's time-out
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        await until(lambda: _destination_flags(rpc, target).startswith("A"), "node a active again", timeout=10)
        customer = await Phone.start(host=CARRIER, user="3105550000", name="customer")
        world.phones["customer"] = customer
        call = await customer.call(f"sip:{DID}@{PROXY}:{proxy.port}", timeout=10)
        await until(lambda: world.rows("SELECT node_id FROM calls WHERE ended_at IS NULL") == [("a",)],
                    "the call written by node a")
        await call.hangup()
        assert world.owner() == "a"
    finally:
        with contextlib.suppress(Exception):
            proxy.stop()
