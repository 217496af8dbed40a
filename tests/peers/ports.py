"""Free ports on loopback for peers and listeners.

A port is free when it can be bound at that moment; the caller binds it soon after. Ports are handed out from a
per-process set so that two calls never return the same port even before either is bound.

Ports come from below the kernel's ephemeral range (``net.ipv4.ip_local_port_range``, 32768-60999 by default):
a server that is stopped and started again on "its" port (the crash and restart tests) must find it free, and a
port from the ephemeral range can meanwhile be taken as the local port of any outgoing connection or socket.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()
_random = random.Random()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _candidate_range() -> tuple[int, int]:
    low, _ = _ephemeral_range()
    # 10000 up to the start of the ephemeral range; if that range starts very low, fall back above it.
    return (10000, low - 1) if low > 12000 else (_ephemeral_range()[1] + 1, 65535)


def _bindable(host: str, port: int, kinds: tuple[int, ...]) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in kinds:
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1", *, udp: bool = True, tcp: bool = True, span: int = 1) -> int:
    """A port P such that P..P+span-1 are free for the kinds asked (UDP and TCP by default, as SIP uses both)."""
    kinds = tuple(k for k, wanted in ((socket.SOCK_DGRAM, udp), (socket.SOCK_STREAM, tcp)) if wanted)
    if not kinds:
        raise ValueError("ask for UDP, TCP or both")
    low, high = _candidate_range()
    for _ in range(500):
        port = _random.randint(low, high - span + 1)
        if port + span > 65536:
            continue
        block = range(port, port + span)
        if any(p in _handed_out for p in block):
            continue
        if all(_bindable(host, p, kinds) for p in block):
            _handed_out.update(block)
            return port
    raise RuntimeError(f"no free port block of {span} on {host}")


def free_udp_port(host: str = "127.0.0.1") -> int:
    return free_port(host, udp=True, tcp=False)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    return free_port(host, udp=False, tcp=True)
