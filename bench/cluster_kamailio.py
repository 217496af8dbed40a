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

    .venv/bin/python bench/cluster_kamailio.py --rates 100,200,300,400 --seconds 10
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
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


def step(node: Serve, token: str, target: tuple[str, int], port: int, agents: list[str], others: list[str],
         rate: int, seconds: float, base: Path) -> tuple[bool, str]:
    """One step: `agents` (registered from AGENTS_HOST:`port`) ready, `others` logged out."""
    set_status(node, token, others, "logout")
    make_ready(node.http, token, agents)
    answering = uas(port, seconds, base)
    time.sleep(0.3)
    try:
        return place_calls(target, rate, seconds, base)
    finally:
        answering.stop()
        time.sleep(1.0)  # the last calls' records land before the next step


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,200,300,400", help="rates tried, comma-separated, both ways")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--no-record", action="store_true")
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
    failed: dict[str, str] = {}
    with postgres_server() as server, loaded_database(server, doc) as (url, [token]):
        node = Serve("a", NODE, url, base, lease_seconds=6.0,
                     extra_args=("--log-level", "WARNING", "--trusted-networks", f"{AGENTS_HOST}/32,{PROXY}/32"))
        proxy: subprocess.Popen[bytes] | None = None
        engine = make_engine(url)
        try:
            node.wait_ready(60)
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
            for rate in rates:
                for way, target in targets.items():
                    if way in failed:
                        continue
                    other = "kamailio" if way == "direct" else "direct"
                    passed, detail = step(node, token, target, ports[way], sets[way], sets[other], rate,
                                          args.seconds, base / f"{way}-{rate}")
                    print(f"  {way:8} {rate:>5}/s: {'pass' if passed else 'FAIL'}: {detail}", flush=True)
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
    if not args.no_record:
        notes = "; ".join(f"first failing {way} step {detail}" for way, detail in failed.items())
        top = "" if failed.get("direct") else " (the highest rate tried)"
        print(record(
            f"cluster_kamailio (bench/cluster_kamailio.py): SIPp uac -> DID -> {len(agents)} agents at a SIPp uas "
            f"through the cluster's Kamailio (Path, Record-Route, dispatcher) to one serve --cluster node on "
            f"PostgreSQL, against the same node direct, alternating steps of {args.seconds:g} s, 0 failed calls and "
            f"done within {args.seconds * SUSTAIN_SLACK:g} s; overhead {overhead:.0%}"
            f"{'; ' + notes if notes else ''}; load average {machine_load()}",
            f"{proxied:,} calls/s", f"{direct:,} calls/s{top} (the node direct)",
            f"{proxied / direct if direct else 0:.2f}", f"overhead <= {TARGET_OVERHEAD:.0%}",
            command_line("bench/cluster_kamailio.py", argv)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
