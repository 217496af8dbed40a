"""SIPp (Debian's sip-tester 3.6.1) as a real peer: built-in or custom scenarios, headless and bounded.

    uas = Sipp("uas", port=free_port(), calls=10).start()
    uac = Sipp("uac", remote=("127.0.0.1", uas.port), calls=10, rate=10).run()   # blocks; SippResult
    assert uac.successful == 10 and uac.failed == 0
    uas.wait()                                                                     # or await uas.wait_async()

Every run is bounded three ways: ``-m calls`` (when given), SIPp's own ``-timeout Ns -timeout_error``, and an outer
timeout after which its process group is killed. Statistics come from ``-trace_stat -stf FILE.csv``: SIPp writes a
header line and then a line per dump, the last one when it exits; the cumulative ``(C)`` columns of that last line
are the result. SIPp runs in a process group of its own, in its own working directory (it writes its logs there).

Note (docs/peers.md): the built-in uas keeps each call "current" for about 4 s after BYE, so its final counters come
only when it exits (with ``calls=N`` it exits after N calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import require_binary
from .ports import free_port

BUILTIN = ("uac", "uas", "regexp", "3pcc-C-A", "3pcc-C-B", "3pcc-A", "3pcc-B", "branchc", "branchs",
           "uac_pcap")


@dataclass
class SippResult:
    returncode: int | None           # None: killed by the outer timeout or by stop()
    stats: dict[str, str]            # the last statistics line, by column name ("" values when none)
    stdout: str
    stderr: str
    errors: str                      # the -trace_err log, "" when none
    elapsed: float
    timed_out: bool

    def _int(self, name: str) -> int:
        value = self.stats.get(name, "")
        return int(value) if value.strip().isdigit() else 0

    @property
    def successful(self) -> int:
        return self._int("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self._int("FailedCall(C)")

    @property
    def created(self) -> int:
        return self._int("TotalCallCreated")

    @property
    def current(self) -> int:
        return self._int("CurrentCall")

    @property
    def retransmissions(self) -> int:
        return self._int("Retransmissions(C)")

    def summary(self) -> str:
        return (f"sipp rc={self.returncode} created={self.created} successful={self.successful} "
                f"failed={self.failed} current={self.current} retrans={self.retransmissions} "
                f"timed_out={self.timed_out} elapsed={self.elapsed:.1f}s\nstderr: {self.stderr[-800:]}"
                f"\nerrors: {self.errors[-1500:]}")


def parse_stat_file(path: Path) -> dict[str, str]:
    """The last line of a SIPp ``-stf`` CSV as a dict by column name ({} when the file holds no data line)."""
    if not path.exists():
        return {}
    rows = [r for r in csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";") if r]
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {name: value for name, value in zip(header, last, strict=False) if name}


def _port_in_table(table: Path, port: int, listening: bool) -> bool:
    """Whether /proc/net/{udp,tcp}[6] holds a socket on local ``port`` (in LISTEN state for TCP)."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and (not listening or fields[3] == "0A"):
            return True
    return False


@dataclass
class Sipp:
    """One SIPp process: ``scenario`` is a built-in name (``uac``, ``uas``, ...) or a path to an XML scenario."""

    scenario: str | Path
    remote: tuple[str, int] | None = None
    host: str = "127.0.0.1"
    port: int = 0                     # 0: a free port is chosen
    service: str | None = None        # -s: the user part of the Request-URI (built-in uac: "service")
    transport: str = "u1"             # "u1" UDP one socket, "t1" TCP one connection, "un"/"tn" per call
    calls: int | None = None          # -m
    rate: float | None = None         # -r (calls per rate_period_ms)
    rate_period_ms: int | None = None  # -rp
    limit: int | None = None          # -l, simultaneous calls
    timeout: float = 30.0             # -timeout Ns -timeout_error
    outer_timeout: float | None = None  # default: timeout + 15 s
    buff_size: int | None = None      # -buff_size
    trace_err: bool = True
    keys: dict[str, str] = field(default_factory=dict)  # -key name value
    sets: dict[str, str] = field(default_factory=dict)  # -set name value
    extra_args: list[str] = field(default_factory=list)
    workdir: Path | None = None

    def __post_init__(self) -> None:
        self.binary = require_binary("sipp", "sip-tester")
        if self.port == 0:
            self.port = free_port(self.host)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="sipp-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stat_file = self.workdir / f"stat-{self.port}.csv"
        self.error_file = self.workdir / f"errors-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._result: SippResult | None = None

    def argv(self) -> list[str]:
        if isinstance(self.scenario, Path) or str(self.scenario).endswith(".xml"):
            args = [self.binary, "-sf", str(Path(self.scenario).resolve())]
        else:
            args = [self.binary, "-sn", str(self.scenario)]
        if self.remote is not None:
            args.append(f"{self.remote[0]}:{self.remote[1]}")
        args += ["-i", self.host, "-p", str(self.port), "-t", self.transport, "-nostdin",
                 "-timeout", f"{int(self.timeout)}s", "-timeout_error",
                 "-trace_stat", "-stf", str(self.stat_file), "-fd", "1"]
        if self.trace_err:
            args += ["-trace_err", "-error_file", str(self.error_file)]
        if self.service is not None:
            args += ["-s", self.service]
        if self.calls is not None:
            args += ["-m", str(self.calls)]
        if self.rate is not None:
            args += ["-r", f"{self.rate:g}"]
        if self.rate_period_ms is not None:
            args += ["-rp", str(self.rate_period_ms)]
        if self.limit is not None:
            args += ["-l", str(self.limit)]
        if self.buff_size is not None:
            args += ["-buff_size", str(self.buff_size)]
        for name, value in self.keys.items():
            args += ["-key", name, value]
        for name, value in self.sets.items():
            args += ["-set", name, value]
        return args + list(self.extra_args)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> Sipp:
        assert self._proc is None, "already started"
        assert self.workdir is not None
        self._started_at = time.monotonic()
        with open(self.workdir / "stdout.txt", "wb") as out, open(self.workdir / "stderr.txt", "wb") as err:
            self._proc = subprocess.Popen(self.argv(), cwd=self.workdir, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=err, start_new_session=True)
        if self.remote is None:  # a server (uas): callers may send to it as soon as start() returns
            self.wait_listening()
        return self

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Block until SIPp's socket is bound (UDP) or listening (TCP) on its port, as the kernel reports it."""
        assert self._proc is not None
        tcp = self.transport.startswith("t")
        tables = ("/proc/net/tcp", "/proc/net/tcp6") if tcp else ("/proc/net/udp", "/proc/net/udp6")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sipp exited at start ({self._proc.returncode}): {self.argv()}")
            if any(_port_in_table(Path(t), self.port, tcp) for t in tables):
                return
            time.sleep(0.01)
        raise RuntimeError(f"sipp did not open port {self.port} within {timeout}s")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _deadline(self) -> float:
        outer = self.outer_timeout if self.outer_timeout is not None else self.timeout + 15.0
        return self._started_at + outer

    def wait(self) -> SippResult:
        """Block until SIPp exits (or the outer timeout kills it); the result."""
        assert self._proc is not None, "not started"
        timed_out = False
        try:
            self._proc.wait(timeout=max(0.0, self._deadline() - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
        return self._finish(timed_out)

    async def wait_async(self) -> SippResult:
        """Like ``wait`` without blocking the event loop."""
        assert self._proc is not None, "not started"
        timed_out = False
        while self._proc.poll() is None:
            if time.monotonic() >= self._deadline():
                timed_out = True
                break
            await asyncio.sleep(0.05)
        return self._finish(timed_out)

    def run(self) -> SippResult:
        return self.start().wait()

    async def run_async(self) -> SippResult:
        self.start()
        return await self.wait_async()

    def stop(self) -> SippResult:
        """Kill SIPp's process group now (a uas left running) and return what it counted."""
        assert self._proc is not None, "not started"
        if self._proc.poll() is None:
            self._kill_group(signal.SIGTERM)
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
        return self._finish(False)

    def _kill_group(self, sig: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def _finish(self, timed_out: bool) -> SippResult:
        assert self._proc is not None and self.workdir is not None
        if self._result is not None:
            return self._result
        if self._proc.poll() is None:
            self._kill_group(signal.SIGTERM)
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._kill_group(signal.SIGKILL)
                self._proc.wait()
        returncode = None if timed_out else self._proc.returncode
        self._result = SippResult(
            returncode=returncode,
            stats=parse_stat_file(self.stat_file),
            stdout=(self.workdir / "stdout.txt").read_text(errors="replace"),
            stderr=(self.workdir / "stderr.txt").read_text(errors="replace"),
            errors=self.error_file.read_text(errors="replace") if self.error_file.exists() else "",
            elapsed=time.monotonic() - self._started_at,
            timed_out=timed_out,
        )
        return self._result

    def __enter__(self) -> Sipp:
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._finish(False)
