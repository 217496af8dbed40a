"""Free ports on loopback for peers and listeners.

A port is free when it can be bound at that moment; the caller binds it soon after. Ports are handed out from a
per-process memory so that two calls never return the same port even before either is bound.

Ports come from below the kernel's ephemeral range (``net.ipv4.ip_local_port_range``, 32768-60999 by default):
a server that is stopped and started again on "its" port (the crash and restart tests) must find it free, and a
port from the ephemeral range can meanwhile be taken as the local port of any outgoing connection or socket.

That range is split in two. Single ports (and pairs) come from its lower part, at random; blocks (a media relay's
port range: 100 ports, 1000 for a benchmark or a cluster holding many calls) come from its upper part, and are
given back with `release` when their relay stops. Without the split, a whole suite's single ports, scattered at
random and never given back, leave no free run of 1000 ports anywhere: the late cluster test asking for one
failed with "no free port block". Under pytest-xdist each part is cut into one slice per worker: this memory is
per process, and a relay's block stays unbound until its calls use it, so the bind probe alone would let two
workers take the same block. Singles are remembered only for the last `_REMEMBERED` hand-outs: a port handed
out that long ago is bound by now (so the bind probe sees it) or was never used.
"""

from __future__ import annotations

import os
import random
import socket
from collections import deque
from pathlib import Path

_SMALL = 2  # spans up to this come from the singles' part
_REMEMBERED = 3000
_handed_out: set[int] = set()
_singles: deque[int] = deque()
_random = random.Random()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _candidate_range() -> tuple[int, int]:
    low, high = _ephemeral_range()
    # 10000 up to the start of the ephemeral range; if that range starts very low, fall back above it.
    return (10000, low - 1) if low > 12000 else (high + 1, 65535)


def _worker() -> tuple[int, int]:
    """(this process's index, how many) among pytest-xdist's workers; (0, 1) outside xdist. A test's subprocess
    inherits the variables, so it draws from its worker's slices too."""
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    except ValueError:
        return 0, 1
    return (index, count) if 0 <= index < count else (0, 1)


def _slice(low: int, high: int, index: int, count: int) -> tuple[int, int]:
    width = (high - low + 1) // count
    return low + index * width, low + (index + 1) * width - 1


def _parts() -> tuple[tuple[int, int], tuple[int, int]]:
    """(singles' part, blocks' part) of the candidate range: two fifths for singles, the rest for blocks; each part
    cut into one slice per xdist worker, this process's slice returned."""
    low, high = _candidate_range()
    split = low + (high - low + 1) * 2 // 5
    index, count = _worker()
    return _slice(low, split - 1, index, count), _slice(split, high, index, count)


def _bindable(host: str, port: int, kinds: tuple[int, ...]) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in kinds:
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def _free_run(host: str, kinds: tuple[int, ...], starts: list[int], span: int) -> int | None:
    for port in starts:
        block = range(port, port + span)
        if port + span > 65536 or any(p in _handed_out for p in block):
            continue
        if all(_bindable(host, p, kinds) for p in block):
            _handed_out.update(block)
            return port
    return None


def free_port(host: str = "127.0.0.1", *, udp: bool = True, tcp: bool = True, span: int = 1) -> int:
    """A port P such that P..P+span-1 are free for the kinds asked (UDP and TCP by default, as SIP uses both).

    A block (span above 2) is the caller's until it gives it back with `release(P, span)`."""
    kinds = tuple(k for k, wanted in ((socket.SOCK_DGRAM, udp), (socket.SOCK_STREAM, tcp)) if wanted)
    if not kinds:
        raise ValueError("ask for UDP, TCP or both")
    (single_low, single_high), (block_low, block_high) = _parts()
    if span <= _SMALL:
        starts = [_random.randint(single_low, single_high - span + 1) for _ in range(500)]
        port = _free_run(host, kinds, starts, span)
        if port is not None:
            _singles.extend(range(port, port + span))
            while len(_singles) > _REMEMBERED:
                _handed_out.discard(_singles.popleft())
            return port
    else:
        # Scan the blocks' part from a random even start, wrapping once; a port that is taken moves the scan past
        # it, so a free run is found if there is one, with one probe per port at most.
        width = block_high - block_low + 1
        offset = _random.randrange(0, width, 2)
        scanned, start = 0, 0
        while scanned + span <= width:
            base = block_low + (offset + scanned) % width
            if base + span - 1 > block_high:  # wrap to the part's start
                scanned += block_high - base + 1
                continue
            taken = next((p for p in range(base, base + span)
                          if p in _handed_out or not _bindable(host, p, kinds)), None)
            if taken is None:
                _handed_out.update(range(base, base + span))
                return base
            start = taken + 1 + ((taken + 1 - block_low) % 2)
            scanned += start - base
    raise RuntimeError(f"no free port block of {span} on {host}")


def release(port: int, span: int) -> None:
    """Give back a block that `free_port(..., span=span)` handed out (its relay has stopped)."""
    _handed_out.difference_update(range(port, port + span))


def free_udp_port(host: str = "127.0.0.1") -> int:
    return free_port(host, udp=True, tcp=False)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    return free_port(host, udp=False, tcp=True)
