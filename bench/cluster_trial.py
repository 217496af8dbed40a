"""One trial's world for the cluster benchmarks (bench/cluster_failover.py, bench/cluster_handover.py): on a fresh
database of one real PostgreSQL, two `callbridge serve --cluster` processes (a on 127.0.0.11 holding the operation,
b on 127.0.0.12), agents 1001 and 1002 as `callbridge.phone` registered to a, a customer's call to the DID answered by
1001 and written through, 1002 ready; everything stopped by its PID at the end. Also the lease watch both measure
against, and the percentile both report."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "src", ROOT / "tests", ROOT / "tests" / "cluster", ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from cluster_nodes import Serve, loaded_database  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402

from callbridge.client import AsyncAgentboxClient  # noqa: E402
from callbridge.phone import Phone  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402

NODE_A, NODE_B, CUSTOMER = "127.0.0.11", "127.0.0.12", "127.0.0.13"
AGENT_HOSTS = {"1001": "127.0.0.14", "1002": "127.0.0.15"}
OP, DOMAIN, DID = "0042", "a.test", "6015550100"
TRIAL_TIMEOUT = 60.0


def operation_doc() -> dict[str, object]:
    return {
        "operation": {"id": OP, "sip_domain": DOMAIN, "acw_seconds": 0, "default_queue": "support",
                      "ring_timeout": 20},
        "queues": [{"name": "support", "max_wait_seconds": 30}],
        "agents": [{"extension": ext, "password": f"secret-{ext}", "queues": ["support"]} for ext in AGENT_HOSTS],
        "trunks": [{"name": "carrier", "host": "127.0.0.3", "inbound_networks": [f"{CUSTOMER}/32"]}],
        "dids": [{"number": DID, "queue": "support", "trunk": "carrier"}],
        "tokens": [{"label": "bench", "concurrency_limit": 4}],
    }


async def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Trial:
    a: Serve
    b: Serve
    token: str
    engine: Engine
    agents: dict[str, Phone] = field(default_factory=dict)

    def rows(self, query: str) -> list[tuple[object, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(query))]

    def watch_lease(self, since: float) -> tuple[asyncio.Task[None], list[float]]:
        """A task that notes the seconds from `since` until node b holds the operation's lease."""
        taken: list[float] = []

        async def watch() -> None:
            while not taken:
                if self.rows(f"SELECT node_id FROM cluster_leases WHERE operation_id = '{OP}' "
                             f"AND expires_at > now()") == [("b",)]:
                    taken.append(time.monotonic() - since)
                await asyncio.sleep(0.05)

        return asyncio.create_task(watch()), taken


@contextlib.asynccontextmanager
async def connected_call(server: str, workdir: Path, lease: float) -> AsyncIterator[Trial]:
    """The trial's world (see the module), with the call up on node a."""
    with loaded_database(server, operation_doc()) as (url, [token]):
        engine = make_engine(url)
        nodes: list[Serve] = []
        phones: list[Phone] = []
        try:
            a = Serve("a", NODE_A, url, workdir, lease_seconds=lease)
            nodes.append(a)
            a.wait_ready()
            b = Serve("b", NODE_B, url, workdir, lease_seconds=lease)
            nodes.append(b)
            b.wait_ready()
            made = Trial(a, b, token, engine)
            for ext, host in AGENT_HOSTS.items():
                phone = await Phone.start(host=host, user=ext, domain=DOMAIN, password=f"secret-{ext}",
                                          name=f"agent-{ext}", answer="auto")
                phones.append(phone)
                await phone.register(a.sip, expires=300, timeout=10)
                made.agents[ext] = phone
            async with AsyncAgentboxClient(a.http, token=token, server=OP) as api:
                await api.change_status("1001", "ready")
                customer = await Phone.start(host=CUSTOMER, user="3105550000", name="customer")
                phones.append(customer)
                await customer.call(f"sip:{DID}@{NODE_A}:{a.port}", timeout=10)
                await api.change_status("1002", "ready")
            await until(lambda: made.rows("SELECT count(*) FROM dialogs") == [(2,)], "both dialogs written through")
            await asyncio.sleep(0.2)  # the writer's last batch (1002's state) lands
            yield made
        finally:
            for phone in phones:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.close(), 5)
            for serve in nodes:
                if serve.proc.poll() is None:
                    serve.kill()
            engine.dispose()
