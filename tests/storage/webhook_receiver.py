"""A webhook receiver on loopback for the event-log tests: a bare asyncio HTTP/1.1 server that checks each
request's signature and records the events it acknowledged. `mode` chooses its answer: "ok" (200), "fail" (503),
"hang" (never answers)."""

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
        self.port = 0

    async def start(self, port: int = 0) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

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
            writer.close()
