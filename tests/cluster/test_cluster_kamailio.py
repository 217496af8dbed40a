"""Kamailio in front of two `callbridge serve --cluster` processes on one PostgreSQL: the rendered configuration is
accepted by Debian's Kamailio, and a real Kamailio with it sends an agent's REGISTER and a carrier's INVITE to the
node holding the operation's lease, then, after `move` hands the operation over, to the other node."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, text

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from callbridge.cluster import kamailio, leases  # noqa: E402
from callbridge.cluster.handover import SETTLE_SECONDS  # noqa: E402
from callbridge.phone import Phone  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402
from callbridge.storage.loader import load_into_fresh_database  # noqa: E402
from peers import require_binary, stop_process_group  # noqa: E402
from peers.ports import free_port  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

PROXY, NODE_A, NODE_B, CUSTOMER = "127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13"
DOMAIN, DID = "a.test", "6015550100"
_SCRIPT = Path(sys.executable).parent / "callbridge"
CALLBRIDGE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "callbridge"]


def operation_doc() -> dict[str, object]:
    return {
        "operation": {"id": "0042", "sip_domain": DOMAIN, "acw_seconds": 0, "default_queue": "support"},
        "queues": [{"name": "support", "max_wait_seconds": 20}],
        "agents": [{"extension": "1001", "password": "secret-1001", "queues": ["support"]}],
        # the carrier's calls arrive from the proxy: it is the trunk's inbound network
        "trunks": [{"name": "carrier", "host": "127.0.0.3", "inbound_networks": [f"{PROXY}/32"]}],
        "dids": [{"number": DID, "queue": "support", "trunk": "carrier"}],
    }


@pytest.fixture
def loaded_url(postgres_url: str) -> Iterator[str]:
    name = f"k_{uuid.uuid4().hex[:16]}"
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    load_into_fresh_database(url, operation_doc())
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def render(workdir: Path, port: int, rpc_port: int) -> Path:
    config = workdir / "kamailio.cfg"
    config.write_text(kamailio.render_config(kamailio.ProxySettings(
        host=PROXY, port=port, tables=str(workdir), rpc_host=PROXY, rpc_port=rpc_port, ping_interval=1,
        children=2)))
    (workdir / "dispatcher.list").write_text("")
    return config


def test_kamailio_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    binary = require_binary("kamailio", "kamailio")
    config = render(tmp_path, 5060, 5090)
    check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr[-3000:]
    for module in ("path", "dispatcher", "htable", "jsonrpcs", "rr", "tm"):
        assert f'loadmodule "{module}.so"' in config.read_text()
    # every module the file loads exists in Debian's package (kamailio -c fails on a missing one; say which)
    assert "ERROR" not in check.stderr, check.stderr[-3000:]


async def test_a_sync_reloads_the_list_kamailio_has_not_loaded_even_when_the_file_already_holds_it(
        loaded_url: str, tmp_path: Path) -> None:
    """The list file can hold the rendered list while Kamailio runs an older one: a reload refused ("Ongoing
    reload" within reload_delta) or sent before Kamailio's RPC was up, after the file was written. A sync
    compares with what Kamailio has loaded (`dispatcher.list`), not with the file, and reloads: a sync that trusted
    the file left every set missing, and every REGISTER got 503 "Operation's Node Unavailable"."""
    binary = require_binary("kamailio", "kamailio")
    port, rpc_port = free_port(PROXY), free_port(PROXY, tcp=False)
    config = render(tmp_path, port, rpc_port)
    engine = make_engine(loaded_url)
    rpc = (PROXY, rpc_port)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO cluster_nodes (node_id, slot, sip_host, sip_port, incarnation, started_at, "
                          f"heartbeat_at) VALUES ('a', 1, '{NODE_A}', 5070, 'x', now(), now())"))
    proxy = _start_kamailio(binary, config, tmp_path)

    def loaded() -> set[tuple[int, str]]:
        with contextlib.suppress(kamailio.RpcError, OSError):
            return kamailio._loaded(rpc)
        return {(-1, "no answer")}

    def synced() -> bool:
        return _synced(engine, tmp_path, rpc)
    try:
        await _until(lambda: loaded() == set(), "Kamailio's JSON-RPC")  # started on the empty list
        with engine.connect() as conn:  # the list written, its reload lost
            (tmp_path / "dispatcher.list").write_text(kamailio.render_tables(conn).dispatcher)
        await _until(synced, "a sync")
        assert loaded() == {(1, f"sip:{NODE_A}:5070")}
        # a second node joins right after the reload: refused within reload_delta, a later sync reloads it
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO cluster_nodes (node_id, slot, sip_host, sip_port, incarnation, "
                              f"started_at, heartbeat_at) VALUES ('b', 2, '{NODE_B}', 5072, 'y', now(), now())"))
        await _until(lambda: synced() and loaded() == {(1, f"sip:{NODE_A}:5070"), (2, f"sip:{NODE_B}:5072")},
                     "node b's set loaded", timeout=5)
    finally:
        stop_process_group(proxy, 5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proxy.pid, signal.SIGKILL)
        engine.dispose()


class Serve:
    def __init__(self, node: str, host: str, url: str, workdir: Path) -> None:
        self.node, self.host = node, host
        self.port = free_port(host)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
        self.log = workdir / f"serve-{node}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*CALLBRIDGE, "serve", "--cluster", "--node-id", node, "--sip-host", host, "--sip-port",
                 str(self.port), "--http-host", host, "--http-port", str(free_port(host, udp=False)),
                 "--database-url", url, "--lease-seconds", "3", "--drain-seconds", "0"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while "callbridge serving SIP on" not in self.output():
            assert self.proc.poll() is None, f"serve {self.node} exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"serve {self.node} not ready:\n{self.output()}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                stop_process_group(self.proc, 5)


def _start_kamailio(binary: str, config: Path, workdir: Path) -> subprocess.Popen[bytes]:
    """Kamailio in the foreground with `config`, logging to workdir/kamailio.log, in a process group of its own."""
    with open(workdir / "kamailio.log", "wb") as log:
        return subprocess.Popen([binary, "-f", str(config), "-DD", "-E", "-m", "64", "-x", "tlsf", "-Y", str(workdir)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                                start_new_session=True)


def _synced(engine: Engine, tables: Path, rpc: tuple[str, int]) -> bool:
    """One `sync_once`; False while Kamailio's JSON-RPC (or the database) does not answer yet."""
    with contextlib.suppress(kamailio.RpcError, OSError), engine.connect() as conn:
        kamailio.sync_once(conn, tables, rpc)
        return True
    return False


def _owner(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return next((lease.node_id for lease in leases.read_all(conn) if lease.operation_id == "0042"), None)


def _rows(engine: Engine, query: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(query))]


async def _until(condition, what: str, timeout: float = 15) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_kamailio_routes_an_operations_register_and_invite_to_its_owner_then_after_a_move(
        loaded_url: str, tmp_path: Path) -> None:
    binary = require_binary("kamailio", "kamailio")
    port, rpc_port = free_port(PROXY), free_port(PROXY, tcp=False)
    config = render(tmp_path, port, rpc_port)
    engine = make_engine(loaded_url)
    a = Serve("a", NODE_A, loaded_url, tmp_path)
    b: Serve | None = None
    proxy: subprocess.Popen[bytes] | None = None
    phones: list[Phone] = []
    try:
        a.wait_ready()
        assert _owner(engine) == "a"  # alone, a took the operation at start-up
        b = Serve("b", NODE_B, loaded_url, tmp_path)
        b.wait_ready()
        proxy = _start_kamailio(binary, config, tmp_path)
        rpc = (PROXY, rpc_port)

        def synced() -> bool:
            return _synced(engine, tmp_path, rpc)
        await _until(synced, "Kamailio's JSON-RPC and the first sync")
        with engine.connect() as conn:
            slots = {r[0]: r[1] for r in conn.execute(text("SELECT node_id, slot FROM cluster_nodes"))}
        assert kamailio._dumped(kamailio.rpc(rpc, "htable.dump", "owners")) == {
            f"d:{DOMAIN}": slots["a"], f"n:{DID}": slots["a"]}

        agent = await Phone.start(host="127.0.0.14", user="1001", domain=DOMAIN, password="secret-1001",
                                  name="agent-1001")
        customer = await Phone.start(host=CUSTOMER, user="3001234567", domain=CUSTOMER, name="customer")
        phones += [agent, customer]

        for owner in ("a", "b"):
            await agent.register((PROXY, port), expires=300, timeout=10)
            await _until(lambda node=owner: _rows(engine, "SELECT node_id FROM registrations") == [(node,)],
                         f"the registration written by node {owner}")
            await customer.call(f"sip:{DID}@{PROXY}:{port}", wait_answer=False)
            await _until(lambda node=owner: (node,) in _rows(engine, "SELECT node_id FROM calls"),
                         f"the call written by node {owner}")
            if owner == "a":
                with engine.begin() as conn:
                    assert leases.request_move(conn, "0042", "b")
                # the call still rings (nobody answers): a waits for it to settle for SETTLE_SECONDS, then ends it
                # and hands the operation over (cluster.handover)
                await _until(lambda: _owner(engine) == "b", "the handover to b", timeout=SETTLE_SECONDS + 6)
                assert "handed operation 0042 over: 0 calls left to the new owner, 1 ended (unsettled)" in a.output()
                await _until(lambda: _rows(engine, "SELECT state, hangup_by FROM calls WHERE node_id = 'a'")
                             == [("ended", "system")], "the queued call ended by a before it let go")
                with engine.connect() as conn:
                    assert kamailio.sync_once(conn, tmp_path, rpc) is True
                assert kamailio._dumped(kamailio.rpc(rpc, "htable.dump", "owners")) == {
                    f"d:{DOMAIN}": slots["b"], f"n:{DID}": slots["b"]}
        kamailio_log = (tmp_path / "kamailio.log").read_text(errors="replace")
        assert f"callbridge: REGISTER sip:{DOMAIN} to set {slots['a']} at sip:{NODE_A}:{a.port}" in kamailio_log
        assert f"callbridge: REGISTER sip:{DOMAIN} to set {slots['b']} at sip:{NODE_B}:{b.port}" in kamailio_log
        for slot, node in ((slots["a"], a), (slots["b"], b)):
            assert f"callbridge: INVITE sip:{DID}@{PROXY}:{port} to set {slot} at sip:{node.host}:{node.port}" \
                in kamailio_log
    finally:
        for phone in phones:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(phone.close(), 5)
        if proxy is not None:
            stop_process_group(proxy, 5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proxy.pid, signal.SIGKILL)
        for serve in (a, b):
            if serve is not None:
                serve.stop()
        engine.dispose()


async def test_an_agent_registered_through_kamailio_is_called_through_it_and_the_call_ends_through_it(
        postgres_url: str, tmp_path: Path) -> None:
    """The node sends an agent's calls to where its REGISTER came from (the proxy), without a Route: Kamailio
    relays such a request of a node to its Request-URI (the agent's Contact) instead of routing it back to the
    operation's owner, and record-routes it, so the agent's answer and both BYEs pass through it too."""
    import httpx
    from cluster_nodes import Serve as Node
    from cluster_nodes import loaded_database

    from callbridge.phone import CallEnded, IncomingCall

    binary = require_binary("kamailio", "kamailio")
    port, rpc_port = free_port(PROXY), free_port(PROXY, tcp=False)
    config = render(tmp_path, port, rpc_port)
    doc = {**operation_doc(), "tokens": [{"label": "tests"}]}
    phones: list[Phone] = []
    proxy: subprocess.Popen[bytes] | None = None
    with loaded_database(postgres_url, doc) as (url, [token]):
        engine = make_engine(url)
        node = Node("a", NODE_A, url, tmp_path)
        try:
            node.wait_ready()
            proxy = _start_kamailio(binary, config, tmp_path)

            def synced() -> bool:
                return _synced(engine, tmp_path, (PROXY, rpc_port))
            await _until(synced, "Kamailio's JSON-RPC and the first sync")
            agent = await Phone.start(host="127.0.0.14", user="1001", domain=DOMAIN, password="secret-1001",
                                      name="agent-1001", answer="auto")
            customer = await Phone.start(host=CUSTOMER, user="3001234567", domain=CUSTOMER, name="customer")
            phones += [agent, customer]
            await agent.register((PROXY, port), expires=300, timeout=10)
            async with httpx.AsyncClient(base_url=node.http, timeout=10, trust_env=False) as client:
                ready = await client.post("/api/v2/agentbox.php", params={
                    "api": "change_status", "agent_id": "1001", "status": "ready"},
                    headers={"wolkvox-token": token, "wolkvox_server": "0042"})
            assert ready.status_code == 200, ready.text
            call = await customer.call(f"sip:{DID}@{PROXY}:{port}", timeout=10)
            offered = await agent.wait_for(IncomingCall, timeout=5)
            vias = offered.request.headers.get_all("Via")
            assert f"{PROXY}:{port}" in vias[0] and NODE_A in vias[1]  # the node's INVITE, through the proxy
            assert any(h.startswith(f"<sip:{PROXY}:{port}") for h in offered.request.headers.get_all("Record-Route"))
            await call.hangup()
            ended = await agent.wait_for(CallEnded, call=offered.call, timeout=5)
            assert (ended.reason, ended.by) == ("bye", "remote")
            await _until(lambda: _rows(engine, "SELECT hangup_by FROM cdrs") == [("customer",)], "the CDR")
        finally:
            for phone in phones:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.close(), 5)
            if proxy is not None:
                stop_process_group(proxy, 5)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proxy.pid, signal.SIGKILL)
            node.stop()
            engine.dispose()


@pytest.mark.parametrize("how", ["move", "kill"])
async def test_a_partys_bye_after_a_handover_or_a_failover_reaches_the_new_owner_through_kamailio(
        postgres_url: str, tmp_path: Path, how: str) -> None:
    """A call set up through Kamailio on node a; the operation goes to node b (`move`, or `kill -9` of a); b adopts
    the call. A party's BYE follows Kamailio's Record-Route with a's Contact as Request-URI: Kamailio sends it to
    the operation's owner now, b, which ends the call: the other party gets b's BYE, the CDR is b's. After a move
    the customer hangs up; after a failover the agent does."""
    import httpx
    from cluster_nodes import Serve as Node
    from cluster_nodes import loaded_database

    from callbridge.phone import CallEnded, IncomingCall

    binary = require_binary("kamailio", "kamailio")
    port, rpc_port = free_port(PROXY), free_port(PROXY, tcp=False)
    config = render(tmp_path, port, rpc_port)
    doc = {**operation_doc(), "tokens": [{"label": "tests"}]}
    phones: list[Phone] = []
    proxy: subprocess.Popen[bytes] | None = None
    nodes: list[Node] = []
    with loaded_database(postgres_url, doc) as (url, [token]):
        engine = make_engine(url)
        rpc = (PROXY, rpc_port)

        def synced() -> bool:
            return _synced(engine, tmp_path, rpc)
        try:
            a = Node("a", NODE_A, url, tmp_path)
            nodes.append(a)
            a.wait_ready()
            b = Node("b", NODE_B, url, tmp_path)
            nodes.append(b)
            b.wait_ready()
            assert _owner(engine) == "a"
            proxy = _start_kamailio(binary, config, tmp_path)
            await _until(synced, "Kamailio's JSON-RPC and the first sync")
            agent = await Phone.start(host="127.0.0.14", user="1001", domain=DOMAIN, password="secret-1001",
                                      name="agent-1001", answer="auto")
            customer = await Phone.start(host=CUSTOMER, user="3001234567", domain=CUSTOMER, name="customer")
            phones += [agent, customer]
            await agent.register((PROXY, port), expires=300, timeout=10)
            async with httpx.AsyncClient(base_url=a.http, timeout=10, trust_env=False) as client:
                ready = await client.post("/api/v2/agentbox.php", params={
                    "api": "change_status", "agent_id": "1001", "status": "ready"},
                    headers={"wolkvox-token": token, "wolkvox_server": "0042"})
            assert ready.status_code == 200, ready.text
            call = await customer.call(f"sip:{DID}@{PROXY}:{port}", timeout=10)
            offered = await agent.wait_for(IncomingCall, timeout=5)
            await _until(lambda: _rows(engine, "SELECT count(*) FROM dialogs") == [(2,)], "both dialogs written")

            if how == "move":
                with engine.begin() as conn:
                    assert leases.request_move(conn, "0042", "b")
            else:
                os.killpg(a.proc.pid, signal.SIGKILL)
                a.proc.wait(5)
            await _until(lambda: "took operation 0042 over from a: 1 calls adopted, 0 ended" in b.output(),
                         "node b adopting the call", timeout=12)
            await _until(lambda: synced() and kamailio._dumped(kamailio.rpc(rpc, "htable.dump", "owners")).get(
                f"n:{DID}") == _slot(engine, "b"), "Kamailio pointing the operation at node b")
            assert call.ended is False and offered.call.ended is False
            other, other_call = (agent, offered.call) if how == "move" else (customer, call)
            await (call if how == "move" else offered.call).hangup()
            ended = await other.wait_for(CallEnded, call=other_call, timeout=5)
            assert (ended.reason, ended.by) == ("bye", "remote")
            by = "customer" if how == "move" else "agent"
            await _until(lambda: _rows(engine, "SELECT hangup_by, node_id FROM cdrs") == [(by, "b")], "b's CDR")
            kamailio_log = (tmp_path / "kamailio.log").read_text(errors="replace")
            slot_b = _slot(engine, "b")
            assert "callbridge: in-dialog BYE sip:" in kamailio_log
            assert f"to set {slot_b} at sip:{NODE_B}:{b.port}" in kamailio_log
        finally:
            for phone in phones:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.close(), 5)
            if proxy is not None:
                stop_process_group(proxy, 5)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proxy.pid, signal.SIGKILL)
            for node in nodes:
                if node.proc.poll() is None:
                    node.stop()
            engine.dispose()


def _slot(engine: Engine, node: str) -> int:
    [(slot,)] = _rows(engine, f"SELECT slot FROM cluster_nodes WHERE node_id = '{node}'")
    assert isinstance(slot, int)
    return slot


async def test_a_nodes_request_in_a_dialog_without_a_route_goes_to_the_agent_not_back_to_the_node(
        postgres_url: str, tmp_path: Path) -> None:
    """An agent's phone that does not copy Record-Route into its 200 (SIPp's built-in uas; RFC 3261 §12.1.1 says
    it must) leaves the node's dialog without a route set: the node sends its ACK and BYE to where the agent
    registered from (the proxy), with the agent's Contact as Request-URI and no Route. Kamailio relays them to that
    Request-URI: the phone gets the ACK and the BYE and counts the call done, and none of them is routed to the
    operation's owner (which would send them back to the node that sent them)."""
    import httpx
    from cluster_nodes import Serve as Node
    from cluster_nodes import loaded_database

    from peers.sipp import Sipp

    binary = require_binary("kamailio", "kamailio")
    port, rpc_port = free_port(PROXY), free_port(PROXY, tcp=False)
    config = render(tmp_path, port, rpc_port)
    doc = {**operation_doc(), "tokens": [{"label": "tests"}]}
    agent_host = "127.0.0.14"
    agent_port = free_port(agent_host)
    phones: list[Phone] = []
    proxy: subprocess.Popen[bytes] | None = None
    answering: Sipp | None = None
    with loaded_database(postgres_url, doc) as (url, [token]):
        engine = make_engine(url)
        node = Node("a", NODE_A, url, tmp_path)
        try:
            node.wait_ready()
            proxy = _start_kamailio(binary, config, tmp_path)

            def synced() -> bool:
                return _synced(engine, tmp_path, (PROXY, rpc_port))
            await _until(synced, "Kamailio's JSON-RPC and the first sync")
            # the agent registers (digest) from agent_host:agent_port, then SIPp's uas answers on that address
            registering = await Phone.start(host=agent_host, port=agent_port, user="1001", domain=DOMAIN,
                                            password="secret-1001", name="agent-1001")
            await registering.register((PROXY, port), expires=300, timeout=10)
            await asyncio.wait_for(registering.close(), 5)
            answering = Sipp("uas", host=agent_host, port=agent_port, calls=1, timeout=20,
                             workdir=tmp_path / "uas").start()
            customer = await Phone.start(host=CUSTOMER, user="3001234567", domain=CUSTOMER, name="customer")
            phones.append(customer)
            async with httpx.AsyncClient(base_url=node.http, timeout=10, trust_env=False) as client:
                ready = await client.post("/api/v2/agentbox.php", params={
                    "api": "change_status", "agent_id": "1001", "status": "ready"},
                    headers={"wolkvox-token": token, "wolkvox_server": "0042"})
            assert ready.status_code == 200, ready.text
            call = await customer.call(f"sip:{DID}@{PROXY}:{port}", timeout=10)
            await call.hangup()
            done = await answering.wait_async()  # -m 1: it exits once its one call got ACK and BYE
            assert (done.returncode, done.successful, done.failed, done.retransmissions) == (0, 1, 0, 0), done
            await _until(lambda: _rows(engine, "SELECT hangup_by FROM cdrs") == [("customer",)], "the CDR")
            kamailio_log = (tmp_path / "kamailio.log").read_text(errors="replace")
            assert f"callbridge: INVITE sip:{DID}@{PROXY}:{port} to set" in kamailio_log
            assert f"callbridge: ACK sip:{agent_host}" not in kamailio_log
            assert f"callbridge: BYE sip:{agent_host}" not in kamailio_log
        finally:
            for phone in phones:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.close(), 5)
            if answering is not None:
                answering.stop()
            if proxy is not None:
                stop_process_group(proxy, 5)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proxy.pid, signal.SIGKILL)
            node.stop()
            engine.dispose()
