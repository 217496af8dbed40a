"""The asyncio shell around the relay set: a UDP socket, one timer, and a coroutine per ng command.

The sans-I/O `RelaySet` never touches a socket or a clock; this shell is its only contact with the world, in the
shape of `callbridge.transport.runtime` (which drives the SIP core the same way): datagrams in go to
``relays.receive_datagram(data, addr, now)``; after each input the shell *drains* once: every event is handed to
the coroutine waiting for its cookie (or logged: a relay going up or down; one that failed its ping, `RelayLost`,
is also handed to `on_relay_down`), every queued datagram is sent, and ONE
``loop.call_at`` timer is armed at ``relays.get_timer()`` (left as it is when that deadline did not change).
``now`` is always ``loop.time()``. A command whose coroutine is cancelled while its request still waits behind the
relay's window is withdrawn (`NgClient.withdraw`: never sent); one already sent is left to its reply or time-out.

One ng socket per address family the relays use, with a port the kernel picks, bound on loopback when every relay
of that family is on loopback (tests, a relay on the same machine) and on the wildcard address otherwise (the
kernel picks the source address toward the relay); a reply is taken only from the relay its cookie was sent to
(`NgClient`). Relays are IP literals (callbridge never resolves names).

The socket asks for a receive buffer of `RECEIVE_BUFFER` (SO_RCVBUF, which Linux caps at
``net.core.rmem_max``; SO_RCVBUFFORCE first, which passes the cap when the process may: CAP_NET_ADMIN). The replies
of a full window arrive together while the event loop is busy with other work; the kernel's default (208 kB, of
which a loopback datagram of a few hundred bytes takes over 1 kB) would drop them, and each dropped reply costs a
retransmission. What the kernel granted is `receive_buffer` (Linux reports twice the size asked: its bookkeeping).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

from callbridge.media.ng import Address, NgReply, NgTimedOut
from callbridge.media.relays import Health, RelayChanged, RelayLost, RelaySet

log = logging.getLogger(__name__)

__all__ = ["RECEIVE_BUFFER", "NgCommandFailed", "NgShell", "NgTimeout", "bind_addresses", "ng_socket"]

RECEIVE_BUFFER = 4 * 1024 * 1024
READ_BATCH = 256  # datagrams read per wake-up of the socket, at most (then the loop's other work gets its turn)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # <asm-generic/socket.h>


class NgTimeout(Exception):
    """The relay did not answer within the ng client's bounded retransmissions."""

    def __init__(self, relay: Address, command: str) -> None:
        super().__init__(f"rtpengine {relay[0]}:{relay[1]} did not answer {command!r}")
        self.relay = relay
        self.command = command


class NgCommandFailed(Exception):
    """The relay answered ``result: error``; `reason` is its ``error-reason``."""

    def __init__(self, relay: Address, command: str, reason: str) -> None:
        super().__init__(f"rtpengine {relay[0]}:{relay[1]} refused {command!r}: {reason}")
        self.relay = relay
        self.command = command
        self.reason = reason


def bind_addresses(relay_hosts: list[str]) -> dict[int, str]:
    """Where to bind the ng socket of each address family the relays use (see the module docstring)."""
    out: dict[int, str] = {}
    for family, loopback, wildcard in ((socket.AF_INET, "127.0.0.1", "0.0.0.0"), (socket.AF_INET6, "::1", "::")):
        hosts = [ipaddress.ip_address(h) for h in relay_hosts if (":" in h) == (family == socket.AF_INET6)]
        if hosts:
            out[family] = loopback if all(h.is_loopback for h in hosts) else wildcard
    return out


def ng_socket(family: int, host: str, receive_buffer: int = RECEIVE_BUFFER) -> socket.socket:
    """A non-blocking UDP socket bound to (`host`, a port the kernel picks), its receive buffer enlarged (see the
    module docstring)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, receive_buffer)
        except OSError:  # not permitted (no CAP_NET_ADMIN) or not Linux: the capped request
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((host, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class NgShell:
    def __init__(self, relays: RelaySet, *, receive_buffer: int = RECEIVE_BUFFER) -> None:
        self.relays = relays
        self.receive_buffer_asked = receive_buffer
        self.receive_buffer = 0  # what the kernel granted (the smallest over the sockets), once started
        self._sockets: dict[int, socket.socket] = {}
        self._waiting: dict[str, asyncio.Future[NgReply]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_scheduled = False
        self.closed = False
        # told of each relay that goes down, on a later loop turn (bootstrap: the calls it held are recovered)
        self.on_relay_down: Callable[[Address], None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for family, host in sorted(bind_addresses([host for host, _ in self.relays.relays]).items()):
            sock = ng_socket(family, host, self.receive_buffer_asked)
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self.receive_buffer = min(self.receive_buffer, granted) if self.receive_buffer else granted
            self._sockets[family] = sock
            self._loop.add_reader(sock.fileno(), self._readable, sock)
        self.relays.start(self._loop.time())
        self._drain()

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    async def command(self, relay: Address, message: dict[str, Any]) -> dict[str, Any]:
        """Send `message` to `relay` and return its reply; `NgTimeout` or `NgCommandFailed` otherwise."""
        if self._loop is None or self.closed:
            raise RuntimeError("the ng shell is not running")
        cookie = self.relays.request(relay, message, self._loop.time())
        future: asyncio.Future[NgReply] = self._loop.create_future()
        self._waiting[cookie] = future
        self._wake()
        try:
            reply = await future
        except asyncio.CancelledError:
            # the caller gave up (a queued customer's music when an agent answers): a request still queued behind
            # the relay's window is not sent at all, rather than sent for nobody (a 64 kB blob decoded for nothing)
            self.relays.withdraw(cookie)
            raise
        finally:
            self._waiting.pop(cookie, None)
        if not reply.ok:
            raise NgCommandFailed(relay, reply.command, reply.error_reason)
        return reply.reply

    def _readable(self, sock: socket.socket) -> None:
        """Every reply waiting in the socket (up to `READ_BATCH`), then one drain: asyncio's datagram transport reads
        one datagram per loop iteration, so a loop busy with SIP would take the replies of a full window one
        iteration at a time, each followed by a drain of its own."""
        now = self.now()
        got = 0
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # ICMP unreachable reported on the socket: the retransmissions time out anyway
                log.debug("ng socket error: %s", exc)
                continue
            self.relays.receive_datagram(data, (addr[0], addr[1]), now)
            got += 1
        if got:
            self._drain()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        assert self._loop is not None
        deadline = self.relays.get_timer()
        # the loop may fire up to its clock resolution early: the core must see its deadline reached
        now = max(self._loop.time(), deadline) if deadline is not None else self._loop.time()
        self.relays.handle_timer(now)
        self._drain()

    def _wake(self) -> None:
        if not self._drain_scheduled and self._loop is not None:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        if self.closed:
            return
        while (event := self.relays.next_event()) is not None:
            if isinstance(event, RelayChanged):
                level = logging.INFO if event.health is Health.UP else logging.WARNING
                log.log(level, "rtpengine %s:%d is %s", event.address[0], event.address[1], event.health.value)
                continue
            if isinstance(event, RelayLost):
                held = len(self.relays.calls_on(event.address))
                if held:
                    log.warning("rtpengine %s:%d did not answer its ping: the media of its %d calls is lost",
                                event.address[0], event.address[1], held)
                if self.on_relay_down is not None and self._loop is not None:
                    self._loop.call_soon(self.on_relay_down, event.address)
                continue
            future = self._waiting.get(event.cookie)
            if future is None or future.done():
                continue
            if isinstance(event, NgTimedOut):
                future.set_exception(NgTimeout(event.relay, event.command))
            else:
                future.set_result(event)
        for data, addr in self.relays.datagrams_to_send():
            sock = self._sockets.get(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET)
            if sock is None:
                continue
            try:
                sock.sendto(data, addr)
            except OSError as exc:  # a full send buffer or an ICMP error: a retransmission or the time-out follows
                log.debug("ng send to %s:%d failed: %s", addr[0], addr[1], exc)
        deadline = self.relays.get_timer()
        if deadline == self._timer_when and (deadline is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        for sock in self._sockets.values():
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
