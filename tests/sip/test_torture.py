"""The 50 messages of RFC 4475, each with the outcome its row of ``torture/expected.tsv`` implies.

Valid, application, transaction and backward-compatibility rows parse, and the test checks what was parsed; the
protocol-level answers (416, 420, 415, 401, registrar behaviour) belong to the endpoint and are tested on the wire.
Invalid rows raise ``ParseError`` with the status the row names, ``None`` meaning "drop silently".

Where a row allows more than one outcome, the choice made here (and why) is written next to its assertion:

- lwsstart (extra spaces in the request line): 400. RFC 3261 §25 requires single SPs; tolerating them would only
  invite ambiguity about where the Request-URI ends.
- trws (spaces after SIP-Version): tolerated; the start line is rebuilt on serialisation, so the spaces are never
  forwarded.
- escruri (``?headers`` in the Request-URI): 400 rather than ignoring them, so they can never become headers.
- baddate (bad time zone in Date): parsed, Date is kept as an opaque string; nothing in callbridge reads it.
- regbadct (``?`` in a Contact URI without ``<>``): 400, as §20.10 requires the brackets.
- badaspec (spaces inside ``< >``): 400.
- mismatch02 (unknown method and CSeq mismatch): 501, the answer RFC 4475 prefers.
- badbranch (branch is just the magic cookie): parsed; the transaction layer falls back to RFC 2543 matching.
- insuf (missing To, From, Call-ID): 400, a response can be formed from Via and CSeq.
- multi01 (several values of single-value headers): 400.
- mcl01 (two Content-Length values): dropped (``None``) — the framing cannot be trusted; a stream is closed.
- sdp01, bext01, invut, regaut01, unkscm, novelsc, unksm2, zeromf, bcast: parsed; the endpoint answers.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from callbridge.sip import ParseError, Request, Response, StreamParser, parse, parse_uri

CORPUS = Path(__file__).resolve().parent / "torture"  # the RFC 4475 messages and our expected.tsv (its README)
ROWS = list(csv.DictReader((CORPUS / "expected.tsv").read_text().splitlines(), delimiter="\t"))


def load(name: str) -> bytes:
    return (CORPUS / "rfc4475" / f"{name}.dat").read_bytes()


def request(name: str) -> Request:
    message = parse(load(name))
    assert isinstance(message, Request)
    return message


def response(name: str) -> Response:
    message = parse(load(name))
    assert isinstance(message, Response)
    return message


def rejected(status: int | None) -> Callable[[str], None]:
    def check(name: str) -> None:
        with pytest.raises(ParseError) as caught:
            parse(load(name))
        assert caught.value.status == status, caught.value

    check.status = status  # type: ignore[attr-defined]
    return check


def wsinv(name: str) -> None:
    msg = request(name)
    assert msg.method == "INVITE"
    assert msg.uri.params == {"unknownparam": None}
    assert msg.to.tag == "1918181833n"
    assert str(msg.to.uri) == "sip:vivekg@chair-dnrc.example.com"
    assert msg.from_.display == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert (msg.cseq.number, msg.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    [contact] = msg.contacts
    assert contact.addr is not None and contact.addr.display == 'Quoted string ""'
    assert contact.addr.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert contact.q == 0.33
    assert msg.routes[0].uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert msg.content_type == "application/sdp"
    assert len(msg.body) == 150 and msg.body.startswith(b"v=0\r\n")


def intmeth(name: str) -> None:
    msg = request(name)
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.method == method and msg.cseq == (139122385, method)
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.uri.host == "example.com"
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.from_.display == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.via.branch == "z9hG4bK-.!%66*_+`'~"
    assert msg.max_forwards == 255
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def esc01(name: str) -> None:
    msg = request(name)
    assert (msg.uri.user, msg.uri.host) == ("sips:user@example.com", "example.net")
    assert msg.to.uri.user == "user"
    assert msg.to.uri == parse_uri("sip:user@example.com")
    assert msg.from_.uri.user == "I have spaces"
    assert msg.call_id == "esc01.239409asdfakjkn23onasd0-3234"
    assert msg.content_type == "application/sdp"
    [contact] = msg.contacts
    assert contact.addr is not None
    assert contact.addr.uri.user == "caller"
    assert contact.addr.uri.params == {"lr": None, "name": "value%41"}


def escnull(name: str) -> None:
    msg = request(name)
    assert msg.to.uri.user == "null-\x00-null"
    assert msg.from_.uri.user == "null-\x00-null"
    assert [c.addr.uri.user for c in msg.contacts if c.addr] == ["\x00", "\x00\x00"]
    assert str(msg.to.uri) == "sip:null-%00-null@example.com"


def esc02(name: str) -> None:
    msg = request(name)
    assert msg.method == "RE%47IST%45R"  # not REGISTER: methods are not escaped
    assert msg.to.display == "%Z%45"
    assert len(msg.contacts) == 2  # "C%6Fntact" is another header
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert msg.via.branch == "z9hG4bK209%fzsnel234"


def lwsdisp(name: str) -> None:
    msg = request(name)
    assert (msg.from_.display, msg.from_.tag) == ("caller", "323")
    assert str(msg.from_.uri) == "sip:caller@example.com"


def longreq(name: str) -> None:
    msg = request(name)
    assert len(msg.vias) == 34
    assert [v.host for v in msg.vias[:2]] == ["sip33.example.com", "sip32.example.com"]
    assert msg.vias[-1].received == "192.0.2.5"
    assert msg.to.display is not None and msg.to.display.startswith("I have a user name of extreme")
    assert msg.to.uri.port == 6000
    assert msg.to.uri.params["unknownparam1"] == "very" + "long" * 20 + "value"
    assert msg.from_.tag == "12" + "982" * 50 + "424"
    assert msg.call_id.startswith("longreq.onereallyreally")
    assert len(msg.body) == 150


def dblreq(name: str) -> None:
    msg = request(name)
    assert msg.method == "REGISTER"
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert msg.body == b""  # the INVITE after Content-Length: 0 is ignored


def semiuri(name: str) -> None:
    msg = request(name)
    assert msg.uri.user == "user;par=u@example.net"
    assert msg.uri.host == "example.com" and msg.uri.params == {}
    assert msg.headers.get_all("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def transports(name: str) -> None:
    msg = request(name)
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert msg.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def mpart01(name: str) -> None:
    data = load(name)
    msg = request(name)
    assert msg.body == data[data.index(b"\r\n\r\n") + 4 :]
    assert len(msg.body) == 553 and b"\x00" in msg.body
    assert msg.content_type == "multipart/mixed"
    assert parse(bytes(msg)).body == msg.body


def unreason(name: str) -> None:
    msg = response(name)
    assert msg.status == 200
    assert msg.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert bytes(msg).split(b"\r\n")[0] == load(name).split(b"\r\n")[0]


def noreason(name: str) -> None:
    msg = response(name)
    assert (msg.status, msg.reason) == (100, "")
    assert msg.to.tag == "902jndnke3"


def trws(name: str) -> None:
    msg = request(name)  # choice: tolerated; never forwarded, the start line is rebuilt
    assert msg.method == "OPTIONS" and msg.uri.user == "remote-target"
    assert bytes(msg).startswith(b"OPTIONS sip:remote-target@example.com SIP/2.0\r\n")


def baddate(name: str) -> None:
    msg = request(name)  # choice: Date is opaque to callbridge
    assert msg.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


def badbranch(name: str) -> None:
    msg = request(name)  # choice: parsed; the transaction layer matches it the RFC 2543 way
    assert msg.via.branch == "z9hG4bK"


def unkscm(name: str) -> None:
    msg = request(name)
    assert (msg.uri.scheme, msg.uri.opaque, msg.uri.is_sip) == ("nobodyknowsthisscheme", "totallyopaquecontent", False)


def novelsc(name: str) -> None:
    msg = request(name)
    assert (msg.uri.scheme, msg.uri.opaque) == ("soap.beep", "//192.0.2.103:3002")


def unksm2(name: str) -> None:
    msg = request(name)
    assert (msg.to.uri.scheme, str(msg.to.uri)) == ("isbn", "isbn:2983792873")
    assert (msg.from_.uri.scheme, msg.from_.tag) == ("http", "3234233")
    assert [str(c.addr.uri) for c in msg.contacts if c.addr] == ["name:John_Smith"]


def bext01(name: str) -> None:
    msg = request(name)
    assert msg.headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert msg.headers.get_all("Proxy-Require") == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]


def invut(name: str) -> None:
    msg = request(name)
    assert msg.content_type == "application/unknownformat"
    assert msg.body == b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n'


def regaut01(name: str) -> None:
    msg = request(name)
    assert msg.authorization == [("NoOneKnowsThisScheme", {"opaque-data": "here"})]


def bcast(name: str) -> None:
    msg = response(name)
    assert [v.host for v in msg.vias] == ["192.0.2.198", "255.255.255.255"]


def zeromf(name: str) -> None:
    assert request(name).max_forwards == 0


def cparam01(name: str) -> None:
    [contact] = request(name).contacts
    assert contact.addr is not None
    assert contact.addr.params == {"unknownparam": None}  # a contact-param, not a URI param
    assert contact.addr.uri.params == {}
    assert contact.addr.uri.user == "+19725552222"


def cparam02(name: str) -> None:
    [contact] = request(name).contacts
    assert contact.addr is not None
    assert contact.addr.params == {}
    assert contact.addr.uri.params == {"unknownparam": None}


def regescrt(name: str) -> None:
    [contact] = request(name).contacts
    assert contact.addr is not None
    assert contact.addr.uri.headers == {"Route": "<sip:sip.example.com>"}
    assert str(contact.addr.uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def sdp01(name: str) -> None:
    msg = request(name)
    assert msg.headers.get_all("Accept") == ["text/nobodyKnowsThis"]
    assert msg.content_type == "application/sdp"


def inv2543(name: str) -> None:
    msg = request(name)
    assert msg.max_forwards is None
    assert msg.via.branch is None and msg.via.host == "iftgw.example.com"
    assert msg.from_.tag is None
    assert msg.from_.uri.params == {"user": "phone"}
    assert msg.record_routes[0].uri.params == {"maddr": "ss1.example.com"}
    assert len(msg.body) == 105  # no Content-Length on UDP: the body is the rest of the datagram


CHECKS: dict[str, Callable[[str], None]] = {
    "wsinv": wsinv,
    "intmeth": intmeth,
    "esc01": esc01,
    "escnull": escnull,
    "esc02": esc02,
    "lwsdisp": lwsdisp,
    "longreq": longreq,
    "dblreq": dblreq,
    "semiuri": semiuri,
    "transports": transports,
    "mpart01": mpart01,
    "unreason": unreason,
    "noreason": noreason,
    "badinv01": rejected(400),
    "clerr": rejected(400),
    "ncl": rejected(400),
    "scalar02": rejected(400),
    "scalarlg": rejected(None),
    "quotbal": rejected(400),
    "ltgtruri": rejected(400),
    "lwsruri": rejected(400),
    "lwsstart": rejected(400),  # choice: 400
    "trws": trws,
    "escruri": rejected(400),  # choice: 400
    "baddate": baddate,
    "regbadct": rejected(400),  # choice: 400
    "badaspec": rejected(400),  # choice: 400
    "baddn": rejected(400),
    "badvers": rejected(505),
    "mismatch01": rejected(400),
    "mismatch02": rejected(501),  # choice: 501
    "bigcode": rejected(None),
    "badbranch": badbranch,
    "insuf": rejected(400),
    "unkscm": unkscm,
    "novelsc": novelsc,
    "unksm2": unksm2,
    "bext01": bext01,
    "invut": invut,
    "regaut01": regaut01,
    "multi01": rejected(400),
    "mcl01": rejected(None),
    "bcast": bcast,
    "zeromf": zeromf,
    "cparam01": cparam01,
    "cparam02": cparam02,
    "regescrt": regescrt,
    "sdp01": sdp01,
    "inv2543": inv2543,
    "test": rejected(400),
}

PARSING_CLASSES = {"valid", "application", "transaction", "backward-compat"}
# Rows of those classes whose expected.tsv text itself says to reject at parse time.
REJECTED_DESPITE_CLASS = {"insuf", "multi01", "mcl01"}


def test_corpus_is_complete() -> None:
    files = {path.stem for path in (CORPUS / "rfc4475").glob("*.dat")}
    assert len(ROWS) == 50
    assert {row["file"] for row in ROWS} == files


@pytest.mark.parametrize("row", ROWS, ids=[row["file"] for row in ROWS])
def test_torture_message(row: dict[str, str]) -> None:
    name = row["file"]
    check = CHECKS.get(name)
    assert check is not None, f"no assertion for torture row {name!r}"
    rejects = hasattr(check, "status")
    if row["class"] == "invalid":
        assert rejects or name in {"trws", "baddate"}, f"{name} is invalid but parses without a documented choice"
    elif row["class"] in PARSING_CLASSES:
        assert rejects == (name in REJECTED_DESPITE_CLASS), name
    check(name)


@pytest.mark.parametrize("row", ROWS, ids=[row["file"] for row in ROWS])
def test_torture_message_parses_back_to_itself(row: dict[str, str]) -> None:
    try:
        message = parse(load(row["file"]))
    except ParseError:
        return
    assert parse(bytes(message)) == message


def test_clerr_on_a_stream_waits_for_the_missing_octets() -> None:
    data = load("clerr")
    stream = StreamParser()
    stream.feed(data)
    assert list(stream.messages()) == []  # 9999 octets announced, 154 present: wait
    head = data[: data.index(b"\r\n\r\n") + 4]
    stream.feed(b"x" * (9999 - (len(data) - len(head))))
    [message] = list(stream.messages())
    assert len(message.body) == 9999


def test_mcl01_on_a_stream_closes_it() -> None:
    stream = StreamParser()
    stream.feed(load("mcl01"))
    with pytest.raises(ParseError) as caught:
        list(stream.messages())
    assert caught.value.status is None
    assert stream.broken is caught.value
    stream.feed(load("zeromf"))
    with pytest.raises(ParseError):
        list(stream.messages())  # the stream stays broken: close the connection
