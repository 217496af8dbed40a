"""Kamailio's overhead in front of a cluster node (docs/cluster.md, "Kamailio"): calls per second through the
cluster's Kamailio to one `callbridge serve --cluster` node, against the same node reached directly, same run.

The node: `callbridge serve --cluster` on 127.0.0.11 on a real PostgreSQL (tests/pg.py), defences on, log level
WARNING. The call is b2bua_cps.py's (SIPp's uac dials the DID, the queue offers it to the longest idle of the
agents, all registered with digest at one SIPp uas that answers at once, the caller hangs up at once). Two ramps on
one node and one database, alternating at each rate:
- direct: the uac (127.0.0.2, the trunk's network) sends to the node; the agents registered at the node;
- through Kamailio: the proxy rendered by `callbridge cluster kamailio-config` on 127.0.0.10, its tables filled by
  `kamailio-sync` (`cluster.kamailio.sync_once`), the uac sends to the proxy, the agents registered through it
  (Path), so every request of both legs passes the proxy (Record-Route) as in production.
A step passes as in b2bua_cps.py (every call successful, all done within the step's length x 1.1). The figure is
the highest passing rate through Kamailio, the ceiling the highest passing rate direct, same run; the overhead is
1 - their ratio, the target <= 20 %. Both processes share the machine's 2 cores: what Kamailio costs in CPU is
taken from the node, which is part of the overhead measured.

On a machine shared with other work the highest passing rate moves with the other work, so the CPU each call costs
is measured too, and printed next to the throughput: before the ramps, `--cpu-steps` alternating steps each way at
`--cpu-rate` (a rate both ways carry), each reading, around its calls, the user + system CPU seconds
(/proc/<pid>/stat) of the node, of Kamailio (all its processes), of PostgreSQL (the server and its backends) and of
SIPp (uac and uas), divided by the calls; the medians are reported, and what they imply: the CPU overhead of the
node + Kamailio against the node alone, which is the throughput overhead when the cores are the limit.
`--py-spy BINARY` records the node's stacks during each step (raw, in the step's folder).

    .venv/bin/python bench/cluster_kamailio.py --rates 100,200,300,400 --seconds 10 --cpu-rate 100 --cpu-steps 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "src", ROOT / "tests", ROOT / "tests" / "cluster", ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from b2bua_cps import SUSTAIN_SLACK, place_calls, uas  # noqa: E402
from cluster_nodes import Serve, loaded_database  # noqa: E402
from common import (  # noqa: E402
    AGENTS_HOST,
    OP,
    TRUNK_HOST,
    agent_extensions,
    command_line,
    cpu_seconds,
    machine_load,
    make_ready,
    operation_doc,
    record,
    register_agents,
    workdir,
)

from callbridge.cluster import kamailio  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402
from peers import require_binary, stop_process_group  # noqa: E402
from peers.ports import free_port  # noqa: E402
from pg import postgres_server  # noqa: E402

NODE, PROXY = "127.0.0.11", "127.0.0.10"
TARGET_OVERHEAD = 0.20


def start_proxy(base: Path) -> tuple[subprocess.Popen[bytes], tuple[str, int], tuple[str, int]]:
    binary = require_binary("kamailio", "kamailio")
    port, rpc_port = free_port(PROXY), free_port(PROXY, tcp=False)
    config = base / "kamailio.cfg"
    config.write_text(kamailio.render_config(kamailio.ProxySettings(
        host=PROXY, port=port, tables=str(base), rpc_host=PROXY, rpc_port=rpc_port, ping_interval=2, children=4)))
    (base / "dispatcher.list").write_text("")
    with open(base / "kamailio.log", "wb") as log:
        proc = subprocess.Popen([binary, "-f", str(config), "-DD", "-E", "-m", "256", "-x", "tlsf", "-Y", str(base)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=base,
                                start_new_session=True)
    return proc, (PROXY, port), (PROXY, rpc_port)


def set_status(node: Serve, token: str, agents: list[str], status: str) -> None:
    from callbridge.client import AgentboxClient

    with AgentboxClient(node.http, token=token, server=OP) as box:
        for ext in agents:
            box.change_status(ext, status)


def _processes() -> list[list[str]]:
    """The fields after the command name of every live process's /proc/<pid>/stat, with its pid in front."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                found.append([entry.name, *Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()])
            except OSError:  # gone meanwhile
                continue
    return found


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes of one process group (Kamailio's main process and the
    children it forked)."""
    ticks = sum(int(f[12]) + int(f[13]) for f in _processes() if int(f[3]) == pgid)
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a live process and its live children (PostgreSQL's postmaster and its
    backends)."""
    ticks = sum(int(f[12]) + int(f[13]) for f in _processes() if root in (int(f[0]), int(f[2])))
    return ticks / os.sysconf("SC_CLK_TCK")


def postmaster_pid(url: str) -> int:
    """The pid of the PostgreSQL server behind `url`: the backend serving a connection reports it as its parent."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(Path(f"/proc/{row[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])


def waited_seconds(pid: int) -> tuple[float, float]:
    """(seconds run on a CPU, seconds waited runnable for one) of a process's main thread, the node's event loop:
    /proc/<pid>/schedstat's first two fields, in nanoseconds. Their ratio says whether it was short of CPU because
    other work had the cores."""
    ran, waited = Path(f"/proc/{pid}/schedstat").read_text().split()[:2]
    return int(ran) / 1e9, int(waited) / 1e9


def reaped_cpu_seconds() -> float:
    """CPU seconds of this process's children waited for so far (the SIPp uac once it exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Cost:
    """CPU milliseconds per call of a step: the node, Kamailio (all its processes), PostgreSQL (the server and its
    backends), SIPp (uac and uas)."""

    node: float
    proxy: float
    database: float
    sipp: float

    def __str__(self) -> str:
        return (f"CPU per call: node {self.node:.2f} ms, Kamailio {self.proxy:.2f} ms, PostgreSQL "
                f"{self.database:.2f} ms, SIPp {self.sipp:.2f} ms")


def median_cost(costs: list[Cost]) -> Cost | None:
    """Each figure's median over the steps: a step slowed by other work on the machine moves it little."""
    if not costs:
        return None
    return Cost(*(statistics.median(getattr(c, name) for c in costs) for name in ("node", "proxy", "database",
                                                                                  "sipp")))


def step(node: Serve, token: str, target: tuple[str, int], port: int, agents: list[str], others: list[str],
         rate: int, seconds: float, base: Path, proxy_pgid: int, postmaster: int,
         profiler: str | None) -> tuple[bool, str, Cost]:
    """One step: `agents` (registered from AGENTS_HOST:`port`) ready, `others` logged out. The CPU each process
    spent is read around the calls (the same interval for all), divided by the calls offered."""
    set_status(node, token, others, "logout")
    make_ready(node.http, token, agents)
    answering = uas(port, seconds, base)
    time.sleep(0.3)
    spy = None
    if profiler:  # py-spy samples the node from outside (its own CPU is not the node's)
        base.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen([profiler, "record", "--pid", str(node.proc.pid), "--rate", "200", "--format",
                                "raw", "--output", str(base / "node.py-spy.txt"), "--nonblocking"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
        time.sleep(0.5)
    try:
        assert answering.pid is not None
        sched = waited_seconds(node.proc.pid)
        started = time.monotonic()
        before = (cpu_seconds(node.proc.pid), group_cpu_seconds(proxy_pgid), tree_cpu_seconds(postmaster),
                  reaped_cpu_seconds() + cpu_seconds(answering.pid))
        passed, detail = place_calls(target, rate, seconds, base)
        ran, waited = (b - a for a, b in zip(sched, waited_seconds(node.proc.pid), strict=True))
        took = time.monotonic() - started
        after = (cpu_seconds(node.proc.pid), group_cpu_seconds(proxy_pgid), tree_cpu_seconds(postmaster),
                 reaped_cpu_seconds() + cpu_seconds(answering.pid))
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(20)
        answered = answering.stop()
        time.sleep(1.0)  # the last calls' records land before the next step
    # the agents' side: a 200 retransmitted or a call failed there means ACKs or BYEs did not reach the agents
    # (the uas still holds its last calls for about 4 s after their BYE, so its successful count is not read)
    detail += (f"; agents' uas: {answered.retransmissions:,} retransmissions, {answered.failed:,} failed; node's "
               f"event loop ran {ran / took:.0%} of the step and waited for a CPU {waited / took:.0%}")
    calls = max(1, int(rate * seconds))
    cost = Cost(*((b - a) * 1000 / calls for a, b in zip(before, after, strict=True)))
    return passed, detail, cost


def idle_load(node: Serve, proxy_pgid: int, postmaster: int, seconds: float) -> str:
    """What the node, Kamailio and PostgreSQL spend with no call (the node's lease rounds and heartbeats, the
    dispatcher's OPTIONS probes): part of every step's CPU per call, the more so the lower the rate."""
    before = (cpu_seconds(node.proc.pid), group_cpu_seconds(proxy_pgid), tree_cpu_seconds(postmaster))
    started = time.monotonic()
    time.sleep(seconds)
    after = (cpu_seconds(node.proc.pid), group_cpu_seconds(proxy_pgid), tree_cpu_seconds(postmaster))
    took = time.monotonic() - started
    node_, proxy, database = ((b - a) / took for a, b in zip(before, after, strict=True))
    return f"idle: node {node_:.1%} of a core, Kamailio {proxy:.1%}, PostgreSQL {database:.1%}"


def cpu_summary(rate: int, costs: dict[str, list[Cost]]) -> str:
    """CPU per call, direct and through Kamailio, at one fixed rate, medians over alternating steps: what survives
    a machine shared with other work, where the throughput steps do not. Kamailio's CPU is taken from the same cores
    as the node's, so when the cores are the limit the calls/s through it fall by 1 - direct / (node + Kamailio)."""
    direct, proxied = median_cost(costs["direct"]), median_cost(costs["kamailio"])
    if direct is None or proxied is None or direct.node <= 0:
        return "CPU per call: not measured"
    behind = proxied.node + proxied.proxy
    whole_direct = direct.node + direct.database
    whole = behind + proxied.database
    steps = f"{len(costs['direct'])} + {len(costs['kamailio'])}"
    return (f"CPU per call at {rate}/s (medians of {steps} steps): node direct {direct.node:.2f} ms, node behind "
            f"Kamailio {proxied.node:.2f} ms ({proxied.node / direct.node - 1:+.0%}), Kamailio {proxied.proxy:.2f} "
            f"ms, PostgreSQL {direct.database:.2f} / {proxied.database:.2f} ms, SIPp {direct.sipp:.2f} / "
            f"{proxied.sipp:.2f} ms; CPU overhead node+Kamailio against node {1 - direct.node / behind:.0%}, with "
            f"PostgreSQL {1 - whole_direct / whole:.0%}; at these costs 2 cores would carry {2000 / whole_direct:,.0f} "
            f"calls/s direct, {2000 / whole:,.0f} through Kamailio (node, Kamailio, PostgreSQL), one core of the node "
            f"{1000 / direct.node:,.0f} / {1000 / proxied.node:,.0f} (a call costs less at higher rates, where the "
            f"node batches its work)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,200,300,400", help="rates tried, comma-separated, both ways")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--cpu-rate", type=int, default=100, help="the fixed rate of the CPU-per-call steps, run "
                        "before the ramps (a rate both ways carry, so the CPU is the calls', not a backlog's)")
    parser.add_argument("--cpu-steps", type=int, default=3, help="CPU-per-call steps each way, alternating")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--py-spy", metavar="BINARY", help="record the node with py-spy during each step (raw "
                        "stacks in the step's folder)")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    # two sets of agents, each registered once at its own SIPp uas port: directly, and through Kamailio (Path)
    sets = {"direct": agent_extensions(args.agents), "kamailio": agent_extensions(args.agents, first=20001)}
    agents = sets["direct"]
    doc = operation_doc(sets["direct"] + sets["kamailio"])
    doc["trunks"][0]["inbound_networks"] = [f"{TRUNK_HOST}/32", f"{PROXY}/32"]  # type: ignore[index]
    base = workdir("cluster-kamailio-")
    print(f"cluster_kamailio: {args.seconds:g} s steps, {len(agents)} agents, load average {machine_load()}")
    best = {"direct": 0, "kamailio": 0}
    costs: dict[str, list[Cost]] = {"direct": [], "kamailio": []}
    failed: dict[str, str] = {}
    with postgres_server() as server, loaded_database(server, doc) as (url, [token]):
        node = Serve("a", NODE, url, base, lease_seconds=6.0,
                     extra_args=("--log-level", "WARNING", "--trusted-networks", f"{AGENTS_HOST}/32,{PROXY}/32"))
        proxy: subprocess.Popen[bytes] | None = None
        idle = "idle: not measured"
        engine = make_engine(url)
        try:
            node.wait_ready(60)
            postmaster = postmaster_pid(url)
            proxy, address, rpc = start_proxy(base)
            deadline = time.monotonic() + 20
            while True:
                try:
                    with engine.connect() as conn:
                        kamailio.sync_once(conn, base, rpc)
                    break
                except (kamailio.RpcError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            time.sleep(3)  # the dispatcher's first OPTIONS probe marks the node up
            targets = {"direct": node.sip, "kamailio": address}
            ports = {way: free_port(AGENTS_HOST) for way in sets}
            for way in sets:
                register_agents(targets[way], sets[way], host=AGENTS_HOST, port=ports[way])
            idle = idle_load(node, proxy.pid, postmaster, args.seconds)
            print(f"  {idle}", flush=True)
            for _ in range(args.cpu_steps):
                for way, target in targets.items():
                    other = "kamailio" if way == "direct" else "direct"
                    passed, detail, cost = step(node, token, target, ports[way], sets[way], sets[other],
                                                args.cpu_rate, args.seconds, base / f"cpu-{way}-{len(costs[way])}",
                                                proxy.pid, postmaster, args.py_spy)
                    print(f"  {way:8} {args.cpu_rate:>5}/s (CPU): {'pass' if passed else 'FAIL'}: {detail}; {cost}",
                          flush=True)
                    costs[way].append(cost)
            for rate in rates:
                for way, target in targets.items():
                    if way in failed:
                        continue
                    other = "kamailio" if way == "direct" else "direct"
                    passed, detail, cost = step(node, token, target, ports[way], sets[way], sets[other], rate,
                                                args.seconds, base / f"{way}-{rate}", proxy.pid, postmaster,
                                                args.py_spy)
                    print(f"  {way:8} {rate:>5}/s: {'pass' if passed else 'FAIL'}: {detail}; {cost}", flush=True)
                    if passed:
                        best[way] = rate
                    else:
                        failed[way] = f"{rate:,}/s: {detail}"
                if len(failed) == 2:
                    break
        finally:
            if proxy is not None:
                stop_process_group(proxy, 5)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proxy.pid, signal.SIGKILL)
            node.stop()
            engine.dispose()
    direct, proxied = best["direct"], best["kamailio"]
    overhead = 1 - proxied / direct if direct else 1.0
    print(f"direct {direct:,} calls/s, through Kamailio {proxied:,} calls/s: overhead {overhead:.0%} "
          f"(target <= {TARGET_OVERHEAD:.0%}); load average {machine_load()}")
    cpu = f"{cpu_summary(args.cpu_rate, costs)}; {idle}"
    print(cpu)
    if not args.no_record:
        notes = "; ".join(f"first failing {way} step {detail}" for way, detail in failed.items())
        top = "" if failed.get("direct") else " (the highest rate tried)"
        print(record(
            f"cluster_kamailio (bench/cluster_kamailio.py): SIPp uac -> DID -> {len(agents)} agents at a SIPp uas "
            f"through the cluster's Kamailio (Path, Record-Route, dispatcher) to one serve --cluster node on "
            f"PostgreSQL, against the same node direct, alternating steps of {args.seconds:g} s, 0 failed calls and "
            f"done within {args.seconds * SUSTAIN_SLACK:g} s; overhead {overhead:.0%}; {cpu}"
            f"{'; ' + notes if notes else ''}; load average {machine_load()}",
            f"{proxied:,} calls/s", f"{direct:,} calls/s{top} (the node direct)",
            f"{proxied / direct if direct else 0:.2f}", f"overhead <= {TARGET_OVERHEAD:.0%}",
            command_line("bench/cluster_kamailio.py", argv)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
