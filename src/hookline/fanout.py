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
from hookline.timeutil import to_epoch

__all__ = ["NOTIFY_CHANNEL", "dialect_sql", "fan_out", "is_postgres", "subscribers"]

NOTIFY_CHANNEL = "hookline_deliveries"


def is_postgres(db: DAL) -> bool:
    """True when ``db`` is a PostgreSQL connection."""
    return db._adapter.dbengine == "postgres"


def dialect_sql(db: DAL, statement: str) -> str:
    """``statement`` written with ``%s`` placeholders (psycopg2), as ``db``'s driver wants it
    (sqlite3 takes ``?``)."""
    return statement if is_postgres(db) else statement.replace("%s", "?")


def subscribers(db: DAL, event_type: str) -> list[int]:
    """Row ids of the enabled endpoints whose filter admits ``event_type`` (empty filter = all)."""
    table = db.hookline_endpoint
    rows = db((table.enabled == 1) & (table.deleted_at == None)).select(table.id, table.event_types)
    return [
        row.id for row in rows if not (types := json.loads(row.event_types)) or event_type in types
    ]


def fan_out(db: DAL, event_row_id: int, endpoint_ids: list[int], now: dt.datetime) -> list[int]:
    """Insert a pending delivery of the event for each endpoint; return their row ids."""
    due = to_epoch(now)
    created = [
        db.hookline_delivery.insert(
            delivery_id=new_id("dlv"),
            event=event_row_id,
            endpoint=endpoint_id,
            status="pending",
            attempts=0,
            next_attempt_at=due,
            created_at=now,
            updated_at=now,
        )
        for endpoint_id in endpoint_ids
    ]
    if created and is_postgres(db):
        db.executesql(f"NOTIFY {NOTIFY_CHANNEL}")
    return created
