"""TCP_NODELAY on the HTTP server's accepted sockets, checked from the server's side.

Without it, Nagle's algorithm holds a small response's last segment until the client's delayed ACK (about 40 ms
on Linux) whenever a previous segment is unacknowledged: the agentbox's small JSON answers would stall. Nobody
sets the option by name: asyncio's socket transport sets it on every accepted socket whose `proto` is
IPPROTO_TCP (`asyncio.base_events._set_nodelay`), and an accepted socket inherits `proto` from the listening
socket in Python, so `serve._listen_http` creates its socket with IPPROTO_TCP explicitly. This test serves
`callbridge serve`'s `run` on loopback, makes a request, finds the server's accepted socket among this process's
descriptors (the server runs in the test's event loop) and reads the option; a control shows that a listener made
without IPPROTO_TCP yields sockets without it, so the check can fail.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from callbridge.cli.serve import run
from callbridge.config import Settings


def server_side_nodelay(client: socket.socket) -> int:
    """TCP_NODELAY of the socket at the other end of `client`, found among this process's descriptors."""
    wanted_peer, wanted_local = client.getsockname(), client.getpeername()
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            dup = os.dup(int(name))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, for one)
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        with sock:
            if sock.family != socket.AF_INET or sock.type != socket.SOCK_STREAM:
                continue
            try:
                if sock.getpeername() != wanted_peer or sock.getsockname() != wanted_local:
                    continue
            except OSError:  # a listening socket has no peer
                continue
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    raise AssertionError(f"no socket of this process is connected to {wanted_peer}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def request_health(port: int) -> tuple[socket.socket, bytes]:
    """A connection to the server that has had one request answered (so the server accepted and set it up)."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(client, ("127.0.0.1", port))
    await loop.sock_sendall(client, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = await asyncio.wait_for(loop.sock_recv(client, 4096), 10)
        assert chunk, "the server closed the connection"
        answer += chunk
    return client, answer


async def test_the_http_server_sets_tcp_nodelay_on_accepted_sockets(tmp_path: Path) -> None:
    settings = Settings(sip_host="127.0.0.1", sip_port=0, http_host="127.0.0.1", http_port=free_port(),
                        database_url=f"sqlite:///{tmp_path / 'callbridge.db'}", drain_seconds=0.0,
                        directory_poll_seconds=0, log_level="WARNING")
    stop = asyncio.Event()
    started = asyncio.Event()
    server = asyncio.create_task(run(settings, ready=lambda node: started.set(), stop=stop))
    try:
        await asyncio.wait_for(started.wait(), 20)
        client, answer = await request_health(settings.http_port)
        with client:
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # the option is per socket
            assert server_side_nodelay(client) != 0
    finally:
        stop.set()
        await asyncio.wait_for(server, 20)


async def test_the_check_sees_a_listener_made_without_ipproto_tcp() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0: asyncio leaves Nagle on
    listener.bind(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")

        def connection_lost(self, exc: Exception | None) -> None:
            if not closed.done():
                closed.set_result(None)

    server = await loop.create_server(Answer, sock=listener)
    try:
        client, _ = await request_health(listener.getsockname()[1])
        with client:
            assert server_side_nodelay(client) == 0
        await asyncio.wait_for(closed, 10)  # the server's side closed too, before the loop ends
    finally:
        server.close()
        await server.wait_closed()
