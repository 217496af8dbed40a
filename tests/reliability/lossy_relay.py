"""A seeded lossy UDP relay for loopback tests: the packet loss that kernel netem would give, reproducibly.

    python tests/reliability/lossy_relay.py --listen 127.0.0.1:P --server 127.0.0.1:Q --loss 0.1 --seed 42 --duration 60

Theory of operation
-------------------
The relay listens on one loopback UDP socket (the *front*). The first datagram from a client address opens a
*back* socket for that client alone: bound to an ephemeral port on a loopback address (``back_host``, by default
the server's own address; another one such as 127.0.0.2 when the server judges a source by its address, e.g. a
trunk's inbound network), connected to the server.
A datagram from the client leaves through its back socket; a datagram the server sends to that back socket goes
out of the front socket to that client. The server therefore sees each client as one distinct address of the
relay, and everything it sends to the address it saw (responses routed by ``received``/``rport``, RFC 3261
§18.2.2 and RFC 3581, requests to a registered source address, in-dialog requests to a Contact that names the
relay) comes back to the right client, whatever the SIP headers say. A connected UDP socket receives only from
its peer, so nothing but the server reaches a client through the relay.

Loss: each direction has its own ``random.Random`` and its own probability. Every datagram in that direction
draws once: it is dropped when ``rng.random() < p``. The generators are seeded from ``--seed`` and the direction
(``direction_seed``), so a run with the same seed and the same datagram order drops the same datagrams. Datagrams
are never reordered, duplicated or delayed.

Rules
-----
- Loopback only: the listen and server addresses must be IP literals in 127.0.0.0/8 or ::1 (never a host name,
  never resolved); a datagram from, or a forward to, anything else is refused and counted.
- Bounded: the relay closes itself after ``duration`` seconds; at most ``max_clients`` back sockets exist (a new
  client beyond that is refused and counted).
- Counted: forwarded and dropped datagrams per direction (``to_server``, ``to_client``), refusals, clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import random
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

Address = tuple[str, int]

TO_SERVER = "to_server"
TO_CLIENT = "to_client"
DIRECTIONS = (TO_SERVER, TO_CLIENT)

DEFAULT_MAX_CLIENTS = 1024
BUFFER_BYTES = 2 * 1024 * 1024  # a burst of calls overflows the default receive buffer; the relay must not add loss


class NotLoopback(ValueError):
    """An address outside 127.0.0.0/8 and ::1, or not an IP literal."""


def loopback_address(host: str, port: int) -> Address:
    """``(host, port)`` checked: ``host`` an IP literal on loopback, ``port`` in 0..65535 (0 only for listening)."""
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError as exc:
        raise NotLoopback(f"{host!r} is not an IP literal (the relay never resolves names)") from exc
    if not ip.is_loopback:
        raise NotLoopback(f"{host!r} is not a loopback address")
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return (str(ip), port)


def parse_address(text: str) -> Address:
    """``127.0.0.1:5060`` or ``[::1]:5060`` -> a checked loopback address."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return loopback_address(host, int(port))


def _is_loopback(addr: Any) -> bool:
    try:
        return ipaddress.ip_address(addr[0]).is_loopback
    except (ValueError, TypeError, IndexError):
        return False


def direction_seed(seed: int, direction: str) -> str:
    """The seed of one direction's generator (a string: ``random.Random`` hashes it with SHA-512, stable across
    Python versions and processes)."""
    if direction not in DIRECTIONS:
        raise ValueError(direction)
    return f"lossy-relay:{seed}:{direction}"


@dataclass
class DirectionCounts:
    forwarded: int = 0
    dropped: int = 0


@dataclass
class RelayCounts:
    to_server: DirectionCounts = field(default_factory=DirectionCounts)
    to_client: DirectionCounts = field(default_factory=DirectionCounts)
    clients: int = 0
    refused_clients: int = 0          # over max_clients
    refused_not_loopback: int = 0     # a datagram from a non-loopback source
    send_errors: int = 0              # the kernel refused a send (e.g. ICMP port unreachable reported back)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Front(asyncio.DatagramProtocol):
    def __init__(self, relay: LossyRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay._from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.relay.counts.send_errors += 1


class _Back(asyncio.DatagramProtocol):
    def __init__(self, relay: LossyRelay, client: Address) -> None:
        self.relay = relay
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay._from_server(data, self.client)

    def error_received(self, exc: Exception) -> None:
        # A connected UDP socket reports the server's ICMP port-unreachable here: the datagram was lost anyway.
        self.relay.counts.send_errors += 1


class LossyRelay:
    """The relay; ``await start()`` binds it, ``await wait_closed()`` returns when its duration is over."""

    def __init__(self, listen: Address, server: Address, *, loss_to_server: float = 0.0,
                 loss_to_client: float = 0.0, seed: int = 0, duration: float | None = 60.0,
                 max_clients: int = DEFAULT_MAX_CLIENTS, back_host: str | None = None) -> None:
        self.listen = loopback_address(*listen)
        self.server = loopback_address(*server)
        self.back_host = loopback_address(back_host or self.server[0], 0)[0]
        if self.server[1] == 0:
            raise ValueError("the server port must not be 0")
        for p in (loss_to_server, loss_to_client):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"loss probability {p} outside [0, 1]")
        if duration is not None and duration <= 0:
            raise ValueError("duration must be positive")
        self.loss = {TO_SERVER: loss_to_server, TO_CLIENT: loss_to_client}
        self.seed = seed
        self.duration = duration
        self.max_clients = max_clients
        self.counts = RelayCounts()
        self._rng = {d: random.Random(direction_seed(seed, d)) for d in DIRECTIONS}
        self._front: asyncio.DatagramTransport | None = None
        self._backs: dict[Address, asyncio.DatagramTransport] = {}
        self._pending: dict[Address, list[bytes]] = {}  # datagrams of a client whose back socket is opening
        self._closed: asyncio.Event | None = None
        self._stop_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------
    async def start(self) -> LossyRelay:
        self._loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        sock = self._socket(self.listen)
        self._front, _ = await self._loop.create_datagram_endpoint(lambda: _Front(self), sock=sock)
        if self.duration is not None:
            self._stop_handle = self._loop.call_later(self.duration, self.close)
        return self

    @property
    def address(self) -> Address:
        """Where clients send (the bound front address; the real port when ``listen`` asked for port 0)."""
        assert self._front is not None, "not started"
        name = self._front.get_extra_info("sockname")
        return (name[0], name[1])

    @property
    def closed(self) -> bool:
        return self._closed is not None and self._closed.is_set()

    def close(self) -> None:
        if self._stop_handle is not None:
            self._stop_handle.cancel()
            self._stop_handle = None
        if self._front is not None:
            self._front.close()
        for back in self._backs.values():
            back.close()
        self._pending.clear()
        if self._closed is not None:
            self._closed.set()

    async def wait_closed(self) -> None:
        assert self._closed is not None, "not started"
        await self._closed.wait()

    async def __aenter__(self) -> LossyRelay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- forwarding ----------------------------------------------------------------------------------------------
    def _socket(self, addr: Address) -> socket.socket:
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
            sock.bind(addr)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _lost(self, direction: str) -> bool:
        """One draw for one datagram; counts it."""
        counts: DirectionCounts = getattr(self.counts, direction)
        if self._rng[direction].random() < self.loss[direction]:
            counts.dropped += 1
            return True
        counts.forwarded += 1
        return False

    def _from_client(self, data: bytes, addr: Any) -> None:
        if self.closed:
            return
        if not _is_loopback(addr):
            self.counts.refused_not_loopback += 1
            return
        client: Address = (addr[0], addr[1])
        back = self._backs.get(client)
        if back is None:
            pending = self._pending.get(client)
            if pending is None:
                if len(self._backs) + len(self._pending) >= self.max_clients:
                    self.counts.refused_clients += 1
                    return
                self._pending[client] = pending = []
                assert self._loop is not None
                self._loop.create_task(self._open_back(client))
            # The draw happens now, in arrival order, so the drop pattern does not depend on socket timing.
            if not self._lost(TO_SERVER):
                pending.append(data)
            return
        if not self._lost(TO_SERVER):
            back.sendto(data)

    async def _open_back(self, client: Address) -> None:
        assert self._loop is not None
        sock = self._socket((self.back_host, 0))
        try:
            sock.connect(self.server)
            back, _ = await self._loop.create_datagram_endpoint(lambda: _Back(self, client), sock=sock)
        except OSError:
            sock.close()
            self._pending.pop(client, None)
            self.counts.send_errors += 1
            return
        if self.closed:
            back.close()
            return
        self._backs[client] = back
        self.counts.clients += 1
        for data in self._pending.pop(client, []):
            back.sendto(data)

    def _from_server(self, data: bytes, client: Address) -> None:
        if self.closed or self._front is None:
            return
        if not self._lost(TO_CLIENT):
            self._front.sendto(data, client)

    def back_address(self, client: Address) -> Address | None:
        """The relay address the server sees for ``client`` (None before its first datagram went through)."""
        back = self._backs.get(client)
        if back is None:
            return None
        name = back.get_extra_info("sockname")
        return (name[0], name[1])


# -- command line ------------------------------------------------------------------------------------------------
def _address_argument(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python tests/reliability/lossy_relay.py",
                                     description="Seeded lossy UDP relay in front of a SIP server, loopback only.")
    parser.add_argument("--listen", required=True, type=_address_argument, help="HOST:PORT clients send to")
    parser.add_argument("--server", required=True, type=_address_argument, help="HOST:PORT of the server")
    parser.add_argument("--loss", type=float, default=0.0, help="drop probability, both directions")
    parser.add_argument("--loss-to-server", type=float, default=None, help="overrides --loss towards the server")
    parser.add_argument("--loss-to-client", type=float, default=None, help="overrides --loss towards clients")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds until the relay stops by itself")
    parser.add_argument("--max-clients", type=int, default=DEFAULT_MAX_CLIENTS)
    parser.add_argument("--back-host", default=None,
                        help="loopback address the server sees the clients at [the server's address]")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> RelayCounts:
    loss_to_server = args.loss if args.loss_to_server is None else args.loss_to_server
    loss_to_client = args.loss if args.loss_to_client is None else args.loss_to_client
    relay = LossyRelay(args.listen, args.server, loss_to_server=loss_to_server, loss_to_client=loss_to_client,
                       seed=args.seed, duration=args.duration, max_clients=args.max_clients,
                       back_host=args.back_host)
    await relay.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # stop early, still printing the counts
        loop.add_signal_handler(sig, relay.close)
    host, port = relay.address
    print(json.dumps({"listening": f"{host}:{port}"}), flush=True)
    try:
        await relay.wait_closed()
    finally:
        relay.close()
    return relay.counts


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        counts = asyncio.run(_run(args))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(counts.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
