"""The phone against a bare endpoint driven by hand: digest registration at a challenging registrar (with
`DigestChallenger`), offer-less INVITE and re-INVITE (RFC 3725 flow I), SDP answers that mirror the offered
direction (RFC 3264 §6.1), OPTIONS, unacceptable offers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from conftest import PhoneFactory
from raw_ua import RawUA

from callbridge.phone import (
    CallEnded,
    Established,
    Held,
    IncomingCall,
    Registered,
    RegistrationError,
    ReInviteReceived,
)
from callbridge.sip import DigestChallenger, SessionDescription, parse_auth_header
from callbridge.sip.auth import ha1
from callbridge.sip.events import RequestReceived, ResponseReceived

pytestmark = pytest.mark.timeout(30)

REALM = "callbridge.test"
OFFER = (b"v=0\r\no=ctl 77 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 40000 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n"
         b"m=video 40002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n")


@pytest.fixture
async def raw(transport: str) -> AsyncIterator[RawUA]:
    ua = await RawUA.start(auto_ack=False, tcp=transport == "tcp")
    yield ua
    await ua.close()


def lookup(username: str, realm: str, algorithm: str) -> str | None:
    return ha1("1001", realm, "pw-1001", algorithm) if username == "1001" else None


async def serve_register(raw: RawUA, challenger: DigestChallenger, seen: list[dict[str, str] | None]) -> None:
    """Answer one REGISTER transaction chain: 401 until credentials verify, then 200."""
    while True:
        event = await raw.next(RequestReceived)
        request = event.request
        assert request.method == "REGISTER"
        value = request.headers.get("Authorization")
        seen.append(parse_auth_header(value)[1] if value else None)
        result = challenger.verify("REGISTER", value, lookup, raw.now()) if value else None
        if result is not None and result.ok:
            contact = request.headers.get("Contact") or ""
            expires = request.headers.get("Expires") or "0"
            raw.endpoint.respond(event.transaction, 200, raw.now(),
                                 headers=[("Contact", f"{contact};expires={expires}")])
            raw.runtime.wake()
            return
        stale = result is not None and result.stale
        headers = [("WWW-Authenticate", v) for v in challenger.challenge(raw.now(), stale=stale)]
        raw.endpoint.respond(event.transaction, 401, raw.now(), headers=headers)
        raw.runtime.wake()


async def test_register_with_digest_refresh_and_unregister(make_phone: PhoneFactory, raw: RawUA) -> None:
    challenger = DigestChallenger(REALM, b"0123456789abcdef-secret", algorithms=("SHA-256", "MD5"))
    phone = await make_phone("1001", password="pw-1001")
    seen: list[dict[str, str] | None] = []
    server = asyncio.create_task(serve_register(raw, challenger, seen))
    granted = await phone.register(raw.address, expires=2, timeout=5)
    await server
    assert granted == 2
    assert seen[0] is None  # first REGISTER without credentials
    assert seen[1] is not None and seen[1]["username"] == "1001" and seen[1]["algorithm"] == "SHA-256"
    assert seen[1]["nc"] == "00000001" and seen[1]["qop"] == "auth"
    registration = phone.registration(raw.address)
    assert registration is not None and registration.registered
    first_cseq = registration.cseq

    # the refresh comes before the binding lapses, on the same Call-ID, with the next nonce-count
    server = asyncio.create_task(serve_register(raw, challenger, seen))
    await asyncio.wait_for(server, 5)
    assert seen[2] is not None and seen[2]["nc"] == "00000002" and seen[2]["nonce"] == seen[1]["nonce"]
    refreshed = await phone.wait_for(Registered, where=lambda e: e.expires == 2, timeout=5)
    assert refreshed.registrar == raw.address
    assert registration.cseq == first_cseq + 1

    server = asyncio.create_task(serve_register(raw, challenger, seen))
    await phone.unregister(raw.address, timeout=5)
    await server
    assert not registration.registered


async def test_register_with_a_wrong_password_fails(make_phone: PhoneFactory, raw: RawUA) -> None:
    challenger = DigestChallenger(REALM, b"0123456789abcdef-secret")
    phone = await make_phone("1001", password="wrong")
    seen: list[dict[str, str] | None] = []
    server = asyncio.create_task(serve_register(raw, challenger, seen))
    with pytest.raises(RegistrationError) as info:
        await phone.register(raw.address, timeout=5)
    assert info.value.status == 401
    assert len(seen) == 2  # one retry with credentials, not a loop
    server.cancel()


async def final_response(raw: RawUA) -> ResponseReceived:
    """The next final response the bare endpoint receives (provisional ones skipped)."""
    while True:
        event: ResponseReceived = await raw.next(ResponseReceived)
        if event.response.status >= 200:
            return event


async def test_offer_less_invite_gets_an_offer_in_the_200_and_the_answer_from_the_ack(
        make_phone: PhoneFactory, raw: RawUA, transport: str) -> None:
    phone = await make_phone("2002", answer="auto")
    uri = phone.uri
    raw.endpoint.invite(uri, raw.now(), from_uri="sip:ctl@127.0.0.1", dest=phone.address, transport=transport)
    raw.runtime.wake()
    ok = await final_response(raw)
    assert ok.response.status == 200 and ok.response.content_type == "application/sdp"
    offer = SessionDescription.parse(ok.response.body)
    assert offer.media[0].port == phone.rtp_port and offer.direction(0) == "sendrecv"
    dialog = ok.dialog
    answer = (b"v=0\r\no=ctl 77 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
              b"m=audio 40000 RTP/AVP 0\r\na=recvonly\r\n")
    raw.endpoint.ack(dialog, raw.now(), body=answer, content_type="application/sdp")
    raw.runtime.wake()
    call = (await phone.wait_for(IncomingCall, timeout=5)).call
    await phone.wait_for(Established, call=call, timeout=5)
    assert call.remote_sdp is not None and call.remote_sdp.media[0].port == 40000
    assert call.remote_sdp.direction(0) == "recvonly"

    # a re-INVITE offering sendonly (audio) and video: recvonly answer, video rejected with port 0
    raw.endpoint.send_in_dialog(dialog, "INVITE", raw.now(), body=OFFER, content_type="application/sdp")
    raw.runtime.wake()
    ok = await final_response(raw)
    assert ok.response.status == 200
    answered = SessionDescription.parse(ok.response.body)
    assert [m.port for m in answered.media] == [phone.rtp_port, 0]
    assert answered.media[0].formats == ["0"] and answered.direction(0) == "recvonly"
    assert answered.origin.sess_id == offer.origin.sess_id
    assert answered.origin.sess_version == offer.origin.sess_version + 1
    raw.endpoint.ack(dialog, raw.now())
    raw.runtime.wake()
    await phone.wait_for(ReInviteReceived, call=call, timeout=5)
    assert (await phone.wait_for(Held, call=call, timeout=5)).direction == "sendonly"

    # an offer-less re-INVITE: our offer (unchanged, same version) in the 200, the answer in the ACK
    raw.endpoint.send_in_dialog(dialog, "INVITE", raw.now())
    raw.runtime.wake()
    ok = await final_response(raw)
    assert ok.response.status == 200
    again = SessionDescription.parse(ok.response.body)
    assert again.direction(0) == "sendrecv" and again.origin.sess_version == answered.origin.sess_version + 1
    raw.endpoint.ack(dialog, raw.now(), body=answer, content_type="application/sdp")
    raw.runtime.wake()
    await phone.wait_for(ReInviteReceived, call=call, timeout=5)
    await asyncio.sleep(0.1)
    assert call.remote_sdp is not None and call.remote_sdp.direction(0) == "recvonly"

    raw.endpoint.bye(dialog, raw.now())
    raw.runtime.wake()
    ended = await phone.wait_for(CallEnded, call=call, timeout=5)
    assert (ended.reason, ended.by) == ("bye", "remote")


async def test_offer_without_pcmu_is_refused_with_488(make_phone: PhoneFactory, raw: RawUA, transport: str) -> None:
    phone = await make_phone("2002", answer="auto")
    pcma_only = OFFER.replace(b"RTP/AVP 8 0", b"RTP/AVP 8")
    raw.endpoint.invite(phone.uri, raw.now(), from_uri="sip:ctl@127.0.0.1", body=pcma_only,
                        content_type="application/sdp", dest=phone.address, transport=transport)
    raw.runtime.wake()
    final = await final_response(raw)
    assert final.response.status == 488
    ended = await phone.wait_for(CallEnded, timeout=5)
    assert ended.status == 488 and phone.calls == []


async def test_options_is_answered_200(make_phone: PhoneFactory, raw: RawUA, transport: str) -> None:
    phone = await make_phone("2002")
    request = raw.endpoint.create_request("OPTIONS", phone.uri, from_uri="sip:ctl@127.0.0.1")
    raw.endpoint.send_request(request, raw.now(), dest=phone.address, transport=transport)
    raw.runtime.wake()
    response = (await final_response(raw)).response
    assert response.status == 200 and "INVITE" in (response.headers.get("Allow") or "")
