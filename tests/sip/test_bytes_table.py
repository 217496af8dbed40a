"""The byte table: (message built with the API, its exact bytes). It drives both the parser tests
(``test_parser.py``: the bytes parse to the message) and the serialiser tests (``test_serializer.py``: the message
serialises to the bytes). Every row is in canonical form, so it also round-trips byte for byte.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from callbridge.sip import Headers, Message, Request, Response, parse

SDP = (
    b"v=0\r\n"
    b"o=- 20518 0 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=sendrecv\r\n"
)


class Row(NamedTuple):
    name: str
    message: Message
    wire: bytes


def _h(*pairs: tuple[str, str]) -> Headers:
    return Headers(list(pairs))


TABLE: list[Row] = [
    Row(
        "invite-with-sdp",
        Request(
            "INVITE",
            "sip:1002@127.0.0.1:5060",
            _h(
                ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport"),
                ("Max-Forwards", "70"),
                ("To", "<sip:1002@127.0.0.1>"),
                ("From", '"Customer" <sip:1001@127.0.0.1>;tag=1928301774'),
                ("Call-ID", "a84b4c76e66710@127.0.0.1"),
                ("CSeq", "314159 INVITE"),
                ("Contact", "<sip:1001@127.0.0.1:5070>"),
                ("Content-Type", "application/sdp"),
                ("Content-Length", "143"),
            ),
            SDP,
        ),
        b"INVITE sip:1002@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b"To: <sip:1002@127.0.0.1>\r\n"
        b'From: "Customer" <sip:1001@127.0.0.1>;tag=1928301774\r\n'
        b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Contact: <sip:1001@127.0.0.1:5070>\r\n"
        b"Content-Type: application/sdp\r\n"
        b"Content-Length: 143\r\n"
        b"\r\n" + SDP,
    ),
    Row(
        "200-ok-two-vias-record-route",
        Response(
            200,
            "OK",
            _h(
                ("Via", "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKnashds8;received=127.0.0.2"),
                ("Via", "SIP/2.0/TCP [::1]:5070;branch=z9hG4bK776asdhds"),
                ("Record-Route", "<sip:127.0.0.1:5080;lr>, <sip:127.0.0.1:5090;lr;transport=tcp>"),
                ("To", "<sip:1002@127.0.0.1>;tag=a6c85cf"),
                ("From", '"Customer" <sip:1001@127.0.0.1>;tag=1928301774'),
                ("Call-ID", "a84b4c76e66710@127.0.0.1"),
                ("CSeq", "314159 INVITE"),
                ("Contact", "<sip:1002@127.0.0.1:5062>;expires=3600;q=0.7"),
                ("Content-Length", "0"),
            ),
        ),
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKnashds8;received=127.0.0.2\r\n"
        b"Via: SIP/2.0/TCP [::1]:5070;branch=z9hG4bK776asdhds\r\n"
        b"Record-Route: <sip:127.0.0.1:5080;lr>, <sip:127.0.0.1:5090;lr;transport=tcp>\r\n"
        b"To: <sip:1002@127.0.0.1>;tag=a6c85cf\r\n"
        b'From: "Customer" <sip:1001@127.0.0.1>;tag=1928301774\r\n'
        b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Contact: <sip:1002@127.0.0.1:5062>;expires=3600;q=0.7\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n",
    ),
    Row(
        "register-compact-forms-star-contact",
        Request(
            "REGISTER",
            "sip:127.0.0.1",
            _h(
                ("v", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKreg1"),
                ("Max-Forwards", "70"),
                ("t", "<sip:1002@127.0.0.1>"),
                ("f", "<sip:1002@127.0.0.1>;tag=456248"),
                ("i", "843817637684230@998sdasdh09"),
                ("CSeq", "1826 REGISTER"),
                ("m", "*"),
                ("Expires", "0"),
                ("l", "0"),
            ),
        ),
        b"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKreg1\r\n"
        b"Max-Forwards: 70\r\n"
        b"t: <sip:1002@127.0.0.1>\r\n"
        b"f: <sip:1002@127.0.0.1>;tag=456248\r\n"
        b"i: 843817637684230@998sdasdh09\r\n"
        b"CSeq: 1826 REGISTER\r\n"
        b"m: *\r\n"
        b"Expires: 0\r\n"
        b"l: 0\r\n"
        b"\r\n",
    ),
    Row(
        "refer-with-replaces",
        Request(
            "REFER",
            "sip:1001@127.0.0.1:5070",
            _h(
                ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKrefer1"),
                ("Max-Forwards", "70"),
                ("To", "<sip:1001@127.0.0.1>;tag=1928301774"),
                ("From", "<sip:1002@127.0.0.1>;tag=a6c85cf"),
                ("Call-ID", "a84b4c76e66710@127.0.0.1"),
                ("CSeq", "2 REFER"),
                ("Refer-To", "<sip:1003@127.0.0.1?Replaces=abc%40127.0.0.1%3Bto-tag%3D7%3Bfrom-tag%3D9>"),
                ("Referred-By", "<sip:1002@127.0.0.1>"),
                ("Replaces", "abc@127.0.0.1;to-tag=7;from-tag=9;early-only"),
                ("Content-Length", "0"),
            ),
        ),
        b"REFER sip:1001@127.0.0.1:5070 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKrefer1\r\n"
        b"Max-Forwards: 70\r\n"
        b"To: <sip:1001@127.0.0.1>;tag=1928301774\r\n"
        b"From: <sip:1002@127.0.0.1>;tag=a6c85cf\r\n"
        b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
        b"CSeq: 2 REFER\r\n"
        b"Refer-To: <sip:1003@127.0.0.1?Replaces=abc%40127.0.0.1%3Bto-tag%3D7%3Bfrom-tag%3D9>\r\n"
        b"Referred-By: <sip:1002@127.0.0.1>\r\n"
        b"Replaces: abc@127.0.0.1;to-tag=7;from-tag=9;early-only\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n",
    ),
    Row(
        "notify-sipfrag",
        Request(
            "NOTIFY",
            "sip:1002@127.0.0.1:5062",
            _h(
                ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnotify1"),
                ("Max-Forwards", "70"),
                ("To", "<sip:1002@127.0.0.1>;tag=a6c85cf"),
                ("From", "<sip:1001@127.0.0.1>;tag=1928301774"),
                ("Call-ID", "a84b4c76e66710@127.0.0.1"),
                ("CSeq", "3 NOTIFY"),
                ("Event", "refer;id=2"),
                ("Subscription-State", "terminated;reason=noresource"),
                ("Content-Type", "message/sipfrag;version=2.0"),
                ("Content-Length", "16"),
            ),
            b"SIP/2.0 200 OK\r\n",
        ),
        b"NOTIFY sip:1002@127.0.0.1:5062 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnotify1\r\n"
        b"Max-Forwards: 70\r\n"
        b"To: <sip:1002@127.0.0.1>;tag=a6c85cf\r\n"
        b"From: <sip:1001@127.0.0.1>;tag=1928301774\r\n"
        b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
        b"CSeq: 3 NOTIFY\r\n"
        b"Event: refer;id=2\r\n"
        b"Subscription-State: terminated;reason=noresource\r\n"
        b"Content-Type: message/sipfrag;version=2.0\r\n"
        b"Content-Length: 16\r\n"
        b"\r\n"
        b"SIP/2.0 200 OK\r\n",
    ),
    Row(
        "reinvite-session-timer-diversion",
        Request(
            "UPDATE",
            "sip:1002@[2001:db8::2]:5062;transport=tcp",
            _h(
                ("Via", "SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKupd1;alias"),
                ("Max-Forwards", "70"),
                ("To", "<sip:1002@127.0.0.1>;tag=a6c85cf"),
                ("From", "<sip:1001@127.0.0.1>;tag=1928301774"),
                ("Call-ID", "a84b4c76e66710@127.0.0.1"),
                ("CSeq", "4 UPDATE"),
                ("Session-Expires", "1800;refresher=uac"),
                ("Min-SE", "90"),
                ("Diversion", "<sip:1005@127.0.0.1>;reason=unconditional;counter=1"),
                ("History-Info", "<sip:1005@127.0.0.1>;index=1, <sip:1002@127.0.0.1>;index=1.1"),
                ("Supported", "timer, replaces"),
                ("Content-Length", "0"),
            ),
        ),
        b"UPDATE sip:1002@[2001:db8::2]:5062;transport=tcp SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKupd1;alias\r\n"
        b"Max-Forwards: 70\r\n"
        b"To: <sip:1002@127.0.0.1>;tag=a6c85cf\r\n"
        b"From: <sip:1001@127.0.0.1>;tag=1928301774\r\n"
        b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
        b"CSeq: 4 UPDATE\r\n"
        b"Session-Expires: 1800;refresher=uac\r\n"
        b"Min-SE: 90\r\n"
        b"Diversion: <sip:1005@127.0.0.1>;reason=unconditional;counter=1\r\n"
        b"History-Info: <sip:1005@127.0.0.1>;index=1, <sip:1002@127.0.0.1>;index=1.1\r\n"
        b"Supported: timer, replaces\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n",
    ),
    Row(
        "ringing-utf8-reason-binary-body",
        Response(
            183,
            "Sesión en curso",
            _h(
                ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds"),
                ("To", "<sip:1002@127.0.0.1>;tag=a6c85cf"),
                ("From", "<sip:1001@127.0.0.1>;tag=1928301774"),
                ("Call-ID", "a84b4c76e66710@127.0.0.1"),
                ("CSeq", "314159 INVITE"),
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", "6"),
            ),
            b"\x00\xff\r\n\x00\x01",
        ),
        "SIP/2.0 183 Sesión en curso\r\n".encode() + b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds\r\n"
        b"To: <sip:1002@127.0.0.1>;tag=a6c85cf\r\n"
        b"From: <sip:1001@127.0.0.1>;tag=1928301774\r\n"
        b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Length: 6\r\n"
        b"\r\n"
        b"\x00\xff\r\n\x00\x01",
    ),
    Row(
        "trying-empty-reason",
        Response(
            100,
            "",
            _h(
                ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds"),
                ("To", "<sip:1002@127.0.0.1>"),
                ("From", "<sip:1001@127.0.0.1>;tag=1928301774"),
                ("Call-ID", "a84b4c76e66710@127.0.0.1"),
                ("CSeq", "314159 INVITE"),
                ("Content-Length", "0"),
            ),
        ),
        b"SIP/2.0 100 \r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds\r\n"
        b"To: <sip:1002@127.0.0.1>\r\n"
        b"From: <sip:1001@127.0.0.1>;tag=1928301774\r\n"
        b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n",
    ),
]

IDS = [row.name for row in TABLE]


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_row_round_trips_byte_for_byte(row: Row) -> None:
    assert bytes(parse(row.wire)) == row.wire


def test_rows_are_distinct() -> None:
    assert len({row.wire for row in TABLE}) == len(TABLE)
    for index, row in enumerate(TABLE):
        others = [other.message for other in TABLE[:index] + TABLE[index + 1 :]]
        assert all(row.message != other for other in others)
