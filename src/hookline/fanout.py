"""Fan-out: an event becomes one pending delivery per subscribed, enabled endpoint.

It runs inside ``outbox.publish``, in the producer's transaction, so an event and its deliveries
commit (or vanish) together and the worker only ever claims deliveries. On PostgreSQL it also
queues a ``NOTIFY`` on the deliveries channel, which PostgreSQL sends only when the transaction
commits: workers wake for committed work, never for a rollback.
"""

from __future__ import annotations

import datetime as dt
import json

from pydal import DAL

from hookline.ids import new_id
from hookline.sqlconn import SqlConn, as_sql
from hookline.timeutil import to_epoch

__all__ = [
    "NOTIFY_CHANNEL",
    "dialect_sql",
    "fan_out",
    "fan_out_many",
    "is_postgres",
    "subscribers",
]

NOTIFY_CHANNEL = "hookline_deliveries"


def is_postgres(db: DAL) -> bool:
    """True when ``db`` is a PostgreSQL connection."""
    return db._adapter.dbengine == "postgres"


def dialect_sql(db: DAL, statement: str) -> str:
    """``statement`` written with ``%s`` placeholders (psycopg2), as ``db``'s driver wants it
    (sqlite3 takes ``?``)."""
    return statement if is_postgres(db) else statement.replace("%s", "?")


_ENDPOINT_FILTERS = (
    "SELECT id, event_types FROM hookline_endpoint WHERE enabled = 1 AND deleted_at IS NULL"
)


def subscribers(db: DAL | SqlConn, event_type: str) -> list[int]:
    """Row ids of the enabled endpoints whose filter admits ``event_type`` (empty filter = all).

    Within one group-commit batch the endpoint list is read once (``SqlConn.memo``).
    """
    sql = as_sql(db)
    filters = sql.memo(
        "endpoint_filters",
        lambda: [
            (row_id, None if types == "[]" else frozenset(json.loads(types) or ()))
            for row_id, types in sql.all(_ENDPOINT_FILTERS)
        ],
    )
    return [row_id for row_id, types in filters if not types or event_type in types]


_INSERT_DELIVERY_HEAD = (
    "INSERT INTO hookline_delivery (delivery_id, event, endpoint, status, attempts,"
    " next_attempt_at, created_at, updated_at)"
)


def fan_out(
    db: DAL | SqlConn, event_row_id: int, endpoint_ids: list[int], now: dt.datetime
) -> list[int]:
    """Insert a pending delivery of the event for each endpoint; return their row ids."""
    sql = as_sql(db)
    rows = _delivery_rows(sql, event_row_id, endpoint_ids, now)
    created = [int(row[0]) for row in sql.insert_rows(_INSERT_DELIVERY_HEAD, rows, returning="id")]
    _notify(sql, rows)
    return created


def fan_out_many(sql: SqlConn, events: list[tuple[int, list[int], dt.datetime]]) -> int:
    """``fan_out`` for several events (``(event row id, endpoint ids, now)``) with multi-row
    inserts; return how many deliveries were created."""
    rows = [
        row
        for event_row_id, endpoint_ids, now in events
        for row in _delivery_rows(sql, event_row_id, endpoint_ids, now)
    ]
    sql.insert_rows(_INSERT_DELIVERY_HEAD, rows)
    _notify(sql, rows)
    return len(rows)


def _delivery_rows(
    sql: SqlConn, event_row_id: int, endpoint_ids: list[int], now: dt.datetime
) -> list[tuple]:
    due, stamp = to_epoch(now), sql.when(now)
    return [
        (new_id("dlv"), event_row_id, endpoint_id, "pending", 0, due, stamp, stamp)
        for endpoint_id in endpoint_ids
    ]


def _notify(sql: SqlConn, rows: list[tuple]) -> None:
    # PostgreSQL sends it at commit, to the workers' LISTEN; SQLite's workers watch the WAL.
    if rows and sql.postgres:
        sql.execute(f"NOTIFY {NOTIFY_CHANNEL}")
