"""Memory per established call: hold many calls up through `callbridge serve` and read its RSS before and with
them up; Kamailio's per-call memory for the same calls, same run, as the ceiling.

    .venv/bin/python bench/concurrent_calls.py           # 10,000 calls, records a row in bench/RESULTS.md
    .venv/bin/python bench/concurrent_calls.py --quick --no-record

The calls take the production path of bench/b2bua_cps.py (trunk DID -> queue -> agents registered with digest at a
SIPp uas; SQLite write-through, defences on), one agent per call: `--calls` agents are registered and made ready
first, then callbridge's RSS is read (the baseline: agents, registrations and the process itself). SIPp's built-in
uac then places the calls at a moderate rate, each held for `-d` (long enough for the last one to come up plus the
hold), `-l` no lower than the number of calls. Once callbridge's gauge counts two legs per call and SIPp counts
every call current, RSS is read again: (RSS with the calls up - baseline) / calls is the figure. The calls then end
with BYE and the RSS after them is printed too (what the process keeps: Python does not give freed memory back).

Kamailio (the loopback proxy of tests/peers/kamailio.py, record-routing, transaction stateful, no dialog module)
carries the same calls from SIPp to SIPp; its memory is the sum of its processes' PSS (its shared memory is shared
among them). A stateful proxy forgets a call once its transactions end, so its per-call figure is what that costs:
the floor for any SIP element, not a B2BUA doing the same work.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
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
    agent_extensions,
    command_line,
    free_port,
    machine_load,
    make_ready,
    record,
    register_agents,
    rss_kb,
    tree_memory,
    workdir,
)

from peers.sipp import parse_stat_file

TARGET_KB = 20.0


def current_calls(uac: Sipp) -> int:
    value = parse_stat_file(uac.stat_file).get("CurrentCall", "")
    return int(value) if value.strip().isdigit() else 0


def uac_for(remote: tuple[str, int], calls: int, rate: int, hold: float, base: Path) -> Sipp:
    ramp_seconds = calls / rate
    pause_ms = int((ramp_seconds + hold) * 1000)
    return Sipp("uac", remote=remote, host=TRUNK_HOST, service=DID, calls=calls, rate=rate, limit=calls,
                buff_size=BUFF_SIZE, timeout=2 * ramp_seconds + hold + 60, trace_err=False, workdir=base / "uac",
                extra_args=["-d", str(pause_ms)])


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def callbridge_run(calls: int, rate: int, hold: float) -> tuple[float | None, str]:
    base = workdir("concurrent-callbridge-")
    agents = agent_extensions(calls)
    with CallbridgeServe(base / "node", agents, trusted=[f"{AGENTS_HOST}/32"]) as node:
        port = free_port(AGENTS_HOST)
        register_agents(node.sip_address, agents, host=AGENTS_HOST, port=port)
        make_ready(node.http_url, node.token, agents)
        time.sleep(2.0)
        before = rss_kb(node.pid)
        answering = Sipp("uas", host=AGENTS_HOST, port=port, buff_size=BUFF_SIZE, timeout=2 * calls / rate + hold + 90,
                         trace_err=False, workdir=base / "uas").start()
        time.sleep(0.3)
        uac = uac_for(node.sip_address, calls, rate, hold, base).start()
        try:
            up = wait_for(lambda: (node.metric("callbridge_b2bua_legs") or 0) >= 2 * calls
                          and current_calls(uac) >= calls, calls / rate + hold)
            legs = node.metric("callbridge_b2bua_legs") or 0
            with_calls = rss_kb(node.pid)
            result = uac.wait()
            wait_for(lambda: (node.metric("callbridge_b2bua_legs") or 0) == 0, 10)
            after = rss_kb(node.pid)
        finally:
            answering.stop()
    held = int(legs // 2)
    per_call = (with_calls - before) / held if held else None
    detail = (f"{held:,} calls up (all up: {up}); RSS {before / 1024:.1f} MiB before, {with_calls / 1024:.1f} MiB "
              f"with the calls, {after / 1024:.1f} MiB after; uac {result.successful:,} ok, {result.failed:,} failed")
    return per_call, detail


def kamailio_run(calls: int, rate: int, hold: float) -> tuple[float | None, str]:
    base = workdir("concurrent-kamailio-")
    answering = Sipp("uas", host=AGENTS_HOST, port=free_port(AGENTS_HOST), buff_size=BUFF_SIZE,
                     timeout=2 * calls / rate + hold + 90, trace_err=False, workdir=base / "uas").start()
    try:
        with Kamailio(default_route=(AGENTS_HOST, answering.port), workdir=base / "kamailio") as kam:
            assert kam._proc is not None
            group = kam._proc.pid
            time.sleep(1.0)
            rss_before, pss_before = tree_memory(group)
            uac = uac_for(kam.address, calls, rate, hold, base).start()
            up = wait_for(lambda: current_calls(uac) >= calls, calls / rate + hold)
            held = current_calls(uac)
            rss_with, pss_with = tree_memory(group)
            result = uac.wait()
    finally:
        answering.stop()
    per_call = (pss_with - pss_before) / held if held else None
    detail = (f"{held:,} calls up (all up: {up}); PSS {pss_before / 1024:.1f} MiB before, {pss_with / 1024:.1f} MiB "
              f"with the calls (RSS {rss_before / 1024:.1f} -> {rss_with / 1024:.1f} MiB); uac "
              f"{result.successful:,} ok, {result.failed:,} failed")
    return per_call, detail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=200, help="calls/s while ramping up")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds every call is up together")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (50 calls)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    calls, rate, hold = (50, 50, 2.0) if args.quick else (args.calls, args.rate, args.hold)
    print(f"concurrent_calls: {calls:,} calls at {rate}/s, held {hold:g} s, load average {machine_load()}")
    kam_kb, kam_detail = kamailio_run(calls, rate, hold)
    print(f"  Kamailio    {kam_detail}")
    cb_kb, cb_detail = callbridge_run(calls, rate, hold)
    print(f"  callbridge  {cb_detail}")
    cb_text = f"{cb_kb:.1f} KiB/call" if cb_kb is not None else "not measured"
    kam_text = f"{kam_kb:.2f} KiB/call" if kam_kb is not None else "not measured"
    verdict = "met" if cb_kb is not None and cb_kb <= TARGET_KB else "NOT met"
    print(f"\ncallbridge {cb_text} (RSS); Kamailio {kam_text} (PSS); target <= {TARGET_KB:g} KiB: {verdict}")
    if not args.no_record:
        ratio_text = f"{cb_kb / kam_kb:.1f}x Kamailio" if cb_kb and kam_kb and kam_kb > 0 else "n/a (Kamailio ~0)"
        record(f"concurrent_calls: {calls:,} established calls (trunk DID -> queue -> agents at a SIPp uas, ramp "
               f"{rate}/s, held {hold:g} s), RSS of callbridge serve on SQLite, defences on; {cb_detail}; Kamailio: "
               f"{kam_detail}; load average {machine_load()}",
               cb_text, f"{kam_text} (Kamailio proxy, PSS of its processes, no dialog state)", ratio_text,
               f"<= {TARGET_KB:g} KiB/call", command_line("bench/concurrent_calls.py", sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
