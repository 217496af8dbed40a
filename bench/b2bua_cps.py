"""Calls per second through callbridge on the production path, next to Kamailio and SIPp to SIPp, same run.

    .venv/bin/python bench/b2bua_cps.py                  # 30 s steps, records a row in bench/RESULTS.md
    .venv/bin/python bench/b2bua_cps.py --quick --no-record

The call: SIPp's built-in uac, from 127.0.0.2 (the trunk's inbound network), dials the DID; callbridge (`callbridge
serve`, SQLite write-through, defences at their defaults) routes it to its queue, which offers it to the ready agent
idle longest; every agent registered with digest at one SIPp uas (bench/common.py), which answers at once; the
caller hangs up at once (INVITE, 180, 200, ACK, BYE, 200 on both legs); the operation's ACW is 0, so the agent is
ready again when the call ends. The ceilings, same call flow, same machine, same run:
- Kamailio (Debian's, the loopback proxy configuration of tests/peers/kamailio.py, record-routing, transaction
  stateful) forwarding to the SIPp uas;
- SIPp's uac calling SIPp's uas directly.

A step offers N = rate x seconds calls at one rate to a fresh target. It passes when both hold:
- none failed: SIPp's uac counts all N calls successful, none failed, and it exited by itself (no timeout);
- they were carried at the offered rate: the uac's own clock, from its start to its last statistics line (written
  when it exits, once the last call's BYE is answered), reads at most seconds x SUSTAIN_SLACK. A target that falls
  behind makes the N calls take longer than `seconds`: 30,000 calls offered at 1,000/s and done in 50 s carried
  600 calls/s, and that step fails.
The carried rate, N successful / that time, is printed for every step. The same test applies to callbridge and to
both ceilings, so the figures compare like with like. The figure of a target is its highest passing rate; each
ramp stops at its first failing step. callbridge's CPU use over the step is printed next to it (one process, one
core at most).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    AGENTS_HOST,
    BUFF_SIZE,
    DID,
    TRUNK_HOST,
    CallbridgeServe,
    Kamailio,
    Sipp,
    SippResult,
    Step,
    agent_extensions,
    best,
    command_line,
    cpu_seconds,
    free_port,
    machine_load,
    make_ready,
    ramp,
    ratio,
    record,
    register_agents,
    workdir,
)

TARGET_CPS = 500
CALLBRIDGE_RATES = (200, 300, 400, 500, 600, 800, 1000)
KAMAILIO_RATES = (1000, 2000, 3000, 4000, 5000, 6000)
SIPP_RATES = (2000, 4000, 6000, 8000, 10000)
# A step's N calls must be done within its length times this: SIPp paces N calls at `rate` over (N - 1) / rate
# seconds, plus the last call's few milliseconds; 10 % more allows for scheduling, and nothing more for a target
# that fell behind.
SUSTAIN_SLACK = 1.1
# The smoke run (tests/bench): every target's step once, short; each step starts its own node, so a step less is
# seconds less of the suite
QUICK = {"seconds": 1.5, "callbridge": (40,), "kamailio": (100,), "sipp": (100,), "agents": 10}


def uas(port: int, seconds: float, base: Path) -> Sipp:
    return Sipp("uas", host=AGENTS_HOST, port=port, buff_size=BUFF_SIZE, timeout=seconds + 60, trace_err=False,
                workdir=base / "uas").start()


def sipp_seconds(result: SippResult) -> float:
    """How long SIPp's run took by its own clock: its last statistics line's CurrentTime minus StartTime (each
    "date<TAB>time<TAB>epoch seconds"), so SIPp's process start is not counted; the wall-clock time from launch to
    exit when the line is missing or unreadable."""
    try:
        start, now = (float(result.stats[name].split("\t")[-1]) for name in ("StartTime", "CurrentTime"))
    except (KeyError, ValueError):
        return result.elapsed
    return now - start


def place_calls(remote: tuple[str, int], rate: int, seconds: float, base: Path) -> tuple[bool, str]:
    calls = max(1, int(rate * seconds))
    result = Sipp("uac", remote=remote, host=TRUNK_HOST, service=DID, calls=calls, rate=rate, buff_size=BUFF_SIZE,
                  timeout=seconds + 40, trace_err=False, workdir=base / "uac").run()
    took = sipp_seconds(result)
    carried = result.successful / took if took > 0 else 0.0
    no_failure = result.failed == 0 and result.successful == calls and not result.timed_out
    sustained = took <= seconds * SUSTAIN_SLACK
    verdict = "" if sustained else f", NOT sustained (> {seconds * SUSTAIN_SLACK:g} s)"
    return no_failure and sustained, (
        f"{result.successful:,}/{calls:,} ok, {result.failed:,} failed, {result.retransmissions:,} retransmissions, "
        f"{took:.1f} s, carried {carried:,.0f} calls/s{verdict}")


def sipp_step(rate: int, seconds: float) -> tuple[bool, str]:
    base = workdir("cps-sipp-")
    answering = uas(free_port(AGENTS_HOST), seconds, base)
    time.sleep(0.3)
    try:
        return place_calls((AGENTS_HOST, answering.port), rate, seconds, base)
    finally:
        answering.stop()


def kamailio_step(rate: int, seconds: float) -> tuple[bool, str]:
    base = workdir("cps-kamailio-")
    answering = uas(free_port(AGENTS_HOST), seconds, base)
    try:
        with Kamailio(default_route=(AGENTS_HOST, answering.port), workdir=base / "kamailio") as kam:
            return place_calls(kam.address, rate, seconds, base)
    finally:
        answering.stop()


def callbridge_step(rate: int, seconds: float, agents: list[str]) -> tuple[bool, str]:
    base = workdir("cps-callbridge-")
    with CallbridgeServe(base / "node", agents, trusted=[f"{AGENTS_HOST}/32"]) as node:
        port = free_port(AGENTS_HOST)
        register_agents(node.sip_address, agents, host=AGENTS_HOST, port=port)
        make_ready(node.http_url, node.token, agents)
        answering = uas(port, seconds, base)
        time.sleep(0.3)
        try:
            cpu = cpu_seconds(node.pid)
            started = time.monotonic()
            passed, detail = place_calls(node.sip_address, rate, seconds, base)
            busy = (cpu_seconds(node.pid) - cpu) / (time.monotonic() - started)
            time.sleep(1.0)
            legs = node.metric("callbridge_b2bua_legs")
        finally:
            answering.stop()
    return passed, f"{detail}, callbridge {busy * 100:.0f}% of a core, {legs:.0f} legs left 1 s after"


def top(steps: list[Step]) -> str:
    """A note when a ramp never failed: its figure is the highest rate tried, not its limit."""
    return " (the highest rate tried)" if steps and all(s.passed for s in steps) else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of a step")
    parser.add_argument("--rates", help="callbridge's rates, comma-separated")
    parser.add_argument("--kamailio-rates")
    parser.add_argument("--sipp-rates")
    parser.add_argument("--agents", type=int, default=200, help="agents registered at the SIPp uas")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (1.5 s steps, low rates)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    seconds = QUICK["seconds"] if args.quick else args.seconds

    def rates(given: str | None, full: tuple[int, ...], quick_key: str) -> list[int]:
        if given:
            return [int(r) for r in given.split(",")]
        return list(QUICK[quick_key]) if args.quick else list(full)  # type: ignore[call-overload]

    agents = agent_extensions(int(QUICK["agents"]) if args.quick else args.agents)  # type: ignore[call-overload]
    print(f"b2bua_cps: {seconds:g} s steps, {len(agents)} agents at a SIPp uas, load average {machine_load()}")
    sipp = ramp("SIPp->SIPp", rates(args.sipp_rates, SIPP_RATES, "sipp"), lambda r: sipp_step(r, seconds))
    kam = ramp("Kamailio", rates(args.kamailio_rates, KAMAILIO_RATES, "kamailio"),
               lambda r: kamailio_step(r, seconds))
    cb = ramp("callbridge", rates(args.rates, CALLBRIDGE_RATES, "callbridge"),
              lambda r: callbridge_step(r, seconds, agents))
    cb_cps, kam_cps, sipp_cps = best(cb), best(kam), best(sipp)
    print(f"\ncallbridge {cb_cps:,} calls/s; Kamailio {kam_cps:,} calls/s; SIPp->SIPp {sipp_cps:,} calls/s")
    print(f"ratios: callbridge/Kamailio {ratio(cb_cps, kam_cps)}, callbridge/SIPp {ratio(cb_cps, sipp_cps)}; "
          f"target >= {TARGET_CPS}: {'met' if cb_cps >= TARGET_CPS else 'NOT met'}")
    if not args.no_record:
        failed = next((s for s in cb if not s.passed), None)
        note = f"; first failing step {failed.rate:,}/s: {failed.detail}" if failed else ""
        record(f"b2bua_cps: SIPp uac (trunk 127.0.0.2) -> DID -> queue -> {len(agents)} agents registered at a SIPp "
               f"uas, callbridge serve on SQLite, defences on, {seconds:g} s steps, 0 failed calls and all of a step's "
               f"calls done within {seconds * SUSTAIN_SLACK:g} s{note}; "
               f"load average {machine_load()}",
               f"{cb_cps:,} calls/s",
               f"{kam_cps:,} calls/s{top(kam)} (Kamailio proxy); {sipp_cps:,} calls/s{top(sipp)} (SIPp->SIPp)",
               f"{ratio(cb_cps, kam_cps)} / {ratio(cb_cps, sipp_cps)}", f">= {TARGET_CPS} calls/s",
               command_line("bench/b2bua_cps.py", sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
