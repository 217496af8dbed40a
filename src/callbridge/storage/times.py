"""The domain counts time in float seconds since the epoch; the database keeps UTC instants. Convert here only."""

from __future__ import annotations

from datetime import UTC, datetime


def to_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def to_datetime_or_none(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def to_seconds(instant: datetime) -> float:
    return instant.timestamp()


def to_seconds_or_none(instant: datetime | None) -> float | None:
    return None if instant is None else instant.timestamp()
