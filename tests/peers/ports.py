"""Free ports on loopback for peers and listeners.

A port is free when it can be bound at that moment; the caller binds it soon after. Ports are handed out from a
per-process set so that two calls never return the same port even before either is bound.
"""

from __future__ import annotations

import socket

_handed_out: set[int] = set()


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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(family, kinds[0]) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port + span > 65535:
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
