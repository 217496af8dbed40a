"""`dial` when the customer rings for longer than the agent's phone retransmits an un-ACKed 2xx (64*T1, RFC 3261
§13.3.1.4): the agent's 2xx is ACKed at once with an answer that sends no media, and the customer's media reaches
the agent by re-INVITE when the customer answers (RFC 3725 §4.3; `b2bua.bridge`, "Parking").

Every SIP party (the node, the agent's phone, the trunk's gateway) runs with T1 = 50 ms, so 64*T1 is 3.2 s and the
customer answers 1.5 times that after the agent's phone did. baresip (whose T1 is the RFC's 500 ms) is parked past
its own 32 s.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agentbox_world import DOMAIN, OP, AgentboxNode, envelope, main_doc
from callnode import cdrs, dialog_rows, until

from callbridge.phone import CallEnded, Established, IncomingCall, Phone, ReInviteReceived
from callbridge.phone.states import CallState
from callbridge.sip import Request, parse
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.sdp import Origin, SessionDescription, inactive_answer
from callbridge.sip.timers import TimerConfig
from peers.baresip import Baresip
from peers.ports import free_port

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

FAST = TimerConfig(t1=0.05, t2=0.4, t4=0.5)
ACK_GIVE_UP = 64 * FAST.t1  # how long a phone retransmits its 2xx waiting for the ACK, then hangs up
LATE = 1.5 * ACK_GIVE_UP
NUMBER = "3105550199"
AGENT_HOST, GATEWAY_HOST = "127.0.0.1", "127.0.0.3"


@contextlib.asynccontextmanager
async def dial_world(tmp_path: Path, *, dial_timeout: float = 45.0,
                     settings: dict[str, Any] | None = None) -> AsyncIterator[tuple[AgentboxNode, int]]:
    """A live node with the fast timers, its agentbox endpoint, and the trunk's gateway port (free, not bound)."""
    port = free_port(GATEWAY_HOST)
    doc = main_doc(gateway_port=port)
    doc["operation"]["dial_timeout"] = dial_timeout  # the operation's stored setting, read by the directory
    async with AgentboxNode.start(tmp_path, doc=doc, timers=FAST,
                                  settings={"directory_poll_seconds": 0, **(settings or {})}) as world:
        op = world.node.storage.directory.get_operation(OP)
        assert op is not None and op.dial_timeout == dial_timeout
        yield world, port


class Wire:
    """The requests an endpoint received and sent on the wire, by method, in order (only those exchanged with
    `peer` when given); a retransmission (the same method and CSeq again) is counted once, since with T1 = 50 ms
    a busy machine may well retransmit. `responses`: the final responses received, as "200 INVITE"."""

    def __init__(self, endpoint: Phone | Endpoint, *, peer: tuple[str, int] | None = None) -> None:
        self._received: dict[tuple[str, str], None] = {}
        self._sent: dict[tuple[str, str], None] = {}
        self._responses: dict[tuple[str, str], None] = {}
        ep = endpoint.endpoint if isinstance(endpoint, Phone) else endpoint
        receive, drain = ep.receive_datagram, ep.datagrams_to_send

        def spy_receive(data: bytes, addr: tuple[str, int], now: float, transport: str = "udp") -> None:
            if peer is None or addr == peer:
                _note(self._received, data, self._responses)
            receive(data, addr, now, transport)

        def spy_drain() -> list[tuple[bytes, tuple[str, int], str]]:
            out = drain()
            for data, addr, _ in out:
                if peer is None or addr == peer:
                    _note(self._sent, data, None)
            return out

        ep.receive_datagram = spy_receive  # type: ignore[method-assign]
        ep.datagrams_to_send = spy_drain  # type: ignore[method-assign]

    @property
    def received(self) -> list[str]:
        return [method for method, _ in self._received]

    @property
    def sent(self) -> list[str]:
        return [method for method, _ in self._sent]

    @property
    def responses(self) -> list[str]:
        return [status for status, _ in self._responses]


def _note(requests: dict[tuple[str, str], None], data: bytes,
          responses: dict[tuple[str, str], None] | None) -> None:
    """Note a request by its method and its CSeq header, a final response by its status and CSeq method."""
    message = parse(data)
    cseq = f"{message.call_id} {message.headers.get('CSeq')}"
    if isinstance(message, Request):
        requests[(message.method, cseq)] = None
    elif responses is not None and message.status >= 200:
        responses[(f"{message.status} {message.cseq.method}", cseq)] = None


async def dial(world: AgentboxNode) -> str:
    response = await world.box("dial", agent_id="1001", customer_phone=NUMBER)
    status, _, _, _, data = envelope(response)
    assert status == 200, response.text
    return str(data["conn_id"])


async def agent_parked(world: AgentboxNode, agent: Phone) -> tuple[IncomingCall, SessionDescription]:
    """The agent's phone rang with an offer-less INVITE, answered at once, and was ACKed within a second with an
    answer that sends no media; that answer."""
    ring = await agent.wait_for(IncomingCall, timeout=5)
    assert ring.request.body == b"" and ring.request.headers.get("Call-Info") == "<sip:callbridge>;answer-after=0"
    await agent.wait_for(Established, call=ring.call, timeout=1.0)  # the ACK: long before 64*T1
    parked = ring.call.remote_sdp
    assert parked is not None
    offer = ring.call.local_sdp
    assert offer is not None
    assert [m.media for m in parked.media] == [m.media for m in offer.media]  # RFC 3264 §6: same m-lines
    assert parked.direction(0) == "inactive"
    connection = parked.connection_for(0)
    assert connection is not None and connection.address == "0.0.0.0"  # RFC 3725 §4's black hole
    assert parked.media[0].port != 0 and parked.media[0].formats[0] in offer.media[0].formats
    return ring, parked


def media_of(sd: SessionDescription | None) -> tuple[str, int]:
    assert sd is not None
    connection = sd.connection_for(0)
    assert connection is not None
    return connection.address, sd.media[0].port


def test_inactive_answer_keeps_the_m_lines_and_sends_nothing() -> None:
    offer = SessionDescription.parse(
        b"v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 101 8 0\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
        b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\nm=video 0 RTP/AVP 96\r\n")
    answer = inactive_answer(offer, Origin("callbridge", "42", 1, address="127.0.0.1"))
    assert bytes(answer) == (
        b"v=0\r\no=callbridge 42 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
        b"m=audio 9 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=inactive\r\nm=video 0 RTP/AVP 96\r\n")
    six = SessionDescription.parse(b"v=0\r\no=- 7 7 IN IP6 ::1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
                                   b"c=IN IP6 ::1\r\n")
    assert str(inactive_answer(six, Origin("callbridge", "42", 1, addrtype="IP6", address="::1"))
               .connection) == "IN IP6 ::"


async def test_dial_customer_answering_after_64_t1_is_bridged(tmp_path: Path) -> None:
    async with dial_world(tmp_path) as (world, port):
        gateway = await world.gateway(port, timers=FAST)  # the customer answers by hand
        agent = await world.agent("1001", answer="auto", timers=FAST)
        agent_wire, gateway_wire = Wire(agent), Wire(gateway)
        conn_id = await dial(world)
        ring, parked = await agent_parked(world, agent)
        out = await gateway.wait_for(IncomingCall, timeout=5)
        assert media_of(SessionDescription.parse(out.request.body)) == (AGENT_HOST, agent.rtp_port)  # its offer
        await out.call.ring()
        await asyncio.sleep(LATE)  # well past the 64*T1 the agent's phone would have waited for an ACK

        assert ring.call.state is CallState.ESTABLISHED and out.call.state is CallState.RINGING
        assert agent_wire.received == ["INVITE", "ACK"]  # the dial and its ACK: no BYE from callbridge
        assert agent_wire.sent == [] and gateway_wire.sent == []  # neither phone hung up
        assert world.service.get_call(OP, conn_id).state == "dialing"
        await out.call.answer()
        reinvite = await agent.wait_for(ReInviteReceived, call=ring.call, timeout=2)
        offer = SessionDescription.parse(reinvite.request.body)
        assert media_of(offer) == (GATEWAY_HOST, gateway.rtp_port)  # the customer's media
        assert offer.direction(0) == "sendrecv"
        # RFC 3264 §8: the same session the ACK's answer opened, its next version
        assert offer.origin == parked.origin.next_version()

        await until(lambda: world.service.get_call(OP, conn_id).state == "connected", what="connected")
        await until(lambda: media_of(ring.call.remote_sdp) == (GATEWAY_HOST, gateway.rtp_port),
                    what="the agent's phone took the customer's media")
        assert ring.call.state is CallState.ESTABLISHED and out.call.state is CallState.ESTABLISHED
        assert media_of(out.call.remote_sdp) == (AGENT_HOST, agent.rtp_port)
        await until(lambda: agent_wire.received == ["INVITE", "ACK", "INVITE", "ACK"],  # the dial, the re-INVITE
                    what="the re-INVITE ACKed")
        assert agent_wire.sent == [] and gateway_wire.sent == [] and gateway_wire.received == ["INVITE", "ACK"]

        await out.call.hangup()
        ended = await agent.wait_for(CallEnded, call=ring.call, timeout=5)
        assert (ended.reason, ended.by) == ("bye", "remote")  # callbridge hung up the agent; the phone did not
        await until(lambda: world.state("1001") == "ready", what="agent ready")
        await until(lambda: world.node.live_legs == 0 and world.node.endpoint.dialog_count == 0,
                    what="the dialog tables empty")
        assert await asyncio.to_thread(dialog_rows, world.node) == 0
        cdr = next(c for c in await asyncio.to_thread(cdrs, world.node) if c["conn_id"] == conn_id)
        assert (cdr["direction"], cdr["customer_number"], cdr["hangup_by"], cdr["agents"]) == (
            "outbound", NUMBER, "customer", ["1001"])
        assert cdr["answered_at"] is not None
        assert (cdr["ended_at"] - cdr["answered_at"]).total_seconds() >= 0
        assert (cdr["answered_at"] - cdr["started_at"]).total_seconds() >= LATE


async def test_dial_customer_never_answering_releases_the_agent(tmp_path: Path) -> None:
    async with dial_world(tmp_path, dial_timeout=LATE) as (world, port):
        gateway = await world.gateway(port, timers=FAST)
        agent = await world.agent("1001", answer="auto", timers=FAST)
        agent_wire = Wire(agent)
        conn_id = await dial(world)
        ring, _ = await agent_parked(world, agent)
        out = await gateway.wait_for(IncomingCall, timeout=5)
        await out.call.ring()
        cancelled = await gateway.wait_for(CallEnded, call=out.call, timeout=LATE + 3)
        assert (cancelled.reason, cancelled.by) == ("cancelled", "remote")
        ended = await agent.wait_for(CallEnded, call=ring.call, timeout=3)
        assert (ended.reason, ended.by) == ("bye", "remote")  # callbridge's BYE on the agent's leg
        assert agent_wire.received == ["INVITE", "ACK", "BYE"] and agent_wire.sent == []
        await until(lambda: world.state("1001") == "ready", what="agent ready")
        await until(lambda: world.node.live_legs == 0 and world.node.endpoint.dialog_count == 0,
                    what="the dialog tables empty")
        assert await asyncio.to_thread(dialog_rows, world.node) == 0
        cdr = next(c for c in await asyncio.to_thread(cdrs, world.node) if c["conn_id"] == conn_id)
        assert (cdr["answered_at"], cdr["sip_cause"]) == (None, 408)


async def test_dial_agent_hanging_up_while_the_customer_rings_cancels_the_customer(tmp_path: Path) -> None:
    async with dial_world(tmp_path) as (world, port):
        gateway = await world.gateway(port, timers=FAST)
        agent = await world.agent("1001", answer="auto", timers=FAST)
        conn_id = await dial(world)
        ring, _ = await agent_parked(world, agent)
        out = await gateway.wait_for(IncomingCall, timeout=5)
        await out.call.ring()
        await asyncio.sleep(LATE)
        await ring.call.hangup()  # a BYE from the agent's phone: its dialog is confirmed, so it may
        cancelled = await gateway.wait_for(CallEnded, call=out.call, timeout=3)
        assert (cancelled.reason, cancelled.by) == ("cancelled", "remote")
        await until(lambda: world.service.get_call(OP, conn_id).state == "ended", what="call ended")
        await until(lambda: world.node.live_legs == 0 and world.node.endpoint.dialog_count == 0,
                    what="the dialog tables empty")
        cdr = next(c for c in await asyncio.to_thread(cdrs, world.node) if c["conn_id"] == conn_id)
        assert (cdr["answered_at"], cdr["hangup_by"]) == (None, "agent")


async def test_dial_customer_busy_releases_the_parked_agent(tmp_path: Path) -> None:
    async with dial_world(tmp_path) as (world, port):
        await world.gateway(port, answer="auto", auto_answer_status=486, timers=FAST)
        agent = await world.agent("1001", answer="auto", timers=FAST)
        conn_id = await dial(world)
        ring, _ = await agent_parked(world, agent)
        ended = await agent.wait_for(CallEnded, call=ring.call, timeout=3)
        assert (ended.reason, ended.by) == ("bye", "remote")
        await until(lambda: world.state("1001") == "ready", what="agent ready")
        await until(lambda: world.node.live_legs == 0 and world.node.endpoint.dialog_count == 0,
                    what="the dialog tables empty")
        cdr = next(c for c in await asyncio.to_thread(cdrs, world.node) if c["conn_id"] == conn_id)
        assert (cdr["answered_at"], cdr["sip_cause"]) == (None, 486)


BARESIP_ACK_GIVE_UP = 64 * 0.5  # baresip's T1 is RFC 3261's


async def test_dial_baresip_agent_parked_past_64_t1_then_reinvited(tmp_path: Path) -> None:
    # baresip 1.0.0 (libre 1.x) fails on any challenge that is not MD5 (config.py, digest_algorithms)
    async with dial_world(tmp_path, settings={"digest_algorithms": ("MD5",)}) as (world, port):
        gateway = await world.gateway(port)
        host, sip_port = world.node.sip_address
        account = (f"<sip:1001@{DOMAIN}>;auth_pass=secret-1001;outbound=\"sip:{host}:{sip_port}\""
                   ";regint=300;answermode=auto")
        phone = Baresip(user="1001", accounts=[account], workdir=tmp_path / "baresip-1001")
        await phone.start()
        try:
            await until(lambda: world.service.get_agent(OP, "1001").registered, timeout=10, what="registered")
            assert envelope(await world.box("change_status", agent_id="1001", status="ready"))[0] == 200
            to_baresip = Wire(world.node.endpoint, peer=(phone.host, phone.port))
            conn_id = await dial(world)
            await phone.wait_event("CALL_ESTABLISHED")  # it answered the offer-less INVITE by itself
            out = await gateway.wait_for(IncomingCall, timeout=5)
            baresip_media = media_of(SessionDescription.parse(out.request.body))  # its offer, given to the customer
            await out.call.ring()
            await until(lambda: to_baresip.sent == ["INVITE", "ACK"], what="the ACK with the no-media answer")
            await asyncio.sleep(BARESIP_ACK_GIVE_UP + 2)
            assert "CALL_CLOSED" not in [e.get("type") for e in phone.all_events]
            assert to_baresip.received == [] and world.service.get_call(OP, conn_id).state == "dialing"

            await out.call.answer()
            await until(lambda: to_baresip.sent == ["INVITE", "ACK", "INVITE", "ACK"],
                        what="the re-INVITE answered and ACKed")
            assert to_baresip.responses[-1] == "200 INVITE"  # baresip took the customer's media
            [leg] = [leg for leg in world.node.switch.legs if leg.agent == "1001"]  # baresip's leg
            answer = SessionDescription.parse(leg.remote_sdp)
            assert media_of(answer) == baresip_media and answer.direction(0) == "sendrecv"
            assert media_of(out.call.remote_sdp) == baresip_media
            assert world.service.get_call(OP, conn_id).state == "connected"

            await out.call.hangup()
            await phone.wait_event("CALL_CLOSED")
            await until(lambda: world.node.live_legs == 0, what="legs released")
        finally:
            await phone.aclose()
