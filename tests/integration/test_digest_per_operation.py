"""Each operation's digest offer on a real node (RFC 8760): two operations on one callbridge, one offering SHA-256
only, the other the node's default (MD5); real peers register and call over loopback.

- callbridge.phone registers with SHA-256 to the SHA-256-only operation, and its INVITE is challenged (407) with
  SHA-256 alone and authenticated with it;
- SIPp 3.6.1 (Debian's sip-tester, MD5 only) registers with MD5 to the other operation, on the same node;
- the same SIPp cannot answer the SHA-256-only operation's challenge at all (its [authentication] refuses any
  algorithm but MD5 and AKAv1-MD5), and a hand-made MD5 answer with the right password gets a new 401 offering
  SHA-256 only, and no binding;
- Debian 12's baresip 1.0.0 registers its MD5 operation's account and gives up on the SHA-256-only one ("Register:
  Function not implemented"), from one process.

Needs SIPp and baresip (scripts/setup --test). Everything on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # callnode
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests/` itself: the harness package is `peers`

from callnode import DOMAIN, OP, load, operation_doc, start_node, until

from callbridge.bootstrap import Node
from callbridge.phone import CallError, Phone
from callbridge.sip import DigestResponder, Response, parse, parse_auth_header
from callbridge.sip.auth import digest_response, format_auth_header, ha1
from peers.baresip import Baresip
from peers.sipp import Sipp

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
MD5_OP, MD5_DOMAIN = "0077", "0077.callbridge.test"


def md5_operation_doc() -> dict[str, object]:
    return {"operation": {"id": MD5_OP, "sip_domain": MD5_DOMAIN},
            "agents": [{"extension": "2001", "password": "secret-2001"}]}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    sha_doc = operation_doc()
    sha_doc["operation"]["digest_algorithms"] = ["SHA-256"]  # type: ignore[index]
    await asyncio.to_thread(load, url, md5_operation_doc())
    started = await start_node(tmp_path, db_url=url, doc=sha_doc)  # the node's own setting stays MD5
    assert started.settings.digest_algorithms == ("MD5",)
    try:
        yield started
    finally:
        await started.close()


class RecordingResponder(DigestResponder):
    """The phone's digest answers, with the algorithm of each (what went on the wire)."""

    def __init__(self, username: str, password: str) -> None:
        super().__init__(username, password)
        self.algorithms: list[str] = []

    def authorize(self, method: str, uri: str, challenge: str | list[str], body: bytes = b"",  # type: ignore[override]
                  cnonce: str | None = None) -> str:
        value = super().authorize(method, uri, challenge, body, cnonce)
        self.algorithms.append(f"{method} {parse_auth_header(value)[1]['algorithm']}")
        return value


def registered(node: Node, operation: str, extension: str) -> bool:
    return node.service.get_agent(operation, extension).registered


async def test_the_phone_registers_and_calls_with_sha_256_where_only_sha_256_is_offered(node: Node) -> None:
    phone = await Phone.start(host="127.0.0.1", user="1001", domain=DOMAIN, password="secret-1001")
    responder = RecordingResponder("1001", "secret-1001")
    phone.responder = responder
    try:
        await phone.register(node.sip_address, expires=300, timeout=10)
        await until(lambda: registered(node, OP, "1001"), what="1001 registered")
        node.service.change_status(OP, "1001", "ready")
        # 1099 is no agent, and too short for the trunk's dial plan (7 digits at least): the INVITE is authenticated
        # first (its 407 answered with SHA-256), then the domain refuses the number, 484 (inbound.py), which no
        # unauthenticated INVITE can get.
        with pytest.raises(CallError) as refused:
            await phone.call(f"sip:1099@{DOMAIN}", dest=node.sip_address, timeout=10)
        assert refused.value.status == 484
        assert responder.algorithms == ["REGISTER SHA-256", "INVITE SHA-256"]
    finally:
        await phone.close()


async def test_sipp_registers_with_md5_to_the_operation_that_offers_the_nodes_md5(node: Node,
                                                                                   tmp_path: Path) -> None:
    sipp = Sipp(SCENARIOS / "register_digest_uac.xml", remote=node.sip_address, calls=1, timeout=15,
                service="2001", keys={"domain": MD5_DOMAIN}, extra_args=["-au", "2001", "-ap", "secret-2001"],
                workdir=tmp_path / "sipp-md5")
    result = await sipp.run_async()
    assert (result.returncode, result.successful, result.failed) == (0, 1, 0), result.summary()
    await until(lambda: registered(node, MD5_OP, "2001"), what="2001 registered")
    assert not registered(node, OP, "1001")


async def test_sipp_cannot_answer_a_sha_256_only_challenge(node: Node, tmp_path: Path) -> None:
    sipp = Sipp(SCENARIOS / "register_digest_uac.xml", remote=node.sip_address, calls=1, timeout=10,
                service="1001", keys={"domain": DOMAIN}, extra_args=["-au", "1001", "-ap", "secret-1001"],
                workdir=tmp_path / "sipp-sha")
    result = await sipp.run_async()
    # a fatal error of SIPp's (exit status 255) before it sends a second REGISTER
    assert (result.returncode, result.successful) == (255, 0), result.summary()
    assert "authentication must use MD5 or AKAv1-MD5" in result.errors + result.stderr, result.summary()
    assert not registered(node, OP, "1001")


def exchange(sock: socket.socket, node: tuple[str, int], data: bytes) -> Response:
    sock.sendto(data, node)
    while True:
        message = parse(sock.recv(65535))  # bounded by the socket's timeout
        if isinstance(message, Response) and message.status >= 200:
            return message


def register_bytes(port: int, cseq: int, authorization: str = "") -> bytes:
    lines = [f"REGISTER sip:{DOMAIN} SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-md5-{cseq};rport",
             "Max-Forwards: 70", f"From: <sip:1001@{DOMAIN}>;tag=md5phone", f"To: <sip:1001@{DOMAIN}>",
             "Call-ID: md5-phone@127.0.0.1", f"CSeq: {cseq} REGISTER", f"Contact: <sip:1001@127.0.0.1:{port}>",
             "Expires: 300", *([f"Authorization: {authorization}"] if authorization else []), "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def algorithms(response: Response) -> list[str]:
    return [parse_auth_header(v)[1]["algorithm"] for v in response.headers.get_lines("WWW-Authenticate")]


async def test_an_md5_answer_to_a_sha_256_only_operation_gets_a_new_401_and_no_binding(node: Node) -> None:
    def run() -> tuple[Response, Response]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(3.0)
            port = sock.getsockname()[1]
            challenge = exchange(sock, node.sip_address, register_bytes(port, 1))
            params = parse_auth_header(challenge.headers.get_lines("WWW-Authenticate")[0])[1]
            uri = f"sip:{DOMAIN}"
            # the right password, hashed with MD5 on the challenge's own nonce: only the algorithm is wrong
            answer = digest_response("MD5", ha1("1001", params["realm"], "secret-1001", "MD5"), params["nonce"],
                                     "REGISTER", uri, qop="auth", nc="00000001", cnonce="0a4f113b")
            value = format_auth_header("Digest", {
                "username": "1001", "realm": params["realm"], "nonce": params["nonce"], "uri": uri,
                "response": answer, "algorithm": "MD5", "qop": "auth", "nc": "00000001", "cnonce": "0a4f113b"},
                challenge=False)
            return challenge, exchange(sock, node.sip_address, register_bytes(port, 2, value))

    challenge, refused = await asyncio.to_thread(run)
    assert (challenge.status, algorithms(challenge)) == (401, ["SHA-256"])
    assert (refused.status, algorithms(refused)) == (401, ["SHA-256"])
    assert "stale" not in parse_auth_header(refused.headers.get_lines("WWW-Authenticate")[0])[1]
    assert node.switch.registrations.registrar.stats["auth_failed"] == 1
    assert not registered(node, OP, "1001")


def invite_bytes(port: int, cseq: int, proxy_authorization: str = "") -> bytes:
    lines = [f"INVITE sip:1099@{DOMAIN} SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-inv-{cseq};rport",
             "Max-Forwards: 70", f"From: <sip:1001@{DOMAIN}>;tag=md5inv", f"To: <sip:1099@{DOMAIN}>",
             "Call-ID: md5-invite@127.0.0.1", f"CSeq: {cseq} INVITE", f"Contact: <sip:1001@127.0.0.1:{port}>",
             *([f"Proxy-Authorization: {proxy_authorization}"] if proxy_authorization else []), "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ack_bytes(port: int, cseq: int, response: Response) -> bytes:
    """The ACK of a non-2xx final response (RFC 3261 §17.1.1.3): the INVITE's branch, the response's To."""
    lines = [f"ACK sip:1099@{DOMAIN} SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-inv-{cseq};rport",
             "Max-Forwards: 70", f"From: <sip:1001@{DOMAIN}>;tag=md5inv", f"To: {response.headers.get('To')}",
             "Call-ID: md5-invite@127.0.0.1", f"CSeq: {cseq} ACK", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_an_md5_answer_to_the_invite_challenge_of_a_sha_256_only_operation_gets_a_new_407(
        node: Node) -> None:
    def run() -> tuple[Response, Response]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(3.0)
            port = sock.getsockname()[1]
            challenge = exchange(sock, node.sip_address, invite_bytes(port, 1))
            sock.sendto(ack_bytes(port, 1, challenge), node.sip_address)
            params = parse_auth_header(challenge.headers.get_lines("Proxy-Authenticate")[0])[1]
            uri = f"sip:1099@{DOMAIN}"
            answer = digest_response("MD5", ha1("1001", params["realm"], "secret-1001", "MD5"), params["nonce"],
                                     "INVITE", uri, qop="auth", nc="00000001", cnonce="5ca1ab1e")
            value = format_auth_header("Digest", {
                "username": "1001", "realm": params["realm"], "nonce": params["nonce"], "uri": uri,
                "response": answer, "algorithm": "MD5", "qop": "auth", "nc": "00000001", "cnonce": "5ca1ab1e"},
                challenge=False)
            refused = exchange(sock, node.sip_address, invite_bytes(port, 2, value))
            sock.sendto(ack_bytes(port, 2, refused), node.sip_address)
            return challenge, refused

    challenge, refused = await asyncio.to_thread(run)
    for response in (challenge, refused):
        assert response.status == 407
        assert [parse_auth_header(v)[1]["algorithm"] for v in response.headers.get_lines("Proxy-Authenticate")] == [
            "SHA-256"]
    assert node.live_legs == 0  # nothing was started for it


async def test_baresip_registers_with_md5_and_gives_up_on_a_sha_256_only_operation(node: Node,
                                                                                    tmp_path: Path) -> None:
    # Debian 12's baresip 1.0.0 (libre 1.x): one phone with an account on each operation of the same node.
    host, port = node.sip_address
    accounts = [f"<sip:2001@{MD5_DOMAIN}>;auth_pass=secret-2001;outbound=\"sip:{host}:{port}\";regint=300",
                f"<sip:1001@{DOMAIN}>;auth_pass=secret-1001;outbound=\"sip:{host}:{port}\";regint=300"]
    phone = Baresip(user="2001", accounts=accounts, workdir=tmp_path / "baresip")
    await phone.start()
    try:
        await until(lambda: registered(node, MD5_OP, "2001"), timeout=10, what="baresip registered on 0077")
        await until(lambda: f"sip:1001@{DOMAIN}: Register: Function not implemented" in phone.log(), timeout=10,
                    what="baresip's failure on the SHA-256-only challenge")
        assert not registered(node, OP, "1001")
    finally:
        await phone.aclose()
