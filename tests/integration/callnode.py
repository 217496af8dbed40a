"""A callbridge node for the call-flow tests: one operation loaded into a fresh database, SIP on loopback, and
phones as agents (on 127.0.0.1), as customers behind a trunk (127.0.0.2, the trunk's inbound network) and as the
trunk's outbound gateway (127.0.0.3).

    node = await start_node(tmp_path)                       # SQLite file in tmp_path (or db_url=...)
    agent = await agent_phone(node, "1001", ready=True)     # registered with digest, made ready
    customer = await customer_phone()
    call = await customer.call(did_uri(node), wait_answer=False)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # `tests/` itself: the peers harness and pg.py
    sys.path.insert(0, str(TESTS))

from callbridge.bootstrap import Node, bootstrap  # noqa: E402
from callbridge.config import Settings  # noqa: E402
from callbridge.phone import Phone  # noqa: E402
from callbridge.storage import schema as s  # noqa: E402
from callbridge.storage.loader import load_into_fresh_database  # noqa: E402
from migrated import migrated_sqlite  # noqa: E402

OP = "0042"
DOMAIN = "0042.callbridge.test"
DID = "6000"
CUSTOMER_HOST = "127.0.0.2"
GATEWAY_HOST = "127.0.0.3"


def operation_doc(*, gateway_port: int = 5060, ring_timeout: float = 2.0, max_wait: float = 3.0,
                  agents: Sequence[str] = ("1001", "1002", "1003")) -> dict[str, Any]:
    return {
        "operation": {"id": OP, "sip_domain": DOMAIN, "acw_seconds": 0, "default_queue": "support",
                      "ring_timeout": ring_timeout},
        "queues": [{"name": "support", "max_wait_seconds": max_wait, "retry_after": 42}],
        "agents": [{"extension": ext, "name": f"Agent {ext}", "password": f"secret-{ext}", "queues": ["support"]}
                   for ext in agents],
        "trunks": [{"name": "carrier", "host": GATEWAY_HOST, "port": gateway_port, "dial_min_length": 7,
                    "inbound_networks": [f"{CUSTOMER_HOST}/32"]}],
        "dids": [{"number": DID, "queue": "support", "trunk": "carrier"}],
    }


def load(db_url: str, doc: dict[str, Any]) -> list[str]:
    """Load the operation; the API tokens it made (shown once)."""
    return [plain for _, plain in load_into_fresh_database(db_url, doc).tokens]


async def start_node(tmp_path: Path, *, db_url: str | None = None, doc: dict[str, Any] | None = None,
                     load_doc: bool = True, **options: Any) -> Node:
    url = db_url or f"sqlite:///{tmp_path / 'callbridge.db'}"
    if load_doc and db_url is None and not (tmp_path / "callbridge.db").exists():
        migrated_sqlite(tmp_path / "callbridge.db")  # a copy of the migrated file: loading then migrates nothing
    if load_doc:
        await asyncio.to_thread(load, url, doc or operation_doc())
    settings = Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url, node_id="node-1")
    return await bootstrap(settings, **options)


async def until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def agent_phone(node: Node, extension: str, *, ready: bool = True, **options: Any) -> Phone:
    phone = await Phone.start(host="127.0.0.1", user=extension, domain=DOMAIN, password=f"secret-{extension}",
                              name=f"agent-{extension}", **options)
    await phone.register(node.sip_address, expires=300)
    await until(lambda: node.service.get_agent(OP, extension).registered, what=f"{extension} registered")
    if ready:
        node.service.change_status(OP, extension, "ready")
    return phone


async def customer_phone(user: str = "3105550000", **options: Any) -> Phone:
    return await Phone.start(host=CUSTOMER_HOST, user=user, domain=CUSTOMER_HOST, name=f"customer-{user}",
                             **options)


def did_uri(node: Node, did: str = DID) -> str:
    host, port = node.sip_address
    return f"sip:{did}@{host}:{port}"


def flush(node: Node) -> None:
    node.storage.writer.flush()


def _rows(node: Node, query: Any) -> list[Any]:
    """Read with the node's engine; its pool is emptied after (the node may be closed already)."""
    flush(node)
    engine = node.storage.engine
    try:
        with engine.connect() as conn:
            return list(conn.execute(query).mappings())
    finally:
        engine.dispose()


def state_history(node: Node, extension: str) -> list[tuple[str, str]]:
    """(state, reason) of the agent's history, oldest first."""
    h = s.agent_state_history
    rows = _rows(node, select(h.c.state, h.c.reason).where(h.c.operation_id == OP, h.c.extension == extension)
                 .order_by(h.c.id))
    return [(r["state"], r["reason"]) for r in rows]


def cdrs(node: Node) -> list[dict[str, Any]]:
    return [dict(r) for r in _rows(node, select(s.cdrs).order_by(s.cdrs.c.started_at))]


def legs_of(node: Node, conn_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in _rows(node, select(s.legs).where(s.legs.c.conn_id == conn_id)
                                   .order_by(s.legs.c.started_at))]


def dialog_rows(node: Node) -> int:
    return len(_rows(node, select(s.dialogs.c.leg_id)))
