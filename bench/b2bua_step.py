"""One callbridge step of bench/b2bua_cps.py, from any checkout, for same-run A/B comparisons of two revisions.

    .venv/bin/python bench/b2bua_step.py OTHER_CHECKOUT/bench 800 20
    .venv/bin/python bench/b2bua_step.py bench 800 20 [profile.txt]

The step is `b2bua_cps.callbridge_step` of the checkout named (its own bench/ and src/: `callbridge serve` runs
that checkout's code), at one rate for one length, with no ceiling ramps; it prints the carried rate and the
server's CPU per offered call, the event loop's thread apart from the others (the writer). Run the revisions in
turn, interleaved, on the same machine: the figures only compare within one run. With a file name, py-spy
(installed with the bench extras) records the server over the step, in its raw format.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def thread_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def main() -> int:
    bench, rate, seconds = Path(sys.argv[1]).resolve(), int(sys.argv[2]), float(sys.argv[3])
    profile = sys.argv[4] if len(sys.argv) > 4 else None
    sys.path.insert(0, str(bench))
    import b2bua_cps as b
    from common import (
        AGENTS_HOST,
        CallbridgeServe,
        agent_extensions,
        free_port,
        machine_load,
        make_ready,
        register_agents,
        workdir,
    )

    agents = agent_extensions(200)
    base = workdir("cps-step-")
    with CallbridgeServe(base / "node", agents, trusted=[f"{AGENTS_HOST}/32"]) as node:
        port = free_port(AGENTS_HOST)
        register_agents(node.sip_address, agents, host=AGENTS_HOST, port=port)
        make_ready(node.http_url, node.token, agents)
        pid = node.pid
        answering = b.uas(port, seconds, base)
        time.sleep(0.3)
        spy = None
        if profile:
            spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-o", profile,
                                    "--format", "raw", "-r", "100", "-d", str(int(seconds)), "-p", str(node.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            before = thread_seconds(node.pid)
            started = time.monotonic()
            passed, detail = b.place_calls(node.sip_address, rate, seconds, base)
            elapsed = time.monotonic() - started
            after = thread_seconds(node.pid)
        finally:
            answering.stop()
            if spy is not None:
                spy.wait(timeout=60)
    calls = rate * seconds
    loop = after.get(pid, 0.0) - before.get(pid, 0.0)
    others = sum(v - before.get(k, 0.0) for k, v in after.items() if k != pid)
    verdict = "PASS" if passed else "FAIL"
    print(f"{bench.parent.name}: {rate}/s {verdict} {detail}; server {(loop + others) / elapsed:.0%} of a core,"
          f" {(loop + others) / calls * 1e6:.0f} us per call (event loop {loop / calls * 1e6:.0f}, "
          f"other threads {others / calls * 1e6:.0f}); load average {machine_load()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
