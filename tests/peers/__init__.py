"""Harnesses for real SIP peers on loopback: SIPp, Kamailio, baresip, and free-port finding.

Each harness starts its peer in a process group of its own and stops it by killing that group. A missing binary
is an error with a clear message (``scripts/setup --test`` installs the peers), never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess


class PeerMissing(RuntimeError):
    """A real peer's binary is not installed."""


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PeerMissing(f"{name!r} is not installed (Debian package {package}); run `scripts/setup --test`")
    return path


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the process's group, SIGKILL to it when the process has not exited within `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
