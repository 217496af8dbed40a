"""The benchmark scripts in bench/ run end to end in a tiny mode. Not timed: a figure here proves nothing about
speed; what is checked is that the script measures both targets, validates its run and prints its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# serial: each benchmark loads the machine for its figures and times its own run; alone (scripts/test).
pytestmark = pytest.mark.serial


def test_agentbox_http_bench_runs() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "agentbox_http.py"), "--duration", "1", "--quick"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr  # 0: no failed request, every 200 a state change written
    ours = re.search(r"^callbridge: ([\d,]+) req/s, p99 ([\d.]+) ms$", out, re.M)
    bare = re.search(r"^bare Starlette: ([\d,]+) req/s, p99 ([\d.]+) ms$", out, re.M)
    ratio = re.search(r"^ratio: ([\d.]+) \(target >= 0\.55: (met|NOT met)\)$", out, re.M)
    cpu = re.search(r"^server CPU per request \(median of the runs\): callbridge ([\d,]+) us, bare ([\d,]+) us; "
                    r"callbridge's event loop thread alone ([\d,]+) us$", out, re.M)
    assert cpu, out
    server_us, bare_us, loop_us = (int(cpu.group(i).replace(",", "")) for i in (1, 2, 3))
    assert server_us > 0 and bare_us > 0 and 0 < loop_us <= server_us, out  # the loop is one of the threads
    assert ours and bare and ratio, out
    ours_rate, bare_rate = (int(m.group(1).replace(",", "")) for m in (ours, bare))
    assert ours_rate > 0 and bare_rate > 0
    assert abs(float(ratio.group(1)) - ours_rate / bare_rate) < 0.01  # the ratio of the two printed figures
    written = re.search(r"^state changes written through: ([\d,]+) rows for ([\d,]+) answers 200 "
                        r"\(every answer a real state change\)$", out, re.M)
    assert written, out
    assert int(written.group(2).replace(",", "")) > 0


def test_agentbox_inprocess_bench_runs() -> None:
    """bench/agentbox_inprocess.py in tiny mode: the application and the bare route measured in the same run, every
    answer 200 and every request a state change written through (exit 0), the ratio that of the printed figures."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "agentbox_inprocess.py"), "--quick"],
                            cwd=ROOT, capture_output=True, text=True, timeout=240)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    ours = re.search(r"^callbridge application: ([\d.]+) us CPU per change_status \(median of 2 rounds\)$", out, re.M)
    bare = re.search(r"^bare Starlette route: ([\d.]+) us CPU per request \(median of 2 rounds\)$", out, re.M)
    ratio = re.search(r"^ratio: ([\d.]+) \(bare / callbridge; no target\)$", out, re.M)
    assert ours and bare and ratio, out
    assert float(ours.group(1)) > 0 and float(bare.group(1)) > 0
    assert float(ratio.group(1)) == pytest.approx(float(bare.group(1)) / float(ours.group(1)), abs=0.01)
    assert re.search(r"^every answer 200, 840 state changes written through; ", out, re.M), out


def test_transfers_bench_runs() -> None:
    """bench/transfers.py in tiny mode: 20 calls up through SIPp, 20 blind transfers through the agentbox
    endpoint, change_status measured in the same run; exit 0 only when every transfer completed and no customer
    was lost."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "transfers.py"), "--quick"],
                            cwd=ROOT, capture_output=True, text=True, timeout=240)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(r"^completed transfers: 20 of 20, failed 0 \{\}$", out, re.M), out
    assert re.search(r"^completed transfers/s: [\d,.]+ \(target >= 250\)$", out, re.M), out
    cpu = re.search(r"^server CPU per transfer: ([\d,]+) us \(every thread, ", out, re.M)
    assert cpu and int(cpu.group(1).replace(",", "")) > 0, out
    latency = re.search(r"^transfer API latency: p50 ([\d.]+) ms, p99 ([\d.]+) ms$", out, re.M)
    status = re.search(r"^change_status p99 \(same run, (\d+) requests\): ([\d.]+) ms$", out, re.M)
    ratio = re.search(r"^transfer p99 / change_status p99: ([\d.]+) \(target <= 5\)$", out, re.M)
    assert latency and status and ratio, out
    assert float(latency.group(1)) <= float(latency.group(2)) and int(status.group(1)) > 0
    # the printed ratio is of the unrounded figures: compare within the rounding of the printed ones
    assert float(ratio.group(1)) == pytest.approx(float(latency.group(2)) / float(status.group(2)), rel=0.02, abs=0.01)
    assert re.search(r"^customers lost: 0 \(SIPp successful 20, failed 0;", out, re.M), out


def test_event_log_bench_runs() -> None:
    """bench/event_log.py in tiny mode: bench/transfers.py's run with one local webhook receiver; it reports the
    events written per second at the log during the transfers and the delivery lag, and exits 0 only when the
    transfers passed and every event of the run reached the receiver."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "event_log.py"), "--quick"],
                            cwd=ROOT, capture_output=True, text=True, timeout=240)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(r"^completed transfers: 20 of 20, failed 0 \{\}$", out, re.M), out
    written = re.search(r"^event log: ([\d,]+) events written in ([\d.]+) s of transfers \(seq (\d+) -> (\d+)\): "
                        r"([\d,.]+) events/s$", out, re.M)
    assert written, out
    count, seconds, first, last, rate = written.groups()
    assert int(count.replace(",", "")) == int(last) - int(first) > 0
    # the printed rate is the printed count over the printed time, within their rounding
    assert float(rate.replace(",", "")) == pytest.approx(int(count.replace(",", "")) / float(seconds), rel=0.02)
    # 20 transfers each write at least transfer.created, .answered, .completed and agents' state changes
    assert int(count.replace(",", "")) >= 20 * 4
    lag = re.search(r"^webhook lag over those ([\d,]+) events: p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms$",
                    out, re.M)
    assert lag, out
    assert lag.group(1) == count  # every event of the phase was received and measured
    assert float(lag.group(2)) <= float(lag.group(3)) <= float(lag.group(4))
    delivered = re.search(r"^webhook delivery: ([\d,]+) of ([\d,]+) events of the run received, 0 missing, "
                          r"0 repeated, in order: yes; caught up [\d.]+ s after the customers were done$", out, re.M)
    assert delivered and delivered.group(1) == delivered.group(2), out


# The benchmarks whose quick mode a test above already runs, with closer checks than run_all's: run_all's smoke
# test leaves them out rather than run them a second time (they are the longest quick runs).
SMOKE_TESTED_ABOVE = ("agentbox_http", "transfers", "event_log", "media_cps", "media_concurrent")


def test_media_cps_bench_runs() -> None:
    """bench/media_cps.py in tiny mode: the same node with media direct, then anchored on a real rtpengine; every
    call of an anchored step is anchored (the node's own count), none of a direct step's, and the ratio printed is
    that of the two figures."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "media_cps.py"), "--quick", "--no-record"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    direct = re.findall(r"^  direct +(\d+)/s  (PASS|FAIL)  (\d+)/(\d+) ok.*, ([\d,]+) calls anchored", out, re.M)
    anchored = re.findall(r"^  anchored +(\d+)/s  (PASS|FAIL)  (\d+)/(\d+) ok.*, ([\d,]+) calls anchored", out, re.M)
    assert direct and anchored, out
    assert all(count == "0" for *_, count in direct), out
    assert all(int(count) == int(ok) for _, _, ok, _, count in anchored), out  # every call that went through
    final = re.search(r"^anchored ([\d,]+) calls/s; direct ([\d,]+) calls/s.*; ratio ([\d.]+|n/a); target >= 400 "
                      r"calls/s and ratio >= 0\.6: (met|NOT met)$", out, re.M)
    assert final, out
    a_cps, d_cps = int(final.group(1).replace(",", "")), int(final.group(2).replace(",", ""))
    if d_cps:
        assert float(final.group(3)) == pytest.approx(a_cps / d_cps, abs=0.01)


def test_media_concurrent_bench_runs() -> None:
    """bench/media_concurrent.py in tiny mode: the RTP generator phone to phone, then anchored calls on a real
    rtpengine whose ports are read from the relay; each step says how many calls the relay held and the loss both
    ways, and the figures of the last line are those of the steps that passed."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "media_concurrent.py"), "--quick", "--no-record"],
                            cwd=ROOT, capture_output=True, text=True, timeout=400)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    relayed = re.findall(r"^  relay +(\d+) calls  (PASS|FAIL)  (\d+) calls on the relay \(all up: (True|False)", out,
                         re.M)
    direct = re.findall(r"^  direct +(\d+) calls  (PASS|FAIL)  loss customer->agent ([\d.]+)%", out, re.M)
    assert relayed and direct, out
    assert all(calls == held and up == "True" for calls, verdict, held, up in relayed if verdict == "PASS"), out
    final = re.search(r"^through the relay ([\d,]+) calls; phone to phone ([\d,]+) calls; ratio ([\d.]+|n/a); "
                      r"target 500: (met|NOT met)$", out, re.M)
    assert final, out
    assert int(final.group(1)) == max([int(n) for n, verdict, *_ in relayed if verdict == "PASS"], default=0)
    assert int(final.group(2)) == max([int(n) for n, verdict, *_ in direct if verdict == "PASS"], default=0)


def test_run_all_quick_writes_a_row_per_benchmark(tmp_path: Path) -> None:
    """bench/run_all.py --quick: every other benchmark of bench/ in its smoke mode, the report written to --output
    (a row per benchmark, the machine and the command in its header) and bench/RESULTS.md left as it was."""
    sys.path.insert(0, str(ROOT / "bench"))
    import run_all

    assert all(any(b.name == name for b in run_all.BENCHMARKS) for name in SMOKE_TESTED_ABOVE)
    chosen = [b for b in run_all.BENCHMARKS if b.name not in SMOKE_TESTED_ABOVE]
    before = (ROOT / "bench" / "RESULTS.md").read_text()
    output = tmp_path / "RESULTS.md"
    only = ",".join(b.name for b in chosen)
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--quick", "--only", only,
                             "--output", str(output)], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    report = output.read_text()
    assert (ROOT / "bench" / "RESULTS.md").read_text() == before
    assert re.search(r"^- Machine: \d+ cores, [\d.]+ GiB, .+; Python 3\.\d+\.\d+$", report, re.M), report
    assert re.search(r"^- Load average at the start: [\d.]+ [\d.]+ [\d.]+$", report, re.M), report
    assert re.search(rf"^- Command: `\.venv/bin/python bench/run_all\.py --quick --only {only} --output ", report,
                     re.M), report
    assert run_all.TABLE_HEADER in report, report
    table = report.split(run_all.TABLE_HEADER, 1)[1].split("\n\n", 1)[0]  # the run's table, not the notes below
    rows = table.splitlines()
    assert rows and all(r.startswith("| ") for r in rows), report
    present = [b for b in chosen if (ROOT / "bench" / b.script).exists()]
    assert [b.name for b in present] == [b.name for b in chosen]  # every script of the table is in bench/
    for bench in present:
        mine = [r for r in rows if f"bench/{bench.script}" in run_all.cells(r)[6]]
        assert mine, (bench.name, report)
        assert all(run_all.cells(r)[5] in ("met", "NOT met", "?") for r in mine)
        assert all(" failed (exit" not in r and "wrote no row" not in r for r in mine), report
    assert len(rows) == sum(len([r for r in rows if f"bench/{b.script}" in run_all.cells(r)[6]]) for b in chosen)


def test_recording_conversion_bench_runs() -> None:
    """bench/recording_conversion.py in tiny mode: half a minute of a call in three pcap segments joined by
    callbridge and by the naive ceiling in the same run; exit 0 only when both WAVs have the lengths they must."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "recording_conversion.py"), "--quick"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(r"^recording_conversion: 0\.57 min of two-channel WAV from 3 segments \(3,000 RTP packets, "
                     r"[\d.]+ MiB of pcap, 2 pauses\)$", out, re.M), out
    ours = re.search(r"^callbridge \(convert_recording\): [\d.]+ CPU-s, best of 1: ([\d.]+) minutes per CPU-second$",
                     out, re.M)
    naive = re.search(r"^ceiling, naive join of the same pcaps \(read, decode, append, wave\): [\d.]+ CPU-s: "
                      r"([\d.]+) minutes per CPU-second$", out, re.M)
    ratio = re.search(r"^ratio: ([\d.]+)$", out, re.M)
    assert ours and naive and ratio, out
    assert float(ratio.group(1)) == pytest.approx(float(ours.group(1)) / float(naive.group(1)), rel=0.02, abs=0.01)
    assert re.search(r"^output checked: yes$", out, re.M), out


def test_cluster_quota_bench_runs() -> None:
    """bench/cluster_quota.py in tiny mode: one cluster node on a real PostgreSQL, the two tokens' requests all
    answered 200 and the quota token's all counted in `token_usage` (the script checks both), a row printed."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "cluster_quota.py"), "--requests", "20",
                             "--steps", "1"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^\| cluster_quota \(bench/cluster_quota\.py\).* \| [\d,]+ req/s \| [\d,]+ req/s \(no quota\) "
                     r"\| [\d.]+ \|", result.stdout, re.M), result.stdout
