"""The listing parameters of the native API: `limit`, the time range (`from`, `to`) and the opaque `cursor`.

Rules (`openapi.json`, `GET /v2/calls`, `GET /v2/cdrs`):
- `from` and `to` are RFC 3339 date-times with a zone (`Z` or `±hh:mm`); the range is on `started_at`, `from`
  inclusive and `to` exclusive. A time without a zone, or anything else, is malformed.
- `limit`: 1..1000 items per page, 100 by default.
- `cursor`: what a page's `next_cursor` said; it names where that page ended (the last item's `started_at` to the
  microsecond and its `conn_id`) and which listing it belongs to. It is opaque to clients: anything not made by
  this server for the same listing is malformed.
- A malformed parameter raises `InvalidParameter` naming it (the API answers 400 INVALID_PARAMETER); nothing runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from callbridge.callcontrol.errors import InvalidParameter
from callbridge.storage.history import Position, TimeRange

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
                      r"(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CONN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # as native.py accepts in paths


def limit_of(query: Mapping[str, str]) -> int:
    text = query.get("limit", str(DEFAULT_LIMIT))
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidParameter("limit")
    return int(text)


def parse_time(text: str, parameter: str) -> datetime:
    """An RFC 3339 date-time as an aware UTC datetime (fractions beyond microseconds are cut)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise InvalidParameter(parameter)
    fraction = match.group(1) or ""
    normal = text[:10] + "T" + text[11:19] + fraction[:7] + match.group(2).upper().replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(normal).astimezone(UTC)
    except ValueError:  # 2026-02-30, 25:00...
        raise InvalidParameter(parameter) from None


def time_range_of(query: Mapping[str, str]) -> TimeRange:
    since, until = query.get("from"), query.get("to")
    return TimeRange(None if since is None else parse_time(since, "from"),
                     None if until is None else parse_time(until, "to"))


def encode_cursor(listing: str, position: Position) -> str:
    micros = (position.started_at - _EPOCH) // timedelta(microseconds=1)
    raw = json.dumps([listing, micros, position.conn_id], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def cursor_of(query: Mapping[str, str], listing: str) -> Position | None:
    """The position a `cursor` names, None without one; InvalidParameter("cursor") when it is not this listing's."""
    text = query.get("cursor")
    if text is None:
        return None
    try:
        if not text.isascii() or len(text) > 200:
            raise ValueError(text)
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        kind, micros, conn_id = value
        if (kind != listing or not isinstance(micros, int) or isinstance(micros, bool)
                or not isinstance(conn_id, str) or not _CONN_ID.fullmatch(conn_id)):
            raise ValueError(text)
        return Position(_EPOCH + timedelta(microseconds=micros), conn_id)
    except (ValueError, TypeError, OverflowError, binascii.Error):
        raise InvalidParameter("cursor") from None
