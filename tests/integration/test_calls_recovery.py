"""Nothing left behind: a phone that vanishes mid-call is ended by the session timer (RFC 4028) and its agent
freed; a node killed with SIGKILL mid-call ends both legs with BYE when it starts again, closes the call in the
records and brings the agent, whose phone is still registered, back `ready` with reason `restart`; SIGTERM drains
(503 to new calls) and then ends the live calls."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from callnode import (
    CUSTOMER_HOST,
    OP,
    agent_phone,
    cdrs,
    customer_phone,
    dialog_rows,
    did_uri,
    load,
    operation_doc,
    start_node,
    state_history,
    until,
)
from test_calls_routing import final_responses

from callbridge.bootstrap import Node
from callbridge.callcontrol.restart import RESTART
from callbridge.client import AsyncAgentboxClient
from callbridge.media import bencode
from callbridge.phone import CallEnded, CallError, IncomingCall, Phone
from callbridge.storage import Storage
from peers.ports import free_port
from peers.rtpengine import Rtpengine

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]


async def test_vanished_phone_is_ended_by_the_session_timer(tmp_path: Path) -> None:
    node = await start_node(tmp_path, session_expires=2, min_se=1)
    agent = await agent_phone(node, "1001")
    agent.endpoint.min_se = 1  # accept our short session interval instead of answering 422
    customer = await customer_phone()
    try:
        call = await customer.call(did_uri(node), wait_answer=False)
        offered = await agent.wait_for(IncomingCall, timeout=5)
        await offered.call.answer()
        await call.wait_answered(5)
        await until(lambda: node.service.get_agent(OP, "1001").state == "on_call")
        await asyncio.sleep(2.5)  # refreshes flow both ways: the call survives its interval
        assert node.live_legs == 2
        await agent.runtime.close()  # the agent's phone vanishes: no BYE, no answer to refreshes
        ended = await customer.wait_for(CallEnded, call=call, timeout=10)
        assert (ended.reason, ended.by) == ("bye", "remote")
        await until(lambda: node.live_legs == 0, what="legs released")
        await until(lambda: node.service.get_agent(OP, "1001").state == "ready", what="agent freed")
    finally:
        await customer.close()
        await agent.close()
        await node.close()
    [cdr] = cdrs(node)
    assert cdr["hangup_by"] == "system" and cdr["agents"] == ["1001"]
    assert dialog_rows(node) == 0


def _serve(db_url: str, sip_port: int, http_port: int, log: Path, **more: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CALLBRIDGE_DATABASE_URL": db_url, "CALLBRIDGE_SIP_PORT": str(sip_port),
           "CALLBRIDGE_HTTP_PORT": str(http_port), "CALLBRIDGE_DRAIN_SECONDS": "2", **more}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "callbridge", "serve"], env=env, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)


async def _wait_http(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(f"callbridge serve exited: {log.read_text()[-2000:]}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError(f"callbridge serve did not start: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


async def test_kill_9_mid_call_then_restart_ends_both_legs(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    doc = {**operation_doc(), "tokens": [{"label": "tests"}]}
    [token] = await asyncio.to_thread(load, db_url, doc)
    sip_port, http_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    proc = _serve(db_url, sip_port, http_port, log)
    agent = customer = None
    try:
        await _wait_http(http_port, proc, log)
        sip = ("127.0.0.1", sip_port)
        agent = await Phone.start(host="127.0.0.1", user="1001", domain="0042.callbridge.test",
                                  password="secret-1001", name="agent-1001", answer="auto")
        await agent.register(sip, expires=300)
        async with AsyncAgentboxClient(f"http://127.0.0.1:{http_port}", token=token, server=OP) as api:
            await api.change_status("1001", "ready")
        customer = await Phone.start(host=CUSTOMER_HOST, user="3105550000", name="customer")
        call = await customer.call(f"sip:6000@127.0.0.1:{sip_port}", timeout=10)
        agent_call = agent.calls[0]
        await until(lambda: _dialogs(db_url) == 2, timeout=5, what="dialogs written through")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        proc = _serve(db_url, sip_port, http_port, log)  # the same node comes back
        ended_customer = await customer.wait_for(CallEnded, call=call, timeout=15)
        ended_agent = await agent.wait_for(CallEnded, call=agent_call, timeout=15)
        assert (ended_customer.reason, ended_customer.by) == ("bye", "remote")
        assert (ended_agent.reason, ended_agent.by) == ("bye", "remote")
        await _wait_http(http_port, proc, log)
        # SIGTERM: drained at once (nothing live), exits cleanly
        os.killpg(proc.pid, signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        _stop(proc)
        for phone in (agent, customer):
            if phone is not None:
                await phone.close()
    storage = await asyncio.to_thread(Storage.open, db_url, "node-1")
    try:
        with storage.engine.connect() as conn:
            from sqlalchemy import select

            from callbridge.storage import schema as s
            calls = conn.execute(select(s.calls.c.state, s.calls.c.hangup_by)).all()
            cdr_rows = conn.execute(select(s.cdrs.c.hangup_by, s.cdrs.c.agents)).all()
            history = conn.execute(select(s.agent_state_history.c.state, s.agent_state_history.c.reason)
                                   .order_by(s.agent_state_history.c.id)).all()
            dialogs = conn.execute(select(s.dialogs.c.leg_id)).all()
    finally:
        await asyncio.to_thread(storage.close)
    assert [(c.state, c.hangup_by) for c in calls] == [("ended", "system")]
    assert [(c.hangup_by, c.agents) for c in cdr_rows] == [("system", ["1001"])]
    # the call the restart closed: its agent, still registered, is ready again (docs/operations.md, "Restart
    # semantics"); the SIGTERM after kept it so (no row)
    assert [(h.state, h.reason) for h in history[-2:]] == [("on_call", "answered"), ("ready", RESTART)]
    assert "on_call" in [h.state for h in history]
    assert dialogs == []


async def test_kill_9_with_an_anchored_call_then_restart_deletes_its_relay_call(tmp_path: Path) -> None:
    """The relay call of an anchored call a crash left is deleted by the restart that ends the call: the dialogs
    written through name its relay (docs/cluster.md, "Media in the cluster"), and rtpengine lists no call after."""
    def relay_calls(relay: Rtpengine) -> list[bytes]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            cookie = f"k{time.monotonic_ns()}".encode()  # rtpengine answers a cookie it saw with its cached reply
            sock.sendto(cookie + b" " + bencode.encode({"command": "list", "limit": 100}), (relay.host, relay.ng_port))
            data, _ = sock.recvfrom(65535)
        reply = bencode.decode(data.partition(b" ")[2])
        assert reply.get("result") == b"ok", reply
        return list(reply.get("calls", []))

    db_url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    doc = {**operation_doc(), "tokens": [{"label": "tests"}]}
    [token] = await asyncio.to_thread(load, db_url, doc)
    sip_port, http_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    with Rtpengine(workdir=tmp_path / "rtpengine", extra_args=("--delete-delay=0",)) as relay:
        ng = {"CALLBRIDGE_RTPENGINE": f"udp:{relay.host}:{relay.ng_port}"}
        proc = _serve(db_url, sip_port, http_port, log, **ng)
        agent = customer = None
        try:
            await _wait_http(http_port, proc, log)
            sip = ("127.0.0.1", sip_port)
            agent = await Phone.start(host="127.0.0.1", user="1001", domain="0042.callbridge.test",
                                      password="secret-1001", name="agent-1001", answer="auto")
            await agent.register(sip, expires=300)
            async with AsyncAgentboxClient(f"http://127.0.0.1:{http_port}", token=token, server=OP) as api:
                await api.change_status("1001", "ready")
            customer = await Phone.start(host=CUSTOMER_HOST, user="3105550000", name="customer")
            call = await customer.call(f"sip:6000@127.0.0.1:{sip_port}", timeout=10)
            await until(lambda: _dialogs(db_url, relayed=True) == 2, timeout=5, what="dialogs naming the relay")
            assert len(relay_calls(relay)) == 1
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
            assert len(relay_calls(relay)) == 1  # the relay keeps the call: nobody deleted it
            proc = _serve(db_url, sip_port, http_port, log, **ng)  # the same node comes back
            await customer.wait_for(CallEnded, call=call, timeout=15)
            await until(lambda: relay_calls(relay) == [], timeout=10, what="the relay call deleted")
        finally:
            _stop(proc)
            for phone in (agent, customer):
                if phone is not None:
                    await phone.close()


def _dialogs(db_url: str, *, relayed: bool = False) -> int:
    from sqlalchemy import func, select

    from callbridge.storage import make_engine
    from callbridge.storage import schema as s
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            query = select(func.count()).select_from(s.dialogs)
            if relayed:
                query = query.where(s.dialogs.c.media_relay.is_not(None))
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


async def test_sigterm_drains_then_ends_live_calls(tmp_path: Path) -> None:
    from callbridge.cli.serve import drain

    node = await start_node(tmp_path)
    agent = await agent_phone(node, "1001", answer="auto")
    customer = await customer_phone()
    late = await customer_phone("3105550001")
    try:
        call = await customer.call(did_uri(node), timeout=5)
        node.switch.draining = True
        finals = final_responses(late)
        with pytest.raises(CallError) as refused:
            await late.call(did_uri(node), timeout=5)
        assert refused.value.status == 503
        assert [(r.status, r.headers.get("Retry-After")) for r in finals] == [(503, "30")]
        await drain(node, 0.5)
        ended = await customer.wait_for(CallEnded, call=call, timeout=5)
        assert (ended.reason, ended.by) == ("bye", "remote")
        await agent.wait_for(CallEnded, timeout=5)
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0)
    finally:
        for phone in (customer, late, agent):
            await phone.close()
        await node.close()
    [cdr] = cdrs(node)
    assert cdr["hangup_by"] == "system"
    assert [s for s, _ in state_history(node, "1001")][-2:] == ["acw", "ready"]


def _requests_seen(phone: Phone) -> list[tuple[str, int]]:
    """(method, CSeq number) of every request the phone receives from now on."""
    seen: list[tuple[str, int]] = []
    endpoint = phone.endpoint
    original = endpoint.receive_datagram

    def receive(data: bytes, addr: tuple[str, int], now: float, transport: str = "udp") -> None:
        if not data.startswith(b"SIP/2.0"):
            cseq = next(line for line in data.split(b"\r\n") if line.lower().startswith(b"cseq:"))
            number, method = cseq.split(b":", 1)[1].split()
            seen.append((method.decode(), int(number)))
        original(data, addr, now, transport)

    endpoint.receive_datagram = receive  # type: ignore[method-assign]
    return seen


async def test_stored_cseq_follows_in_dialog_requests_and_the_restored_bye_exceeds_it(tmp_path: Path) -> None:
    """Each in-dialog request we send is written through (`update_cseq`), so that after a crash the restored
    dialog's BYE carries a CSeq above every request the phone has seen (§12.2.1.1)."""
    from callbridge.b2bua.switch import RESTORED_CSEQ_GAP

    node = await start_node(tmp_path)
    agent = await agent_phone(node, "1001", answer="auto")
    customer = await customer_phone()
    agent_seen, customer_seen = _requests_seen(agent), _requests_seen(customer)
    restarted = None
    try:
        call = await customer.call(did_uri(node), timeout=5)
        await until(lambda: node.service.get_agent(OP, "1001").state == "on_call")
        for verb in (node.service.mute, node.service.mute, node.service.hold, node.service.hold):
            ticket = verb(OP, "1001")
            await until(lambda t=ticket: node.service.action_outcome(t.action_id) is not None, what="action done")
        live = {leg.leg_id: leg.dialog.local_seq for leg in node.switch.legs if leg.dialog is not None}
        by_role = {"agent" if leg.agent else "customer": live[leg.leg_id] for leg in node.switch.legs}
        assert by_role == {"agent": 3, "customer": 2}  # our INVITE (1) and two re-INVITEs; two re-INVITEs
        assert _stored_cseqs(node) == live
        await node.close()  # a crash as far as the calls know: no BYE sent, the records left as they are
        restarted = await start_node(tmp_path, load_doc=False)
        await customer.wait_for(CallEnded, call=call, timeout=5)
        await agent.wait_for(CallEnded, timeout=5)
    finally:
        for phone in (customer, agent):
            await phone.close()
        await node.close()
        if restarted is not None:
            await restarted.close()
    for seen, last in ((agent_seen, 3), (customer_seen, 2)):
        assert max(number for method, number in seen if method != "BYE") == last
        assert [number for method, number in seen if method == "BYE"] == [last + RESTORED_CSEQ_GAP + 1]


def _stored_cseqs(node: Node) -> dict[str, int]:
    from sqlalchemy import select

    from callbridge.storage import schema as s
    node.storage.writer.flush()
    with node.storage.engine.connect() as conn:
        return {r.leg_id: r.local_cseq for r in conn.execute(select(s.dialogs.c.leg_id, s.dialogs.c.local_cseq))}
