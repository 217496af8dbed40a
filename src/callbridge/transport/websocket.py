"""SIP over WebSocket (RFC 7118): listener, connector, and the table of open connections.

Rules:
- The subprotocol is `sip` (§4.1): a handshake that does not offer it is refused with HTTP 400 before any SIP
  flows. Each WebSocket message carries exactly one SIP message (§5.1); text and binary frames are both accepted
  (§5.2); what we send is a text frame when it is UTF-8 (every message callbridge writes is) and binary otherwise.
- A message reaches the core as its bytes, like a UDP datagram: the core answers a message that does not parse as
  it answers such a datagram (400, or dropped where RFC 3261 says so), and the connection goes on. A frame larger
  than `MAX_MESSAGE_BYTES`, or a broken WebSocket frame, closes that connection only (the `websockets` library's
  protocol checks: close codes 1009 and 1002).
- Connections are keyed by the peer's address `(host, port)`, as TCP's are: a response goes back over the
  connection its request came from, and a request for a phone registered over WebSocket goes to the address its
  REGISTER came from, which is its connection (§5: the browser's Contact names a `.invalid` host and cannot be
  reached any other way). A message for an address with no connection is opened to when we are the client (a phone
  of ours registering with a server) and dropped and counted when the peer was a client of ours (`ws_no_connection
  _drops`): a browser cannot be connected to.
- A ping every `PING_INTERVAL` seconds keeps NAT bindings and proxies open and detects a dead peer (no pong within
  `PING_TIMEOUT`: closed). When a connection closes, `on_closed(addr, transport)` tells the runtime, which tells the
  core: the registrar removes the bindings that were reached through it (§5: a flow's registrations die with it).
- TLS (`wss`) is terminated here when the listener is given an SSL context, or by a proxy in front
  (docs/operations.md). The transport name the core sees is "ws" or "wss", so the Via of what it sends on that
  connection names the same (§5.2, "SIP/2.0/WS", "SIP/2.0/WSS").
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.http11 import Request, Response

from callbridge.transport.counters import TransportCounters

log = logging.getLogger(__name__)

Address = tuple[str, int]
Receiver = Callable[[bytes, Address, str], None]

WS = "ws"
WSS = "wss"
SUBPROTOCOL = "sip"
MAX_MESSAGE_BYTES = 64 * 1024  # a SIP message larger than this is an attack, not a phone
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
CONNECT_TIMEOUT = 5.0
PENDING_LIMIT = 1000  # messages queued per connection being opened or being written
CLOSE_TIMEOUT = 2.0


class WebSocketFlow:
    """One open WebSocket connection: its writer queue and the task that drains it in order."""

    __slots__ = ("_queue", "_writer", "remote", "socket", "transport")

    def __init__(self, socket: ServerConnection | ClientConnection, remote: Address, transport: str) -> None:
        self.socket = socket
        self.remote = remote
        self.transport = transport
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=PENDING_LIMIT)
        self._writer = asyncio.get_running_loop().create_task(self._write_all())

    def write(self, data: bytes) -> bool:
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            return False
        return True

    async def _write_all(self) -> None:
        while True:
            data = await self._queue.get()
            try:
                frame: str | bytes = data.decode("utf-8")
            except UnicodeDecodeError:
                frame = data
            try:
                await self.socket.send(frame)
            except ConnectionClosed:
                return

    def stop(self) -> None:
        self._writer.cancel()


class WebSocketTable:
    """Every open SIP WebSocket connection of one runtime, by peer address, plus the listeners and connects."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: Receiver, on_batch_done: Callable[[], None],
                 counters: TransportCounters, on_closed: Callable[[Address, str], None]) -> None:
        self.loop = loop
        self.receiver = receiver
        self.on_batch_done = on_batch_done
        self.counters = counters
        self.on_closed = on_closed
        self.connections: dict[Address, WebSocketFlow] = {}
        self._pending: dict[Address, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._servers: list[Server] = []
        self._closed = False

    # -- listening -----------------------------------------------------------------------------------------------
    async def listen(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> Address:
        transport = WSS if ssl_context is not None else WS
        server = await serve(lambda ws: self._serve(ws, transport), host, port,
                             subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                             process_request=_require_sip, ssl=ssl_context, max_size=MAX_MESSAGE_BYTES,
                             ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT, compression=None,
                             close_timeout=CLOSE_TIMEOUT, server_header=None)
        self._servers.append(server)
        sockname = next(iter(server.sockets)).getsockname()
        return sockname[0], sockname[1]

    async def _serve(self, ws: ServerConnection, transport: str) -> None:
        self.counters.ws_accepted += 1
        await self._run(ws, _peer(ws.remote_address), transport)

    async def _run(self, ws: ServerConnection | ClientConnection, remote: Address, transport: str) -> None:
        flow = WebSocketFlow(ws, remote, transport)
        old = self.connections.get(remote)
        if old is not None:
            old.stop()
        self.connections[remote] = flow
        try:
            async for message in ws:
                data = message.encode("utf-8") if isinstance(message, str) else message
                self.receiver(data, remote, transport)
                self.on_batch_done()
        except ConnectionClosed as exc:
            frame = exc.rcvd or exc.sent
            if frame is not None and frame.code not in (1000, 1001):
                self.counters.ws_protocol_closes += 1
        finally:
            flow.stop()
            self.counters.ws_closed += 1
            if self.connections.get(remote) is flow:
                del self.connections[remote]
                if not self._closed:
                    self.on_closed(remote, transport)
                    self.on_batch_done()

    # -- sending -------------------------------------------------------------------------------------------------
    def send(self, data: bytes, addr: Address, transport: str) -> bool:
        """Write on the connection to ``addr``; as a client, open one first. False when dropped."""
        flow = self.connections.get(addr)
        if flow is not None:
            if flow.write(data):
                return True
            self.counters.send_queue_drops += 1
            return False
        pending = self._pending.get(addr)
        if pending is not None:
            if len(pending) >= PENDING_LIMIT:
                self.counters.send_queue_drops += 1
                return False
            pending.append(data)
            return True
        if self._closed:
            return False
        if data[:8] == b"SIP/2.0 " or transport != WS:
            # A response, or a request for a peer that was our client (wss: we never connect out with TLS here):
            # its connection is gone and a browser cannot be connected to.
            self.counters.ws_no_connection_drops += 1
            log.info("no WebSocket connection to %r: message dropped", addr)
            return False
        self._pending[addr] = [data]
        task = self.loop.create_task(self._connect(addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _connect(self, addr: Address) -> None:
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        try:
            # The address is an IP literal (the destination policy refuses anything else): nothing is resolved.
            ws = await asyncio.wait_for(
                connect(f"ws://{host}:{addr[1]}/", subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                        max_size=MAX_MESSAGE_BYTES, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
                        compression=None, close_timeout=CLOSE_TIMEOUT, user_agent_header=None),
                CONNECT_TIMEOUT)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            dropped = self._pending.pop(addr, [])
            self.counters.ws_connect_failures += 1
            self.counters.send_errors += len(dropped)
            log.info("WebSocket connect to %r failed (%s); %d message(s) dropped", addr, exc, len(dropped))
            return
        except BaseException:
            self._pending.pop(addr, None)
            raise
        self.counters.ws_connected += 1
        run = self.loop.create_task(self._run(ws, addr, WS))
        self._tasks.add(run)
        run.add_done_callback(self._tasks.discard)
        await asyncio.sleep(0)  # `_run` has put the flow in the table
        flow = self.connections.get(addr)
        for data in self._pending.pop(addr, []):
            if flow is None or not flow.write(data):
                self.counters.send_queue_drops += 1

    # -- shutdown ------------------------------------------------------------------------------------------------
    async def close(self) -> None:
        self._closed = True
        for server in self._servers:
            server.close(close_connections=True)
        for flow in list(self.connections.values()):
            await _close_quietly(flow.socket)
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            await server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._servers.clear()
        self.connections.clear()


def _require_sip(connection: ServerConnection, request: Request) -> Response | None:
    """RFC 7118 §4.1: the handshake must offer the `sip` subprotocol; anything else is refused before it opens."""
    offered = ",".join(request.headers.get_all("Sec-WebSocket-Protocol"))
    if SUBPROTOCOL not in (token.strip().lower() for token in offered.split(",")):
        return connection.respond(400, "the WebSocket subprotocol 'sip' (RFC 7118) is required\n")
    return None


def _peer(address: Any) -> Address:
    return str(address[0]), int(address[1])


async def _close_quietly(ws: ServerConnection | ClientConnection) -> None:
    try:
        await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)
    except (TimeoutError, ConnectionClosed, OSError):
        pass


__all__ = ["MAX_MESSAGE_BYTES", "SUBPROTOCOL", "WS", "WSS", "WebSocketTable"]
