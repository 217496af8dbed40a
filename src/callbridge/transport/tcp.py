"""SIP over TCP: listener, connector, and the table of open connections (RFC 3261 §18.3).

Rules:
- A stream carries back-to-back messages framed by Content-Length (§18.3); ``callbridge.sip.StreamParser`` frames
  them. A stream whose framing breaks (``ParseError`` with the parser ``broken``) cannot be resynchronised, so
  that connection alone is closed; every other connection keeps flowing. The close is graceful and comes after
  the runtime's next drain: the responses to the messages framed before the break (in the same chunk, too) are
  written on the connection first (§18.2.2), and nothing more is read from it.
- A framed message reaches the core as its bytes (``bytes(message)``), like a datagram. A message that is framed
  but invalid reaches it the same way (its octets, ``StreamParser.invalid``), counted: the core answers it as it
  answers a datagram that fails to parse (400, 505, ... when its top Via parses, RFC 4475 §3.1.2), on the same
  connection, and the stream goes on.
- Connections are keyed by the peer's address ``(host, port)``: a response to a request that came over TCP goes
  back over the same connection (§18.2.2) because the core addresses it to the request's source.
- A message for an address without a connection opens one (in the background) and is queued until it is
  connected; if the connect fails, the queued messages are dropped and counted.
- Except a response to the address of a connection we accepted that closed in the last ``CLOSED_PEER_MEMORY``
  seconds: the core addresses a response to a request that came over TCP to the request's source, that is the
  peer's ephemeral port, where nothing listens. §18.2.2 would have the server connect to the Via's sent-by port
  then; the core does not give that address, so such a response is dropped and counted
  (``tcp_closed_peer_drops``): the client's transaction times out, as after any lost connection. (A request to
  that address, say an INVITE to a phone reached where it registered from, still opens a connection.)
- A connection that carried nothing for ``idle_timeout`` seconds is closed by a periodic sweep.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from callbridge.sip import ParseError, StreamParser
from callbridge.transport.counters import TransportCounters

log = logging.getLogger(__name__)

Address = tuple[str, int]
Receiver = Callable[[bytes, Address], None]

DEFAULT_IDLE_TIMEOUT = 300.0
CONNECT_TIMEOUT = 5.0
PENDING_LIMIT = 1000  # messages queued per connection being opened
# A peer's accepted connection that closed is remembered this long (64*T1, the longest a server transaction
# answers), so that a late response is not sent by connecting to the peer's ephemeral port (below).
CLOSED_PEER_MEMORY = 32.0
CLOSED_PEER_LIMIT = 65536


class StreamConnection(asyncio.Protocol):
    """One TCP connection: frames what arrives, writes what the runtime sends."""

    def __init__(self, table: ConnectionTable, *, inbound: bool = False) -> None:
        self._table = table
        self.inbound = inbound  # accepted from a peer (its port is an ephemeral one), not opened by us
        self._parser = StreamParser()
        self.transport: asyncio.Transport | None = None
        self.remote: Address | None = None
        self.last_activity = 0.0
        self.closing = False  # the framing broke: nothing more is read; closed once the pending writes are out

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote = (peer[0], peer[1])
        self.last_activity = self._table.loop.time()
        self._table.register(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        table = self._table
        self.last_activity = table.loop.time()
        assert self.remote is not None
        parser = self._parser
        parser.feed(data)
        while True:
            try:
                message = parser.next_message()
            except ParseError as exc:
                if parser.broken is not None:
                    table.counters.stream_framing_errors += 1
                    log.info("closing TCP connection from %r: broken framing (%s)", self.remote, exc)
                    table.on_batch_done()  # first: the drain is scheduled before the close
                    self._close_after_drain()
                    return
                # Framed but invalid: the parser consumed it; the core answers it if it can; the stream goes on.
                table.counters.stream_parse_errors += 1
                log.debug("invalid message on TCP from %r: %s", self.remote, exc)
                invalid, parser.invalid = parser.invalid, None
                if invalid is not None:
                    table.receiver(invalid, self.remote)
                continue
            if message is None:
                break
            table.receiver(bytes(message), self.remote)
        table.on_batch_done()

    def _close_after_drain(self) -> None:
        """Stop reading now; close once the responses to what was already handed to the core are written.

        ``on_batch_done`` (the caller's next step) schedules the runtime's drain with ``loop.call_soon``; this
        close is scheduled with ``call_soon`` too, after it (the loop runs callbacks in the order they were
        scheduled), and ``transport.close()`` flushes the write buffer before the socket is closed."""
        self.closing = True
        if self.transport is None:
            return
        self.transport.pause_reading()
        self._table.loop.call_soon(self.close_gracefully)

    def close_gracefully(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._table.unregister(self)

    def write(self, data: bytes) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        self.last_activity = self._table.loop.time()
        return True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ConnectionTable:
    """Every open TCP connection of one runtime, by peer address, plus the listeners and connects in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: Receiver, on_batch_done: Callable[[], None],
                 counters: TransportCounters, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self.loop = loop
        self.receiver = receiver
        self.on_batch_done = on_batch_done
        self.counters = counters
        self.idle_timeout = idle_timeout
        self.connections: dict[Address, StreamConnection] = {}
        self._pending: dict[Address, list[bytes]] = {}
        self._connect_tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.Server] = []
        self._closed_inbound: dict[Address, float] = {}  # peers whose accepted connection closed -> until when
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._closed = False

    # -- listening -----------------------------------------------------------------------------------------------
    async def listen(self, host: str, port: int) -> Address:
        server = await self.loop.create_server(lambda: self._accepted(), host, port,
                                               reuse_address=True, backlog=1024)
        self._servers.append(server)
        sockname = server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    def _accepted(self) -> StreamConnection:
        self.counters.tcp_accepted += 1
        return StreamConnection(self, inbound=True)

    # -- the table -----------------------------------------------------------------------------------------------
    def register(self, conn: StreamConnection) -> None:
        assert conn.remote is not None
        old = self.connections.get(conn.remote)
        if old is not None and old is not conn:
            old.abort()
        self.connections[conn.remote] = conn
        if self._sweep_handle is None and not self._closed:
            self._schedule_sweep()

    def unregister(self, conn: StreamConnection) -> None:
        self.counters.tcp_closed += 1
        if conn.remote is not None and self.connections.get(conn.remote) is conn:
            del self.connections[conn.remote]
            if conn.inbound:
                self._remember_closed_peer(conn.remote)

    def _remember_closed_peer(self, addr: Address) -> None:
        closed = self._closed_inbound
        closed.pop(addr, None)
        closed[addr] = self.loop.time() + CLOSED_PEER_MEMORY
        if len(closed) > CLOSED_PEER_LIMIT:  # oldest first (insertion order): forget the oldest
            del closed[next(iter(closed))]

    def _peer_closed_recently(self, addr: Address) -> bool:
        until = self._closed_inbound.get(addr)
        if until is None:
            return False
        if until <= self.loop.time():
            del self._closed_inbound[addr]
            return False
        return True

    # -- sending -------------------------------------------------------------------------------------------------
    def send(self, data: bytes, addr: Address) -> bool:
        """Write on the connection to ``addr``, opening one if needed. False when dropped."""
        conn = self.connections.get(addr)
        if conn is not None and conn.write(data):
            return True
        pending = self._pending.get(addr)
        if pending is not None:
            if len(pending) >= PENDING_LIMIT:
                self.counters.send_queue_drops += 1
                return False
            pending.append(data)
            return True
        if self._closed:
            return False
        if data[:8] == b"SIP/2.0 " and self._peer_closed_recently(addr):
            self.counters.tcp_closed_peer_drops += 1
            log.info("not connecting to %r: the connection it came from is closed", addr)
            return False
        self._pending[addr] = [data]
        task = self.loop.create_task(self._connect(addr))
        self._connect_tasks.add(task)
        task.add_done_callback(self._connect_tasks.discard)
        return True

    async def _connect(self, addr: Address) -> None:
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            # The address is an IP literal (the destination policy refuses anything else): nothing is resolved.
            await asyncio.wait_for(self.loop.sock_connect(sock, addr), CONNECT_TIMEOUT)
            _, conn = await self.loop.create_connection(lambda: StreamConnection(self), sock=sock)
        except (OSError, TimeoutError) as exc:
            sock.close()
            dropped = self._pending.pop(addr, [])
            self.counters.tcp_connect_failures += 1
            self.counters.send_errors += len(dropped)
            log.info("TCP connect to %r failed (%s); %d message(s) dropped", addr, exc, len(dropped))
            return
        except BaseException:  # cancelled at shutdown, or a bug: nothing may leak
            sock.close()
            self._pending.pop(addr, None)
            raise
        self.counters.tcp_connected += 1
        for data in self._pending.pop(addr, []):
            conn.write(data)

    # -- idle reaping --------------------------------------------------------------------------------------------
    def _schedule_sweep(self) -> None:
        self._sweep_handle = self.loop.call_later(max(self.idle_timeout / 4, 0.01), self._sweep)

    def _sweep(self) -> None:
        self._sweep_handle = None
        deadline = self.loop.time() - self.idle_timeout
        for conn in list(self.connections.values()):
            if conn.last_activity <= deadline:
                self.counters.tcp_reaped_idle += 1
                log.debug("closing idle TCP connection to %r", conn.remote)
                conn.abort()
        if self.connections and not self._closed:
            self._schedule_sweep()

    # -- shutdown ------------------------------------------------------------------------------------------------
    async def close(self) -> None:
        self._closed = True
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for server in self._servers:
            server.close()
        for task in list(self._connect_tasks):
            task.cancel()
        for conn in list(self.connections.values()):
            conn.abort()
        for server in self._servers:
            await server.wait_closed()
        if self._connect_tasks:
            await asyncio.gather(*self._connect_tasks, return_exceptions=True)
        self._servers.clear()
