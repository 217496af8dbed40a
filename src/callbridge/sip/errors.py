"""Errors of the SIP core (h2 style: each error knows the response it asks for).

``SipError.status`` is the response code to send back (400, 505, ...), or ``None`` when the offending message must
be dropped silently (a malformed response, a datagram whose framing cannot be trusted; RFC 3261 §16.3, §18.3).
"""

from __future__ import annotations

__all__ = ["ParseError", "SipError"]


class SipError(Exception):
    """Base of the SIP core's errors; ``status`` is the response to send, ``None`` = drop silently."""

    def __init__(self, message: str, status: int | None = 400) -> None:
        super().__init__(message)
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, status={self.status!r})"


class ParseError(SipError):
    """Malformed bytes, or a message that breaks a rule a B2BUA relies on at parse time."""
