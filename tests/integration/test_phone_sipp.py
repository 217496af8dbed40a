"""callbridge.phone against SIPp on loopback: SIPp's uac calling a phone that answers (UDP and TCP), the phone
calling SIPp's uas, and the phone registering with digest at a SIPp registrar that challenges it.

These tests need SIPp (installed by ``scripts/setup --test``); a missing binary fails them (PeerMissing)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests/` itself: the harness package is `peers`

from callbridge.phone import (
    CallEnded,
    Established,
    IncomingCall,
    Phone,
    Registered,
    RegistrationError,
    RegistrationFailed,
    Unregistered,
)
from peers.sipp import Sipp

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


@pytest.mark.parametrize(("transport", "sipp_transport"), [("udp", "u1"), ("tcp", "t1")])
async def test_sipp_uac_calls_an_answering_phone(tmp_path: Path, transport: str, sipp_transport: str) -> None:
    phone = await Phone.start(user="1001", transport=transport, answer="auto", history=0)
    ended: list[CallEnded] = []
    established = 0
    stream = phone.events()
    try:
        uac = Sipp("uac", remote=phone.address, transport=sipp_transport, calls=50, rate=20, timeout=30,
                   workdir=tmp_path / "uac")
        run = asyncio.create_task(uac.run_async())

        async def collect() -> None:
            nonlocal established
            async for event in stream:
                if isinstance(event, Established):
                    established += 1
                elif isinstance(event, CallEnded):
                    ended.append(event)
                    if len(ended) == 50:
                        return

        await asyncio.wait_for(collect(), 60)
        result = await run
    finally:
        stream.close()
        await phone.close()
    assert result.returncode == 0, result.summary()
    assert (result.created, result.successful, result.failed) == (50, 50, 0), result.summary()
    assert established == 50
    assert len(ended) == 50
    assert {(e.reason, e.by) for e in ended} == {("bye", "remote")}
    assert phone.calls == []
    assert phone.endpoint.dialog_count == 0


async def test_phone_calls_sipp_uas(tmp_path: Path) -> None:
    uas = Sipp("uas", calls=10, timeout=30, workdir=tmp_path / "uas").start()
    phone = await Phone.start(user="1001")
    try:
        await asyncio.sleep(0.2)  # SIPp binds its socket
        for n in range(10):
            call = await phone.call(f"sip:service@127.0.0.1:{uas.port}", timeout=10)
            assert call.remote_sdp is not None and call.remote_sdp.media[0].formats[0] == "0"
            await call.hangup()
            ended = await phone.wait_for(CallEnded, call=call, timeout=5)
            assert (ended.reason, ended.by) == ("bye", "local"), n
        assert phone.calls == []
    finally:
        await phone.close()
        server = await uas.wait_async()
    assert server.returncode == 0, server.summary()
    assert (server.successful, server.failed) == (10, 0), server.summary()


async def test_phone_registers_with_digest_at_a_sipp_registrar(tmp_path: Path) -> None:
    registrar = Sipp(SCENARIOS / "register_digest_uas.xml", calls=1, timeout=20,
                     workdir=tmp_path / "registrar").start()
    phone = await Phone.start(user="1001", password="s3cret", domain="127.0.0.1")
    try:
        await asyncio.sleep(0.2)
        granted = await phone.register(("127.0.0.1", registrar.port), expires=300, timeout=10)
        assert granted == 120  # the expires parameter of our Contact in the 200
        event = await phone.wait_for(Registered, timeout=1)
        assert event.expires == 120
        registration = phone.registration(("127.0.0.1", registrar.port))
        assert registration is not None and registration.registered
        await phone.unregister(timeout=10)
        await phone.wait_for(Unregistered, timeout=1)
    finally:
        await phone.close()
        result = await registrar.wait_async()
    assert result.returncode == 0, result.summary()
    assert (result.successful, result.failed) == (1, 0), result.summary()


async def test_wrong_password_is_refused_by_the_sipp_registrar(tmp_path: Path) -> None:
    registrar = Sipp(SCENARIOS / "register_digest_uas.xml", calls=1, timeout=20,
                     workdir=tmp_path / "registrar").start()
    phone = await Phone.start(user="1001", password="not-the-password")
    try:
        await asyncio.sleep(0.2)
        with pytest.raises(RegistrationError) as info:
            await phone.register(("127.0.0.1", registrar.port), timeout=10)
        assert info.value.status == 403  # SIPp's verifyauth rejected our digest
        failed = await phone.wait_for(RegistrationFailed, timeout=1)
        assert failed.status == 403
    finally:
        await phone.close()
        await registrar.wait_async()


async def test_incoming_call_event_carries_the_sipp_invite(tmp_path: Path) -> None:
    phone = await Phone.start(user="1001", answer="auto")
    try:
        uac = Sipp("uac", remote=phone.address, calls=1, timeout=20, workdir=tmp_path / "uac")
        result = await uac.run_async()
        incoming = await phone.wait_for(IncomingCall, timeout=5)
        assert incoming.request.method == "INVITE"
        assert incoming.call.remote_sdp is not None
        ended = await phone.wait_for(CallEnded, call=incoming.call, timeout=5)
        assert ended.by == "remote"
    finally:
        await phone.close()
    assert (result.successful, result.failed) == (1, 0), result.summary()
