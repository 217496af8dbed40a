"""A trunk's registration is removed when the node closes (RFC 3261 §10.2.2): REGISTER with `Expires: 0` for its
binding, with digest credentials (answering the provider's 401 or 407), before the transport closes; a provider that
never answers holds the shut-down no longer than the bound. The provider is a registrar played by a UDP socket on
127.0.0.3 that checks each digest itself (RFC 7616 §3.4.1, computed here, not by callbridge's code)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from callnode import GATEWAY_HOST, OP, operation_doc, start_node, until

from callbridge.b2bua.trunks import TrunkRegistrationConfig
from callbridge.sip import Request, make_response, parse

pytestmark = pytest.mark.timeout(60)
REALM = "provider.test"
USER, PASSWORD = "trunkuser", "trunk-s3cret"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_fields(header: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="?([^",]*)"?', header.split(" ", 1)[1]))


def digest_is_right(header: str, method: str, password: str) -> bool:
    fields = digest_fields(header)
    ha1 = _md5(f"{fields['username']}:{fields['realm']}:{password}")
    ha2 = _md5(f"{method}:{fields['uri']}")
    expected = _md5(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:{fields['qop']}:{ha2}")
    return fields["response"] == expected


class Registrar(asyncio.DatagramProtocol):
    """A provider's registrar: digest with qop=auth on every REGISTER; `challenge_removal` (401 or 407) challenges
    the first REGISTER with Expires: 0 whatever it carries (a fresh nonce), `silent_on_removal` never answers it."""

    def __init__(self, *, challenge_removal: int | None = None, silent_on_removal: bool = False) -> None:
        self.challenge_removal = challenge_removal
        self.silent_on_removal = silent_on_removal
        self.requests: list[Request] = []
        self.nonces: set[str] = set()
        self.transport: asyncio.DatagramTransport | None = None
        self.bound = False  # our record of the trunk's binding
        self._removal_challenged = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def removals(self) -> list[Request]:
        return [r for r in self.requests if r.headers.get("Expires") == "0"]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = parse(data)
        assert isinstance(request, Request) and request.method == "REGISTER"
        self.requests.append(request)
        removal = request.headers.get("Expires") == "0"
        if removal and self.silent_on_removal:
            return
        status = 401 if self.challenge_removal is None else self.challenge_removal
        header = request.headers.get("Authorization" if status == 401 else "Proxy-Authorization")
        must_challenge = removal and self.challenge_removal is not None and not self._removal_challenged
        if must_challenge or header is None or not self._valid(header):
            self._removal_challenged = self._removal_challenged or must_challenge
            nonce = secrets.token_hex(8)
            self.nonces.add(nonce)
            response = make_response(request, status, to_tag="reg")
            name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            response.headers.add(name, f'Digest realm="{REALM}", nonce="{nonce}", qop="auth", algorithm=MD5')
        else:
            response = make_response(request, 200, to_tag="reg")
            self.bound = not removal
            if not removal:
                for contact in request.headers.get_all("Contact"):
                    response.headers.add("Contact", f"{contact};expires=300")
        assert self.transport is not None
        self.transport.sendto(bytes(response), addr)

    def _valid(self, header: str) -> bool:
        fields = digest_fields(header)
        return fields.get("nonce") in self.nonces and digest_is_right(header, "REGISTER", PASSWORD)


async def provider(registrar: Registrar) -> tuple[asyncio.DatagramTransport, int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: registrar, local_addr=(GATEWAY_HOST, 0))
    return transport, transport.get_extra_info("sockname")[1]


def trunk_doc(port: int) -> dict[str, Any]:
    doc = operation_doc(gateway_port=port)
    doc["trunks"][0].update(username=USER, password=PASSWORD, register=True, auth_realm=REALM)
    return doc


async def registered_node(tmp_path: Path, registrar: Registrar, port: int) -> Any:
    node = await start_node(tmp_path, doc=trunk_doc(port), trunk_registration=TrunkRegistrationConfig(expires=300))
    registration = node.switch.trunk_registrations.by_trunk[(OP, "carrier")]
    await until(lambda: registration.registered and registrar.bound, what="the trunk registered")
    return node


@pytest.mark.serial  # the answer within 1 s
@pytest.mark.parametrize("challenge", [None, 401, 407])
async def test_closing_the_node_removes_the_trunk_binding(tmp_path: Path, challenge: int | None) -> None:
    registrar = Registrar(challenge_removal=challenge)
    transport, port = await provider(registrar)
    try:
        node = await registered_node(tmp_path, registrar, port)
        contact = node.endpoint.contact("udp")
        [first, *_, last] = registrar.requests
        loop = asyncio.get_running_loop()
        started = loop.time()
        await node.close()
        elapsed = loop.time() - started
    finally:
        transport.close()
    assert not registrar.bound  # the provider's record of the binding is gone
    removals = registrar.removals()
    assert len(removals) == (1 if challenge is None else 2)  # a challenge answered once, with credentials
    final = removals[-1]
    assert final.call_id == first.call_id  # the binding's Call-ID, CSeq + 1 for each request (§10.2.4)
    assert [r.cseq.number for r in removals] == list(range(last.cseq.number + 1, last.cseq.number + 1 +
                                                          len(removals)))
    assert final.headers.get_all("Contact") == [contact]
    header = final.headers.get("Authorization" if challenge in (None, 401) else "Proxy-Authorization")
    assert header is not None and digest_fields(header)["username"] == USER
    assert digest_is_right(header, "REGISTER", PASSWORD) and not digest_is_right(header, "REGISTER", "not-it")
    if challenge is not None:
        assert digest_fields(header)["nonce"] not in (digest_fields(r.headers.get("Authorization") or "x y")
                                                      .get("nonce") for r in registrar.requests[:-1])
    stats = node.switch.trunk_registrations.stats
    assert stats["unregistered"] == 1
    assert elapsed < 1.0  # answered at once: the bound is not waited out


@pytest.mark.serial  # the shut-down's length within 0.5 s of its bound
async def test_a_provider_that_never_answers_holds_the_shut_down_no_longer_than_the_bound(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registrar = Registrar(silent_on_removal=True)
    transport, port = await provider(registrar)
    try:
        node = await registered_node(tmp_path, registrar, port)
        bound = node.switch.trunk_registrations.config.unregister_timeout
        assert bound == 2.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        await node.close()
        elapsed = loop.time() - started
    finally:
        transport.close()
    assert len(registrar.removals()) >= 1  # sent (and retransmitted while the wait lasted)
    assert {r.call_id for r in registrar.removals()} == {registrar.requests[0].call_id}
    assert bound - 0.1 <= elapsed < bound + 0.5
    assert node.switch.trunk_registrations.stats["unregistered"] == 0
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "callbridge.b2bua.trunks" and "unregistration not answered" in r.getMessage()]
    assert len(warnings) == 1 and "within 2 s; the provider keeps the binding until it expires" in warnings[0]


async def test_a_trunk_that_never_registered_sends_nothing_on_close(tmp_path: Path) -> None:
    registrar = Registrar()
    transport, port = await provider(registrar)
    try:
        doc = trunk_doc(port)
        doc["trunks"][0]["register"] = False
        node = await start_node(tmp_path, doc=doc)
        await node.close()
    finally:
        transport.close()
    assert registrar.requests == []
