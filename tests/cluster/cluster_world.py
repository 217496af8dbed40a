"""The cluster's end-to-end tests' world: `callbridge serve --cluster` nodes on 127.0.0.11 and 127.0.0.12 over one
loaded PostgreSQL database (operation 0042, two agents, a DID), agents as `callbridge.phone` on addresses of their
own, a customer on 127.0.0.13 calling the DID; helpers to wait for the records and for an adoption. The `world`
fixture (conftest.py) builds one per test and stops everything it started by PID."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

CLUSTER = Path(__file__).resolve().parent
if str(CLUSTER) not in sys.path:
    sys.path.insert(0, str(CLUSTER))

from cluster_nodes import Serve  # noqa: E402

from callbridge.client import AsyncAgentboxClient  # noqa: E402
from callbridge.phone import Phone  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402

NODE_A, NODE_B, CUSTOMER = "127.0.0.11", "127.0.0.12", "127.0.0.13"
AGENT_HOSTS = {"1001": "127.0.0.14", "1002": "127.0.0.15"}
OP, DOMAIN, DID = "0042", "a.test", "6015550100"
LEASE = 3.0
AGENTBOX = "/api/v2/agentbox.php"


def operation_doc(extensions: Iterable[str] = AGENT_HOSTS, *, trunk_network: str = f"{CUSTOMER}/32",
                  concurrency_limit: int = 4) -> dict[str, Any]:
    """Operation 0042 with agents `extensions`, all in queue support; carriers' calls from `trunk_network`."""
    return {
        "operation": {"id": OP, "sip_domain": DOMAIN, "acw_seconds": 0, "default_queue": "support",
                      "ring_timeout": 20},
        "queues": [{"name": "support", "max_wait_seconds": 30}],
        "agents": [{"extension": ext, "password": f"secret-{ext}", "queues": ["support"]} for ext in extensions],
        "trunks": [{"name": "carrier", "host": "127.0.0.3", "inbound_networks": [trunk_network]}],
        "dids": [{"number": DID, "queue": "support", "trunk": "carrier"}],
        "tokens": [{"label": "tests", "concurrency_limit": concurrency_limit}],
    }


class World:
    def __init__(self, url: str, token: str, tmp_path: Path) -> None:
        self.url, self.token, self.tmp_path = url, token, tmp_path
        self.engine: Engine = make_engine(url)
        self.nodes: list[Serve] = []
        self.phones: dict[str, Phone] = {}

    def node(self, name: str, host: str) -> Serve:
        serve = Serve(name, host, self.url, self.tmp_path, lease_seconds=LEASE)
        self.nodes.append(serve)
        serve.wait_ready()
        return serve

    def api(self, node: Serve) -> AsyncAgentboxClient:
        return AsyncAgentboxClient(node.http, token=self.token, server=OP)

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(query))]

    def owner(self) -> str | None:
        found = self.rows(f"SELECT node_id FROM cluster_leases WHERE operation_id = '{OP}' AND expires_at > now()")
        return found[0][0] if found else None

    async def agent(self, ext: str, node: Serve | tuple[str, int], *, media: bool = False,
                    host: str | None = None) -> Phone:
        """Agent `ext` as an auto-answering phone registered to `node` (or a proxy's address)."""
        phone = await Phone.start(host=host or AGENT_HOSTS[ext], user=ext, domain=DOMAIN, password=f"secret-{ext}",
                                  media=media, name=f"agent-{ext}", answer="auto")
        self.phones[ext] = phone
        await phone.register(node if isinstance(node, tuple) else node.sip, expires=300, timeout=10)
        return phone

    async def close(self) -> None:
        for phone in self.phones.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(phone.close(), 5)
        for serve in self.nodes:
            if serve.proc.poll() is None:
                serve.stop()
        self.engine.dispose()


async def until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def connected_call(world: World, a: Serve, *, media: bool = False) -> tuple[Phone, Any, Any, str]:
    """A customer's call to the DID on node a, answered by agent 1001: (customer, its call, the agent's call,
    conn_id), once both dialogs are written through."""
    async with world.api(a) as api:
        await api.change_status("1001", "ready")
    customer = await Phone.start(host=CUSTOMER, user="3105550000", name="customer", media=media)
    world.phones["customer"] = customer
    call = await customer.call(f"sip:{DID}@{NODE_A}:{a.port}", timeout=10)
    agent_call = world.phones["1001"].calls[0]
    await until(lambda: world.rows("SELECT count(*) FROM dialogs") == [(2,)], "both dialogs written through")
    [(conn_id,)] = world.rows("SELECT conn_id FROM calls WHERE ended_at IS NULL")
    return customer, call, agent_call, conn_id


async def kill_and_wait_for_adoption(world: World, a: Serve, conn_id: str) -> float:
    """kill -9 of node a; the seconds until node b holds the operation and the call's record names b."""
    killed = time.monotonic()
    a.kill()
    await until(lambda: world.owner() == "b", "node b holding the operation", timeout=LEASE * 4 / 3 + 3)
    await until(lambda: world.rows(f"SELECT node_id FROM calls WHERE conn_id = '{conn_id}'") == [("b",)],
                "the call re-owned by node b", timeout=5)
    return time.monotonic() - killed
