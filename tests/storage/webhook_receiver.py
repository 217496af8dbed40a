"""A webhook receiver on loopback for the event-log tests: a bare asyncio HTTP/1.1 server that checks each
request's signature and records the events it acknowledged. `mode` chooses its answer: "ok" (200), "fail" (503),
"hang" (never answers). `down()` takes it off the network (the listening socket and every open connection closed:
a sender gets connection refused), `up()` brings it back on the same port."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from callbridge.http.webhooks import SIGNATURE_HEADER, verify_signature


class Receiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.mode = "ok"
        self.received: list[dict[str, Any]] = []  # acknowledged events, in arrival order
        self.bad_signatures = 0
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self, port: int = 0) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def down(self) -> None:
        """Off the network: nothing listens on the port and the connections kept alive are closed."""
        server, self._server = self._server, None
        assert server is not None, "the receiver is not up"
        server.close()
        for writer in list(self._open):
            writer.close()
        await server.wait_closed()

    async def up(self) -> None:
        """Back on the port it had."""
        assert self._server is None and self.port, "the receiver is up, or was never started"
        await self.start(self.port)

    def last_seq(self) -> int:
        return max(self.seqs(), default=0)

    async def wait_for_seq(self, seq: int, timeout: float = 10.0) -> None:
        """Until an event with seq >= `seq` was acknowledged (seqs, not counts: a repeat counts once)."""
        try:
            async with asyncio.timeout(timeout):
                while self.last_seq() < seq:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"the receiver has seq {self.last_seq()}, not {seq}, after {timeout} s") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.received]

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await asyncio.sleep(0.02)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests += 1
                if self.mode == "hang":
                    await asyncio.sleep(3600)
                status = 503 if self.mode == "fail" else 200
                if status == 200:
                    if verify_signature(self.secret, headers.get(SIGNATURE_HEADER.lower(), ""), body):
                        self.received.append(json.loads(body))
                    else:
                        self.bad_signatures += 1
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n".encode("ascii"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()
