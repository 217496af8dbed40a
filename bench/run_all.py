"""Run every benchmark of bench/ and rewrite bench/RESULTS.md: one table of the figures, each with its ceiling
measured in the same run, the ratio, the target and whether it is met, under a header naming the machine (cores,
memory, CPU model, Python, load average at the start), the date and the command.

    .venv/bin/python bench/run_all.py                     # every benchmark, full length; rewrites bench/RESULTS.md
    .venv/bin/python bench/run_all.py --quick --output /tmp/results.md   # smoke run (tests/bench)
    .venv/bin/python bench/run_all.py --only parse,uas_cps

How a figure is collected: each script runs with its own command line and appends its row to bench/RESULTS.md
(`| benchmark | figure | ceiling | ratio | target | command | date |`); run_all takes the rows a script appended,
removes them again, and writes its own table. `parse.py` records nothing: its figures are read from what it
prints. A script that fails or writes no row gets a row that says so. The notes below the table of the old
RESULTS.md (everything after its first table) are kept as they are. The benchmarks that do not exist yet when it
runs are listed as missing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
TABLE_HEADER = ("| benchmark | figure | ceiling (same run) | ratio | target | met | command |\n"
                "|---|---|---|---|---|---|---|\n")


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    read_stdout: Callable[[str, str], list[str]] | None = None  # (stdout, command) -> rows, for scripts that
    # print their figure instead of recording it


@dataclass
class Outcome:
    benchmark: Benchmark
    command: str
    returncode: int | None
    seconds: float
    rows: list[str] = field(default_factory=list)
    tail: str = ""


def _parse_rows(stdout: str, command: str) -> list[str]:
    """parse.py prints `name: N msg/s` per parser and a ratio line; its row is made from those."""
    rates = {m.group(1): m.group(2) for m in re.finditer(r"^\s*(\w+): +([\d,]+) msg/s$", stdout, re.MULTILINE)}
    if "callbridge" not in rates:
        return []
    peers = {k: float(v.replace(",", "")) for k, v in rates.items() if k != "callbridge"}
    if not peers:
        return [f"| parse INVITE+SDP (bench/parse.py) | {rates['callbridge']} msg/s | no peer installed | n/a "
                f"| ≥ 2x | `{command}` | |"]
    peer = max(peers, key=lambda k: peers[k])
    ratio = float(rates["callbridge"].replace(",", "")) / peers[peer]
    return [f"| parse INVITE+SDP (bench/parse.py) | {rates['callbridge']} msg/s | {rates[peer]} msg/s ({peer}) "
            f"| {ratio:.2f}x | ≥ 2x | `{command}` | |"]


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("parse", "parse.py", (), ("--seconds", "0.2", "--repeats", "1"), _parse_rows),
    Benchmark("uas_cps", "uas_cps.py", (), ("--rates", "50", "--seconds", "2")),
    Benchmark("b2bua_cps", "b2bua_cps.py", (), ("--quick",)),
    Benchmark("concurrent_calls", "concurrent_calls.py", (), ("--quick",)),
    Benchmark("register_rate", "register_rate.py", (), ("--quick",)),
    Benchmark("agentbox_http", "agentbox_http.py", ("--record",), ("--quick", "--record")),
    Benchmark("transfers", "transfers.py", ("--record",), ("--quick", "--record")),
    Benchmark("event_log", "event_log.py", ("--record",), ("--quick", "--record")),
    Benchmark("websocket_agents", "websocket_agents.py", (), ("--quick",)),
    Benchmark("websocket_calls", "websocket_calls.py", (), ("--quick",)),
    Benchmark("media_cps", "media_cps.py", (), ("--quick",)),
    Benchmark("media_concurrent", "media_concurrent.py", (), ("--quick",)),
)


# -- the machine ---------------------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.lower().startswith("model name")), platform.processor() or "unknown")
    mem_kb = 0
    if Path("/proc/meminfo").exists():
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {"cores": str(os.cpu_count()), "memory": f"{mem_kb / 1024 / 1024:.1f} GiB", "cpu": model,
            "python": platform.python_version(), "os": platform.platform(terse=True), "load": load}


# -- a table row ---------------------------------------------------------------------------------------------------
def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split(" | ")]


def _number(text: str) -> float | None:
    found = re.search(r"\d[\d,]*(?:\.\d+)?", text)
    return float(found.group(0).replace(",", "")) if found else None


def met(figure: str, ratio: str, target: str) -> str:
    """Whether `target` (">= 500 calls/s", "≥ 2x", "≥ 0.5") holds: a unit-less or `x` target is a ratio."""
    wanted = _number(target)
    if wanted is None:
        return "?"
    unit = re.sub(r"[\d,.\s≥>=<≤x]", "", target)
    got = _number(ratio) if not unit else _number(figure)
    if got is None:
        return "?"
    at_most = "<" in target or "≤" in target
    return "met" if (got <= wanted if at_most else got >= wanted) else "NOT met"


def table_row(name: str, row: str) -> str:
    c = cells(row)
    if len(c) < 6:
        return f"| {name} | (unreadable row) | | | | ? | `{row.strip()}` |\n"
    benchmark, figure, ceiling, ratio, target, command = c[:6]
    command = command if command.startswith("`") else f"`{command}`"
    return f"| {benchmark} | {figure} | {ceiling} | {ratio} | {target} | {met(figure, ratio, target)} | {command} |\n"


# -- running -------------------------------------------------------------------------------------------------------
def _take_appended(before: str) -> list[str]:
    """The table rows appended to RESULTS.md since `before` was read; they are removed from it again."""
    after = RESULTS.read_text() if RESULTS.exists() else ""
    old = set(before.splitlines())
    appended = [line for line in after.splitlines() if line.startswith("|") and line not in old]
    if appended:
        kept = [line for line in after.splitlines(keepends=True) if line.rstrip("\n") not in appended]
        RESULTS.write_text("".join(kept))
    return appended


def run(benchmark: Benchmark, quick: bool, timeout: float) -> Outcome:
    args = benchmark.quick if quick else benchmark.full
    argv = [sys.executable, str(ROOT / "bench" / benchmark.script), *args]
    command = " ".join([".venv/bin/python", f"bench/{benchmark.script}", *(shlex.quote(a) for a in args)])
    before = RESULTS.read_text() if RESULTS.exists() else ""
    print(f"== {benchmark.name}: {command}", flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, start_new_session=True)
        returncode: int | None = proc.returncode
        stdout = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as expired:
        returncode, stdout = None, f"{expired.stdout or ''}{expired.stderr or ''}"
        stdout = stdout if isinstance(stdout, str) else stdout.decode(errors="replace")
    outcome = Outcome(benchmark, command, returncode, time.monotonic() - started,
                      tail="\n".join(stdout.strip().splitlines()[-5:]))
    outcome.rows = _take_appended(before)
    if benchmark.read_stdout is not None and returncode == 0:
        outcome.rows += benchmark.read_stdout(proc.stdout, command)
    print(stdout.strip()[-3000:], flush=True)
    return outcome


def rows_of(outcome: Outcome) -> list[str]:
    b = outcome.benchmark
    if outcome.returncode == 0 and outcome.rows:
        return [table_row(b.name, row) for row in outcome.rows]
    why = "timed out" if outcome.returncode is None else (
        f"failed (exit {outcome.returncode})" if outcome.returncode else "wrote no row")
    last = outcome.tail.splitlines()[-1].replace("|", "/") if outcome.tail else ""
    return [f"| {b.name} (bench/{b.script}) | {why}: {last} | | | | NOT met | `{outcome.command}` |\n"]


# -- RESULTS.md ------------------------------------------------------------------------------------------------------
def notes_of(text: str) -> str:
    """Everything after the first table of the old RESULTS.md (its notes), as it is."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return ""
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "".join(lines[end:])


def render(outcomes: Sequence[Outcome], missing: Sequence[Benchmark], info: dict[str, str], date: str,
           command: str, quick: bool, notes: str) -> str:
    head = [
        "# Benchmark results\n\n",
        "Each figure is measured next to a ceiling measured in the same run, on the production path with its "
        "protections on. Re-run a line with the command it names; re-run them all with the command below.\n\n",
        f"- Date: {date}{' (quick smoke run: not figures to quote)' if quick else ''}\n",
        f"- Machine: {info['cores']} cores, {info['memory']}, {info['cpu']}; {info['os']}; "
        f"Python {info['python']}\n",
        f"- Load average at the start: {info['load']}\n",
        f"- Command: `{command}`\n\n",
        TABLE_HEADER,
    ]
    body = [row for outcome in outcomes for row in rows_of(outcome)]
    body += [f"| {b.name} (bench/{b.script}) | not run: the script does not exist yet | | | | NOT met | |\n"
             for b in missing]
    return "".join(head + body) + (notes if notes.startswith("\n") or not notes else "\n" + notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="each benchmark in its smoke mode")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the report goes (bench/RESULTS.md)")
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--timeout", type=float, help="seconds per benchmark (default 7200, quick 600)")
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only.split(",")]
    present = [b for b in chosen if (ROOT / "bench" / b.script).exists()]
    missing = [b for b in chosen if b not in present]
    info = machine()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join([".venv/bin/python", "bench/run_all.py", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    print(f"run_all: {len(present)} benchmarks on {info['cores']} cores ({info['cpu']}), load {info['load']}")
    timeout = args.timeout or (600.0 if args.quick else 7200.0)
    outcomes = [run(b, args.quick, timeout) for b in present]
    notes = notes_of(RESULTS.read_text()) if RESULTS.exists() else ""
    args.output.write_text(render(outcomes, missing, info, date, command, args.quick, notes))
    print(f"\nwrote {args.output}")
    for o in outcomes:
        print(f"  {o.benchmark.name:17} exit {o.returncode} in {o.seconds:.0f} s, {len(o.rows)} row(s)")
    return 0 if all(o.returncode == 0 and o.rows for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
