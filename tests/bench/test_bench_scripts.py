"""The benchmark scripts run end to end in their tiny modes (`--quick --no-record`) against real peers (SIPp,
Kamailio, `callbridge serve`) and print their figures. Nothing here is timed: a slow machine passes as long as
calls, registrations and memory readings come out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.peers]


def run_script(name: str, timeout: float) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / name), "--quick", "--no-record"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.timeout(300)
def test_b2bua_cps_prints_the_three_figures_and_ratios() -> None:
    out = run_script("b2bua_cps.py", 280)
    found = re.search(r"^callbridge ([\d,]+) calls/s; Kamailio ([\d,]+) calls/s; SIPp->SIPp ([\d,]+) calls/s$", out,
                      re.MULTILINE)
    assert found, out
    callbridge, kamailio, sipp = (number(g) for g in found.groups())
    assert callbridge > 0 and kamailio > 0 and sipp > 0, out  # calls went through each target
    assert re.search(r"^ratios: callbridge/Kamailio \d+\.\d\d, callbridge/SIPp \d+\.\d\d; target >= 500: ", out,
                     re.MULTILINE), out
    assert re.search(r"callbridge +\d+/s +PASS .* 0 legs left 1 s after", out), out


@pytest.mark.timeout(240)
def test_register_rate_prints_both_figures_and_the_ratio() -> None:
    out = run_script("register_rate.py", 220)
    found = re.search(r"^callbridge ([\d,]+) REGISTERs/s; Kamailio ([\d,]+) REGISTERs/s; ratio (\d+\.\d\d|n/a); ", out,
                      re.MULTILINE)
    assert found, out
    assert number(found.group(1)) > 0 and number(found.group(2)) > 0, out  # every registration got its 200


@pytest.mark.timeout(240)
def test_concurrent_calls_prints_memory_per_call() -> None:
    out = run_script("concurrent_calls.py", 220)
    found = re.search(r"^callbridge (-?\d+\.\d) KiB/call \(RSS\); Kamailio (-?\d+\.\d\d) KiB/call \(PSS\); ", out,
                      re.MULTILINE)
    assert found, out
    assert re.search(r"callbridge +100 calls up \(all up: True\)", out), out
