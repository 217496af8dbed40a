"""The benchmark scripts in bench/ run end to end in a tiny mode. Not timed: a figure here proves nothing about
speed; what is checked is that the script measures both targets, validates its run and prints its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_agentbox_http_bench_runs() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "agentbox_http.py"), "--duration", "1", "--quick"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr  # 0: no failed request, every 200 a state change written
    ours = re.search(r"^callbridge: ([\d,]+) req/s, p99 ([\d.]+) ms$", out, re.M)
    bare = re.search(r"^bare Starlette: ([\d,]+) req/s, p99 ([\d.]+) ms$", out, re.M)
    ratio = re.search(r"^ratio: ([\d.]+) \(target >= 0\.5: (met|NOT met)\)$", out, re.M)
    assert ours and bare and ratio, out
    ours_rate, bare_rate = (int(m.group(1).replace(",", "")) for m in (ours, bare))
    assert ours_rate > 0 and bare_rate > 0
    assert abs(float(ratio.group(1)) - ours_rate / bare_rate) < 0.01  # the ratio of the two printed figures
    written = re.search(r"^state changes written through: ([\d,]+) rows for ([\d,]+) answers 200 "
                        r"\(every answer a real state change\)$", out, re.M)
    assert written, out
    assert int(written.group(2).replace(",", "")) > 0
