"""A bare UDP socket on a chosen loopback address that sends hand-written SIP requests to a node and reads what
comes back within a bounded wait: for the defence and policy tests, where silence is the expected answer."""

from __future__ import annotations

import asyncio
import itertools
import socket

from callbridge.sip import Response, parse

_counter = itertools.count(1)


class RawSip:
    def __init__(self, host: str, node: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()[:2]
        self.node = node

    def close(self) -> None:
        self.sock.close()

    def message(self, method: str, *, user_agent: str | None = None, to: str | None = None,
                via: str | None = None, extra: str = "") -> tuple[bytes, str]:
        """A request from this socket; (bytes, its Call-ID)."""
        n = next(_counter)
        call_id = f"raw-{n}@{self.host}"
        node_host, node_port = self.node
        target = to or f"sip:probe@{node_host}:{node_port}"
        lines = [
            f"{method} sip:probe@{node_host}:{node_port} SIP/2.0",
            via or f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK-raw{n};rport",
            "Max-Forwards: 70",
            f"From: <sip:raw@{self.host}>;tag=raw{n}",
            f"To: <{target}>",
            f"Call-ID: {call_id}",
            f"CSeq: 1 {method}",
        ]
        if user_agent is not None:
            lines.append(f"User-Agent: {user_agent}")
        if extra:
            lines.append(extra)
        lines += ["Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode(), call_id

    async def ask(self, method: str, *, wait: float = 1.0, **options: str | None) -> Response | None:
        """Send one request; its first final response, or None when nothing came within `wait` seconds."""
        data, call_id = self.message(method, **options)  # type: ignore[arg-type]
        self.sock.sendto(data, self.node)
        return await self.response(call_id, wait)

    async def response(self, call_id: str, wait: float) -> Response | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), left)
            except TimeoutError:
                return None
            message = parse(data)
            if isinstance(message, Response) and message.call_id == call_id and message.status >= 200:
                return message
        return None
