"""The cluster's Kamailio as a real process for tests: the configuration `callbridge cluster kamailio-config`
renders, started in the foreground on its own loopback address, synced from PostgreSQL through its JSON-RPC, and
stopped (or killed) by its PID. A restart starts a new process on the same address, port and tables."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import Engine

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from callbridge.cluster import kamailio  # noqa: E402
from peers import require_binary, stop_process_group  # noqa: E402
from peers.ports import free_port  # noqa: E402


class Proxy:
    def __init__(self, host: str, workdir: Path) -> None:
        self.binary = require_binary("kamailio", "kamailio")
        self.host, self.workdir = host, workdir
        self.port, self.rpc_port = free_port(host), free_port(host, tcp=False)
        self.config = workdir / "kamailio.cfg"
        self.config.write_text(kamailio.render_config(kamailio.ProxySettings(
            host=host, port=self.port, tables=str(workdir), rpc_host=host, rpc_port=self.rpc_port,
            ping_interval=1, children=2)))
        (workdir / "dispatcher.list").write_text("")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> None:
        self.starts += 1
        with open(self.workdir / f"kamailio-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-f", str(self.config), "-DD", "-E", "-m", "64", "-x", "tlsf", "-Y", str(self.workdir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                start_new_session=True)

    async def synced(self, engine: Engine, timeout: float = 15) -> None:
        """Until its JSON-RPC answers and the owners and nodes from PostgreSQL are loaded into it."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(kamailio.RpcError, OSError), engine.connect() as conn:
                kamailio.sync_once(conn, self.workdir, (self.host, self.rpc_port))
                # a reload refused within reload_delta is retried by the next sync: synced once it is loaded
                if kamailio._loaded((self.host, self.rpc_port)) == kamailio._listed(
                        kamailio.render_tables(conn).dispatcher):
                    return
            assert self.proc is not None and self.proc.poll() is None, "kamailio exited"
            assert time.monotonic() < deadline, "Kamailio's JSON-RPC did not answer"
            await asyncio.sleep(0.05)

    def keep_synced(self, engine: Engine, interval: float = 0.3) -> asyncio.Task[None]:
        """`callbridge cluster kamailio-sync`'s loop at a test's pace, as a task the test cancels at its end."""
        async def sync_forever() -> None:
            while True:
                await self.synced(engine)
                await asyncio.sleep(interval)
        return asyncio.get_running_loop().create_task(sync_forever())

    def kill(self) -> None:
        """kill -9 of its process group (every child with it)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, 5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
