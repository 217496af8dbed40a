"""Calls per second through callbridge with every call's media anchored on rtpengine, against the same node with
the operation's media direct, same run (issue #13, "Benchmarks").

    .venv/bin/python bench/media_cps.py                  # 30 s steps, records a row in bench/RESULTS.md
    .venv/bin/python bench/media_cps.py --quick --no-record

The call is bench/b2bua_cps.py's (SIPp's built-in uac from the trunk's network dials the DID, the queue offers it to
an agent registered with digest at a SIPp uas that answers at once, the caller hangs up at once), and so is a step's
test (0 failed calls, all N = rate x seconds calls done within seconds x 1.1 by SIPp's clock). Both runs start
`callbridge serve --rtpengine` with one userspace rtpengine (Debian's rtpengine-daemon, `--table=-1`, as the tests
start it, with `--delete-delay=0`: rtpengine's default keeps a deleted call's ports for 30 s, 48,000 ports at
400 calls/s). They differ only in the operation's `media_mode`:
- `anchored`: each call's offer and answer go through the relay (ng `offer`, `answer`, and `delete` at the end):
  three ng round trips per call on callbridge's event loop, and the relay's own work; a caller who finds every
  agent busy for a moment rings (queue_music_delay_seconds, 1 s) before its queue music would cost six more and a
  sound stream, and that music waits while the relay has commands behind its window (b2bua/waiting.py);
- `direct` (the ceiling): the SDP is passed through, the relay idle.
The two run in turns at each rate (direct, then anchored), so that a machine shared with other work loads both
alike; each stops at its first failing step. The figure is the anchored run's highest passing rate; the ratio
anchored / direct. SIPp's calls carry SDP but no RTP
(the media load is bench/media_concurrent.py's). callbridge's and rtpengine's CPU over each step are printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from b2bua_cps import SUSTAIN_SLACK, place_calls, top, uas
from common import (
    AGENTS_HOST,
    CallbridgeServe,
    Step,
    agent_extensions,
    best,
    command_line,
    cpu_seconds,
    free_port,
    machine_load,
    make_ready,
    ratio,
    record,
    register_agents,
    relay_for,
    workdir,
)

TARGET_CPS = 400
TARGET_RATIO = 0.6
RATES = (100, 200, 300, 400, 500, 600, 800)
QUICK = {"seconds": 3.0, "rates": (20, 40), "agents": 10}
# rtpengine's own options for the run. `--delete-delay=0`: rtpengine's default keeps a deleted call's ports for 30 s
# (48,000 ports at 400 calls/s). Its default `--timeout` (60 s without media) and `--num-threads` (one per core)
# stay: SIPp's calls carry no RTP and last well under a second.
RELAY_ARGS = ("--delete-delay=0",)
# Media ports asked of the relay: a call holds up to three RTP/RTCP pairs (the customer's, the queue's stand-in's
# when it waited, the agent's) from its offer to its delete, and calls pile up on the relay when the node falls
# behind; 8,000 leaves room for that at 400 calls/s (the block is found with twice that span, see `relay_for`).
RELAY_PORTS = 8000


def step(rate: int, seconds: float, agents: list[str], media_mode: str) -> tuple[bool, str]:
    base = workdir(f"media-cps-{media_mode}-")
    with relay_for(base / "rtpengine", RELAY_PORTS, RELAY_ARGS) as relay, \
            CallbridgeServe(base / "node", agents, trusted=[f"{AGENTS_HOST}/32"],
                            extra_args=["--rtpengine", f"udp:{relay.host}:{relay.ng_port}"],
                            operation={"media_mode": media_mode}) as node:
        port = free_port(AGENTS_HOST)
        register_agents(node.sip_address, agents, host=AGENTS_HOST, port=port)
        make_ready(node.http_url, node.token, agents)
        answering = uas(port, seconds, base)
        time.sleep(0.3)
        try:
            assert relay.pid is not None
            cpu, relay_cpu = cpu_seconds(node.pid), cpu_seconds(relay.pid)
            started = time.monotonic()
            passed, detail = place_calls(node.sip_address, rate, seconds, base)
            took = time.monotonic() - started
            busy = (cpu_seconds(node.pid) - cpu) / took
            relay_busy = (cpu_seconds(relay.pid) - relay_cpu) / took
            time.sleep(1.0)
            legs = node.metric("callbridge_b2bua_legs")
            outcomes = media_outcomes(node)
            ng = labelled(node, "callbridge_media_ng_total")
        finally:
            answering.stop()
    anchored = outcomes.get("anchored", 0)
    if media_mode == "anchored" and anchored < rate * seconds:
        passed = False  # a call that went direct (no relay up) is not an anchored call
    calls = rate * seconds
    ng_note = (f", ng {ng.get('sent', 0):,.0f} sent, {ng.get('queued', 0):,.0f} queued behind the window "
               f"({ng.get('queued_setup', 0):,.0f} of them set-up commands, {ng.get('withdrawn', 0):,.0f} withdrawn), "
               f"{ng.get('retransmissions', 0):,.0f} retransmissions, {ng.get('timeouts', 0):,.0f} time-outs "
               f"({ng.get('queued_timeouts', 0):,.0f} in the queue)"
               if media_mode == "anchored" else "")
    return passed, (f"{detail}, callbridge {busy * 100:.0f}% of a core ({busy * took / calls * 1e6:,.0f} us CPU per "
                    f"call), rtpengine {relay_busy * 100:.0f}% ({relay_busy * took / calls * 1e6:,.0f} us per call), "
                    f"{anchored:,.0f} calls anchored, {outcomes.get('media_failures', 0):,.0f} media failures, "
                    f"{outcomes.get('queue_music_deferred', 0):,.0f} queue callers' music deferred (relay behind)"
                    f"{ng_note}, {legs:.0f} legs left 1 s after")


def media_outcomes(node: CallbridgeServe) -> dict[str, float]:
    """callbridge_media_calls_total by outcome, from /metrics."""
    return labelled(node, "callbridge_media_calls_total")


def labelled(node: CallbridgeServe, name: str) -> dict[str, float]:
    """A labelled counter from /metrics, by its one label's value."""
    import urllib.request

    out: dict[str, float] = {}
    with urllib.request.urlopen(f"{node.http_url}/metrics", timeout=15) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + "{"):
                out[line.split('"')[1]] = float(line.split()[-1])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of a step")
    parser.add_argument("--rates", help="rates, comma-separated (each run stops at its first failing step)")
    parser.add_argument("--agents", type=int, default=200, help="agents registered at the SIPp uas")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (3 s steps, low rates)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    seconds = QUICK["seconds"] if args.quick else args.seconds

    default = list(QUICK["rates"] if args.quick else RATES)  # type: ignore[call-overload]
    rates = [int(r) for r in args.rates.split(",")] if args.rates else default
    agents = agent_extensions(int(QUICK["agents"]) if args.quick else args.agents)  # type: ignore[call-overload]
    print(f"media_cps: {seconds:g} s steps, {len(agents)} agents at a SIPp uas, load average {machine_load()}")
    direct: list[Step] = []
    anchored: list[Step] = []
    for rate in rates:
        for mode, steps in (("direct", direct), ("anchored", anchored)):
            if steps and not steps[-1].passed:
                continue  # this run stopped at its first failing step
            passed, detail = step(rate, seconds, agents, mode)
            steps.append(Step(mode, rate, passed, detail))
            print(f"  {mode:11} {rate:6,}/s  {'PASS' if passed else 'FAIL'}  {detail}", flush=True)
        if not (direct[-1].passed or anchored[-1].passed):
            break
    a_cps, d_cps = best(anchored), best(direct)
    met = a_cps >= TARGET_CPS and d_cps > 0 and a_cps / d_cps >= TARGET_RATIO
    print(f"\nanchored {a_cps:,} calls/s; direct {d_cps:,} calls/s{top(direct)}; ratio {ratio(a_cps, d_cps)}; "
          f"target >= {TARGET_CPS} calls/s and ratio >= {TARGET_RATIO}: {'met' if met else 'NOT met'}")
    if not args.no_record:
        passing = [s for s in anchored if s.passed]
        note = f"; anchored at {passing[-1].rate:,}/s: {passing[-1].detail}" if passing else ""
        for steps in (anchored, direct):
            failed = next((s for s in steps if not s.passed), None)
            note += f"; first failing {failed.target} step {failed.rate:,}/s: {failed.detail}" if failed else ""
        record(f"media_cps: b2bua_cps's calls (SIPp uac -> DID -> queue -> {len(agents)} agents at a SIPp uas, "
               f"callbridge serve on SQLite, defences on) with media anchored on one userspace rtpengine "
               f"(--delete-delay=0), {seconds:g} s steps, 0 failed calls and all done within "
               f"{seconds * SUSTAIN_SLACK:g} s{note}; load average {machine_load()}",
               f"{a_cps:,} calls/s anchored",
               f"{d_cps:,} calls/s{top(direct)} (the same node, media_mode direct)",
               ratio(a_cps, d_cps), f">= {TARGET_CPS} calls/s, ratio >= {TARGET_RATIO}",
               command_line("bench/media_cps.py", sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
