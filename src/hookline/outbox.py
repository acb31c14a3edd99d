"""The transactional outbox: ``publish`` writes an event in the caller's transaction.

The event row, and its deliveries (see ``fanout``), are inserted through the same ``db``
connection as the change that caused them and are never committed here: they become visible
exactly when the caller commits, and vanish when the caller rolls back (no phantom event, no
lost event). The worker reads committed deliveries only.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

from pydal import DAL

from hookline.errors import InvalidEvent
from hookline.fanout import fan_out, fan_out_many, subscribers
from hookline.ids import new_id
from hookline.sqlconn import SqlConn, as_sql
from hookline.timeutil import isoformat, utcnow

__all__ = [
    "EVENT_TYPES",
    "MAX_PAYLOAD_BYTES",
    "PreparedEvent",
    "build_payload",
    "insert_event",
    "prepare_event",
    "publish",
]

#: Every event type hookline publishes; anything else is refused.
EVENT_TYPES = frozenset(
    {
        "order.created",
        "order.updated",
        "order.paid",
        "order.shipped",
        "order.cancelled",
        "endpoint.disabled",
        "ping",
    }
)
MAX_PAYLOAD_BYTES = 256 * 1024


MAX_DEPTH = 64


_PLAIN = (str, int, bool, type(None))  # exactly these types: always valid inside JSON text


def _check_json(value: Any, path: str = "data", *, strings: bool = False) -> None:
    # json.dumps would accept NaN and tuples and stringify int keys; receivers could not. The
    # depth bound also stops self-referencing data, which would otherwise loop forever. Plain
    # scalars are skipped (this runs on every published event); unpaired surrogates in strings
    # are caught when the payload is encoded, and ``strings=True`` then finds where.
    stack = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list) and depth > MAX_DEPTH:
            raise InvalidEvent(
                "event data is not JSON", errors={where: f"nested deeper than {MAX_DEPTH} levels"}
            )
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidEvent(
                        "event data is not JSON", errors={where: "keys must be strings"}
                    )
                if strings or type(child) not in _PLAIN:
                    stack.append((child, f"{where}.{key}", depth + 1))
        elif isinstance(item, list):
            stack.extend(
                (child, f"{where}[{i}]", depth + 1)
                for i, child in enumerate(item)
                if strings or type(child) not in _PLAIN
            )
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidEvent("event data is not JSON", errors={where: "must be a finite number"})
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidEvent(
                    "event data is not JSON", errors={where: "unpaired surrogate"}
                ) from None
        elif item is not None and not isinstance(item, str | int | float | bool):
            raise InvalidEvent(
                "event data is not JSON", errors={where: f"{type(item).__name__} is not JSON"}
            )


def build_payload(
    event_type: str, data: Any, timestamp: dt.datetime, *, max_bytes: int = MAX_PAYLOAD_BYTES
) -> str:
    """The event body ``{"type", "timestamp", "data"}`` as JSON text; raise ``InvalidEvent``."""
    if event_type not in EVENT_TYPES:
        raise InvalidEvent(
            f"unknown event type {event_type!r}", errors={"type": "not a known event type"}
        )
    if not isinstance(data, dict):
        raise InvalidEvent("event data must be a JSON object", errors={"data": "must be an object"})
    _check_json(data)
    payload = json.dumps(
        {"type": event_type, "timestamp": isoformat(timestamp), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    try:
        size = len(payload.encode("utf-8"))
    except UnicodeEncodeError:
        _check_json(data, strings=True)  # names the string at fault
        raise

    if size > max_bytes:
        raise InvalidEvent(
            f"event payload is {size} bytes; the limit is {max_bytes}",
            errors={"data": "too large"},
        )
    return payload


@dataclass(frozen=True)
class PreparedEvent:
    """An event ready to insert: everything that does not need the database, computed ahead
    (the group committer runs only the inserts while it holds the write lock)."""

    event_id: str
    type: str
    payload: str
    created_at: dt.datetime


def prepare_event(
    event_type: str,
    data: dict[str, Any],
    *,
    now: dt.datetime | None = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> PreparedEvent:
    """Validate and serialise an event; raise ``InvalidEvent`` (see ``publish``)."""
    created_at = now or utcnow()
    payload = build_payload(event_type, data, created_at, max_bytes=max_bytes)
    return PreparedEvent(new_id("evt"), event_type, payload, created_at)


_INSERT_EVENT_HEAD = "INSERT INTO hookline_event (event_id, type, payload, created_at)"


def insert_event(
    db: DAL | SqlConn, event: PreparedEvent, *, endpoint_ids: list[int] | None = None
) -> str:
    """Insert a prepared event and fan it out, in the caller's transaction; return its id."""
    sql = as_sql(db)
    row_id = sql.insert(
        _INSERT_EVENT_HEAD + " VALUES (?, ?, ?, ?)",
        (event.event_id, event.type, event.payload, sql.when(event.created_at)),
    )
    targets = subscribers(sql, event.type) if endpoint_ids is None else endpoint_ids
    fan_out(sql, row_id, targets, event.created_at)
    return event.event_id


def insert_events(sql: SqlConn, events: list[PreparedEvent]) -> None:
    """``insert_event`` for several events at once (multi-row inserts), each fanned out to its
    type's subscribers, in the caller's transaction."""
    targets = [subscribers(sql, event.type) for event in events]
    rows = [(e.event_id, e.type, e.payload, sql.when(e.created_at)) for e in events]
    if not any(targets):
        sql.insert_rows(_INSERT_EVENT_HEAD, rows)
        return
    returned = sql.insert_rows(_INSERT_EVENT_HEAD, rows, returning="id, event_id")
    row_ids = {event_id: row_id for row_id, event_id in returned}
    fan_out_many(
        sql,
        [
            (row_ids[event.event_id], endpoint_ids, event.created_at)
            for event, endpoint_ids in zip(events, targets, strict=True)
            if endpoint_ids
        ],
    )


def publish(
    db: DAL | SqlConn,
    event_type: str,
    data: dict[str, Any],
    *,
    now: dt.datetime | None = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    endpoint_ids: list[int] | None = None,
) -> str:
    """Record event ``event_type`` with ``data`` in the caller's open transaction; return its id.

    The event is fanned out in the same transaction: one pending delivery per enabled endpoint
    subscribed to the type (or, with ``endpoint_ids``, to exactly those endpoints, as a ping
    does). Nothing is committed here. Raises ``InvalidEvent`` (and writes nothing) for an
    unknown type, data that is not a JSON object, or a payload over ``max_bytes``.
    """
    event = prepare_event(event_type, data, now=now, max_bytes=max_bytes)
    return insert_event(db, event, endpoint_ids=endpoint_ids)
