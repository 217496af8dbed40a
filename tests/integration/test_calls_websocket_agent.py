"""An agent whose phone speaks SIP over WebSocket (RFC 7118), as a browser does: `callbridge.phone` as a WebSocket
client with a `.invalid` Contact, against a node listening for WebSocket. It registers with digest, takes a
customer's call through the DID (the INVITE reaches it over its connection: its Contact cannot be reached), and
when its connection closes, its registration goes and the agent is logged out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from callnode import (
    DOMAIN,
    OP,
    cdrs,
    customer_phone,
    did_uri,
    load,
    operation_doc,
    until,
)

from callbridge.bootstrap import bootstrap
from callbridge.config import Settings
from callbridge.phone import CallEnded, IncomingCall, Phone, RegistrationError


async def _node(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    await asyncio.to_thread(load, url, operation_doc())
    return await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                    node_id="node-1", sip_ws_port=0))


async def test_a_websocket_agent_registers_takes_a_call_and_is_logged_out_when_its_connection_closes(
        tmp_path: Path) -> None:
    node = await _node(tmp_path)
    assert node.sip_ws_address is not None and node.sip_ws_address[0] == "127.0.0.1"
    agent = await Phone.start(host="127.0.0.1", transport="ws", user="1001", domain=DOMAIN, password="secret-1001",
                              name="browser-1001")
    customer = await customer_phone()
    try:
        await agent.register(node.sip_ws_address, expires=300)
        await until(lambda: node.service.get_agent(OP, "1001").registered, what="1001 registered")
        [binding] = node.switch.registrar.location.contacts_for(OP, "1001", node.switch.wall())
        assert binding.transport == "ws" and binding.contact_uri.endswith(".invalid;transport=ws")
        assert binding.destination in node.runtime.ws_connections  # reached through its connection only
        node.service.change_status(OP, "1001", "ready")

        call = await customer.call(did_uri(node), wait_answer=False)
        incoming = await agent.wait_for(IncomingCall, timeout=5)
        assert incoming.request.uri.host.endswith(".invalid")
        assert incoming.request.via.transport == "WS"
        await incoming.call.answer()
        await call.wait_answered(5)
        await until(lambda: node.service.get_agent(OP, "1001").state == "on_call", what="on_call")
        await call.hangup()
        await agent.wait_for(CallEnded, call=incoming.call, timeout=5)
        await until(lambda: node.live_legs == 0, what="legs gone")
        [cdr] = cdrs(node)
        assert cdr["agents"] == ["1001"] and cdr["hangup_by"] == "customer"

        await agent.close()  # the browser tab closes: its WebSocket with it
        await until(lambda: not node.service.get_agent(OP, "1001").registered, what="1001 unregistered")
        assert node.service.get_agent(OP, "1001").state == "logout"
        assert node.switch.registrar.location.contacts_for(OP, "1001", node.switch.wall()) == []
        assert node.runtime.ws_connections == {}
    finally:
        await agent.close()
        await customer.close()
        await node.close()


async def test_wrong_credentials_over_websocket_are_refused_like_over_udp(tmp_path: Path) -> None:
    node = await _node(tmp_path)
    assert node.sip_ws_address is not None
    known = await Phone.start(host="127.0.0.1", transport="ws", user="1001", domain=DOMAIN, password="wrong")
    unknown = await Phone.start(host="127.0.0.1", transport="ws", user="9999", domain=DOMAIN, password="wrong")
    try:
        statuses = []
        for phone in (known, unknown):
            try:
                await phone.register(node.sip_ws_address, expires=60, timeout=5)
            except RegistrationError as exc:
                statuses.append(exc.status)
        # The same answer for a known agent with a wrong password and for an unknown one (no account probing).
        assert statuses == [401, 401]
        assert not node.service.get_agent(OP, "1001").registered
    finally:
        await known.close()
        await unknown.close()
        await node.close()
