"""Handover time of a cluster (docs/cluster.md, "Moving and draining an operation"): from `callbridge admin cluster
move` of an operation with a connected call to that call adopted by the target node (its record re-owned, which the
takeover writes before the call is live there), over N trials.

Each trial, on a fresh database of one real PostgreSQL: two `callbridge serve --cluster` processes (127.0.0.11,
127.0.0.12, `--lease-seconds L`), agents 1001 and 1002 as `callbridge.phone` registered to the first, a customer
calling the DID on it and answered by 1001, 1002 ready; then the move to the second node is requested (the row
`callbridge admin cluster move` writes), and from that instant PostgreSQL is polled every 50 ms until the call's
record names the second node; the trial then checks that the second node's API transfers the call to 1002 (1002
rung). The ceiling measured in the same trials is the lease mechanism alone: from the request to the lease row
naming the second node. The row gives p50 and p99 of both and the ratio of the p99s. Every trial is bounded (60 s).

    .venv/bin/python bench/cluster_handover.py --trials 10 --lease-seconds 6
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "src", ROOT / "tests", ROOT / "tests" / "cluster", ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from cluster_nodes import Serve, loaded_database  # noqa: E402
from common import command_line, machine_load, record  # noqa: E402
from sqlalchemy import text  # noqa: E402

from callbridge.client import AsyncAgentboxClient  # noqa: E402
from callbridge.cluster.leases import request_move  # noqa: E402
from callbridge.phone import IncomingCall, Phone  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402
from pg import postgres_server  # noqa: E402

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


async def until(condition, what: str, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def trial(server: str, workdir: Path, lease: float) -> tuple[float, float]:
    """(seconds from the move to the lease taken, seconds from the move to the call re-owned by the target)."""
    with loaded_database(server, operation_doc()) as (url, [token]):
        engine = make_engine(url)
        nodes: list[Serve] = []
        phones: list[Phone] = []

        def rows(query: str) -> list[tuple[object, ...]]:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(query))]

        try:
            a = Serve("a", NODE_A, url, workdir, lease_seconds=lease)
            nodes.append(a)
            a.wait_ready()
            b = Serve("b", NODE_B, url, workdir, lease_seconds=lease)
            nodes.append(b)
            b.wait_ready()
            agents = {}
            for ext, host in AGENT_HOSTS.items():
                phone = await Phone.start(host=host, user=ext, domain=DOMAIN, password=f"secret-{ext}",
                                          name=f"agent-{ext}", answer="auto")
                phones.append(phone)
                await phone.register(a.sip, expires=300, timeout=10)
                agents[ext] = phone
            async with AsyncAgentboxClient(a.http, token=token, server=OP) as api:
                await api.change_status("1001", "ready")
                customer = await Phone.start(host=CUSTOMER, user="3105550000", name="customer")
                phones.append(customer)
                await customer.call(f"sip:{DID}@{NODE_A}:{a.port}", timeout=10)
                await api.change_status("1002", "ready")
            await until(lambda: rows("SELECT count(*) FROM dialogs") == [(2,)], "both dialogs written through")
            await asyncio.sleep(0.2)  # the writer's last batch (1002's state) lands
            asked = time.monotonic()
            with engine.begin() as conn:
                assert request_move(conn, OP, "b")
            lease_taken: list[float] = []

            async def watch_lease() -> None:
                while not lease_taken:
                    owner = rows(f"SELECT node_id FROM cluster_leases WHERE operation_id = '{OP}' "
                                 f"AND expires_at > now()")
                    if owner == [("b",)]:
                        lease_taken.append(time.monotonic() - asked)
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch_lease())
            while rows("SELECT node_id FROM calls WHERE ended_at IS NULL") != [("b",)]:
                if time.monotonic() - asked > TRIAL_TIMEOUT:
                    raise TimeoutError("the call was not adopted by node b")
                await asyncio.sleep(0.05)
            answered = time.monotonic() - asked
            await asyncio.wait_for(watcher, 10)
            async with AsyncAgentboxClient(b.http, token=token, server=OP) as api:
                await api.transfer("1001", "1002")  # the adopted call works on its new owner
            await agents["1002"].wait_for(IncomingCall, timeout=10)
            assert "took operation 0042 over from a: 1 calls adopted" in b.output()
            assert "handed operation 0042 over: 1 calls left to the new owner" in a.output()
            return lease_taken[0], answered
        finally:
            for phone in phones:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.close(), 5)
            for serve in nodes:
                if serve.proc.poll() is None:
                    serve.kill()
            engine.dispose()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--lease-seconds", type=float, default=6.0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    leases: list[float] = []
    totals: list[float] = []
    with postgres_server() as server, tempfile.TemporaryDirectory() as tmp:
        for n in range(args.trials):
            workdir = Path(tmp) / f"trial-{n}"
            workdir.mkdir()
            lease, total = await asyncio.wait_for(trial(server, workdir, args.lease_seconds), TRIAL_TIMEOUT + 60)
            leases.append(lease)
            totals.append(total)
            print(f"trial {n + 1}: lease taken {lease:.2f} s, call adopted {total:.2f} s", flush=True)
    load = machine_load()
    p50, p99 = statistics.median(totals), percentile(totals, 99)
    l50, l99 = statistics.median(leases), percentile(leases, 99)
    print(f"move -> call adopted: p50 {p50:.2f} s, p99 {p99:.2f} s; move -> lease taken: p50 {l50:.2f} s, "
          f"p99 {l99:.2f} s; max {max(totals):.2f} s over {len(totals)} trials; load average {load}")
    if args.no_record:
        return
    print(record(
        f"cluster_handover (bench/cluster_handover.py): two serve --cluster nodes on one PostgreSQL, "
        f"--lease-seconds {args.lease_seconds:g}, one connected call, `admin cluster move` to the other node until the "
        f"call's record names it (then api=transfer there rings the target), {len(totals)} trials; max "
        f"{max(totals):.2f} s; load average {load}",
        f"p50 {p50:.2f} s, p99 {p99:.2f} s", f"move -> lease taken p50 {l50:.2f} s, p99 {l99:.2f} s (same trials)",
        f"p99 {p99 / l99:.2f}x", "none set (the call kept up is the point)",
        command_line("bench/cluster_handover.py", argv)), end="")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
