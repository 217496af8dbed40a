"""The parser: the byte table parsed, typed accessors, datagram rules, and the stream parser's framing."""

from __future__ import annotations

import pytest
from test_bytes_table import IDS, TABLE, Row

from callbridge.sip import (
    URI,
    Contact,
    CSeq,
    ParseError,
    Request,
    Response,
    StreamParser,
    parse,
    parse_uri,
)
from callbridge.sip.values import Event, Replaces, SessionExpires, SubscriptionState

INVITE = TABLE[0].wire
OK_200 = TABLE[1].wire


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_table_bytes_parse_to_the_table_message(row: Row) -> None:
    parsed = parse(row.wire)
    assert parsed == row.message
    assert type(parsed) is type(row.message)
    assert parsed.start_line == row.message.start_line
    assert parsed.headers.items() == row.message.headers.items()
    assert parsed.body == row.message.body


def test_invite_accessors() -> None:
    msg = parse(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.uri == URI("sip", "1002", host="127.0.0.1", port=5060)
    assert (msg.via.transport, msg.via.sent_by, msg.via.branch) == ("UDP", ("127.0.0.1", 5070), "z9hG4bK776asdhds")
    assert msg.via.rport == "" and msg.via.received is None
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.call_id == "a84b4c76e66710@127.0.0.1"
    assert (msg.from_.display, msg.from_.tag, str(msg.from_.uri)) == ("Customer", "1928301774", "sip:1001@127.0.0.1")
    assert (msg.to.display, msg.to.tag) == (None, None)
    assert msg.max_forwards == 70
    assert msg.content_type == "application/sdp"
    [contact] = msg.contacts
    assert contact.addr is not None and (contact.star, contact.q, contact.expires) == (False, None, None)
    assert contact.addr.uri.port == 5070
    assert msg.routes == [] and msg.record_routes == []
    assert msg.refer_to is None and msg.replaces is None and msg.event is None and msg.expires is None
    assert len(msg.body) == 143


def test_response_accessors() -> None:
    msg = parse(OK_200)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (200, "OK")
    assert [(v.transport, v.host, v.port) for v in msg.vias] == [("UDP", "127.0.0.1", 5080), ("TCP", "[::1]", 5070)]
    assert msg.via.received == "127.0.0.2" and msg.via.rport is None
    assert [str(r.uri) for r in msg.record_routes] == ["sip:127.0.0.1:5080;lr", "sip:127.0.0.1:5090;lr;transport=tcp"]
    assert msg.to.tag == "a6c85cf"
    [contact] = msg.contacts
    assert (contact.q, contact.expires) == (0.7, 3600)
    assert msg.max_forwards is None


def test_register_star_contact_and_compact_forms() -> None:
    msg = parse(TABLE[2].wire)
    assert msg.contacts == [Contact(True, None, None, None)]
    assert msg.expires == 0
    assert msg.call_id == "843817637684230@998sdasdh09"
    assert msg.headers.get("Call-ID") == msg.headers.get("i") == msg.headers.get("CALL-ID")
    assert "content-length" in msg.headers and "l" in msg.headers and "Route" not in msg.headers


def test_refer_accessors() -> None:
    msg = parse(TABLE[3].wire)
    assert msg.refer_to is not None
    assert msg.refer_to.uri.headers == {"Replaces": "abc@127.0.0.1;to-tag=7;from-tag=9"}
    assert msg.referred_by is not None and msg.referred_by.uri.user == "1002"
    assert msg.replaces == Replaces(
        "abc@127.0.0.1", "7", "9", True, {"to-tag": "7", "from-tag": "9", "early-only": None}
    )


def test_notify_accessors() -> None:
    msg = parse(TABLE[4].wire)
    assert msg.event == Event("refer", "2", {"id": "2"})
    assert msg.subscription_state == SubscriptionState("terminated", None, "noresource", None, {"reason": "noresource"})
    assert msg.content_type == "message/sipfrag"


def test_session_timer_and_diversion_accessors() -> None:
    msg = parse(TABLE[5].wire)
    assert isinstance(msg, Request)
    assert msg.uri.host == "[2001:db8::2]" and msg.uri.transport == "tcp"
    assert msg.via.host == "[2001:db8::1]" and msg.via.params == {"branch": "z9hG4bKupd1", "alias": None}
    assert msg.session_expires == SessionExpires(1800, "uac", {"refresher": "uac"})
    assert msg.min_se == 90
    assert [(d.uri.user, d.params) for d in msg.diversions] == [("1005", {"reason": "unconditional", "counter": "1"})]
    assert [h.params["index"] for h in msg.history_info] == ["1", "1.1"]
    assert msg.headers.get_all("Supported") == ["timer", "replaces"]
    assert msg.headers.get("Supported") == "timer"


def test_utf8_reason_and_binary_body() -> None:
    msg = parse(TABLE[6].wire)
    assert isinstance(msg, Response)
    assert msg.reason == "Sesión en curso"
    assert msg.body == b"\x00\xff\r\n\x00\x01"


def test_headers_are_parsed_lazily() -> None:
    msg = parse(TABLE[5].wire)
    assert "diversion" not in msg.headers.cache and "history-info" not in msg.headers.cache
    first = msg.diversions
    assert msg.diversions is first  # cached
    msg.headers.add("Diversion", "<sip:1006@127.0.0.1>")
    assert [d.uri.user for d in msg.diversions] == ["1005", "1006"]  # mutation cleared the cache


def test_malformed_lazy_header_raises_parse_error_when_read() -> None:
    msg = parse(INVITE.replace(b"Content-Type", b"Route: <sip:x;lr\r\nEvent: \r\nContent-Type"))
    with pytest.raises(ParseError) as caught:
        msg.routes  # noqa: B018
    assert caught.value.status == 400
    with pytest.raises(ParseError):
        msg.event  # noqa: B018
    # a name-addr's URI is itself structured when first read
    msg = parse(INVITE.replace(b"Content-Type", b"Route: <sip:x;;lr>\r\nContent-Type"))
    [route] = msg.routes
    with pytest.raises(ParseError):
        route.uri  # noqa: B018


def test_folded_headers_are_joined_with_one_space() -> None:
    msg = parse(INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159\r\n \t INVITE"))
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.headers.get("CSeq") == "314159 INVITE"


@pytest.mark.parametrize("fold", [b" ", b"\t", b" \t "])
def test_a_whitespace_only_fold_adds_nothing(fold: bytes) -> None:
    # Found by fuzzing (fuzz/corpus/sip-regressions/): the value kept a trailing space that the round trip lost.
    msg = parse(INVITE.replace(b"CSeq: 314159 INVITE\r\n", b"CSeq: 314159 INVITE\r\n" + fold + b"\r\n"))
    assert msg.headers.get("CSeq") == "314159 INVITE"
    assert parse(bytes(msg)) == msg


def test_datagram_body_rules() -> None:
    head, _, body = INVITE.partition(b"\r\n\r\n")
    assert parse(INVITE + b"trailing junk").body == body  # longer than Content-Length: cut
    no_length = head.replace(b"Content-Length: 143\r\n", b"").replace(b"\r\nContent-Length: 143", b"")
    assert parse(no_length + b"\r\n\r\n" + body + b"rest").body == body + b"rest"  # absent: rest of the datagram
    with pytest.raises(ParseError) as caught:
        parse(INVITE[:-1])  # shorter than Content-Length
    assert caught.value.status == 400
    assert parse(b"\r\n\r\n" + INVITE) == parse(INVITE)  # CRLFs before the start line are ignored (§7.5)


@pytest.mark.parametrize(
    ("old", "new", "status"),
    [
        (b"CSeq: 314159 INVITE", b"CSeq: 4294967295 INVITE", "ok"),
        (b"CSeq: 314159 INVITE", b"CSeq: 4294967296 INVITE", 400),
        (b"CSeq: 314159 INVITE", b"CSeq: -1 INVITE", 400),
        (b"CSeq: 314159 INVITE", b"CSeq: 1 BYE", 400),
        (b"CSeq: 314159 INVITE", b"CSeq: 314159", 400),
        (b"Max-Forwards: 70", b"Max-Forwards: 255", "ok"),
        (b"Max-Forwards: 70", b"Max-Forwards: 256", 400),
        (b"Max-Forwards: 70", b"Max-Forwards: seventy", 400),
        (b"Call-ID: a84b4c76e66710@127.0.0.1", b"Call-ID: ", 400),
        (b"Call-ID: a84b4c76e66710@127.0.0.1", b"X-Call-ID: x", 400),
        (b"Content-Length: 143", b"Content-Length: -143", 400),
        (b"Content-Length: 143", b"Content-Length: 143, 143", None),
        (b"Content-Length: 143", b"Content-Length: 143\r\nl: 143", None),
        (b"Contact: <sip:1001@127.0.0.1:5070>", b"Contact: *, <sip:1001@127.0.0.1:5070>", 400),
        (b"Contact: <sip:1001@127.0.0.1:5070>", b"Contact: <sip:1001@127.0.0.1:5070>;q=2", 400),
        (b"Contact: <sip:1001@127.0.0.1:5070>", b"Contact: <sip:1001@127.0.0.1:5070>,", 400),
        (b"From: ", b"From:  <sip:1001@127.0.0.1>;tag=1\r\nFrom: ", 400),
        (b'From: "Customer"', b'From: "Cust\\"omer"', "ok"),
        (b'From: "Customer"', b'From: "Customer', 400),
        (b"To: <sip:1002@127.0.0.1>", b"To: <sip:1002@127.0.0.1", 400),
        (b"To: <sip:1002@127.0.0.1>", b"To: sip:1002@127.0.0.1?x=y", 400),
        (b"Via: SIP/2.0/UDP 127.0.0.1:5070", b"Via: SIP/2.0 127.0.0.1:5070", 400),
        (b"Via: SIP/2.0/UDP 127.0.0.1:5070", b"Via: SIP/2.0/UDP 127.0.0.1:70000", 400),
        (b"Max-Forwards: 70", b"Max Forwards: 70", 400),
        (b"Max-Forwards: 70", b"Max-Forwards 70", 400),
        (b"INVITE sip:1002@127.0.0.1:5060 SIP/2.0", b"INVITE sip:1002@127.0.0.1:5060 SIP/2.1", 505),
        (b"INVITE sip:1002@127.0.0.1:5060 SIP/2.0", b"INVITE sip:1002@127.0.0.1:5060 HTTP/1.1", 400),
        (b"INVITE sip:1002@127.0.0.1:5060 SIP/2.0", b"INV<TE sip:1002@127.0.0.1:5060 SIP/2.0", 400),
        (b"INVITE sip:1002@127.0.0.1:5060 SIP/2.0", b"INVITE sip:1002@127.0.0.1:99999 SIP/2.0", 400),
        (b"INVITE sip:1002@127.0.0.1:5060 SIP/2.0", b"INVITE sip:1002@127.0.0.1 SIP/2.0", "ok"),
    ],
)
def test_request_rules(old: bytes, new: bytes, status: int | str | None) -> None:
    assert old in INVITE
    data = INVITE.replace(old, new, 1)
    if status == "ok":
        parse(data)
        return
    with pytest.raises(ParseError) as caught:
        parse(data)
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"SIP/2.0 200 OK", b"SIP/2.0 099 Low"),
        (b"SIP/2.0 200 OK", b"SIP/2.0 700 High"),
        (b"SIP/2.0 200 OK", b"SIP/2.0 2000 OK"),
        (b"SIP/2.0 200 OK", b"SIP/3.0 200 OK"),
        (b"CSeq: 314159 INVITE", b"CSeq: x INVITE"),
        (b"Call-ID: a84b4c76e66710@127.0.0.1\r\n", b""),
        (b"Content-Length: 0", b"Content-Length: 10"),
    ],
)
def test_malformed_responses_are_dropped(old: bytes, new: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse(OK_200.replace(old, new, 1))
    assert caught.value.status is None


@pytest.mark.parametrize(
    "data", [b"", b"\r\n\r\n", b"garbage", b"SIP/2.0", b"INVITE\r\n\r\n", b" Via: x\r\n\r\n", b"\xff\xfe\r\n\r\n"]
)
def test_garbage_raises_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse(data)


def test_request_uri_is_structured_when_read() -> None:
    msg = parse(INVITE.replace(b"sip:1002@127.0.0.1:5060", b"sip:1002@127.0.0.1:5060;transport=udp", 1))
    assert isinstance(msg, Request)
    assert msg.uri_text == "sip:1002@127.0.0.1:5060;transport=udp"
    assert msg.uri == parse_uri("sip:1002@127.0.0.1:5060;transport=UDP")
    msg.uri = parse_uri("sip:1003@127.0.0.1")
    assert msg.start_line == "INVITE sip:1003@127.0.0.1 SIP/2.0"


# -- stream parser ---------------------------------------------------------------------------------------------


def test_stream_frames_back_to_back_messages_fed_byte_by_byte() -> None:
    stream = StreamParser()
    data = b"\r\n\r\n" + INVITE + OK_200 + b"\r\n" + TABLE[4].wire
    got = []
    for index in range(len(data)):
        stream.feed(data[index : index + 1])
        got.extend(stream.messages())
    assert got == [TABLE[0].message, TABLE[1].message, TABLE[4].message]


def test_stream_keeps_a_partial_message_until_complete() -> None:
    stream = StreamParser()
    stream.feed(INVITE + OK_200[:50])
    assert list(stream.messages()) == [TABLE[0].message]
    stream.feed(OK_200[50:])
    assert list(stream.messages()) == [TABLE[1].message]
    assert list(stream.messages()) == []


def test_stream_invalid_but_framed_message_is_consumed_and_the_stream_goes_on() -> None:
    stream = StreamParser()
    stream.feed(INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE") + OK_200)
    with pytest.raises(ParseError) as caught:
        list(stream.messages())
    assert caught.value.status == 400 and stream.broken is None
    assert list(stream.messages()) == [TABLE[1].message]


@pytest.mark.parametrize(
    "data",
    [
        INVITE.replace(b"Content-Length: 143\r\n", b""),  # mandatory on a stream (§18.3)
        INVITE.replace(b"Content-Length: 143", b"Content-Length: -1"),
        INVITE.replace(b"Content-Length: 143", b"Content-Length: 143\r\nContent-Length: 143"),
        b"INVITE sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n",
        INVITE.replace(b"Content-Length: 143", b"Content-Length: 2000000"),
    ],
)
def test_stream_framing_errors_break_the_stream(data: bytes) -> None:
    stream = StreamParser()
    stream.feed(data)
    with pytest.raises(ParseError) as caught:
        list(stream.messages())
    assert stream.broken is caught.value and caught.value.status is None
    stream.feed(OK_200)
    with pytest.raises(ParseError):
        stream.next_message()


def test_stream_head_without_end_is_bounded() -> None:
    stream = StreamParser(max_head=1024)
    stream.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: " + b"y" * 2000)
    with pytest.raises(ParseError):
        stream.next_message()
    assert stream.broken is not None


@pytest.mark.parametrize("junk", [b"\n", b"\r", b"\n\r"])
def test_bare_cr_or_lf_in_the_head_is_refused(junk: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse(INVITE.replace(b"Call-ID: a84b", b"Call-ID: a" + junk + b"84b"))
    assert caught.value.status == 400
    assert parse(INVITE.replace(b"a=sendrecv", b"a=send\nrec")).body.endswith(b"a=send\nrec\r\n")  # body: any octets


def test_stream_body_in_many_segments() -> None:
    stream = StreamParser()
    head, _, body = INVITE.partition(b"\r\n\r\n")
    stream.feed(head + b"\r\n\r\n")
    for octet in body[:-1]:
        stream.feed(bytes([octet]))
        assert stream.next_message() is None
    stream.feed(body[-1:])
    assert stream.next_message() == TABLE[0].message
    assert stream.next_message() is None


def test_input_that_is_not_bytes_still_raises_only_parse_error() -> None:
    for data in ("INVITE sip:a@b SIP/2.0\r\n\r\n", None, 42):
        with pytest.raises(ParseError):
            parse(data)  # type: ignore[arg-type]
    assert parse(bytearray(INVITE)) == parse(memoryview(INVITE))  # type: ignore[arg-type]
