"""Harnesses for real SIP peers on loopback: SIPp, Kamailio, baresip, and free-port finding.

Each harness starts its peer in a process group of its own and stops it by killing that group. A missing binary
is an error with a clear message (``scripts/setup --test`` installs the peers), never a skip.
"""

from __future__ import annotations

import shutil


class PeerMissing(RuntimeError):
    """A real peer's binary is not installed."""


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PeerMissing(f"{name!r} is not installed (Debian package {package}); run `scripts/setup --test`")
    return path
