"""Helpers of the torture-over-the-wire test: the RFC 4475 corpus, the one rewrite the test makes (the top Via's
sent-by), a loopback node whose operation's domain is example.com, and sockets that listen where responses must go.

The rewrite: the corpus's messages name hosts such as 192.0.2.x in their top Via's sent-by, which is where a server
sends its responses (RFC 3261 §18.2.2: the `received` address, that is the source, and the sent-by port; or the
source port when the Via carries `rport`, RFC 3581). The test replaces ONLY that sent-by (host and optional port)
with its own loopback listening address, so that the responses come to the test; every other byte of the message
is the corpus's. A message without a Via is sent unchanged.
"""

from __future__ import annotations

import asyncio
import csv
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from callbridge.storage import credentials, make_engine
from callbridge.storage import schema as s
from callbridge.storage.loader import load_into_fresh_database

TESTS = Path(__file__).resolve().parents[1]
for extra in (TESTS, TESTS / "integration"):  # the peers harness; callnode's helpers
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

CORPUS = TESTS / "sip" / "torture"  # the RFC 4475 messages and our expected.tsv (tests/sip/torture/README.md)
OP = "torture"
DOMAIN = "example.com"
AGENT = "1001"
DID = "6000"
CUSTOMER_HOST = "127.0.0.2"
GATEWAY_HOST = "127.0.0.3"
# The corpus's registering users: not digit extensions, so `callbridge admin` would not create them; their rows
# are written with the schema and the same HA1 functions the admin uses.
CORPUS_USERS = ("j.user", "user", "watson")
PASSWORD = "torture-password"


@dataclass(frozen=True)
class Case:
    name: str
    section: str
    klass: str
    handling: str
    data: bytes


def load_cases() -> list[Case]:
    rows = list(csv.DictReader((CORPUS / "expected.tsv").read_text().splitlines(), delimiter="\t"))
    return [Case(r["file"], r["rfc4475_section"], r["class"], r["expected"],
                 (CORPUS / "rfc4475" / f"{r['file']}.dat").read_bytes()) for r in rows]


# --- the rewrite ---------------------------------------------------------------------------------------------------
_LWS = rb"(?:[ \t]*\r?\n)?[ \t]+"
_SWS = rb"(?:" + _LWS + rb")?"
_SENT_BY = re.compile(
    rb"(?P<protocol>[^\s/:;,]+" + _SWS + rb"/" + _SWS + rb"[^\s/:;,]+" + _SWS + rb"/" + _SWS + rb"[^\s/:;,]+)"
    + _LWS + rb"(?P<sent_by>(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._\-]+)(?:" + _SWS + rb":" + _SWS + rb"[0-9]+)?)")
_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def top_via_span(data: bytes) -> tuple[int, int] | None:
    """Where the top Via's sent-by is in ``data`` (start, end), or None when the message has no Via."""
    head_end = data.find(b"\r\n\r\n")
    head_end = len(data) if head_end < 0 else head_end
    pos = data.find(b"\n") + 1  # past the start line
    while 0 < pos < head_end:
        end = data.find(b"\n", pos)
        end = head_end if end < 0 or end > head_end else end
        line = data[pos:end]
        name = _HEADER_NAME.match(line)
        if name is not None and name.group(1).lower() in (b"via", b"v"):
            # the header's value runs on over folded continuation lines
            stop = end
            while stop < head_end and data[stop + 1:stop + 2] in (b" ", b"\t"):
                nxt = data.find(b"\n", stop + 1)
                stop = head_end if nxt < 0 or nxt > head_end else nxt
            value_start = pos + name.end()
            found = _SENT_BY.search(data, value_start, stop)
            return None if found is None else found.span("sent_by")
        pos = end + 1
    return None


def rewrite_top_via(data: bytes, host: str, port: int) -> bytes:
    """``data`` with its top Via's sent-by replaced by ``host:port`` (unchanged when it has no Via)."""
    span = top_via_span(data)
    if span is None:
        return data
    return data[:span[0]] + f"{host}:{port}".encode() + data[span[1]:]


# --- the node's operation --------------------------------------------------------------------------------------------
def operation_doc(gateway_port: int = 5060) -> dict[str, Any]:
    return {
        "operation": {"id": OP, "sip_domain": DOMAIN, "acw_seconds": 0, "default_queue": "support",
                      "ring_timeout": 5},
        "queues": [{"name": "support", "max_wait_seconds": 5}],
        "agents": [{"extension": AGENT, "name": "Agent", "password": f"secret-{AGENT}", "queues": ["support"]}],
        "trunks": [{"name": "carrier", "host": GATEWAY_HOST, "port": gateway_port, "dial_min_length": 7,
                    "inbound_networks": [f"{CUSTOMER_HOST}/32"]}],
        "dids": [{"number": DID, "queue": "support", "trunk": "carrier"}],
    }


def load(db_url: str) -> None:
    load_into_fresh_database(db_url, operation_doc())
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(s.agents), [
                {"operation_id": OP, "extension": user, "name": user,
                 "ha1_md5": credentials.ha1_md5(user, DOMAIN, PASSWORD),
                 "ha1_sha256": credentials.ha1_sha256(user, DOMAIN, PASSWORD)} for user in CORPUS_USERS])
    finally:
        engine.dispose()


# --- sockets that listen where responses must go ----------------------------------------------------------------------
class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    async def collect(self, quiet: float) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(await asyncio.wait_for(self.queue.get(), quiet))
            except TimeoutError:
                return out

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def udp_inbox(host: str) -> Inbox:
    _, inbox = await asyncio.get_running_loop().create_datagram_endpoint(Inbox, local_addr=(host, 0),
                                                                        family=socket.AF_INET)
    return inbox


def status_of(message: bytes) -> int | None:
    """The status code of a response's bytes (None for anything else)."""
    found = re.match(rb"SIP/2\.0 (\d{3}) ", message)
    return int(found.group(1)) if found else None


def header_values(message: bytes, *names: str) -> list[str]:
    """The raw values of the headers called ``names`` (full or compact forms), unfolded, in order."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    head = re.sub(r"\r?\n[ \t]+", " ", head)
    wanted = {n.lower() for n in names}
    out = []
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() in wanted:
            out.append(value.strip())
    return out
