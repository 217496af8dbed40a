"""Sessions of the browser desk: the agent's page (`/agent`) and the supervisor's board (`/supervisor`).

Rules (docs/operations.md, "The agent's page", "The supervisor's board"):
- A session is made by a sign-in with a password and lives in this table, in memory: the cookie carries the
  session's random id and an HMAC-SHA256 of it under the process's secret, so a forged or altered cookie is refused
  before any lookup. A session ends at sign-out, after `ttl` (12 h) or when the process stops (sign in again).
- The cookie is HttpOnly (no script reads it) and SameSite=Strict (no other site's page sends it, which is the
  defence against cross-site requests), Path=/, and Secure when the request came over HTTPS (TLS in front).
- Nothing secret is kept in a session: not the password, not an API token. The agent's page keeps the password
  it was typed into in its own memory, for SIP digest (RFC 3261 §22.4); callbridge keeps only the HA1.
- One session per agent: a second sign-in of the same agent wins, and the older session is revoked with the
  reason "signed in elsewhere" (its live socket is told, then closed). Supervisors may hold several sessions.
- Sign-in failures count per source address in a `FailureCounter` (the SIP defence's sliding window and ban table,
  `b2bua/defence.py`, given by bootstrap): a banned source gets 429 until its ban ends, before any password check.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from starlette.requests import HTTPConnection
from starlette.responses import Response

COOKIE = "callbridge_desk"
SESSION_TTL_S = 12 * 3600.0
SIGNED_IN_ELSEWHERE = "signed in elsewhere"
SIGNED_OUT = "signed out"

Kind = Literal["agent", "supervisor"]


class FailureCounter(Protocol):
    """What the sign-ins need of the flood defence (`b2bua.defence.Defence` has it)."""

    def record_failure(self, source_ip: str, now: float) -> bool: ...

    def is_banned(self, source_ip: str, now: float) -> bool: ...


@dataclass(eq=False, slots=True)
class Session:
    id: str
    kind: Kind
    operation_id: str
    user: str  # the agent's extension, or the supervisor's username
    name: str
    expires: float
    ended: str | None = None  # why it ended; None while it lives
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set when it ends: the live socket is told


class SessionTable:
    """Sessions by id; a clock for expiry, the secret that signs cookies."""

    def __init__(self, *, clock: Callable[[], float], secret: bytes | None = None,
                 ttl: float = SESSION_TTL_S) -> None:
        self._clock = clock
        self._secret = secret or secrets.token_bytes(32)
        self._ttl = ttl
        self._sessions: dict[str, Session] = {}

    def _sign(self, session_id: str) -> str:
        return hmac.new(self._secret, session_id.encode(), hashlib.sha256).hexdigest()

    def create(self, kind: Kind, operation_id: str, user: str, name: str = "") -> Session:
        """A new session; an agent's older sessions end ("signed in elsewhere": the newer sign-in wins)."""
        self._prune()
        if kind == "agent":
            for old in list(self._sessions.values()):
                if old.kind == "agent" and old.operation_id == operation_id and old.user == user:
                    self.end(old, SIGNED_IN_ELSEWHERE)
        session = Session(secrets.token_urlsafe(32), kind, operation_id, user, name, self._clock() + self._ttl)
        self._sessions[session.id] = session
        return session

    def end(self, session: Session, reason: str) -> None:
        if self._sessions.pop(session.id, None) is not None or session.ended is None:
            session.ended = reason
            session.changed.set()

    def cookie_value(self, session: Session) -> str:
        return f"{session.id}.{self._sign(session.id)}"

    def from_cookie(self, value: str | None, kind: Kind) -> Session | None:
        """The live session the cookie names, of that kind; None for a missing, forged, ended or expired one."""
        if not value or "." not in value:
            return None
        session_id, _, signature = value.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(session_id)):
            return None
        session = self._sessions.get(session_id)
        if session is None or session.kind != kind:
            return None
        if session.expires <= self._clock():
            self.end(session, "expired")
            return None
        return session

    def session_of(self, conn: HTTPConnection, kind: Kind) -> Session | None:
        return self.from_cookie(conn.cookies.get(COOKIE), kind)

    def _prune(self) -> None:
        now = self._clock()
        for session in [s for s in self._sessions.values() if s.expires <= now]:
            self.end(session, "expired")

    def __len__(self) -> int:
        return len(self._sessions)


def set_cookie(response: Response, conn: HTTPConnection, value: str, *, max_age: int | None) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Path=/, Secure behind HTTPS; max_age 0 deletes it."""
    secure = conn.url.scheme in ("https", "wss") or conn.headers.get("x-forwarded-proto", "") == "https"
    response.set_cookie(COOKIE, value, max_age=max_age, path="/", httponly=True, samesite="strict", secure=secure)


def client_ip(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client is not None else "unknown"
