"""The header multi-map and the structured header values."""

from __future__ import annotations

import pytest

from callbridge.sip import Headers, NameAddr, ParseError, Via, parse
from callbridge.sip.addr import parse_contact, parse_cseq, parse_name_addr, parse_via, split_commas
from callbridge.sip.headers import header_key
from callbridge.sip.values import parse_event, parse_replaces, parse_session_expires, parse_subscription_state

COMPACT = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "x": "session-expires",
    "u": "allow-events",
    "b": "referred-by",
}


@pytest.mark.parametrize(("short", "long"), COMPACT.items())
def test_compact_forms(short: str, long: str) -> None:
    assert header_key(short) == header_key(short.upper()) == long
    headers = Headers([(short.upper(), "value")])
    assert headers.get(long.title()) == "value" and long in headers


def test_lookup_is_case_insensitive_and_keeps_order_and_names() -> None:
    headers = Headers([("VIA", "a"), ("Call-ID", "x"), ("v", "b"), ("via", "c, d")])
    assert headers.get("via") == "a"
    assert headers.get_all("Via") == ["a", "b", "c", "d"]
    assert headers.get_lines("V") == ["a", "b", "c, d"]
    assert list(headers) == [("VIA", "a"), ("Call-ID", "x"), ("v", "b"), ("via", "c, d")]
    assert headers.get("Route") is None and headers.get("Route", "none") == "none"
    assert headers.get_all("Route") == []
    assert len(headers) == 4 and 3 not in headers  # type: ignore[operator]


def test_splitting_respects_quotes_and_angle_brackets() -> None:
    value = '"Doe, John" <sip:a@b;x=",">;q=0.5, <sip:c@d?h=1,2>, sip:e@f'
    assert split_commas(value) == ['"Doe, John" <sip:a@b;x=",">;q=0.5', "<sip:c@d?h=1,2>", "sip:e@f"]
    assert split_commas('"a \\", b" <sip:x@y>, <sip:z@w>') == ['"a \\", b" <sip:x@y>', "<sip:z@w>"]
    assert split_commas("a,,b") == ["a", "", "b"]
    headers = Headers([("Contact", value), ("Allow", "INVITE,ACK , BYE")])
    assert len(headers.get_all("Contact")) == 3
    assert headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WWW-Authenticate", 'Digest realm="a, b", nonce="1", algorithm=MD5'),
        ("Authorization", 'Digest username="1001", realm="x", uri="sip:a@b", response="0"'),
        ("Proxy-Authenticate", 'Digest realm="r", qop="auth,auth-int"'),
        ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
        ("X-Unknown", "a, b, c"),
        ("Subject", "hello, world"),
    ],
)
def test_values_that_are_not_lists_are_never_split(name: str, value: str) -> None:
    headers = Headers([(name, value)])
    assert headers.get(name) == value
    assert headers.get_all(name) == [value]


def test_mutations() -> None:
    headers = Headers([("Via", "a"), ("To", "t"), ("Via", "b, c")])
    headers.prepend("v", "top")
    assert headers.get_all("Via") == ["top", "a", "b", "c"]
    headers.remove_first("Via")
    headers.remove_first("Via")
    assert headers.get_all("Via") == ["b", "c"]
    headers.remove_first("Via")
    assert headers.items() == [("To", "t"), ("Via", "c")]
    headers.set("to", "  new  ")
    headers.set("Max-Forwards", "70")
    assert headers.items() == [("to", "new"), ("Via", "c"), ("Max-Forwards", "70")]
    headers.add("Route", "<sip:r>")
    headers.remove("ROUTE")
    assert "Route" not in headers
    copy = headers.copy()
    copy.add("X", "1")
    assert "X" not in headers and copy != headers
    assert Headers([("t", "x")]) == Headers([("To", "x")])


def test_accessors_follow_mutations() -> None:
    msg = parse(
        b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nTo: <sip:a@127.0.0.1>\r\n"
        b"From: <sip:b@127.0.0.1>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    assert msg.via.branch == "z9hG4bK1" and msg.to.tag is None and msg.cseq.number == 1
    msg.headers.prepend("Via", "SIP/2.0/TCP 127.0.0.2;branch=z9hG4bK2")
    msg.headers.set("To", "<sip:a@127.0.0.1>;tag=9")
    msg.headers.set("CSeq", "2 OPTIONS")
    assert msg.via.branch == "z9hG4bK2" and len(msg.vias) == 2
    assert msg.to.tag == "9" and msg.cseq.number == 2
    msg.headers.remove("Call-ID")
    with pytest.raises(ParseError):
        msg.call_id  # noqa: B018


# -- structured values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        ('"Alice" <sip:alice@atlanta.com>;tag=1928301774', "Alice", "sip:alice@atlanta.com", {"tag": "1928301774"}),
        ("Bob Smith <sip:bob@biloxi.com>", "Bob Smith", "sip:bob@biloxi.com", {}),
        ("<sip:bob@biloxi.com;transport=tcp>;expires=60", None, "sip:bob@biloxi.com;transport=tcp", {"expires": "60"}),
        ("sip:bob@biloxi.com;tag=x", None, "sip:bob@biloxi.com", {"tag": "x"}),
        ('"" <sip:x@y>', "", "sip:x@y", {}),
        ('"a\\\\b\\"c"<sip:x@y>', 'a\\b"c', "sip:x@y", {}),
        ('<sip:x@y> ; Tag = "q;v" ; LR', None, "sip:x@y", {"tag": '"q;v"', "lr": None}),
        ("tel:+123;tag=1", None, "tel:+123", {"tag": "1"}),
    ],
)
def test_name_addr(text: str, display: str | None, uri: str, params: dict[str, str | None]) -> None:
    addr = parse_name_addr(text)
    assert (addr.display, str(addr.uri), addr.params) == (display, uri, params)
    assert parse_name_addr(str(addr)) == addr


@pytest.mark.parametrize(
    "text",
    [
        '"open <sip:x@y>',
        "Bell, Alexander <sip:x@y>",
        "<sip:x@y",
        "< sip:x@y >",
        "<>",
        "",
        "<sip:x@y>;",
        "sip:x@y?a=b",
        '"a" sip:x@y',
        "<sip:x@y>junk",
        "<sip:x@y>;=1",
        "<sip:x@y>;a=",
    ],
)
def test_bad_name_addr(text: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_name_addr(text)
    assert caught.value.status == 400


def test_name_addr_serialises_canonically() -> None:
    addr = NameAddr("sip:1001@127.0.0.1", 'Agent "1"', {"tag": "abc"})
    assert str(addr) == '"Agent \\"1\\"" <sip:1001@127.0.0.1>;tag=abc'
    assert str(addr.with_tag("xyz")) == '"Agent \\"1\\"" <sip:1001@127.0.0.1>;tag=xyz'
    assert addr.tag == "abc"


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport", ("UDP", "127.0.0.1", 5060, "z9hG4bK1", "", None)),
        ("SIP/2.0/UDP 127.0.0.1;rport=5070;received=10.0.0.1", ("UDP", "127.0.0.1", None, None, "5070", "10.0.0.1")),
        ("SIP/2.0/tcp [::1]:5061;branch=z9hG4bK2", ("TCP", "[::1]", 5061, "z9hG4bK2", None, None)),
        ("SIP / 2.0 / WS  host.example.com : 80 ; branch = b", ("WS", "host.example.com", 80, "b", None, None)),
    ],
)
def test_via(text: str, fields: tuple[object, ...]) -> None:
    via = parse_via(text)
    assert (via.transport, via.host, via.port, via.branch, via.rport, via.received) == fields
    assert via.sent_by == (fields[1], fields[2])
    assert parse_via(str(via)) == via


def test_via_serialises() -> None:
    via = Via("UDP", "127.0.0.1", 5060, {"branch": "z9hG4bKabc", "rport": None})
    assert str(via) == "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport"


@pytest.mark.parametrize(
    "text", ["SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host:port", "SIP/2.0/UDP host;;", "SIP/2.0/U<P host", ""]
)
def test_bad_via(text: str) -> None:
    with pytest.raises(ParseError):
        parse_via(text)


def test_contact_values() -> None:
    star = parse_contact("*")
    assert (star.star, star.addr, str(star)) == (True, None, "*")
    contact = parse_contact("<sip:a@b>;q=0.5;expires=99999999999999")
    assert (contact.q, contact.expires) == (0.5, 2**32 - 1)  # §20.19: above 2**32-1 means 2**32-1
    for bad in ("<sip:a@b>;q=1.5", "<sip:a@b>;q=x", "<sip:a@b>;expires=-1"):
        with pytest.raises(ParseError):
            parse_contact(bad)


def test_cseq() -> None:
    assert parse_cseq("0009 INVITE") == (9, "INVITE")
    assert str(parse_cseq("1 ACK")) == "1 ACK"
    for bad in ("INVITE", "1", "1 INVITE x", "x INVITE", "99999999999999999999999 INVITE", "1 INV<ITE"):
        with pytest.raises(ParseError):
            parse_cseq(bad)


def test_extension_values() -> None:
    assert parse_replaces("abc@h;from-tag=9;to-tag=7") == ("abc@h", "7", "9", False, {"from-tag": "9", "to-tag": "7"})
    with pytest.raises(ParseError):
        parse_replaces("abc@h;to-tag=7")
    assert parse_event('Presence;id="a b"')[:2] == ("presence", "a b")
    state = parse_subscription_state("active;expires=600")
    assert (state.state, state.expires, state.reason, state.retry_after) == ("active", 600, None, None)
    state = parse_subscription_state("terminated;reason=probation;retry-after=30")
    assert (state.reason, state.retry_after) == ("probation", 30)
    assert parse_session_expires("90").delta == 90 and parse_session_expires("90").refresher is None
    assert parse_session_expires("1800 ; refresher=UAS").refresher == "uas"
    for bad in ("", "x;refresher=uac"):
        with pytest.raises(ParseError):
            parse_session_expires(bad)


def test_authentication_accessors_delegate_to_auth() -> None:
    msg = parse(
        b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nTo: <sip:a@127.0.0.1>;tag=2\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n"
        b'WWW-Authenticate: Digest realm="callbridge", nonce="abc", algorithm=SHA-256, qop="auth"\r\n'
        b'WWW-Authenticate: Digest realm="callbridge", nonce="abc", algorithm=MD5, qop="auth"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    challenges = msg.www_authenticate
    assert [(scheme.lower(), params["algorithm"]) for scheme, params in challenges] == [
        ("digest", "SHA-256"),
        ("digest", "MD5"),
    ]
    assert challenges[0][1]["realm"] == "callbridge"
    assert msg.proxy_authenticate == [] and msg.authorization == [] and msg.proxy_authorization == []


@pytest.mark.parametrize(
    ("name", "value"),
    [("X", "a\r\nInjected: 1"), ("X", "a\nb"), ("X", "a\rb"), ("Bad Name", "v"), ("X:Y", "v"), ("", "v")],
)
def test_fields_that_would_break_the_framing_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        Headers([(name, value)])
    headers = Headers()
    for mutate in (headers.add, headers.set, headers.prepend):
        with pytest.raises(ValueError):
            mutate(name, value)
    assert len(headers) == 0
