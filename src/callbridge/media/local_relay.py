"""A userspace rtpengine started for a while on loopback: the relay of `callbridge demo` (and, with a recording
folder added, of the tests: tests/peers/rtpengine.py).

    relay = LocalRelay.on_free_ports(binary, workdir).start()   # ping answered `pong`, or RuntimeError with its log
    ... Settings(rtpengine=(relay.ng_url,)) ...
    relay.stop()                                                # SIGTERM to its process group, SIGKILL after 5 s

Why these flags (Debian's rtpengine-daemon, 10.5): ``--config-file=none`` so that the machine's
/etc/rtpengine/rtpengine.conf (the packaged service's) is not read; ``--foreground --log-stderr`` so that the process
is ours to stop and its log goes to ``workdir``; ``--table=-1`` for no kernel forwarding (userspace only: no
kernel module, no root); ``--interface`` the loopback address, so that the SDP it writes names an address the
phones on this machine reach and nothing leaves it; ng (``--listen-ng``) on a free loopback UDP port; media in a
small block of free UDP ports (RTP on even ports, RTCP on the odd one above: each call leg takes a pair).

Stopping: `stop` (the demo's `close`, on every way out it handles, SIGTERM included); and, with
``spawn(die_with_parent=True)`` on Linux, the kernel sends the relay SIGTERM when the thread that spawned it ends
(``PR_SET_PDEATHSIG``, prctl(2)), so that a demo killed outright (SIGKILL) leaves no relay behind. Spawn it from the
thread that lives as long as its user (the event loop's), not from a worker thread.

Free ports are probed by binding them (`free_udp_port`, `free_port_block`); a port taken between the probe and
rtpengine's own bind makes it exit, which `start` reports with its log (the demo then tries another block).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

__all__ = ["BINARY", "INSTALL_HINT", "PORT_BLOCK", "LocalRelay", "find_binary", "free_port_block", "free_udp_port",
           "ng_ping"]

BINARY = "rtpengine"
INSTALL_HINT = "on Debian: apt-get install rtpengine-daemon"
# Each call leg takes two ports (RTP and RTCP) per stream; a block of 100 is plenty for a demo's or a test's calls.
PORT_BLOCK = 100
# Media ports are probed below the kernel's usual ephemeral range (32768-60999 on Linux), where the local ports of
# outgoing sockets would otherwise race for them.
_PROBE_LOW, _PROBE_HIGH = 16384, 32767


def find_binary() -> str | None:
    """The rtpengine executable on PATH, or None when it is not installed."""
    return shutil.which(BINARY)


def ng_ping(address: tuple[str, int], timeout: float = 0.2) -> bool:
    """One ng ``ping`` (bencode over UDP, a cookie first); True when the answer is ``pong``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        cookie = f"probe{time.monotonic_ns()}".encode()
        sock.sendto(cookie + b" d7:command4:pinge", address)
        try:
            data, _ = sock.recvfrom(65535)
        except OSError:
            return False
    return data == cookie + b" d6:result4:ponge"


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port on ``host`` that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_block(host: str = "127.0.0.1", span: int = PORT_BLOCK, rng: random.Random | None = None) -> int:
    """An even port P such that the UDP ports P..P+span-1 on ``host`` were all free a moment ago."""
    rng = rng or random.Random()
    for _ in range(200):
        start = rng.randrange(_PROBE_LOW, _PROBE_HIGH - span, 2)
        if all(_bindable(host, port) for port in range(start, start + span)):
            return start
    raise RuntimeError(f"no block of {span} free UDP ports on {host}")


def _pdeathsig() -> Callable[[], None] | None:
    """What the child runs before exec so that it gets SIGTERM when the spawning thread ends (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1  # <linux/prctl.h>

    def before_exec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return before_exec


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class LocalRelay:
    """One rtpengine process on ``host`` (see the module docstring). ``extra_args`` are more options
    (``--recording-dir=...``)."""

    def __init__(self, binary: str, workdir: Path, *, host: str = "127.0.0.1", ng_port: int, port_min: int,
                 port_max: int, extra_args: tuple[str, ...] = ()) -> None:
        if not (0 < port_min < port_max < 65536) or port_min % 2:
            raise ValueError(f"the media ports must be an even port_min below port_max, not {port_min}-{port_max}")
        self.binary, self.host, self.ng_port = binary, host, ng_port
        self.port_min, self.port_max = port_min, port_max
        self.workdir = workdir
        self.extra_args = extra_args
        self.log_file = workdir / "rtpengine.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def on_free_ports(cls, binary: str, workdir: Path, *, host: str = "127.0.0.1", span: int = PORT_BLOCK,
                      extra_args: tuple[str, ...] = ()) -> LocalRelay:
        start = free_port_block(host, span)
        last = start + span - 1
        return cls(binary, workdir, host=host, ng_port=free_udp_port(host), port_min=start,
                   port_max=last if last % 2 else last - 1, extra_args=extra_args)

    @property
    def ng_address(self) -> tuple[str, int]:
        return self.host, self.ng_port

    @property
    def ng_url(self) -> str:
        """As `callbridge serve --rtpengine` takes it."""
        return f"udp:{self.host}:{self.ng_port}"

    def argv(self) -> list[str]:
        return [self.binary, "--config-file=none", "--foreground", "--log-stderr", "--table=-1",
                f"--interface={self.host}", f"--listen-ng={self.host}:{self.ng_port}",
                f"--port-min={self.port_min}", f"--port-max={self.port_max}", *self.extra_args]

    def start(self, timeout: float = 10.0) -> Self:
        """Start it and wait for its ``pong``; RuntimeError (with the end of its log) when it exits or stays mute."""
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self, *, die_with_parent: bool = False) -> None:
        """Start the process (in its own process group); `wait_ready` then waits for it to answer."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        before_exec = _pdeathsig() if die_with_parent else None
        with self.log_file.open("wb") as log:
            self._proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=before_exec)

    def wait_ready(self, timeout: float = 10.0) -> Self:
        """Until it answers ``ping`` (blocking: call it off the event loop)."""
        if self._proc is None:
            raise RuntimeError("rtpengine is not started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"rtpengine exited with {code}:\n{self.log_tail()}")
            if ng_ping(self.ng_address):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"rtpengine did not answer ping within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to its process group, SIGKILL when it has not exited within ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
