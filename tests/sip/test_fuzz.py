"""Property tests: whatever the bytes, only ``ParseError`` leaves ``parse`` and ``StreamParser``; a message that
parses serialises to bytes that parse to an equal message; reading any accessor raises nothing but ``SipError``.

Inputs are the torture corpus and byte-table messages mutated (octets deleted, inserted, replaced, duplicated,
truncated; SIP delimiters favoured), and random bytes. Bounded so the suite stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bytes_table import TABLE

from callbridge.sip import ParseError, StreamParser, parse

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ_DIR) not in sys.path:  # the properties the atheris target checks too (fuzz/sip_properties.py)
    sys.path.insert(0, str(FUZZ_DIR))

from sip_properties import check_status, round_trip  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "torture" / "rfc4475"
SEEDS = [path.read_bytes() for path in sorted(CORPUS.glob("*.dat"))] + [row.wire for row in TABLE]
DELIMITERS = [
    b"\r\n",
    b"\r\n ",
    b" ",
    b",",
    b";",
    b"=",
    b'"',
    b"\\",
    b"<",
    b">",
    b":",
    b"@",
    b"%",
    b"%00",
    b"/",
    b"\x00",
    b"\xff",
    b"\r\n\r\n",
    b"SIP/2.0",
    b"Content-Length: 99999\r\n",
    b"l: -1\r\n",
    b"\t",
    b"?",
]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "truncate", "delimiter"]))
        if kind == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "duplicate":
            end = min(len(data), at + draw(st.integers(1, 60)))
            data[at:at] = data[at:end]
        elif kind == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.sampled_from(DELIMITERS))
    return bytes(data)


def check_datagram(data: bytes) -> None:
    try:
        message = parse(data)
    except ParseError as error:
        check_status(error)
        return
    round_trip(message)


def check_stream(data: bytes, cut: int) -> None:
    stream = StreamParser()
    stream.feed(data[:cut])
    for _ in range(3):
        try:
            for message in stream.messages():
                round_trip(message)
            break
        except ParseError:
            if stream.broken is not None:
                break
    stream.feed(data[cut:])
    for _ in range(3):
        try:
            for message in stream.messages():
                round_trip(message)
            break
        except ParseError:
            if stream.broken is not None:
                break


@FUZZ
@given(mutated())
def test_mutated_messages_datagram(data: bytes) -> None:
    check_datagram(data)


@FUZZ
@given(mutated(), st.integers(0, 2000))
def test_mutated_messages_stream(data: bytes, cut: int) -> None:
    check_stream(data + data, cut)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    check_datagram(data)
    check_stream(data, len(data) // 2)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='INVITESIP/2.0 sip:@;=,<>"\\\r\n\t:1%-aZ', max_size=300))
def test_random_sip_shaped_text(text: str) -> None:
    data = text.encode()
    check_datagram(data)
    check_stream(data, len(data) // 3)
