"""Time: every instant in the engine is an aware datetime in UTC; `--now` replaces the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_instant(text: str, default_tz: str = "UTC") -> datetime:
    """ISO-8601 to aware UTC; a value without an offset is read in `default_tz`."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{text}' is not an ISO-8601 date or time (like 2026-11-23T09:00:00Z)") from None
    return as_utc(value, default_tz)


def as_utc(value: datetime, default_tz: str = "UTC") -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(default_tz))
    return value.astimezone(UTC)
