"""Tokens: who is asking (authentication), and whether they may ask now (concurrency and daily quota).

Rules (agentbox contract, "Errors every verb can return", "Limits", "Tenants"; the native API uses the same tokens):

- A request without a token answers 401 TOKEN_MISSING. A token is looked up by the SHA-256 hex of its plain text
  (storage keeps only that); unknown or revoked answers 403 INVALID_TOKEN. A `wolkvox_server` header naming an
  operation other than the token's answers 403 INVALID_TOKEN too, whether or not the agent asked for exists, so a
  token cannot probe other tenants. The header may carry the operation id (`0042`) or the cloud host name
  (`wv0042.wolkvox.com`), which Wolkvox documents as the same thing.
- Per-token concurrency: at most `Token.concurrency_limit` requests in flight; one more is refused at once (403
  CONCURRENCY_LIMIT) before anything else runs, so the refused request does nothing.
- Daily quota (optional, `Token.daily_quota`): requests admitted past the concurrency check count toward the day of
  the operation's time zone; the count restarts at local midnight. The request that finds the quota used up is
  refused (403 TOKEN_LIMIT_EXCEEDED) and is not counted.
- On a cluster (docs/cluster.md) the quota is counted in the database (`QuotaLedger`, storage/token_usage.py), one
  atomic statement per request, so every node sees one count and a failover or a restart does not reset it. The
  concurrency limit needs nothing shared: every request of an operation is admitted by the node holding its lease
  (the others forward it there, cluster/forward.py).

Theory of operation: everything here runs on the event loop's thread and never awaits between a check and the
change it guards, so admission needs no lock. `admit()` returns an `Admission` whose `release()` (or `with`)
gives the slot back; the handler holds it for the whole request, including an awaited SIP action. `enter()` is
`admit()` for the handlers: with a ledger it takes the slot first (the concurrency limit wins), then awaits the
ledger's count off the loop, holding the slot, and gives it back if the quota refuses.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callbridge.callcontrol.model import Operation, Token

log = logging.getLogger(__name__)


def hash_token(token: str) -> str:
    """How storage keys a token: the SHA-256 hex digest of its UTF-8 text."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


_HASH_CACHE_SIZE = 4096  # tokens presented recently; a full cache starts over (a bound, not an eviction policy)


class TokenDirectory(Protocol):
    """The part of the domain's DirectoryRepository that authentication reads."""

    def get_token(self, token_hash: str) -> Token | None: ...

    def get_operation(self, operation_id: str) -> Operation | None: ...


class QuotaLedger(Protocol):
    """Daily quotas counted outside this process (storage/token_usage.py): shared by a cluster's nodes."""

    def count(self, token_id: str, day: date, quota: int) -> int | None:
        """Count one request of `token_id` on `day`: the day's count with it, or None when `quota` was used up
        (then nothing is counted)."""
        ...


class Refused(Exception):
    """A request refused by the token checks; `key` is the contract's error key."""

    def __init__(self, key: str, limit: int | None = None) -> None:
        super().__init__(key)
        self.key = key
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated token: the operation it may act on and its limits."""

    token_hash: str
    token_id: str
    operation_id: str
    concurrency_limit: int
    daily_quota: int | None
    time_zone: str


class Admission:
    """A slot in flight for one token; release it exactly once."""

    __slots__ = ("_gate", "_key", "_released")

    def __init__(self, gate: TokenGate, key: str) -> None:
        self._gate = gate
        self._key = key
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._gate._release(self._key)

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def server_names_operation(server: str, operation_id: str) -> bool:
    """Whether a `wolkvox_server` value names this operation: `0042` or `wv0042.wolkvox.com`."""
    value = server.strip().lower()
    if value == operation_id:
        return True
    return value == f"wv{operation_id}.wolkvox.com"


class TokenGate:
    def __init__(self, directory: TokenDirectory, *, clock: Callable[[], float] = time.time,
                 ledger: QuotaLedger | None = None) -> None:
        self._directory = directory
        self._clock = clock
        self._ledger = ledger
        self._in_flight: dict[str, int] = {}
        self._usage: dict[str, tuple[date, int]] = {}
        # plain token -> its hash, so a token seen before costs a dict lookup, not a SHA-256. Only the hash is
        # cached: the token itself is looked up in the directory on every request (revocation applies at once).
        self._hashes: dict[str, str] = {}

    def authenticate(self, token: str | None, server: str | None = None) -> Principal:
        """The principal of `token`, or Refused(TOKEN_MISSING / INVALID_TOKEN)."""
        if token is None or not token.strip():
            raise Refused("TOKEN_MISSING")
        token_hash = self._hash(token)
        record = self._directory.get_token(token_hash)
        if record is None or record.revoked:
            raise Refused("INVALID_TOKEN")
        operation = self._directory.get_operation(record.operation_id)
        if operation is None:
            raise Refused("INVALID_TOKEN")
        if server is not None and server.strip() and not server_names_operation(server, operation.id):
            raise Refused("INVALID_TOKEN")
        return Principal(token_hash, record.id, operation.id, record.concurrency_limit, record.daily_quota,
                         operation.time_zone)

    def _hash(self, token: str) -> str:
        token_hash = self._hashes.get(token)
        if token_hash is None:
            if len(self._hashes) >= _HASH_CACHE_SIZE:
                self._hashes.clear()
            token_hash = self._hashes[token] = hash_token(token.strip())
        return token_hash

    def admit(self, principal: Principal) -> Admission:
        """Take a slot (or Refused(CONCURRENCY_LIMIT)), then count the request (or Refused(TOKEN_LIMIT_EXCEEDED))."""
        key = principal.token_hash
        busy = self._in_flight.get(key, 0)
        if busy >= principal.concurrency_limit:
            raise Refused("CONCURRENCY_LIMIT", principal.concurrency_limit)
        if principal.daily_quota is not None:
            today = self._local_date(principal.time_zone)
            day, used = self._usage.get(key, (today, 0))
            if day != today:
                used = 0
            if used >= principal.daily_quota:
                raise Refused("TOKEN_LIMIT_EXCEEDED")
            self._usage[key] = (today, used + 1)
        self._in_flight[key] = busy + 1
        return Admission(self, key)

    async def enter(self, principal: Principal) -> Admission:
        """`admit()`, with the daily quota counted by the ledger when there is one (a cluster): the slot is taken
        first and held while the ledger counts; a refusal (quota used up, or the ledger unreachable: 503) gives it
        back."""
        if self._ledger is None or principal.daily_quota is None:
            return self.admit(principal)
        key = principal.token_hash
        busy = self._in_flight.get(key, 0)
        if busy >= principal.concurrency_limit:
            raise Refused("CONCURRENCY_LIMIT", principal.concurrency_limit)
        self._in_flight[key] = busy + 1
        admission = Admission(self, key)
        today = self._local_date(principal.time_zone)
        try:
            used = await asyncio.to_thread(self._ledger.count, principal.token_id, today, principal.daily_quota)
        except Exception:
            admission.release()
            log.exception("http: the daily quota of token %s could not be counted", principal.token_id)
            raise Refused("CALL_CONTROL_UNAVAILABLE") from None
        except BaseException:
            admission.release()
            raise
        if used is None:
            admission.release()
            raise Refused("TOKEN_LIMIT_EXCEEDED")
        day, known = self._usage.get(key, (today, 0))
        self._usage[key] = (today, max(used, known) if day == today else used)  # answers may finish out of order
        return admission

    def in_flight(self, token_hash: str) -> int:
        return self._in_flight.get(token_hash, 0)

    def used_today(self, principal: Principal) -> int:
        day, used = self._usage.get(principal.token_hash, (None, 0))
        return used if day == self._local_date(principal.time_zone) else 0

    def total_in_flight(self) -> int:
        return sum(self._in_flight.values())

    def _release(self, key: str) -> None:
        left = self._in_flight.get(key, 0) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)

    def _local_date(self, time_zone: str) -> date:
        try:
            zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        return datetime.fromtimestamp(self._clock(), zone).date()
