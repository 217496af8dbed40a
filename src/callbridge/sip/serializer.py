"""Serialisation of SIP messages (RFC 3261 §7).

Rules: one ``Name: value`` line per field, CRLF line ends, names as stored, values as stored; Content-Length is
always written and always the length of the body (any stored value is replaced, at the place of the first
Content-Length field, or appended at the end if there was none). Text is UTF-8; octets that were not UTF-8 on input
come back out unchanged (``surrogateescape``). The body is written as it is. A start line holding CR or LF is refused
(``ValueError``); header fields are checked when they are added (``headers.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["serialize"]


def serialize(start_line: str, fields: Iterable[tuple[str, str, str]], body: bytes) -> bytes:
    """``fields`` are ``(key, name, value)`` triples, ``key`` being the lower-case long header name."""
    if "\r" in start_line or "\n" in start_line:
        raise ValueError(f"line break in start line {start_line[:80]!r}")
    lines = [start_line]
    length_written = False
    for key, name, value in fields:
        if key == "content-length":
            if length_written:
                continue
            lines.append(f"{name}: {len(body)}")
            length_written = True
        else:
            lines.append(f"{name}: {value}")
    if not length_written:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body
