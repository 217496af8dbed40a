"""SIPVicious against a running node: `svwar` finds no extension and `svcrack` no password, with the scanner filter
on (as shipped) and off (so that only the registrar and the failure ban stand in the way), and a captured
Authorization cannot be replayed.

What each half proves:
- Filter on: SIPVicious' User-Agent (`friendly-scanner`) is dropped unread, so the tools see no answer at all and
  the registrar never sees a request.
- Filter off: the tools get answers. `svwar` classifies an extension by comparing its answer with the answer to a
  random extension; callbridge challenges every REGISTER (401) and INVITE (407) before any lookup (RFC 3261
  §22.1), so known and unknown extensions answer alike and `svwar` finds nothing, even run on each real extension
  alone. `svcrack` is calibrated first: with the right password sixth in its dictionary it DOES find it (so these
  tests can fail); with the right password after 100 wrong ones the failure ban (production default: more than 30
  failed authentications from one address within 10 s bans it for 300 s) stops it after the 31st attempt.
- Replay: a REGISTER whose Authorization was accepted, sent again as it was (new branch and CSeq, the same nonce
  and nonce-count), is challenged again with `stale=true` (RFC 7616 §3.3, §3.4) and refreshes nothing.

SIPVicious 0.3.8's `svcrack` reads only the first challenge of a 401 and can compute nothing but MD5; callbridge
offers SHA-256 first (RFC 7616 §3.7), which crashes it. The test runs it with its challenge reader taking the MD5
challenge, as an attacker's patched copy would: otherwise it could never try a password and would prove nothing.

Everything is sent to 127.0.0.1 (the node) from 127.0.0.1 only (SIPVicious binds every address; its `-b`
reaches no socket in 0.3.8, so the kernel picks 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))  # callnode: the call-flow node

from callnode import DOMAIN, start_node, until

from callbridge.b2bua.defence import DefenceConfig
from callbridge.bootstrap import Node

pytest.importorskip("sipvicious", reason="sipvicious is in the dev extra")

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]

ATTACKER = "127.0.0.1"  # SIPVicious binds every address; the kernel sends from this one
EXTENSIONS = "1000-1010"  # the real agents are 1001-1003
REAL = ("1001", "1002", "1003")
PASSWORD = "secret-1001"
# The production thresholds (DefenceConfig's defaults), written out so that a change of default shows up here.
FAILURE_LIMIT, FAILURE_WINDOW, BAN_SECONDS = 30, 10.0, 300.0

# svcrack with its challenge reader taking the MD5 challenge (see the module docstring).
SVCRACK_MD5 = r"""
import re, sys
import sipvicious.svcrack as svcrack

def md5_challenge(pkt):
    found = re.findall(r'\r\n(?:www-authenticate|proxy-authenticate): (.+?)(?=\r\n)', pkt, re.I)
    md5 = [v for v in found if re.search(r'algorithm=md5(?:,|$)', v, re.I)]
    return (md5 or found or [None])[0]

svcrack.getAuthHeader = md5_challenge
sys.argv[0] = "svcrack"
svcrack.main()
"""

# The result tables both tools print: "| 1001 | reqauth |" / "| 1001 | secret-1001 |" (header row excluded).
_ROW = re.compile(r"^\| (\S+)\s+\| (.+?)\s+\|$", re.MULTILINE)


def result_rows(output: str, header: str) -> dict[str, str]:
    """The rows of a SIPVicious result table, {} when it printed "found nothing" instead of a table."""
    rows = {key: value for key, value in _ROW.findall(output) if key != header}
    if not rows:
        assert "WARNING:root:found nothing" in output, output
    return rows


async def run_tool(argv: Sequence[str], timeout: float = 60.0) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    assert "Traceback" not in text, text
    return text


def svwar(node: Node, method: str, extensions: str) -> list[str]:
    return [sys.executable, "-m", "sipvicious.svwar", "-e", extensions, "-m", method, "--force",
            "--domain", DOMAIN, "-P", "0", "--maximumtime", "3",
            "-p", str(node.sip_address[1]), node.sip_address[0]]


def svcrack(node: Node, dictionary: Path) -> list[str]:
    return [sys.executable, "-c", SVCRACK_MD5, "-u", "1001", "-d", str(dictionary), "--domain", DOMAIN,
            "-P", "0", "--maximumtime", "2", "-p", str(node.sip_address[1]), node.sip_address[0]]


def dictionary(tmp_path: Path, wrong: int) -> Path:
    path = tmp_path / f"passwords-{wrong}.txt"
    path.write_text("".join(f"wrong-{i:03d}\n" for i in range(wrong)) + f"{PASSWORD}\n")
    return path


@pytest.fixture(params=["filter-on", "filter-off"])
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    config = DefenceConfig(scanner_filter=request.param == "filter-on")
    assert (config.failure_limit, config.failure_window, config.ban_seconds) == (FAILURE_LIMIT, FAILURE_WINDOW,
                                                                                 BAN_SECONDS)
    node = await start_node(tmp_path, defence=config)
    try:
        yield node
    finally:
        await node.close()


def defence(node: Node) -> dict[str, int]:
    return node.switch.defence.metrics(node.switch.now())


async def test_svwar_finds_no_extension(node: Node) -> None:
    registrar = node.switch.registrar.stats
    scans = [(method, EXTENSIONS) for method in ("REGISTER", "INVITE")]
    if not node.switch.defence.scanner_filter:  # answered: each real extension alone is compared too
        scans += [("REGISTER", ext) for ext in REAL] + [("INVITE", ext) for ext in REAL]
    for method, extensions in scans:
        output = await run_tool(svwar(node, method, extensions))
        assert result_rows(output, "Extension") == {}, (method, extensions, output)
        if node.switch.defence.scanner_filter:
            assert "ERROR:TakeASip:socket error: timed out" in output, output  # its first request unanswered
    if node.switch.defence.scanner_filter:
        assert defence(node)["dropped_scanner"] >= len(scans)
        assert registrar["registers"] == 0
    else:
        # the tool was answered: a challenge for the random extension and for the first one it tried, each time
        assert defence(node)["dropped_scanner"] == 0
        assert registrar["challenged"] >= 2 * (1 + len(REAL))
        assert registrar["accepted"] == 0
    assert defence(node)["bans_total"] == 0  # a challenge is not a failure (counts_as_failure)


async def test_svcrack_finds_no_password(node: Node, tmp_path: Path) -> None:
    """Filter on: not one answer, even with the right password first. Filter off: banned after the 31st try."""
    registrar = node.switch.registrar.stats
    if node.switch.defence.scanner_filter:
        output = await run_tool(svcrack(node, dictionary(tmp_path, 0)))
        assert result_rows(output, "Extension") == {}
        assert "ERROR:ASipOfRedWine:no server response" in output, output
        assert registrar["registers"] == 0 and defence(node)["dropped_scanner"] == 1
        return
    output = await run_tool(svcrack(node, dictionary(tmp_path, 100)))
    assert result_rows(output, "Extension") == {}, output
    assert "since we last received a response - stopping" in output, output
    assert registrar["auth_failed"] == FAILURE_LIMIT + 1 and registrar["accepted"] == 0
    assert node.switch.defence.is_banned(ATTACKER, node.switch.now()), defence(node)
    assert defence(node)["bans_total"] == 1 and defence(node)["dropped_banned"] >= 1
    # the ban holds: the right password from the attacker's address is not even read
    output = await run_tool(svcrack(node, dictionary(tmp_path, 0)))
    assert result_rows(output, "Extension") == {}
    assert registrar["accepted"] == 0


@pytest.mark.parametrize("node", ["filter-off"], indirect=True)
async def test_svcrack_calibration_finds_an_early_password(node: Node, tmp_path: Path) -> None:
    """The tool works against callbridge: with the filter off and the password sixth, it is found."""
    output = await run_tool(svcrack(node, dictionary(tmp_path, 5)))
    assert result_rows(output, "Extension") == {"1001": PASSWORD}, output
    assert node.switch.registrar.stats["auth_failed"] == 5
    assert node.switch.registrar.stats["accepted"] == 1


# --- replay of a captured Authorization ------------------------------------------------------------------------
def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _register(port: int, call_id: str, cseq: int, authorization: str | None = None) -> bytes:
    lines = [f"REGISTER sip:{DOMAIN} SIP/2.0",
             f"Via: SIP/2.0/UDP {ATTACKER}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport",
             f"From: <sip:1001@{DOMAIN}>;tag=replay", f"To: <sip:1001@{DOMAIN}>", f"Call-ID: {call_id}",
             f"CSeq: {cseq} REGISTER", f"Contact: <sip:1001@{ATTACKER}:{port}>", "Max-Forwards: 70",
             "Expires: 300"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def _md5_challenge(response: bytes) -> dict[str, str]:
    for value in re.findall(rb"\r\nWWW-Authenticate: Digest (.+?)(?=\r\n)", response):
        params = {k.decode(): (q or t).decode() for k, q, t in re.findall(rb'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)}
        if params["algorithm"] == "MD5":
            return params
    raise AssertionError(response)


async def _exchange(sock: socket.socket, data: bytes, node: Node) -> bytes:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, data, node.sip_address)
    while True:
        reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
        if not reply.startswith(b"SIP/2.0 1"):
            return reply


@pytest.mark.parametrize("node", ["filter-on"], indirect=True)
async def test_a_captured_authorization_cannot_be_replayed(node: Node) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ATTACKER, 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    try:
        challenge = _md5_challenge(await _exchange(sock, _register(port, "replay-1", 1), node))
        cnonce, uri = secrets.token_hex(4), f"sip:{DOMAIN}"
        ha1 = _md5(f"1001:{challenge['realm']}:{PASSWORD}")
        digest = _md5(f"{ha1}:{challenge['nonce']}:00000001:{cnonce}:auth:{_md5(f'REGISTER:{uri}')}")
        authorization = (f'Digest username="1001", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
                         f'uri="{uri}", response="{digest}", algorithm=MD5, qop=auth, nc=00000001, '
                         f'cnonce="{cnonce}"')
        accepted = await _exchange(sock, _register(port, "replay-1", 2, authorization), node)
        assert accepted.startswith(b"SIP/2.0 200 "), accepted
        await until(lambda: node.service.get_agent("0042", "1001").registered, what="registered")
        stats = dict(node.switch.registrar.stats)
        for call_id, cseq in (("replay-1", 3), ("replay-2", 1)):  # the same dialog of REGISTERs, and a new one
            replayed = await _exchange(sock, _register(port, call_id, cseq, authorization), node)
            assert replayed.startswith(b"SIP/2.0 401 "), replayed
            assert all(b"stale=true" in line for line in re.findall(rb"WWW-Authenticate:[^\r]*", replayed))
        assert node.switch.registrar.stats["accepted"] == stats["accepted"]
    finally:
        sock.close()
