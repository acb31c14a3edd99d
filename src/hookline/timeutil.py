"""UTC time helpers: hookline stores naive UTC datetimes and speaks ISO-8601 with ``Z``."""

from __future__ import annotations

import datetime as dt

__all__ = ["isoformat", "utcnow"]


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
