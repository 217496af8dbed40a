"""Kamailio restarted under live traffic (issue #15): the proxy keeps no state a restart could lose. Registrations
live on the node (with the Path the proxy added), dialogs carry the proxy in their Record-Route, and the owners
table is re-synced from PostgreSQL. So after a `kill -9` of Kamailio and a new process on the same address: the
call that was up is held and hung up through it, a new call reaches the agent registered before the restart, and
the agent's re-REGISTER goes through."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from cluster_nodes import Serve, loaded_database  # noqa: E402
from kamailio_proxy import Proxy  # noqa: E402

from callbridge.phone import CallEnded, Established, Held, IncomingCall, Phone  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

PROXY, NODE_A, CUSTOMER, AGENT = "127.0.0.10", "127.0.0.11", "127.0.0.13", "127.0.0.14"
DOMAIN, DID, OP = "a.test", "6015550100", "0042"


def operation_doc() -> dict[str, object]:
    return {
        "operation": {"id": OP, "sip_domain": DOMAIN, "acw_seconds": 0, "default_queue": "support"},
        "queues": [{"name": "support", "max_wait_seconds": 20}],
        "agents": [{"extension": "1001", "password": "secret-1001", "queues": ["support"]}],
        "trunks": [{"name": "carrier", "host": "127.0.0.3", "inbound_networks": [f"{PROXY}/32"]}],
        "dids": [{"number": DID, "queue": "support", "trunk": "carrier"}],
        "tokens": [{"label": "tests"}],
    }


async def _until(condition, what: str, timeout: float = 15) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_kamailio_killed_and_restarted_keeps_the_call_up_and_the_registration_working(
        postgres_url: str, tmp_path: Path) -> None:
    phones: list[Phone] = []
    proxy = Proxy(PROXY, tmp_path)
    with loaded_database(postgres_url, operation_doc()) as (url, [token]):
        engine = make_engine(url)
        node = Serve("a", NODE_A, url, tmp_path)
        try:
            node.wait_ready()
            proxy.start()
            await proxy.synced(engine)
            agent = await Phone.start(host=AGENT, user="1001", domain=DOMAIN, password="secret-1001",
                                      name="agent-1001", answer="auto")
            customer = await Phone.start(host=CUSTOMER, user="3001234567", domain=CUSTOMER, name="customer")
            phones += [agent, customer]
            await agent.register(proxy.address, expires=300, timeout=10)
            async with httpx.AsyncClient(base_url=node.http, timeout=10, trust_env=False,
                                         headers={"wolkvox-token": token, "wolkvox_server": OP}) as api:
                async def verb(**params: str) -> dict[str, object]:
                    answer = await api.post("/api/v2/agentbox.php", params=params)
                    assert answer.status_code == 200, answer.text
                    body: dict[str, object] = answer.json()
                    return body

                await verb(api="change_status", agent_id="1001", status="ready")
                call = await customer.call(f"sip:{DID}@{PROXY}:{proxy.port}", timeout=10)
                first = (await agent.wait_for(IncomingCall, timeout=5)).call
                await agent.wait_for(Established, call=first, timeout=5)

                proxy.kill()
                proxy.start()  # a new process: same address, port and configuration, nothing carried over
                await proxy.synced(engine)

                # the call that was up: the node's re-INVITE (hold) and both BYEs route through the new proxy
                customer.clear_history()
                await verb(api="hold", agent_id="1001")
                await customer.wait_for(Held, call=call, timeout=10)
                await call.hangup()
                ended = await agent.wait_for(CallEnded, call=first, timeout=10)
                assert (ended.reason, ended.by) == ("bye", "remote")

                # the registration made before the restart still reaches the agent through it
                for _ in range(100):
                    view = await api.get("/v2/agents/1001", headers={"authorization": f"Bearer {token}"})
                    if view.status_code == 200 and view.json().get("state") == "ready":
                        break
                    await asyncio.sleep(0.05)
                assert view.json().get("state") == "ready", view.text
                second_call = await customer.call(f"sip:{DID}@{PROXY}:{proxy.port}", timeout=10)
                second = (await agent.wait_for(IncomingCall, timeout=5)).call
                assert any(h.startswith(f"<sip:{PROXY}:{proxy.port}")
                           for h in second.invite.headers.get_all("Record-Route"))
                await second_call.hangup()
                await agent.wait_for(CallEnded, call=second, timeout=10)
                await agent.register(proxy.address, expires=300, timeout=10)  # and its refresh goes through

            def hangups() -> list[str]:
                with engine.connect() as conn:
                    return [r[0] for r in conn.execute(text("SELECT hangup_by FROM cdrs ORDER BY started_at"))]
            await _until(lambda: hangups() == ["customer", "customer"], "two CDRs")
        finally:
            for phone in phones:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.close(), 5)
            proxy.stop()
            node.stop()
            engine.dispose()

