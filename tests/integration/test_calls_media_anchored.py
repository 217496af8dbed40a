"""Calls anchored on a real rtpengine (docs/design.md, "Media"): real SIP between callbridge.phone phones and
callbridge, real RTP through the relay, a blind transfer that keeps the customer's media address, and the
operation's policy when no relay answers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from callnode import (  # noqa: E402
    CUSTOMER_HOST,
    DOMAIN,
    OP,
    agent_phone,
    cdrs,
    customer_phone,
    did_uri,
    load,
    operation_doc,
    until,
)

from callbridge.bootstrap import Node, bootstrap  # noqa: E402
from callbridge.config import Settings  # noqa: E402
from callbridge.phone import CallEnded, CallFailed, Established, IncomingCall, Phone  # noqa: E402
from callbridge.sip.sdp import SessionDescription  # noqa: E402
from peers.ports import free_udp_port  # noqa: E402
from peers.rtp import RtpEndpoint  # noqa: E402
from peers.rtpengine import Rtpengine  # noqa: E402

pytestmark = pytest.mark.timeout(60)


async def anchored_node(tmp_path: Path, relay: str, *, ws: bool = False, **operation: Any) -> Node:
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    doc = operation_doc()
    doc["operation"].update(operation)
    await asyncio.to_thread(load, url, doc)
    settings = Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url, rtpengine=(relay,),
                        sip_ws_port=0 if ws else None)
    return await bootstrap(settings)


def media_of(sdp: SessionDescription | None) -> tuple[str, int]:
    assert sdp is not None and sdp.media, "no SDP with a media stream"
    connection = sdp.media[0].connection or sdp.connection
    assert connection is not None
    return connection.address, sdp.media[0].port


def in_range(relay: Rtpengine, address: tuple[str, int]) -> bool:
    return address[0] == relay.host and relay.port_min <= address[1] <= relay.port_max


async def flows(sender: RtpEndpoint, to: tuple[str, int], receiver: RtpEndpoint, *, count: int = 10) -> list[int]:
    """Send `count` packets; the senders' ids of what `receiver` got."""
    receiver.drain()
    await sender.send(to, count)
    return [p.sender for p in await receiver.receive(want=count, timeout=2.0)]


async def test_an_anchored_call_and_its_blind_transfer_carry_rtp_through_the_relay(tmp_path: Path) -> None:
    with Rtpengine(workdir=tmp_path / "rtpengine") as relay:
        node = await anchored_node(tmp_path, f"udp:{relay.host}:{relay.ng_port}")
        customer_rtp, agent_rtp, target_rtp = (RtpEndpoint(CUSTOMER_HOST), RtpEndpoint(), RtpEndpoint())
        phones = []
        try:
            await until(lambda: node.switch.anchor.media is not None and node.switch.anchor.media.available(),
                        what="the relay up")
            agent = await agent_phone(node, "1001", answer="auto", sdp_port=agent_rtp.address[1])
            target = await agent_phone(node, "1002", ready=False, answer="auto", sdp_port=target_rtp.address[1])
            customer = await customer_phone(sdp_port=customer_rtp.address[1])
            phones += [agent, target, customer]
            call = await customer.call(did_uri(node), timeout=5)
            agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
            await agent.wait_for(Established, call=agent_call, timeout=5)

            # each side's SDP names the relay, never the other party
            customer_sees, agent_sees = media_of(call.remote_sdp), media_of(agent_call.remote_sdp)
            assert in_range(relay, customer_sees) and in_range(relay, agent_sees), (customer_sees, agent_sees)
            assert customer_sees != agent_sees
            assert await flows(customer_rtp, customer_sees, agent_rtp) == [customer_rtp.ssrc] * 10
            assert await flows(agent_rtp, agent_sees, customer_rtp) == [agent_rtp.ssrc] * 10
            [conn_id] = list(node.switch.anchor.calls)
            assert node.switch.anchor.stats["anchored"] == 1

            # blind transfer: the target's offer goes to the customer through the relay, whose side stays put
            node.service.change_status(OP, "1002", "ready")
            version = call.remote_sdp.origin.sess_version
            node.service.transfer(OP, "1001", "1002")
            target_call = (await target.wait_for(IncomingCall, timeout=5)).call
            await agent.wait_for(CallEnded, call=agent_call, timeout=5)
            await target.wait_for(Established, call=target_call, timeout=5)
            await until(lambda: call.remote_sdp.origin.sess_version > version, what="the customer re-INVITEd")
            assert media_of(call.remote_sdp) == customer_sees  # the customer's media address did not change
            target_sees = media_of(target_call.remote_sdp)
            assert in_range(relay, target_sees) and target_sees not in (customer_sees, agent_sees)
            assert await flows(customer_rtp, customer_sees, target_rtp) == [customer_rtp.ssrc] * 10
            assert await flows(target_rtp, target_sees, customer_rtp) == [target_rtp.ssrc] * 10
            # the released agent reaches nobody any more
            assert await flows(agent_rtp, agent_sees, customer_rtp, count=5) == []
            assert list(node.switch.anchor.calls) == [conn_id]

            await call.hangup()
            await until(lambda: node.live_legs == 0 and not node.switch.anchor.calls, what="the call over")
            await until(lambda: node.media_shell.relays.call_count == 0, what="the relay's call deleted")
            assert node.switch.anchor.stats["media_failures"] == 0
        finally:
            for phone in phones:
                await phone.close()
            await node.close()
            for endpoint in (customer_rtp, agent_rtp, target_rtp):
                endpoint.close()
    [cdr] = cdrs(node)
    assert cdr["agents"] == ["1001", "1002"] and cdr["transfer_count"] == 1


@pytest.mark.parametrize("policy", ["direct", "refuse"])
async def test_no_relay_answering_at_the_call_start_follows_the_operations_policy(tmp_path: Path,
                                                                                   policy: str) -> None:
    silent = f"udp:127.0.0.1:{free_udp_port()}"  # nothing listens there: every ping goes unanswered
    node = await anchored_node(tmp_path, silent, media_relay_down=policy)
    customer_rtp, agent_rtp = RtpEndpoint(CUSTOMER_HOST), RtpEndpoint()
    phones = []
    try:
        assert node.switch.anchor.media is not None and not node.switch.anchor.media.available()
        agent = await agent_phone(node, "1001", answer="auto", sdp_port=agent_rtp.address[1])
        customer = await customer_phone(sdp_port=customer_rtp.address[1])
        phones += [agent, customer]
        if policy == "refuse":
            call = await customer.call(did_uri(node), wait_answer=False)
            failed = await customer.wait_for(CallFailed, call=call, timeout=5)
            assert failed.status == 503
            assert node.live_legs == 0 and node.service.get_agent(OP, "1001").state == "ready"
            assert node.switch.anchor.stats["refused_relay_down"] == 1
            assert [e.type for e in node.events.since(OP, 0) if not e.type.startswith("agent.")] == []  # no call
            assert cdrs(node) == []  # nothing was created
        else:
            call = await customer.call(did_uri(node), timeout=5)
            agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
            await agent.wait_for(Established, call=agent_call, timeout=5)
            # direct media: each side is given the other's own address
            assert media_of(call.remote_sdp) == agent_rtp.address
            assert media_of(agent_call.remote_sdp) == customer_rtp.address
            assert node.switch.anchor.stats["direct_relay_down"] == 1 and not node.switch.anchor.calls
            conn_id = node.service.get_agent(OP, "1001").conn_id
            media_events = [(e.type, e.data) for e in node.events.history(conn_id) if e.type == "call.media_direct"]
            assert media_events == [("call.media_direct", {"conn_id": conn_id, "reason": "relay_down"})]
            metrics = node.metrics.render()
            assert 'callbridge_media_calls_total{outcome="direct_relay_down"} 1' in metrics
            await call.hangup()
            await until(lambda: node.live_legs == 0, what="the call over")
    finally:
        for phone in phones:
            await phone.close()
        await node.close()
        customer_rtp.close()
        agent_rtp.close()


async def test_an_attended_transfer_consults_and_completes_through_the_relay(tmp_path: Path) -> None:
    with Rtpengine(workdir=tmp_path / "rtpengine") as relay:
        node = await anchored_node(tmp_path, f"udp:{relay.host}:{relay.ng_port}")
        customer_rtp, agent_rtp, target_rtp = (RtpEndpoint(CUSTOMER_HOST), RtpEndpoint(), RtpEndpoint())
        phones = []
        try:
            await until(lambda: node.switch.anchor.media is not None and node.switch.anchor.media.available(),
                        what="the relay up")
            agent = await agent_phone(node, "1001", answer="auto", sdp_port=agent_rtp.address[1])
            target = await agent_phone(node, "1002", ready=False, answer="auto", sdp_port=target_rtp.address[1])
            customer = await customer_phone(sdp_port=customer_rtp.address[1])
            phones += [agent, target, customer]
            call = await customer.call(did_uri(node), timeout=5)
            agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
            await agent.wait_for(Established, call=agent_call, timeout=5)
            customer_sees = media_of(call.remote_sdp)

            node.service.change_status(OP, "1002", "ready")
            record = node.service.start_transfer(OP, "1001", "1002", kind="attended")
            target_call = (await target.wait_for(IncomingCall, timeout=5)).call
            await target.wait_for(Established, call=target_call, timeout=5)
            await until(lambda: node.service.get_transfer(OP, record.id).state == "consulting",
                        what="consulting")
            # agent and target talk through the relay while the customer waits
            await until(lambda: in_range(relay, media_of(agent_call.remote_sdp)), what="the agent toward the target")
            agent_sees, target_sees = media_of(agent_call.remote_sdp), media_of(target_call.remote_sdp)
            assert in_range(relay, target_sees)
            assert await flows(agent_rtp, agent_sees, target_rtp) == [agent_rtp.ssrc] * 10
            assert await flows(target_rtp, target_sees, agent_rtp) == [target_rtp.ssrc] * 10

            node.service.complete_transfer(OP, record.id)
            await agent.wait_for(CallEnded, call=agent_call, timeout=5)
            await until(lambda: node.service.get_transfer(OP, record.id).state == "completed",
                        what="completed")
            target_leg = node.service.get_transfer(OP, record.id).target_leg_id
            assert target_leg is not None
            await until(lambda: node.switch.anchor.peers.get(record.conn_id) == target_leg,
                        what="the customer's media toward the target")
            assert media_of(call.remote_sdp) == customer_sees  # the customer's side never moved
            target_now = media_of(target_call.remote_sdp)
            assert await flows(customer_rtp, customer_sees, target_rtp) == [customer_rtp.ssrc] * 10
            assert await flows(target_rtp, target_now, customer_rtp) == [target_rtp.ssrc] * 10
            await call.hangup()
            await until(lambda: node.live_legs == 0 and not node.switch.anchor.calls, what="the call over")
            assert node.switch.anchor.stats["media_failures"] == 0
        finally:
            for phone in phones:
                await phone.close()
            await node.close()
            for endpoint in (customer_rtp, agent_rtp, target_rtp):
                endpoint.close()


async def test_a_failed_blind_transfer_leaves_the_customer_with_the_agent_through_the_relay(tmp_path: Path) -> None:
    with Rtpengine(workdir=tmp_path / "rtpengine") as relay:
        node = await anchored_node(tmp_path, f"udp:{relay.host}:{relay.ng_port}")
        customer_rtp, agent_rtp = RtpEndpoint(CUSTOMER_HOST), RtpEndpoint()
        phones = []
        try:
            await until(lambda: node.switch.anchor.media is not None and node.switch.anchor.media.available(),
                        what="the relay up")
            agent = await agent_phone(node, "1001", answer="auto", sdp_port=agent_rtp.address[1])
            busy = await agent_phone(node, "1002", answer="auto", auto_answer_status=486)
            customer = await customer_phone(sdp_port=customer_rtp.address[1])
            phones += [agent, busy, customer]
            call = await customer.call(did_uri(node), timeout=5)
            agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
            await agent.wait_for(Established, call=agent_call, timeout=5)
            customer_sees, agent_sees = media_of(call.remote_sdp), media_of(agent_call.remote_sdp)

            record = node.service.transfer(OP, "1001", "1002")
            await until(lambda: node.service.get_transfer(OP, record.id).state == "failed", what="transfer failed")
            await until(lambda: node.live_legs == 2, what="the target's leg gone")
            await until(lambda: call.remote_sdp is not None and call.remote_sdp.media[0].attribute("sendonly") is None
                        and call.remote_sdp.media[0].attribute("recvonly") is None, what="the customer taken off hold")
            assert media_of(call.remote_sdp) == customer_sees and media_of(agent_call.remote_sdp) == agent_sees
            assert await flows(customer_rtp, customer_sees, agent_rtp) == [customer_rtp.ssrc] * 10
            assert await flows(agent_rtp, agent_sees, customer_rtp) == [agent_rtp.ssrc] * 10
            assert node.switch.anchor.stats["media_failures"] == 0
            await call.hangup()
            await until(lambda: node.live_legs == 0 and not node.switch.anchor.calls, what="the call over")
        finally:
            for phone in phones:
                await phone.close()
            await node.close()
            customer_rtp.close()
            agent_rtp.close()


async def test_an_agents_own_call_from_a_browser_or_a_desk_phone_is_refused_without_a_relay(
        tmp_path: Path) -> None:
    """A phone registered over WebSocket (a browser: its audio needs the relay) places a call while no relay answers
    and the operation refuses such calls: 503, nothing created, the agent called never rung. A desk phone's own
    call is anchored as any other (inbound.py, step 5): refused the same way."""
    silent = f"udp:127.0.0.1:{free_udp_port()}"
    node = await anchored_node(tmp_path, silent, ws=True, media_relay_down="refuse")
    phones: list[Phone] = []
    try:
        assert node.sip_ws_address is not None
        browser = await Phone.start(host="127.0.0.1", transport="ws", user="1001", domain=DOMAIN,
                                    password="secret-1001", name="browser-1001")
        phones.append(browser)
        await browser.register(node.sip_ws_address, expires=300)
        await until(lambda: node.service.get_agent(OP, "1001").registered, what="1001 registered")
        node.service.change_status(OP, "1001", "ready")
        desk = await agent_phone(node, "1002")
        called = await agent_phone(node, "1003", answer="auto")
        phones += [desk, called]

        call = await browser.call(f"sip:1003@{DOMAIN}", dest=node.sip_ws_address, wait_answer=False)
        failed = await browser.wait_for(CallFailed, call=call, timeout=5)
        assert failed.status == 503
        host, port = node.sip_address
        call = await desk.call(f"sip:1003@{DOMAIN}", dest=(host, port), wait_answer=False)
        failed = await desk.wait_for(CallFailed, call=call, timeout=5)
        assert failed.status == 503
        assert node.switch.anchor.stats["refused_relay_down"] == 2 and node.live_legs == 0
        assert [node.service.get_agent(OP, ext).state for ext in ("1001", "1002", "1003")] == ["ready"] * 3
        assert [e.type for e in node.events.since(OP, 0) if not e.type.startswith("agent.")] == []  # no call
        assert cdrs(node) == []
    finally:
        for phone in phones:
            await phone.close()
        await node.close()
