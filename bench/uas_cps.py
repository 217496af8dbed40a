"""Calls per second that ``callbridge.phone`` answers, next to SIPp's own uas (the machine's ceiling), same run.

    .venv/bin/python bench/uas_cps.py                       # default ramp, records a row in bench/RESULTS.md
    .venv/bin/python bench/uas_cps.py --rates 1000,2000 --seconds 5 --no-record

For each target, SIPp's built-in uac (``-buff_size 4194304``, over UDP on loopback) places ``rate x seconds``
calls at rising rates (INVITE, 200, ACK, BYE, 200); a step passes when every call succeeded (SIPp counts no
failed call). The ramp of a target stops at its first failing step. SIPp's retransmissions are printed too: a
step that passes with many of them ran with the target stalling (over 500 ms, SIPp's T1) now and then. The
targets:

- ``callbridge.phone`` answering every call at once, on ``callbridge.transport.Runtime``, in a process of its own
  (this script, ``--serve-phone PORT``), with its destination policy on (loopback only) as in production;
- SIPp's built-in uas with the same buffers: the ceiling of this machine for this call flow.

Each step starts a fresh target, so a failed step cannot leave load behind for the next. The figure is the
highest rate with zero failed calls; the ratio is phone / SIPp.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the real-peer harness: tests/peers

from peers.ports import free_port  # noqa: E402
from peers.sipp import Sipp, SippResult  # noqa: E402

DEFAULT_RATES = (1000, 2000, 3000, 4000, 6000, 8000, 10000)
# Long enough to reach the steady state: a call's transactions stay in the endpoint for Timer J/L (64*T1 = 32 s)
# after it ends, so the number of live transactions (and the work of the garbage collector) grows for 32 s.
DEFAULT_SECONDS = 40.0
BUFF_SIZE = 4 * 1024 * 1024
TARGET_CPS = 2000


# -- the phone side (child process) ------------------------------------------------------------------------------
async def serve_phone(port: int) -> None:
    """Answer every incoming call on 127.0.0.1:port until SIGTERM."""
    from callbridge.phone import Phone  # the package under test; imported here so the parent stays light

    phone = await Phone.start(host="127.0.0.1", port=port, answer="auto")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    await phone.close()


# -- the driver --------------------------------------------------------------------------------------------------
@dataclass
class Step:
    target: str
    rate: int
    calls: int
    result: SippResult
    target_cpu: float | None  # CPU seconds the target used during the step

    @property
    def passed(self) -> bool:
        r = self.result
        return r.failed == 0 and r.successful == self.calls and not r.timed_out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PhoneTarget:
    name = "callbridge.phone"

    def __init__(self) -> None:
        self.port = free_port()
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> tuple[str, int]:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self._proc = subprocess.Popen([sys.executable, __file__, "--serve-phone", str(self.port)],
                                      stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line.strip() != "READY":
            self.stop()
            raise RuntimeError(f"the phone did not start: {line!r}")
        return "127.0.0.1", self.port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class SippUasTarget:
    name = "SIPp uas"

    def __init__(self, timeout: float) -> None:
        self._uas = Sipp("uas", buff_size=BUFF_SIZE, timeout=timeout, trace_err=False)

    def start(self) -> tuple[str, int]:
        self._uas.start()  # returns once its socket is bound
        return "127.0.0.1", self._uas.port

    @property
    def pid(self) -> int | None:
        return self._uas.pid

    def stop(self) -> None:
        self._uas.stop()


def run_step(target: PhoneTarget | SippUasTarget, rate: int, seconds: float) -> Step:
    calls = int(rate * seconds)
    remote = target.start()
    try:
        pid = target.pid
        cpu_before = cpu_seconds(pid) if pid else None
        result = Sipp("uac", remote=remote, calls=calls, rate=rate, buff_size=BUFF_SIZE,
                      timeout=seconds + 40, trace_err=False).run()
        cpu = cpu_seconds(pid) - cpu_before if pid and cpu_before is not None else None
    finally:
        target.stop()
    return Step(target.name, rate, calls, result, cpu)


def ramp(make_target: Callable[[], PhoneTarget | SippUasTarget], rates: list[int], seconds: float) -> list[Step]:
    steps = []
    for rate in rates:
        step = run_step(make_target(), rate, seconds)
        steps.append(step)
        r = step.result
        cpu = f"{step.target_cpu / (r.elapsed or 1) * 100:5.1f}% cpu" if step.target_cpu is not None else ""
        print(f"  {step.target:18} {rate:6} calls/s  {r.successful:7}/{step.calls} ok  {r.failed:5} failed  "
              f"{r.retransmissions:6} retrans  {r.elapsed:5.1f}s  {cpu}  {'PASS' if step.passed else 'FAIL'}",
              flush=True)
        if not step.passed:
            break
    return steps


def best(steps: list[Step]) -> Step | None:
    passed = [s for s in steps if s.passed]
    return max(passed, key=lambda s: s.rate) if passed else None


def record(phone: Step | None, ceiling: Step | None, top_rate: int, seconds: float, command: str) -> None:
    phone_cps = phone.rate if phone else 0
    ceiling_cps = ceiling.rate if ceiling else 0
    ratio = phone_cps / ceiling_cps if ceiling_cps else 0.0
    retrans = f"; {phone.result.retransmissions:,} SIPp retransmissions at that rate" if phone else ""
    ceiling_note = " (the highest rate tried)" if ceiling and ceiling.rate == top_rate else ""
    row = (f"| uas_cps: SIPp uac -> callbridge.phone answering (UDP, loopback, {seconds:g} s steps), highest rate "
           f"with 0 failed calls{retrans} | {phone_cps:,} calls/s | {ceiling_cps:,} calls/s (SIPp uas){ceiling_note} "
           f"| {ratio:.2f} | >= {TARGET_CPS:,} calls/s | `{command}` | {datetime.date.today().isoformat()} |\n")
    with open(ROOT / "bench" / "RESULTS.md", "a") as out:
        out.write(row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="length of each step")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument("--serve-phone", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_phone:
        asyncio.run(serve_phone(args.serve_phone))
        return 0
    rates = [int(r) for r in args.rates.split(",")]
    print(f"uas_cps on {os.cpu_count()} cores, Python {platform.python_version()}, {args.seconds:g} s per step")
    print("ceiling: SIPp uac -> SIPp uas")
    ceiling_steps = ramp(lambda: SippUasTarget(args.seconds + 60), rates, args.seconds)
    print("callbridge: SIPp uac -> callbridge.phone")
    phone_steps = ramp(PhoneTarget, rates, args.seconds)
    phone, ceiling = best(phone_steps), best(ceiling_steps)
    phone_cps = phone.rate if phone else 0
    ceiling_cps = ceiling.rate if ceiling else 0
    ratio = phone_cps / ceiling_cps if ceiling_cps else 0.0
    print(f"\ncallbridge.phone: {phone_cps:,} calls/s; SIPp uas: {ceiling_cps:,} calls/s; ratio {ratio:.2f}; "
          f"target >= {TARGET_CPS:,}: {'met' if phone_cps >= TARGET_CPS else 'NOT met'}")
    if not args.no_record:
        command = ".venv/bin/python bench/uas_cps.py " + " ".join(a for a in sys.argv[1:] if a != "--no-record")
        record(phone, ceiling, max(rates), args.seconds, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
