"""`callbridge serve --cluster` as real processes for the cluster's tests and benchmarks: started on a loopback
address of their own, stopped by their PID (SIGTERM, or SIGKILL to their process group)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from callbridge.storage.loader import load_into_fresh_database  # noqa: E402
from peers import stop_process_group  # noqa: E402
from peers.ports import free_port  # noqa: E402
from pg import fresh_database  # noqa: E402

_SCRIPT = Path(sys.executable).parent / "callbridge"
CALLBRIDGE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "callbridge"]


class Serve:
    """One node: `host` is its own loopback address (SIP and HTTP)."""

    def __init__(self, node: str, host: str, url: str, workdir: Path, *, lease_seconds: float = 3.0,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.node, self.host = node, host
        self.port = free_port(host)
        self.http_port = free_port(host, udp=False)
        self.http = f"http://{host}:{self.http_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
        self.log = workdir / f"serve-{node}.log"
        self._start = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the same log
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*CALLBRIDGE, "serve", "--cluster", "--node-id", node, "--sip-host", host, "--sip-port",
                 str(self.port), "--http-host", host, "--http-port", str(self.http_port), "--database-url", url,
                 "--lease-seconds", str(lease_seconds), "--drain-seconds", "0", *extra_args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                start_new_session=True)

    @property
    def sip(self) -> tuple[str, int]:
        return self.host, self.port

    def output(self) -> str:
        """What this process logged (not an earlier process of the same node id)."""
        with open(self.log, "rb") as log:
            log.seek(self._start)
            return log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while "callbridge serving SIP on" not in self.output() and not self.healthy():
            assert self.proc.poll() is None, f"serve {self.node} exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"serve {self.node} not ready:\n{self.output()}"
            time.sleep(0.05)

    def healthy(self) -> bool:
        """`/health` answers 200 (the ready line is not logged below INFO)."""
        try:
            with urllib.request.urlopen(f"{self.http}/health", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9 of the node's process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                stop_process_group(self.proc, 5)


@contextmanager
def loaded_database(postgres_url: str, doc: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """A fresh database of the server with `doc` loaded; (its URL, the API tokens made). Dropped at the end."""
    with fresh_database(postgres_url, "f", migrated=True) as url:  # loading migrates it: then a no-op
        tokens = [plain for _, plain in load_into_fresh_database(url, doc).tokens]
        yield url, tokens

