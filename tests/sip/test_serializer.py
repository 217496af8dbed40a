"""The serialiser: the byte table serialised, Content-Length always right, canonical forms, make_response."""

from __future__ import annotations

import pytest
from test_bytes_table import IDS, TABLE, Row

from callbridge.sip import Headers, Request, Response, make_response, parse

INVITE = TABLE[0].wire


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_table_message_serialises_to_the_table_bytes(row: Row) -> None:
    assert bytes(row.message) == row.wire
    assert row.message.to_bytes() == row.wire


def test_content_length_is_recomputed_in_place() -> None:
    msg = parse(INVITE)
    msg.body = b"v=0\r\n"
    out = bytes(msg)
    assert b"Content-Length: 5\r\nContent-Type" not in out  # stays where it was: after Content-Type
    assert out.endswith(b"Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n")
    assert parse(out).body == b"v=0\r\n"


def test_content_length_is_added_when_absent_and_deduplicated() -> None:
    built = Request("OPTIONS", "sip:127.0.0.1", Headers([("Call-ID", "x"), ("l", "99"), ("Content-Length", "7")]))
    assert bytes(built) == b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nCall-ID: x\r\nl: 0\r\n\r\n"
    bare = Response(486, headers=Headers([("Call-ID", "x")]), body=b"busy")
    assert bytes(bare) == b"SIP/2.0 486 Busy Here\r\nCall-ID: x\r\nContent-Length: 4\r\n\r\nbusy"


# (as received, canonical bytes): what the serialiser normalises, and that both parse to the same message.
NON_CANONICAL = [
    (
        b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n"
        b"Via  :   SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1  \r\n"
        b"To:\r\n <sip:a@127.0.0.1>\r\n"
        b"From: <sip:b@127.0.0.1>\r\n  ;tag=1\r\n"
        b"Call-ID:x\r\n"
        b"CSeq: 1\r\n\tOPTIONS\r\n"
        b"\r\n",
        b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        b"To: <sip:a@127.0.0.1>\r\n"
        b"From: <sip:b@127.0.0.1> ;tag=1\r\n"
        b"Call-ID: x\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n",
    ),
    (
        b"OPTIONS sip:a@127.0.0.1 SIP/2.0   \r\n"
        b"v: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        b"t: <sip:a@127.0.0.1>\r\n"
        b"f: <sip:b@127.0.0.1>;tag=1\r\n"
        b"i: x\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"l: 3\r\n"
        b"\r\n"
        b"abcdef",
        b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        b"t: <sip:a@127.0.0.1>\r\n"
        b"f: <sip:b@127.0.0.1>;tag=1\r\n"
        b"i: x\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"l: 3\r\n"
        b"\r\n"
        b"abc",
    ),
]


@pytest.mark.parametrize(("received", "canonical"), NON_CANONICAL)
def test_non_canonical_input_serialises_canonically(received: bytes, canonical: bytes) -> None:
    msg = parse(received)
    assert bytes(msg) == canonical
    assert parse(canonical) == msg
    assert bytes(parse(canonical)) == canonical


def test_octets_that_are_not_utf8_survive() -> None:
    data = INVITE.replace(b"Customer", b"Cust\xe9mer\xff")
    msg = parse(data)
    assert bytes(msg) == data


def test_equality_ignores_content_length_and_compact_names() -> None:
    long_form = parse(TABLE[2].wire)
    compact = TABLE[2].wire
    for short, full in [
        (b"v:", b"Via:"),
        (b"t:", b"To:"),
        (b"f:", b"From:"),
        (b"i:", b"Call-ID:"),
        (b"m:", b"Contact:"),
    ]:
        compact = compact.replace(b"\r\n" + short, b"\r\n" + full)
    assert parse(compact.replace(b"l: 0\r\n", b"")) == long_form
    assert parse(compact.replace(b"Expires: 0", b"Expires: 1")) != long_form
    assert parse(TABLE[0].wire) != parse(TABLE[0].wire.replace(b"a=sendrecv", b"a=sendonly"))


def test_header_mutation_serialises() -> None:
    msg = parse(TABLE[1].wire)
    msg.headers.remove_first("Via")
    msg.headers.set("Contact", "<sip:1002@127.0.0.1:5064>")
    msg.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKtop")
    msg.headers.remove("Record-Route")
    out = bytes(msg)
    assert out.startswith(
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKtop\r\n"
        b"Via: SIP/2.0/TCP [::1]:5070;branch=z9hG4bK776asdhds\r\n"
        b"To: "
    )
    assert b"Record-Route" not in out and b"Contact: <sip:1002@127.0.0.1:5064>\r\n" in out
    assert [v.host for v in parse(out).vias] == ["127.0.0.9", "[::1]"]


# -- make_response (§8.2.6) ------------------------------------------------------------------------------------


def test_make_response_copies_the_request_headers_and_adds_the_to_tag() -> None:
    request = parse(TABLE[0].wire.replace(b"Max-Forwards: 70", b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK2"))
    assert isinstance(request, Request)
    response = make_response(request, 180, to_tag="as83kd9")
    assert bytes(response) == (
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK2\r\n"
        b"To: <sip:1002@127.0.0.1>;tag=as83kd9\r\n"
        b'From: "Customer" <sip:1001@127.0.0.1>;tag=1928301774\r\n'
        b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    assert response.to.tag == "as83kd9"


def test_make_response_keeps_an_existing_to_tag_and_a_custom_reason() -> None:
    request = parse(TABLE[3].wire)
    assert isinstance(request, Request)
    response = make_response(request, 202, to_tag="other")
    assert response.to.tag == "1928301774"
    assert response.reason == "Accepted"
    assert make_response(request, 480, "Agent Away").start_line == "SIP/2.0 480 Agent Away"
    assert make_response(request, 299).reason == ""
    assert parse(bytes(response)) == response


def test_start_line_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError):
        bytes(Response(200, "OK\r\nInjected: 1"))
    with pytest.raises(ValueError):
        bytes(Request("OPTIONS", "sip:a@b\r\nX: 1"))
