"""The 50 RFC 4475 torture messages sent to a running callbridge over UDP and over TCP (a fresh connection each).

The node is `callbridge.bootstrap` on loopback with its destination policy limited to 127.0.0.0/8 and ::1, and an
operation whose SIP domain is example.com (the corpus's), so that the registrar rows mean something: the corpus's
registering users (j.user, user, watson) are agents of it. Each message is answered or dropped as
``tests/sip/torture/expected.tsv`` says (the EXPECTED table below cites it; where the RFC lets an element choose,
the choices are listed). The one change made to a message is its top Via's sent-by, rewritten to the loopback
address and port where the test listens (``torture_wire``): the server must answer there (RFC 3261 §18.2.2; the
source port when the Via has ``rport``, RFC 3581, and over TCP on the connection, §18.2.2) and nowhere else:
the sending socket gets nothing (unless ``rport``), and the destination policy's refusal counter on /metrics stays
at zero although the messages name other hosts in Contact, Route, Record-Route and From.

REGISTER rows whose summary asks for 2xx are challenged first (401); the test answers the challenge as the user
(the same message with Authorization added, the next CSeq and a new branch) and checks the 200's Contact and the
binding the registrar stored. INVITE rows are sent from the trunk's inbound network (127.0.0.2), where INVITEs are
taken without a challenge, so that callbridge judges the message itself: a Request-URI naming no DID is answered
404 (§8.2.2.1 comes before the content checks of §8.2.3). Other rows come from an address of their own
(127.0.1.N over UDP, 127.0.2.N over TCP), so that the failure ban of one source does not decide another row.

After each message a normal call still succeeds: a customer behind the trunk calls the DID and an agent's
callbridge.phone answers; the customer hangs up and the node's legs go back to zero.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from torture_wire import (
    AGENT,
    CUSTOMER_HOST,
    DID,
    OP,
    PASSWORD,
    Case,
    Inbox,
    header_values,
    load,
    load_cases,
    rewrite_top_via,
    status_of,
    top_via_span,
    udp_inbox,
)

from callbridge.bootstrap import Node, bootstrap
from callbridge.config import Settings
from callbridge.phone import Phone
from callbridge.sip import DigestResponder

pytestmark = pytest.mark.timeout(60)

CASES = {case.name: case for case in load_cases()}
INDEX = {name: i for i, name in enumerate(CASES)}
FINAL_WAIT = 1.5     # seconds to wait for a final response
QUIET = 0.15         # and then for anything more
DROP_WAIT = 0.6      # seconds of silence that count as "dropped"


@dataclass(frozen=True)
class Expect:
    """What must come back. ``statuses``: the final status must be one of them (None: nothing may come back).
    ``parsed``: any final status of 200-499 other than 400 (the message was parsed and handled, whatever the
    handling). ``tcp_close_ok``: over TCP the server may close the connection without answering.
    ``tcp_waits``: over TCP nothing comes back and the connection stays open (the server waits for more data).
    ``tcp_trailing``: over TCP the octets after the first message are messages of their own, framed by their
    Content-Length (RFC 3261 §18.3), then octets that cannot be framed: only the responses with the first
    message's Call-ID are checked, and the server may close the connection after writing them.
    ``register``: the user whose challenge the test answers, expecting 2xx."""

    statuses: frozenset[int] | None = None
    parsed: bool = False
    tcp_close_ok: bool = False
    tcp_waits: bool = False
    tcp_trailing: bool = False
    register: str | None = None


def one_of(*statuses: int, **kw: object) -> Expect:
    return Expect(statuses=frozenset(statuses), **kw)  # type: ignore[arg-type]


PARSED = Expect(parsed=True)
DROPPED = Expect()
# Per tests/sip/torture/expected.tsv (its row in the comment); RFC 4475 is the authority.
EXPECTED: dict[str, Expect] = {
    "wsinv": PARSED,                  # parse and accept (its To has a tag: 481 for the unknown dialog, §12.2.2)
    "intmeth": one_of(501),           # unknown extension method: 501
    "esc01": PARSED,                  # %-escapes in the URI are legal
    "escnull": one_of(401),           # %00 in the user part is legal: a REGISTER, challenged
    "esc02": one_of(501),             # RE%47IST%45R is an unknown method, not REGISTER
    "lwsdisp": PARSED,                # no whitespace between display name and <
    "longreq": PARSED,                # long header values and many Via entries
    # the REGISTER; trailing octets ignored. Over TCP they are not noise: the INVITE in them is a message framed by
    # its Content-Length (RFC 3261 §18.3; RFC 4475 §3.1.1.8 speaks of a UDP datagram) and is answered too, and the
    # 5 octets after it cannot be framed, so the connection closes once the answers are written.
    "dblreq": Expect(statuses=frozenset({401}), register="j.user", tcp_trailing=True),
    "semiuri": PARSED,                # user part "user;par=u@example.net"
    "transports": PARSED,             # Via with unknown transport tokens
    "mpart01": PARSED,                # multipart body with NUL octets (a MESSAGE: 405 is a handling)
    "unreason": DROPPED,              # a response (UTF-8 reason) matching nothing: parsed, nothing sent
    "noreason": DROPPED,              # a response with an empty reason phrase: likewise
    "badinv01": one_of(400),          # extraneous header separators: 400
    "clerr": one_of(400, tcp_waits=True),  # Content-Length beyond the datagram: UDP 400; TCP waits for more
    "ncl": one_of(400, tcp_close_ok=True),  # negative Content-Length: an error
    "scalar02": one_of(400),          # CSeq overflowing 2^32-1: 400
    "scalarlg": DROPPED,              # response with overlarge scalars: discarded silently
    "quotbal": one_of(400),           # unterminated quoted display name: 400
    "ltgtruri": one_of(400),          # Request-URI in < >: 400 (never forwarded with the brackets)
    "lwsruri": one_of(400),           # whitespace inside the Request-URI: 400
    "lwsstart": Expect(parsed=True, statuses=frozenset({400})),  # extra spaces on the request line: 400 or tolerate
    "trws": Expect(parsed=True, statuses=frozenset({400})),      # spaces after SIP-Version: 400 or tolerate
    "escruri": Expect(parsed=True, statuses=frozenset({400})),   # escaped headers in the R-URI: 400 or ignore
    "baddate": Expect(parsed=True, statuses=frozenset({400})),   # bad Date time zone: ignore it, or 400
    "regbadct": one_of(400),          # Contact URI with ?headers outside <>: 400
    "badaspec": Expect(parsed=True, statuses=frozenset({400})),  # spaces in an addr-spec: must not break; 400 ok
    # non-token characters in an unquoted display name: 400. The corpus's baddn.dat ends after "l: 0" CRLF,
    # without the empty line that ends a head (RFC 3261 §7: "MUST be present even if the message body is not"):
    # on a stream the message is not complete, so the server waits for more data (§18.3), as for clerr.
    "baddn": one_of(400, tcp_waits=True),
    "badvers": one_of(505),           # SIP/7.0: 505
    "mismatch01": one_of(400),        # request-line method differs from the CSeq method: 400
    "mismatch02": one_of(501, 400),   # unknown method with a CSeq mismatch: 501 (400 acceptable)
    "bigcode": DROPPED,               # response code 4294967301: dropped silently
    "badbranch": Expect(parsed=True, statuses=frozenset({400})),  # branch is just the cookie: 400 or match it
    "insuf": DROPPED,                 # missing headers: 400 where a response can be formed; none can: it names
                                      # no From, To or Call-ID, which a response copies (§8.2.6.2)
    "unkscm": one_of(416),            # Request-URI with an unknown scheme: 416
    "novelsc": one_of(416, 404),      # soap.beep scheme: 416 (or 404)
    "unksm2": one_of(400),            # unknown schemes in To/From/Contact: a registrar answers 400
    "bext01": one_of(420),            # Require with unknown options: 420 with Unsupported
    "invut": one_of(415, 404),        # unknown Content-Type: 415 (404 first: its Request-URI names no DID)
    "regaut01": one_of(401),          # unknown Authorization scheme: 401 with a scheme the registrar supports
    "multi01": one_of(400),           # several values in single-value headers: 400
    "mcl01": Expect(statuses=None, tcp_close_ok=True),  # multiple Content-Length values: UDP discard, TCP close
    "bcast": DROPPED,                 # a 200 whose Via says 255.255.255.255: parsed, discarded
    "zeromf": one_of(200),            # Max-Forwards 0: an endpoint processes it normally (OPTIONS: 200)
    "cparam01": Expect(statuses=frozenset({401}), register="watson"),  # contact-param: 2xx, param on the Contact
    "cparam02": Expect(statuses=frozenset({401}), register="watson"),  # url-param inside <>: 2xx, kept in the URI
    "regescrt": Expect(statuses=frozenset({401}), register="user"),    # escaped Route in the Contact URI: kept
    "sdp01": one_of(406, 400, 404),   # Accept without application/sdp: 406 or 400 (404 first: no such DID)
    "inv2543": Expect(parsed=True, tcp_close_ok=True),  # RFC 2543 style: accepted (TCP: no Content-Length, §18.3)
    "test": Expect(statuses=None, tcp_close_ok=True),   # request line without SIP version: malformed, no crash
}
# The Contact each 2xx row must leave stored (Binding.contact_uri, Binding.params), expected.tsv's last column.
STORED = {
    "dblreq": ("sip:j.user@host.example.com", ()),
    "cparam01": ("sip:+19725552222@gw1.example.net", (("unknownparam", None),)),
    "cparam02": ("sip:+19725552222@gw1.example.net;unknownparam", ()),
    "regescrt": ("sip:user@example.com?Route=%3Csip:sip.example.com%3E", ()),
}


def test_the_table_covers_the_corpus() -> None:
    assert len(CASES) == 50
    assert set(EXPECTED) == set(CASES)
    assert {name for name, e in EXPECTED.items() if e.register} == set(STORED)


# --- the node --------------------------------------------------------------------------------------------------------
@dataclass
class World:
    node: Node
    agent: Phone
    customer: Phone
    http: httpx.AsyncClient


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    directory: Path = tmp_path_factory.mktemp("torture")
    url = f"sqlite:///{directory / 'callbridge.db'}"
    await asyncio.to_thread(load, url)
    settings = Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url, node_id="torture",
                        allowed_networks=("127.0.0.0/8", "::1/128"))
    node = await bootstrap(settings)
    agent = await Phone.start(host="127.0.0.1", user=AGENT, domain="example.com", password=f"secret-{AGENT}",
                              name="agent", answer="auto", history=100)
    await agent.register(node.sip_address, expires=300)
    await until(lambda: node.service.get_agent(OP, AGENT).registered, "the agent registered")
    node.service.change_status(OP, AGENT, "ready")
    customer = await Phone.start(host=CUSTOMER_HOST, user="3105550000", domain=CUSTOMER_HOST, name="customer",
                                 history=100)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app), base_url="http://callbridge")
    try:
        yield World(node, agent, customer, http)
    finally:
        await http.aclose()
        await customer.close()
        await agent.close()
        await node.close()


async def until(predicate: object, what: str, timeout: float = 5.0) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def refused_total(http: httpx.AsyncClient) -> int:
    text = (await http.get("/metrics")).text
    found = re.search(r'^callbridge_transport_total\{counter="policy_refused_total"\} (\d+)', text, re.MULTILINE)
    assert found is not None, "policy_refused_total missing from /metrics"
    return int(found.group(1))


async def a_normal_call_succeeds(w: World) -> None:
    host, port = w.node.sip_address
    call = await w.customer.call(f"sip:{DID}@{host}:{port}", timeout=10)
    await until(lambda: w.node.service.get_agent(OP, AGENT).state == "on_call", "the agent on the call")
    await call.hangup()
    await until(lambda: w.node.live_legs == 0, "the legs released")
    await until(lambda: w.node.service.get_agent(OP, AGENT).state == "ready", "the agent ready again")


# --- sending ---------------------------------------------------------------------------------------------------------
def source_for(case: Case, transport: str) -> str:
    if case.data.startswith(b"INVITE"):
        return CUSTOMER_HOST
    return f"127.0.{1 if transport == 'udp' else 2}.{INDEX[case.name] + 1}"


def split_messages(buffer: bytes) -> list[bytes]:
    """Responses read from a stream, split at each status line (bodies of responses here are empty)."""
    starts = [m.start() for m in re.finditer(rb"SIP/2\.0 \d{3} ", buffer)]
    if not starts:
        return []
    return [buffer[a:b] for a, b in zip(starts, [*starts[1:], len(buffer)], strict=True)]


async def until_final(inbox: Inbox, wait: float) -> list[bytes]:
    """Datagrams until a final response (then QUIET more), or ``wait`` seconds of silence."""
    out: list[bytes] = []
    final = False
    while True:
        try:
            out.append(await asyncio.wait_for(inbox.queue.get(), QUIET if final else wait))
        except TimeoutError:
            return out
        final = final or (status_of(out[-1]) or 0) >= 200


class TcpExchange:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = b""
        self.closed = False

    @classmethod
    async def open(cls, server: tuple[str, int], source: str) -> TcpExchange:
        reader, writer = await asyncio.open_connection(server[0], server[1], local_addr=(source, 0),
                                                       family=socket.AF_INET)
        return cls(reader, writer)

    async def exchange(self, data: bytes, wait: float) -> list[bytes]:
        """Send ``data``; the responses that come back until a final one (then QUIET) or ``wait`` of silence."""
        already = len(split_messages(self.buffer))
        self.writer.write(data)
        await self.writer.drain()
        final = False
        while not self.closed:
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), QUIET if final else wait)
            except TimeoutError:
                break
            if not chunk:
                self.closed = True
                break
            self.buffer += chunk
            final = any((status_of(m) or 0) >= 200 for m in split_messages(self.buffer)[already:])
        return split_messages(self.buffer)[already:]

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def finals(responses: list[bytes]) -> list[int]:
    return [st for st in (status_of(r) for r in responses) if st is not None and st >= 200]


def check_final(name: str, expect: Expect, responses: list[bytes]) -> None:
    statuses = finals(responses)
    if expect.statuses is None and not expect.parsed:
        assert responses == [], f"{name}: expected nothing back, got {statuses} {responses[:1]!r}"
        return
    assert len(statuses) == 1, f"{name}: expected one final response, got {statuses}"
    status = statuses[0]
    allowed = expect.statuses or frozenset()
    ok = status in allowed or (expect.parsed and 200 <= status < 500 and status != 400)
    assert ok, f"{name}: final status {status}, expected {sorted(allowed)}{' or parsed' if expect.parsed else ''}"
    final = next(r for r in responses if status_of(r) == status)
    if status == 401:  # a challenge in a scheme the registrar supports (RFC 4475 §3.3.7)
        challenges = header_values(final, "WWW-Authenticate")
        assert challenges and all(c.lower().startswith("digest ") for c in challenges), challenges
    if status == 420:  # with the options it does not support (RFC 3261 §8.2.2.3)
        unsupported = ",".join(header_values(final, "Unsupported"))
        assert "nothingSupportsThis" in unsupported and "nothingSupportsThisEither" in unsupported, unsupported


# --- answering the challenge (REGISTER rows) ------------------------------------------------------------------------
def with_credentials(message: bytes, challenge: bytes, user: str) -> bytes:
    """``message`` retried with credentials (RFC 3261 §22.2): Authorization added, next CSeq, new branch."""
    head, sep, rest = message.partition(b"\r\n\r\n")
    values = header_values(challenge, "WWW-Authenticate")
    assert values, "a 401 without WWW-Authenticate"
    request_uri = head.split(b" ", 2)[1].decode()
    authorization = DigestResponder(user, PASSWORD).authorize("REGISTER", request_uri, values)
    head = re.sub(rb"(?im)^(CSeq[ \t]*:[ \t]*)(\d+)", lambda m: m.group(1) + str(int(m.group(2)) + 1).encode(),
                  head, count=1)
    span = top_via_span(head + b"\r\n\r\n")
    assert span is not None
    head = head[:span[1]] + re.sub(rb"branch=([^;,\s]+)", rb"branch=\1-auth", head[span[1]:], count=1)
    head += b"\r\nAuthorization: " + authorization.encode()
    return head + sep + rest


def check_registered(w: World, name: str, user: str, ok: bytes) -> None:
    assert status_of(ok) == 200, f"{name}: the authenticated REGISTER got {ok[:60]!r}"
    uri, params = STORED[name]
    bindings = w.node.switch.registrar.location.contacts_for(OP, user, w.node.switch.wall())
    assert [(b.contact_uri, b.params) for b in bindings] == [(uri, params)], bindings
    listed = header_values(ok, "Contact", "m")
    assert len(listed) == 1 and listed[0].startswith(f"<{uri}>"), listed  # the 200 lists the binding, §10.3
    if params:
        assert listed[0][len(uri) + 2:].startswith(";unknownparam"), listed  # beside the URI, not in it


async def unregister(w: World, user: str) -> None:
    """Remove the binding again (the node is shared by the rows)."""
    w.node.switch.registrar.location.remove_all(OP, user, "test", w.node.switch.wall())


# --- the test --------------------------------------------------------------------------------------------------------
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("name", list(CASES))
async def test_torture_message(world: World, name: str, transport: str) -> None:
    w, case, expect = world, CASES[name], EXPECTED[name]
    refused_before = await refused_total(w.http)
    source = source_for(case, transport)
    listener = await udp_inbox(source)        # where the responses must go (the rewritten sent-by)
    sender = await udp_inbox(source)          # where they must not, unless the Via has rport
    tcp: TcpExchange | None = None
    try:
        data = rewrite_top_via(case.data, source, listener.port)
        wait = FINAL_WAIT if (expect.statuses or expect.parsed) else DROP_WAIT
        if transport == "udp":
            assert sender.transport is not None
            sender.transport.sendto(data, w.node.sip_address)
            rport = re.search(rb";rport\b", data[:(top_via_span(data) or (0, 0))[1] + 200]) is not None
            responses = await until_final(sender if rport else listener, wait)
            stray = await (listener if rport else sender).collect(0.05)
            assert stray == [], f"{name}: responses went to the wrong port"
        else:
            tcp = await TcpExchange.open(w.node.sip_address, source)
            responses = await tcp.exchange(data, wait)
            assert await listener.collect(0.05) == [] and await sender.collect(0.01) == []
            if expect.tcp_trailing:
                call_id = header_values(data, "Call-ID", "i")[0]
                responses = [r for r in responses if header_values(r, "Call-ID", "i") == [call_id]]
        if transport == "tcp" and expect.tcp_waits:
            assert responses == [] and not tcp.closed, f"{name}: expected the server to wait for more data"
        elif transport == "tcp" and expect.tcp_close_ok and tcp is not None and tcp.closed and not finals(responses):
            pass  # the stream could not be framed: closed without an answer, as allowed
        else:
            check_final(name, expect, responses)
        if expect.register is not None:
            challenge = next(r for r in responses if status_of(r) == 401)
            first = data if transport == "udp" else data[:data.find(b"\r\n\r\n") + 4]  # TCP: the REGISTER alone
            retry = with_credentials(first, challenge, expect.register)
            if transport == "udp":
                assert sender.transport is not None
                sender.transport.sendto(retry, w.node.sip_address)
                answers = await until_final(listener, FINAL_WAIT)
            else:
                assert tcp is not None
                if tcp.closed and expect.tcp_trailing:  # closed after the unframeable octets: a new connection
                    await tcp.close()
                    tcp = await TcpExchange.open(w.node.sip_address, source)
                answers = await tcp.exchange(retry, FINAL_WAIT)
            assert len(finals(answers)) == 1, f"{name}: {finals(answers)}"
            check_registered(w, name, expect.register, next(a for a in answers if (status_of(a) or 0) >= 200))
            await unregister(w, expect.register)
    finally:
        if tcp is not None:
            await tcp.close()
        listener.close()
        sender.close()
    await a_normal_call_succeeds(w)
    assert await refused_total(w.http) == refused_before, f"{name}: the server tried to send off loopback"
