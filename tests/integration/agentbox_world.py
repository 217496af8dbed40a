"""A live callbridge node with its agentbox endpoint served on uvicorn, for the agentbox-on-real-calls tests.

    async with AgentboxNode.start(tmp_path) as world:        # SIP on loopback, HTTP on a free loopback port
        agent = await world.agent("1001", answer="auto")     # registered with digest, made ready
        customer, call, agent_call = await world.talking(agent)   # a trunk call answered by 1001
        response = await world.box("transfer", agent_id="1001", customer_phone="1002")

Two operations are loaded: `0042` (callnode's: agents 1001-1003, the trunk whose customers are on 127.0.0.2 and
whose gateway is 127.0.0.3) and `0077` (agents 1001 and 2001, no trunk) for the tenant matrix. Tokens of each are
in `world.tokens[op]`. The operation's transfer timeout is short (`transfer_timeout`) so that "no answer" is fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from callnode import DOMAIN, OP, agent_phone, customer_phone, did_uri, load, operation_doc, until

from callbridge.bootstrap import Node, bootstrap
from callbridge.config import Settings
from callbridge.phone import Call, IncomingCall, Phone

OTHER_OP = "0077"
OTHER_DOMAIN = "0077.callbridge.test"
ENDPOINT = "/api/v2/agentbox.php"
AUX = "7"


def main_doc(*, gateway_port: int = 5060, transfer_timeout: float = 3.0, ring_timeout: float = 3.0,
             agents: tuple[str, ...] = ("1001", "1002", "1003"), max_wait: float = 10.0,
             token_limit: int = 2) -> dict[str, Any]:
    doc = operation_doc(gateway_port=gateway_port, ring_timeout=ring_timeout, max_wait=max_wait, agents=agents)
    doc["operation"].update(transfer_timeout=transfer_timeout, token_concurrency_limit=token_limit)
    doc["aux_states"] = [{"id": AUX, "name": "Lunch"}]
    doc["activity_codes"] = [{"group": 1, "code": "SALE", "name": "Sale"},
                             {"group": 2, "code": "NEW", "name": "New customer"}]
    doc["tokens"] = [{"label": "crm"}, {"label": "crm-2"}]
    return doc


def other_doc() -> dict[str, Any]:
    return {
        "operation": {"id": OTHER_OP, "sip_domain": OTHER_DOMAIN, "acw_seconds": 0, "default_queue": "sales"},
        "queues": [{"name": "sales"}],
        "agents": [{"extension": ext, "name": f"Other {ext}", "password": f"other-{ext}", "queues": ["sales"]}
                   for ext in ("1001", "2001")],
        "tokens": [{"label": "other"}],
    }


class LiveHttp:
    """The node's Starlette app on uvicorn, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        await until(lambda: self.server.started, what="uvicorn started")

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
        self.sock.close()


@dataclass
class AgentboxNode:
    node: Node
    http: LiveHttp
    client: httpx.AsyncClient
    tokens: dict[str, list[str]]
    phones: list[Phone] = field(default_factory=list)

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, tmp_path: Path, *, settings: dict[str, Any] | None = None, doc: dict[str, Any] | None = None,
                    timers: Any = None, **doc_options: Any) -> AsyncIterator[AgentboxNode]:
        """A live node on SQLite with operation 0042 (`doc`, or `main_doc(**doc_options)`) and 0077, its HTTP
        server and a client; `settings` and `timers` go to bootstrap."""
        url = f"sqlite:///{tmp_path / 'callbridge.db'}"
        tokens = {OP: await asyncio.to_thread(load, url, doc if doc is not None else main_doc(**doc_options)),
                  OTHER_OP: await asyncio.to_thread(load, url, other_doc())}
        extra = {"timers": timers} if timers is not None else {}
        node = await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                        node_id="node-1", **(settings or {})), **extra)
        http = LiveHttp(node.app)
        await http.start()
        client = httpx.AsyncClient(base_url=http.url, timeout=15)
        world = cls(node, http, client, tokens)
        try:
            yield world
        finally:
            for phone in world.phones:
                await phone.close()
            await client.aclose()
            await http.stop()
            await node.close()

    @property
    def service(self) -> Any:
        return self.node.service

    async def box(self, api: str, *, token: str | None = None, server: str | None = OP,
                  **params: str) -> httpx.Response:
        """POST the way Wolkvox documents it: parameters in the query string, no body, both headers."""
        headers = {"wolkvox-token": token or self.tokens[OP][0]}
        if server is not None:
            headers["wolkvox_server"] = server
        return await self.client.post(ENDPOINT, params={"api": api, **params}, headers=headers)

    async def agent(self, extension: str, *, ready: bool = True, **options: Any) -> Phone:
        phone = await agent_phone(self.node, extension, ready=ready, **options)
        self.phones.append(phone)
        return phone

    async def customer(self, user: str = "3105550000", **options: Any) -> Phone:
        phone = await customer_phone(user, **options)
        self.phones.append(phone)
        return phone

    async def gateway(self, port: int, **options: Any) -> Phone:
        """The trunk's outbound gateway (127.0.0.3): where numbers dialled through the trunk ring."""
        phone = await Phone.start(host="127.0.0.3", port=port, user="gateway", domain="127.0.0.3",
                                  name="gateway", **options)
        self.phones.append(phone)
        return phone

    async def talking(self, agent: Phone, extension: str = "1001",
                      customer: Phone | None = None) -> tuple[Phone, Call, Call]:
        """A trunk call to the DID answered by `agent` (which must auto-answer): (customer, its call, the agent's)."""
        customer = customer or await self.customer()
        call = await customer.call(did_uri(self.node), timeout=5)
        agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
        await until(lambda: self.service.get_agent(OP, extension).state == "on_call", what="agent on call")
        return customer, call, agent_call

    def conn_id(self, extension: str = "1001") -> str:
        conn_id = self.service.get_agent(OP, extension).conn_id
        assert conn_id is not None
        return str(conn_id)

    def transfers(self, conn_id: str) -> list[Any]:
        """The transfer records of a call (from its events), oldest first."""
        ids = dict.fromkeys(e.data["id"] for e in self.node.events.history(conn_id) if e.type.startswith("transfer."))
        return [self.service.get_transfer(OP, tid) for tid in ids]

    def event_types(self, conn_id: str) -> list[str]:
        return [e.type for e in self.node.events.history(conn_id)]

    def state(self, extension: str, op: str = OP) -> str:
        return str(self.service.get_agent(op, extension).state)


def envelope(response: httpx.Response) -> tuple[int, str, str | None, str, Any]:
    body = response.json()
    return response.status_code, body["code"], body["error"], body["msg"], body.get("data")


__all__ = ["AUX", "DOMAIN", "ENDPOINT", "OP", "OTHER_DOMAIN", "OTHER_OP", "AgentboxNode", "envelope", "until"]
