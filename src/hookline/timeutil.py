"""UTC time helpers: hookline stores naive UTC datetimes and speaks ISO-8601 with ``Z``."""

from __future__ import annotations

import datetime as dt

__all__ = ["from_epoch", "isoformat", "sql_datetime", "to_epoch", "utcnow"]


def utcnow() -> dt.datetime:
    """The current time as a naive UTC datetime (how pydal stores it on every engine)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def isoformat(value: dt.datetime | None) -> str | None:
    """ISO-8601 in UTC with millisecond precision and a ``Z`` suffix; ``None`` stays ``None``."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def to_epoch(value: dt.datetime) -> float:
    """Seconds since the epoch for a naive-UTC (or aware) datetime."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def from_epoch(seconds: float) -> dt.datetime:
    """The naive-UTC datetime for epoch ``seconds``."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).replace(tzinfo=None)


def sql_datetime(value: dt.datetime) -> str:
    """A datetime as pydal stores it (``YYYY-MM-DD HH:MM:SS``), for hand-written SQL."""
    return value.strftime("%Y-%m-%d %H:%M:%S")
