"""rtpengine (Debian's rtpengine-daemon 10.5) as a real media relay on loopback, in userspace.

    with Rtpengine() as rtpe:                 # started, `ping` answered `pong`; stopped by its PID at the end
        ... ng to rtpe.ng_address, media on rtpe.port_min..rtpe.port_max, recordings in rtpe.recording_dir ...

Started in the foreground with no configuration file and no kernel forwarding (``--table=-1``): ng on a free
loopback port, media on 127.0.0.1 in a block of UDP ports taken from a free-port probe (`ports.free_port`), so that
workers running at once never share a range, and a temporary recording folder (pcap). `require_rtpengine` skips
the test when the binary is not installed (the only reason to skip: CI installs it with `scripts/setup --test`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from . import stop_process_group
from .ports import free_port

BINARY = "rtpengine"
# Each call takes two ports (RTP and RTCP) per stream per side; a block of 100 is plenty for one test's calls.
PORT_BLOCK = 100


def require_rtpengine() -> str:
    path = shutil.which(BINARY)
    if path is None:
        pytest.skip("rtpengine is not installed (Debian package rtpengine-daemon); `scripts/setup --test` installs it")
    return path


def ng_ping(address: tuple[str, int], timeout: float = 0.2) -> bool:
    """One ng ping; True when the answer is ``pong``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        cookie = f"probe{time.monotonic_ns()}".encode()
        sock.sendto(cookie + b" d7:command4:pinge", address)
        try:
            data, _ = sock.recvfrom(65535)
        except OSError:
            return False
    return data == cookie + b" d6:result4:ponge"


class Rtpengine:
    def __init__(self, *, host: str = "127.0.0.1", workdir: Path | None = None,
                 extra_args: tuple[str, ...] = (), ports: int = PORT_BLOCK) -> None:
        self.binary = require_rtpengine()
        self.extra_args = extra_args  # more options (``--dtmf-log-dest=...``)
        self.host = host
        self.ng_port = free_port(host, udp=True, tcp=False)
        start = free_port(host, udp=True, tcp=False, span=ports)  # a benchmark holding many calls asks for more
        self.port_min = start + (start % 2)            # RTP on even ports, RTCP on the odd one above
        last = start + ports - 1
        self.port_max = last if last % 2 else last - 1
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="rtpengine-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.recording_dir = self.workdir / "recordings"
        self.log_file = self.workdir / "rtpengine.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def ng_address(self) -> tuple[str, int]:
        return self.host, self.ng_port

    def argv(self) -> list[str]:
        return [self.binary, "--config-file=none", "--foreground", "--log-stderr", "--table=-1",
                f"--interface={self.host}", f"--listen-ng={self.host}:{self.ng_port}",
                f"--port-min={self.port_min}", f"--port-max={self.port_max}",
                f"--recording-dir={self.recording_dir}", "--recording-method=pcap", *self.extra_args]

    def start(self, timeout: float = 10.0) -> Rtpengine:
        log = self.log_file.open("wb")
        self._proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"rtpengine exited with {self._proc.returncode}:\n{self.log_tail()}")
            if ng_ping(self.ng_address):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"rtpengine did not answer ping within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            stop_process_group(self._proc, timeout=5.0)
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __enter__(self) -> Rtpengine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
