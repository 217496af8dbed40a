"""Bencode, the encoding of rtpengine's ng control protocol: strict encoder and decoder.

Rules (the BitTorrent specification, BEP 3, "bencoding", as rtpengine's ng protocol uses it)
- Four types: byte strings ``<len>:<bytes>``, integers ``i<n>e``, lists ``l...e``, dictionaries ``d...e`` whose
  keys are byte strings.
- Decoding is strict: an integer with a leading zero or ``-0``, a length that runs past the end, a dictionary key
  that is not a string, a repeated key, trailing bytes, nesting deeper than `MAX_DEPTH`: each raises
  `BencodeError` naming what is wrong and where. Dictionary keys need not be sorted (rtpengine's replies keep its
  own order), but every key is decoded to ``str`` (ng keys are ASCII words); string values stay ``bytes`` unless
  the caller asks for text.
- Encoding takes ``str`` (UTF-8), ``bytes``, ``int`` (not ``bool``), ``list``/``tuple`` and ``dict`` with ``str`` or
  ``bytes`` keys, written sorted as BEP 3 requires; anything else raises `BencodeError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

__all__ = ["MAX_DEPTH", "BencodeError", "decode", "encode"]

# ng messages are a dictionary holding a few lists of dictionaries; a deeper nesting is garbage or an attack.
MAX_DEPTH = 32
# A string's length: decimal digits without a leading zero (but "0"), at most ten, then ':'.
_LENGTH = re.compile(rb"(0|[1-9][0-9]{0,9}):")


class BencodeError(ValueError):
    """The bytes are not one well-formed bencoded value (decode), or the value has no bencoding (encode)."""


def encode(value: Any) -> bytes:
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BencodeError(f"nesting deeper than {MAX_DEPTH}")
    kind = type(value)
    # The exact built-in types an ng message is made of first, tested by identity (an isinstance check against
    # the Mapping and Sequence ABCs costs several times more, three commands a call); subclasses and other
    # mappings and sequences take the general checks below, with the same result.
    if kind is str:
        data = value.encode("utf-8")
        out.append(b"%d:" % len(data))
        out.append(data)
    elif kind is bytes:
        out.append(b"%d:" % len(value))
        out.append(value)
    elif kind is dict:
        _encode_dict(value, out, depth)
    elif kind is list or kind is tuple:
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif kind is int:
        out.append(b"i%de" % value)
    elif isinstance(value, bool):  # bool is an int in Python; ng has no booleans
        raise BencodeError(f"a bool ({value!r}) has no bencoding: ng flags are strings in a list")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, Mapping):
        _encode_dict(value, out, depth)
    elif isinstance(value, Sequence):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        raise BencodeError(f"a {type(value).__name__} has no bencoding")


def _encode_dict(value: Mapping[Any, Any], out: list[bytes], depth: int) -> None:
    items = []
    for key, item in value.items():
        if type(key) is str or isinstance(key, str):
            raw = key.encode("utf-8")
        elif isinstance(key, bytes):
            raw = key
        else:
            raise BencodeError(f"dictionary key {key!r} is not a string")
        items.append((raw, item))
    items.sort(key=_first)
    out.append(b"d")
    for raw, item in items:
        out.append(b"%d:" % len(raw))
        out.append(raw)
        _encode(item, out, depth + 1)
    out.append(b"e")


def _first(pair: tuple[bytes, Any]) -> bytes:
    return pair[0]


def decode(data: bytes) -> Any:
    """The one value `data` holds; `BencodeError` for anything else (including trailing bytes)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BencodeError(f"cannot decode a {type(data).__name__}: bytes expected")
    buf = bytes(data)
    if not buf:
        raise BencodeError("empty input")
    value, end = _decode(buf, 0, 0)
    if end != len(buf):
        raise BencodeError(f"trailing bytes at offset {end}")
    return value


def _decode(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise BencodeError(f"nesting deeper than {MAX_DEPTH} at offset {pos}")
    if pos >= len(buf):
        raise BencodeError(f"truncated: a value expected at offset {pos}")
    lead = buf[pos]
    if lead == 0x69:  # i
        end = buf.find(b"e", pos + 1)
        if end < 0:
            raise BencodeError(f"truncated integer at offset {pos}")
        return _integer(buf[pos + 1:end], pos), end + 1
    if 0x30 <= lead <= 0x39:
        return _string(buf, pos)
    # In lists and dictionaries a string item is read here rather than through another `_decode` (most of a reply's
    # values are strings: a query's reply has hundreds); only where `_decode` would not refuse its depth.
    inline = depth < MAX_DEPTH
    size = len(buf)
    if lead == 0x6C:  # l
        items: list[Any] = []
        pos += 1
        while True:
            if pos >= size:
                raise BencodeError("truncated list: 'e' expected")
            lead = buf[pos]
            if lead == 0x65:  # e
                return items, pos + 1
            item, pos = _string(buf, pos) if inline and 0x30 <= lead <= 0x39 else _decode(buf, pos, depth + 1)
            items.append(item)
    if lead == 0x64:  # d
        result: dict[str, Any] = {}
        pos += 1
        while True:
            if pos >= size:
                raise BencodeError("truncated dictionary: 'e' expected")
            lead = buf[pos]
            if lead == 0x65:  # e
                return result, pos + 1
            if not 0x30 <= lead <= 0x39:
                raise BencodeError(f"dictionary key at offset {pos} is not a string")
            raw_key, key_end = _string(buf, pos)
            try:
                key = raw_key.decode("utf-8")
            except UnicodeDecodeError:
                raise BencodeError(f"dictionary key at offset {pos} is not UTF-8") from None
            if key in result:
                raise BencodeError(f"repeated dictionary key {key!r} at offset {pos}")
            if inline and key_end < size and 0x30 <= buf[key_end] <= 0x39:
                result[key], pos = _string(buf, key_end)
            else:
                result[key], pos = _decode(buf, key_end, depth + 1)
    raise BencodeError(f"unexpected byte {bytes([lead])!r} at offset {pos}")


def _integer(digits: bytes, pos: int) -> int:
    text = digits.decode("ascii", "replace")
    body = text[1:] if text.startswith("-") else text
    if not body or not body.isdigit() or not body.isascii():
        raise BencodeError(f"bad integer {text!r} at offset {pos}")
    if (body.startswith("0") and len(body) > 1) or text == "-0":
        raise BencodeError(f"integer {text!r} at offset {pos} is not canonical (leading zero or -0)")
    return int(text)


def _string(buf: bytes, pos: int) -> tuple[bytes, int]:
    found = _LENGTH.match(buf, pos)
    if found is None:
        _bad_string(buf, pos)
    start = found.end()
    end = start + int(found.group(1))
    if end > len(buf):
        raise BencodeError(f"string at offset {pos} runs past the end ({end - start} bytes announced)")
    return buf[start:end], end


def _bad_string(buf: bytes, pos: int) -> NoReturn:
    """Raises the error that a string at `pos` whose length `_LENGTH` did not match has."""
    colon = buf.find(b":", pos)
    if colon < 0 or colon - pos > 10:
        raise BencodeError(f"string length at offset {pos} has no ':'")
    raise BencodeError(f"bad string length {buf[pos:colon]!r} at offset {pos}")
