"""URIs: parsing, serialisation and the comparison rules of RFC 3261 §19.1.4."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.sip import URI, ParseError, parse_uri
from callbridge.sip.uri import is_simple_sip_uri

# §19.1.4: "The URIs within each of the following sets are equivalent"
EQUAL = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
    ("sip:alice@atlanta.com;transport=UDP", "sip:alice@atlanta.com;transport=udp"),
    ("sips:bob@[2001:db8::1]:5061", "sips:bob@[2001:DB8::1]:5061"),
]

# §19.1.4: "The URIs within each of the following sets are not equivalent"
NOT_EQUAL = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # different usernames
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # can resolve to different ports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),  # can resolve to different transports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),  # different port and transport
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),  # different header component
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # even though that's what it resolves to
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),  # intransitivity
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:alice@atlanta.com;maddr=10.0.0.1", "sip:alice@atlanta.com"),
    ("sip:alice@atlanta.com;user=phone", "sip:alice@atlanta.com"),
    ("sip:alice:secret@atlanta.com", "sip:alice@atlanta.com"),
]


@pytest.mark.parametrize(("left", "right"), EQUAL)
def test_equal_uris(left: str, right: str) -> None:
    a, b = parse_uri(left), parse_uri(right)
    assert a == b and b == a
    assert hash(a) == hash(b)


@pytest.mark.parametrize(("left", "right"), NOT_EQUAL)
def test_unequal_uris(left: str, right: str) -> None:
    a, b = parse_uri(left), parse_uri(right)
    assert a != b and b != a


def test_sip_uri_fields() -> None:
    uri = parse_uri("sips:alice:pa%3Ass@atlanta.com:5061;transport=tls;lr;maddr=10.0.0.1?subject=hi%20there&x=1")
    assert uri.scheme == "sips"
    assert (uri.user, uri.password) == ("alice", "pa:ss")
    assert (uri.host, uri.port) == ("atlanta.com", 5061)
    assert uri.params == {"transport": "tls", "lr": None, "maddr": "10.0.0.1"}
    assert uri.transport == "tls"
    assert uri.headers == {"subject": "hi there", "x": "1"}
    assert str(uri) == "sips:alice:pa%3Ass@atlanta.com:5061;transport=tls;lr;maddr=10.0.0.1?subject=hi%20there&x=1"


def test_ipv6_reference_keeps_its_brackets() -> None:
    uri = parse_uri("sip:[::1]:5070;transport=udp")
    assert (uri.user, uri.host, uri.port) == (None, "[::1]", 5070)
    assert str(uri) == "sip:[::1]:5070;transport=udp"


def test_escapes_are_decoded_and_reencoded_where_needed() -> None:
    uri = parse_uri("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u@example.net"
    assert str(uri) == "sip:user;par=u%40example.net@example.com"
    assert str(parse_uri("sip:%75se%72@example.com")) == "sip:user@example.com"
    assert parse_uri("sip:null-%00-null@example.com").user == "null-\x00-null"


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (uri.scheme, uri.user, uri.host) == ("tel", "+1-201-555-0123", "")
    assert uri.params == {"phone-context": "example.com"}
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"
    assert uri == parse_uri("tel:+1.201.555.0123;phone-context=example.com")  # RFC 3966 visual separators
    assert uri != parse_uri("tel:+1-201-555-0124;phone-context=example.com")


def test_unknown_schemes_are_opaque() -> None:
    uri = parse_uri("soap.beep://192.0.2.103:3002")
    assert (uri.scheme, uri.opaque, uri.is_sip) == ("soap.beep", "//192.0.2.103:3002", False)
    assert str(uri) == "soap.beep://192.0.2.103:3002"
    assert uri == parse_uri("SOAP.BEEP://192.0.2.103:3002")
    assert uri != parse_uri("soap.beep://192.0.2.103:3003")


def test_constructed_uri_serialises() -> None:
    uri = URI("sip", "1001", host="127.0.0.1", port=5060, params={"transport": "udp"})
    assert str(uri) == "sip:1001@127.0.0.1:5060;transport=udp"
    assert parse_uri(str(uri)) == uri
    moved = uri.copy(port=5070)
    assert str(moved) == "sip:1001@127.0.0.1:5070;transport=udp" and str(uri).endswith(":5060;transport=udp")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "<sip:user@example.com>",
        "sip:user@example.com lr",
        "sip:@example.com",
        "sip:user@",
        "sip:user@exa mple.com",
        "sip:user@host:99999",
        "sip:user@host:5o60",
        "sip:user@[::1",
        "sip:user@[::1]x",
        "sip:host;;lr",
        "sip:host?novalue",
        "1sip:host",
        "tel:",
        'sip:a"b@host',
    ],
)
def test_malformed_uris(text: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_uri(text)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("text", "simple"),
    [
        ("sip:1002@127.0.0.1:5060", True),
        ("sip:b;lr;transport=udp", True),
        ("sips:alice:pw@example.com:65535", True),
        ("sip:a@b:65536", False),
        ("sip:a@b?x=y", False),
        ("sip:user;par=u%40example.net@example.com", False),
        ("sip:x@[::1]", False),
        ("sip:b;;lr", False),
        ("SIP:a@b", False),
    ],
)
def test_simple_sip_uri_shape_is_within_what_parses(text: str, simple: bool) -> None:
    assert is_simple_sip_uri(text) is simple
    if simple:
        parse_uri(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="sip:@;=?&%[]/.-_!~*'()+$,0123456789abAB \t<>\"", min_size=4, max_size=40))
def test_every_simple_sip_uri_parses(tail: str) -> None:
    # The parser defers the plain Request-URI shape to first read: that shape must never fail to parse.
    for text in (tail, "sip:" + tail, "sips:a@" + tail):
        if is_simple_sip_uri(text):
            assert parse_uri(text).scheme in ("sip", "sips")
        else:
            try:
                parse_uri(text)
            except ParseError as error:
                assert error.status == 400
