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
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "src", ROOT / "tests", ROOT / "tests" / "cluster", ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from cluster_trial import OP, TRIAL_TIMEOUT, connected_call, percentile  # noqa: E402
from common import command_line, machine_load, record  # noqa: E402

from callbridge.client import AsyncAgentboxClient  # noqa: E402
from callbridge.cluster.leases import request_move  # noqa: E402
from callbridge.phone import IncomingCall  # noqa: E402
from pg import postgres_server  # noqa: E402


async def trial(server: str, workdir: Path, lease: float) -> tuple[float, float]:
    """(seconds from the move to the lease taken, seconds from the move to the call re-owned by the target)."""
    async with connected_call(server, workdir, lease) as t:
        asked = time.monotonic()
        with t.engine.begin() as conn:
            assert request_move(conn, OP, "b")
        watcher, lease_taken = t.watch_lease(asked)
        while t.rows("SELECT node_id FROM calls WHERE ended_at IS NULL") != [("b",)]:
            if time.monotonic() - asked > TRIAL_TIMEOUT:
                raise TimeoutError("the call was not adopted by node b")
            await asyncio.sleep(0.05)
        answered = time.monotonic() - asked
        await asyncio.wait_for(watcher, 10)
        async with AsyncAgentboxClient(t.b.http, token=t.token, server=OP) as api:
            await api.transfer("1001", "1002")  # the adopted call works on its new owner
        await t.agents["1002"].wait_for(IncomingCall, timeout=10)
        assert "took operation 0042 over from a: 1 calls adopted" in t.b.output()
        assert "handed operation 0042 over: 1 calls left to the new owner" in t.a.output()
        return lease_taken[0], answered


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
