"""Digest REGISTERs per second against callbridge and against Kamailio, same run, same load generator.

    .venv/bin/python bench/register_rate.py              # 15 s steps, records a row in bench/RESULTS.md
    .venv/bin/python bench/register_rate.py --quick --no-record

A registration is what a phone does (RFC 3261 §10.2, §22.2): REGISTER, 401 with a challenge, REGISTER with MD5
digest credentials (qop=auth), 200. `DigestRegisterLoad` (bench/common.py) sends them from 127.0.0.5 at a paced
rate, cycling through `--users` agents of the operation, retransmitting lost requests as Timer E does. The targets:
- callbridge: `callbridge serve` on SQLite, every accepted binding written through, defences on (the source is in
  the configured allow-list: thousands of phones' REGISTERs from one address are above the per-source flood limit);
- Kamailio 5.6 (Debian's) as a digest registrar without a database: `pv_www_authenticate` checks the same
  passwords, usrloc keeps the bindings in memory (db_mode 0), one worker (as the proxy ceiling runs).

A step sends `rate x seconds` registrations to a fresh target and passes when every one ends with 200 (none failed,
none lost) and the generator kept the pace. The figure is the highest passing rate. When the generator cannot keep
the pace the step says so: the figure is then the generator's limit, not the target's.

Why not SIPp: its 3.6.1 `[authentication]` reads only the first WWW-Authenticate (callbridge offers SHA-256 before
MD5) and cannot take the user from an injection file; see `DigestRegisterLoad`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REGISTER_HOST,
    CallbridgeServe,
    DigestRegisterLoad,
    Step,
    agent_extensions,
    best,
    command_line,
    cpu_seconds,
    machine_load,
    ramp,
    ratio,
    record,
    start_kamailio_registrar,
    workdir,
)

TARGET_RPS = 2000
CALLBRIDGE_RATES = (500, 1000, 1500, 2000, 2500, 3000, 4000)
KAMAILIO_RATES = (1000, 2000, 3000, 4000, 5000, 6000, 8000)
QUICK_RATES = (100,)  # the smoke run: one step a target


def measure(registrar: tuple[str, int], users: list[str], rate: int, seconds: float,
            pid: int | None) -> tuple[bool, str]:
    load = DigestRegisterLoad(registrar, users, host=REGISTER_HOST)
    try:
        cpu = cpu_seconds(pid) if pid else 0.0
        started = time.monotonic()
        run = load.run(rate, max(1, int(rate * seconds)))
        busy = (cpu_seconds(pid) - cpu) / (time.monotonic() - started) if pid else None
    finally:
        load.close()
    pace = "" if run.count <= 1 or run.send_span <= run.count / rate * 1.05 + 0.05 else " (generator behind pace)"
    cpu_note = f", target {busy * 100:.0f}% of a core" if busy is not None else ""
    return run.passed, f"{run}{cpu_note}{pace}"


def callbridge_step(rate: int, seconds: float, users: list[str]) -> tuple[bool, str]:
    with CallbridgeServe(workdir("reg-callbridge-"), users, trusted=[f"{REGISTER_HOST}/32"]) as node:
        return measure(node.sip_address, users, rate, seconds, node.pid)


def kamailio_step(rate: int, seconds: float, users: list[str]) -> tuple[bool, str]:
    kam = start_kamailio_registrar()
    try:
        return measure(kam.address, users, rate, seconds, None)
    finally:
        kam.stop()


def top(steps: list[Step]) -> str:
    """A note when a ramp never failed: its figure is the highest rate tried, not its limit."""
    return " (the highest rate tried)" if steps and all(s.passed for s in steps) else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of a step")
    parser.add_argument("--rates", help="callbridge's rates, comma-separated")
    parser.add_argument("--kamailio-rates")
    parser.add_argument("--users", type=int, default=2000, help="agents registering in turn")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (1 s steps, low rates)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    users = agent_extensions(20 if args.quick else args.users)

    def rates(given: str | None, full: tuple[int, ...]) -> list[int]:
        if given:
            return [int(r) for r in given.split(",")]
        return list(QUICK_RATES if args.quick else full)

    print(f"register_rate: {seconds:g} s steps, {len(users)} users, load average {machine_load()}")
    kam = ramp("Kamailio", rates(args.kamailio_rates, KAMAILIO_RATES), lambda r: kamailio_step(r, seconds, users))
    cb = ramp("callbridge", rates(args.rates, CALLBRIDGE_RATES), lambda r: callbridge_step(r, seconds, users))
    cb_rps, kam_rps = best(cb), best(kam)
    print(f"\ncallbridge {cb_rps:,} REGISTERs/s; Kamailio {kam_rps:,} REGISTERs/s; ratio {ratio(cb_rps, kam_rps)}; "
          f"target >= {TARGET_RPS:,}: {'met' if cb_rps >= TARGET_RPS else 'NOT met'}")
    if not args.no_record:
        failed = next((s for s in cb if not s.passed), None)
        note = f"; first failing step {failed.rate:,}/s: {failed.detail}" if failed else ""
        record(f"register_rate: digest REGISTERs (401 then 200, MD5 qop=auth) of {len(users):,} users from one "
               f"Python generator, callbridge serve on SQLite (write-through, defences on), {seconds:g} s steps"
               f"{note}; load average {machine_load()}",
               f"{cb_rps:,} REGISTERs/s",
               f"{kam_rps:,} REGISTERs/s{top(kam)} (Kamailio, pv_www_authenticate, usrloc in memory)",
               ratio(cb_rps, kam_rps), f">= {TARGET_RPS:,}/s", command_line("bench/register_rate.py", sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
