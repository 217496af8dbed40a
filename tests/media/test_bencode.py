"""bencode: round trips, rtpengine's own reply bytes, and every kind of garbage refused with a specific error."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.bencode import MAX_DEPTH, BencodeError, decode, encode


def test_encodes_each_type_with_sorted_keys() -> None:
    assert encode({"sdp": "v=0", "command": "offer", "flags": ["trust-address", b"x"], "n": -12}) == (
        b"d7:command5:offer5:flagsl13:trust-address1:xe1:ni-12e3:sdp3:v=0e")
    assert encode({}) == b"de"
    assert encode([]) == b"le"
    assert encode("é") == b"2:\xc3\xa9"


def test_decodes_a_reply_of_rtpengine_in_its_own_key_order() -> None:
    reply = b"d6:result5:error12:error-reason20:Unrecognized commande"
    assert decode(reply) == {"result": b"error", "error-reason": b"Unrecognized command"}
    assert decode(b"d1:bi0e1:ai-7ee") == {"b": 0, "a": -7}


values = st.recursive(
    st.integers() | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


@given(values)
def test_round_trip(value: object) -> None:
    assert decode(encode(value)) == value


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty input"),
    (b"i01e", "integer '01' at offset 0 is not canonical (leading zero or -0)"),
    (b"i-0e", "integer '-0' at offset 0 is not canonical (leading zero or -0)"),
    (b"ie", "bad integer '' at offset 0"),
    (b"i12", "truncated integer at offset 0"),
    (b"i1x2e", "bad integer '1x2' at offset 0"),
    (b"5:abc", "string at offset 0 runs past the end (5 bytes announced)"),
    (b"03:abc", "bad string length b'03' at offset 0"),
    (b"3abc", "string length at offset 0 has no ':'"),
    (b"li1e", "truncated list: 'e' expected"),
    (b"d1:ai1e", "truncated dictionary: 'e' expected"),
    (b"di1ei2ee", "dictionary key at offset 1 is not a string"),
    (b"d1:ai1e1:ai2ee", "repeated dictionary key 'a' at offset 7"),
    (b"d1:\xffi1ee", "dictionary key at offset 1 is not UTF-8"),
    (b"i1ei2e", "trailing bytes at offset 3"),
    (b"x", "unexpected byte b'x' at offset 0"),
    (b"l" * (MAX_DEPTH + 2) + b"e" * (MAX_DEPTH + 2), f"nesting deeper than {MAX_DEPTH} at offset {MAX_DEPTH + 1}"),
])
def test_garbage_raises_a_specific_error(data: bytes, message: str) -> None:
    with pytest.raises(BencodeError) as raised:
        decode(data)
    assert str(raised.value) == message


@pytest.mark.parametrize(("value", "message"), [
    (True, "a bool (True) has no bencoding: ng flags are strings in a list"),
    (1.5, "a float has no bencoding"),
    ({1: "x"}, "dictionary key 1 is not a string"),
    (None, "a NoneType has no bencoding"),
])
def test_values_without_a_bencoding_are_refused(value: object, message: str) -> None:
    with pytest.raises(BencodeError, match=f"^{re.escape(message)}$"):
        encode(value)


def test_decode_refuses_text() -> None:
    with pytest.raises(BencodeError, match=r"^cannot decode a str: bytes expected$"):
        decode("d1:ai1ee")  # type: ignore[arg-type]
