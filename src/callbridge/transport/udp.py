"""The UDP socket: reads datagrams in batches, sends without blocking.

Why not ``asyncio.DatagramProtocol``: the selector loop's datagram transport reads ONE datagram per readiness
callback, so under load every datagram costs a full loop iteration (a ``select`` call and the callback
bookkeeping) before the runtime can drain. This socket is registered with ``loop.add_reader`` and reads up to
``READ_BATCH`` datagrams per callback, then asks the runtime for one coalesced drain. Sends go straight to
``sendto`` on the non-blocking socket; when the kernel says "try again" the datagram is queued (bounded) and flushed
when the socket becomes writable, preserving order.

The socket has large kernel buffers (``SO_RCVBUF``/``SO_SNDBUF``, 4 MiB by default): a burst of thousands of calls
per second overflows the default ~200 KiB receive buffer, and the kernel then drops datagrams silently.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import socket
from collections.abc import Callable

from callbridge.transport.counters import TransportCounters
from callbridge.transport.policy import parse_ip_literal

log = logging.getLogger(__name__)

READ_BATCH = 256
MAX_DATAGRAM = 65535
SEND_QUEUE_LIMIT = 20_000
DEFAULT_BUFFER_BYTES = 4 * 1024 * 1024

Address = tuple[str, int]
Receiver = Callable[[bytes, Address], None]


def _set_buffer(sock: socket.socket, opt: int, force_opt: int | None, size: int) -> None:
    if force_opt is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force_opt, size)  # ignores rmem_max; needs CAP_NET_ADMIN
            return
        except OSError:
            pass
    try:
        sock.setsockopt(socket.SOL_SOCKET, opt, size)
    except OSError as exc:
        log.warning("could not set socket buffer to %d bytes: %s", size, exc)


def bind_udp(host: str, port: int, *, buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> socket.socket:
    """A non-blocking UDP socket bound to ``(host, port)`` (``host`` an IP literal; port 0 = any free port)."""
    ip = parse_ip_literal(host)
    if ip is None:
        raise ValueError(f"UDP listen address must be an IP literal, not {host!r}")
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        _set_buffer(sock, socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", None), buffer_bytes)
        _set_buffer(sock, socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", None), buffer_bytes)
        sock.bind((str(ip), port))
    except BaseException:
        sock.close()
        raise
    return sock


class UdpSocket:
    """One bound UDP socket attached to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, receiver: Receiver,
                 on_batch_done: Callable[[], None], counters: TransportCounters) -> None:
        self._loop = loop
        self.sock = sock
        self.family = sock.family
        self._receiver = receiver
        self._on_batch_done = on_batch_done
        self._counters = counters
        self._send_queue: collections.deque[tuple[bytes, Address]] = collections.deque()
        self._writer_registered = False
        self._closed = False
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._read_ready)

    @property
    def local_address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def _read_ready(self) -> None:
        recvfrom = self.sock.recvfrom
        receiver = self._receiver
        got = 0
        for _ in range(READ_BATCH):
            try:
                data, addr = recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # Linux reports an earlier ICMP error on the next recvfrom (e.g. ECONNREFUSED): not fatal.
                log.debug("UDP receive error: %s", exc)
                continue
            got += 1
            receiver(data, (addr[0], addr[1]))
        if got:
            self._on_batch_done()

    def send(self, data: bytes, addr: Address) -> bool:
        """Send one datagram now, or queue it when the kernel is full. False when dropped."""
        if self._closed:
            return False
        if self._send_queue:
            return self._enqueue(data, addr)
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            return self._enqueue(data, addr)
        except OSError as exc:
            self._send_failed(exc, addr)
            return False
        return True

    def _enqueue(self, data: bytes, addr: Address) -> bool:
        if len(self._send_queue) >= SEND_QUEUE_LIMIT:
            self._counters.send_queue_drops += 1
            return False
        self._send_queue.append((data, addr))
        if not self._writer_registered:
            self._loop.add_writer(self.sock.fileno(), self._write_ready)
            self._writer_registered = True
        return True

    def _write_ready(self) -> None:
        queue = self._send_queue
        while queue:
            data, addr = queue[0]
            try:
                self.sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._send_failed(exc, addr)
            queue.popleft()
        self._loop.remove_writer(self.sock.fileno())
        self._writer_registered = False

    def _send_failed(self, exc: OSError, addr: Address) -> None:
        self._counters.send_errors += 1
        level = logging.DEBUG if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH) else logging.WARNING
        log.log(level, "UDP send to %r failed: %s", addr, exc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.sock.fileno())
        if self._writer_registered:
            self._loop.remove_writer(self.sock.fileno())
        self._send_queue.clear()
        self.sock.close()
