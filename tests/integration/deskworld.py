"""A live callbridge node for the desk's tests (the agent's page and the supervisor's board), run on its own event
loop in a thread so that synchronous clients (httpx, Playwright's sync API driving Chromium) can talk to it:

    world = DeskWorld.start(tmp_dir)       # SQLite, SIP (UDP/TCP and WebSocket) and HTTP on loopback
    world.url                                  # http://127.0.0.1:<port>
    world.on_loop(lambda: world.node.service.get_agent(OP, "1001"))   # read the node on its own loop
    DeskWorld.start(tmp_dir, rtpengine=("udp:127.0.0.1:PORT",))   # calls anchored on that relay
    DeskWorld.start(tmp_dir, gateway_port=PORT)   # numbers dialled through the trunk ring at 127.0.0.3:PORT
    world.stop_http(); world.start_http()      # the HTTP server stops and comes back on the same port
    world.close()

Operations: 0042 (agentbox_world's main_doc: agents 1001-1003 with password secret-<ext>, aux state 7 "Lunch",
activity codes, tokens) with supervisor `maria` (password `board-0042`, her board listens on 1003 by default), and
0077 (agents 1001 and 2001) with supervisor `otto` (password `board-0077`).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx
from agentbox_world import OTHER_OP, LiveHttp, main_doc, other_doc
from callnode import DOMAIN, OP, load

from callbridge.bootstrap import Node, bootstrap
from callbridge.config import Settings

T = TypeVar("T")
SUPERVISOR = ("maria", "board-0042")
OTHER_SUPERVISOR = ("otto", "board-0077")
WAIT_S = 10.0

__all__ = ["DOMAIN", "OP", "OTHER_OP", "OTHER_SUPERVISOR", "SUPERVISOR", "DeskWorld"]


class DeskWorld:
    def __init__(self, tmp: Path, rtpengine: tuple[str, ...] = (), gateway_port: int = 5060) -> None:
        self.tmp = tmp
        self.rtpengine = rtpengine
        self.gateway_port = gateway_port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="desk-node", daemon=True)
        self.node: Node
        self.http: LiveHttp | None = None
        self.port = 0
        self.tokens: dict[str, list[str]] = {}

    @classmethod
    def start(cls, tmp: Path, rtpengine: tuple[str, ...] = (), gateway_port: int = 5060) -> DeskWorld:
        """`rtpengine`: the relays' ng addresses (``udp:HOST:PORT``): calls are anchored, the page has audio.
        `gateway_port`: the trunk's gateway port on 127.0.0.3."""
        world = cls(tmp, rtpengine, gateway_port)
        world.thread.start()
        world.run(world._start())
        return world

    async def _start(self) -> None:
        url = f"sqlite:///{self.tmp / 'callbridge.db'}"
        doc = main_doc(gateway_port=self.gateway_port)
        doc["supervisors"] = [{"username": SUPERVISOR[0], "password": SUPERVISOR[1], "name": "María",
                               "extension": "1003"}]
        other = other_doc()
        other["supervisors"] = [{"username": OTHER_SUPERVISOR[0], "password": OTHER_SUPERVISOR[1]}]
        self.tokens = {OP: await asyncio.to_thread(load, url, doc), OTHER_OP: await asyncio.to_thread(load, url, other)}
        self.node = await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                             node_id="node-1", sip_ws_port=0, rtpengine=self.rtpengine))
        await self._serve()

    async def _serve(self) -> None:
        http = LiveHttp(self.node.app)
        if self.port:  # come back on the same port: the page reconnects to the address it knows
            http.sock.close()
            http.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            http.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            http.sock.bind(("127.0.0.1", self.port))
            http.url = f"http://127.0.0.1:{self.port}"
        self.port = http.sock.getsockname()[1]
        await http.start()
        self.http = http

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT_S) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def on_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    def stop_http(self) -> None:
        assert self.http is not None
        self.run(self.http.stop(), timeout=15)
        self.http = None

    def start_http(self) -> None:
        self.run(self._serve())

    def box(self, api: str, **params: str) -> httpx.Response:
        """The agentbox verb as a CRM sends it (operation 0042's first token)."""
        headers = {"wolkvox-token": self.tokens[OP][0], "wolkvox_server": OP}
        return httpx.post(f"{self.url}/api/v2/agentbox.php", params={"api": api, **params}, headers=headers,
                          timeout=WAIT_S)

    def native_agent(self, extension: str) -> dict[str, Any]:
        """The agent as the native API reports it (GET /v2/agents/{id})."""
        response = httpx.get(f"{self.url}/v2/agents/{extension}", timeout=WAIT_S,
                             headers={"authorization": f"Bearer {self.tokens[OP][0]}"})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def close(self) -> None:
        async def stop() -> None:
            if self.http is not None:
                await self.http.stop()
            await self.node.close()

        try:
            self.run(stop(), timeout=20)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
