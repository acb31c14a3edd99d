"""hookline's tables, defined on any pydal ``db`` (a py4web app's, a web2py app's, a script's).

Table names carry a ``hookline_`` prefix so they never collide with an application's own tables.
Indexes that pydal cannot express (composite, partial) are created with plain SQL that both
SQLite and PostgreSQL understand.
"""

from __future__ import annotations

from pydal import DAL, Field

__all__ = ["ORDER_STATUSES", "define_tables", "ensure_indexes"]

ORDER_STATUSES = ("pending", "paid", "shipped", "cancelled")

_INDEXES = (
    "CREATE INDEX IF NOT EXISTS hookline_order_status_idx ON hookline_order (status, id)",
    "CREATE INDEX IF NOT EXISTS hookline_event_created_idx ON hookline_event (created_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS hookline_inbox_message_idx"
    " ON hookline_inbox (source, message_id)",
    "CREATE INDEX IF NOT EXISTS hookline_inbox_received_idx ON hookline_inbox (received_at)",
)


def define_tables(db: DAL, *, migrate: bool = False) -> DAL:
    """Define hookline's tables on ``db``; with ``migrate`` create or alter them in the database."""
    db.define_table(
        "hookline_order",
        Field("order_id", "string", length=64, notnull=True, unique=True),
        Field("product_name", "string", length=200, notnull=True),
        Field("quantity", "integer", notnull=True, default=1),
        Field("unit_price_minor", "bigint"),
        Field("currency", "string", length=3),
        Field("customer_email", "string", length=254),
        Field("status", "string", length=16, notnull=True, default="pending"),
        Field("source", "string", length=16, notnull=True, default="api"),
        Field("version", "integer", notnull=True, default=1),
        Field("created_at", "datetime", notnull=True),
        Field("updated_at", "datetime", notnull=True),
        migrate=migrate,
    )
    db.define_table(
        "hookline_event",
        Field("event_id", "string", length=32, notnull=True, unique=True),
        Field("type", "string", length=64, notnull=True),
        Field("payload", "text", notnull=True),
        Field("created_at", "datetime", notnull=True),
        migrate=migrate,
    )
    db.define_table(
        "hookline_inbox",
        Field("inbox_id", "string", length=32, notnull=True, unique=True),
        Field("source", "string", length=64, notnull=True),
        Field("message_id", "string", length=255),
        Field("method", "string", length=16, notnull=True),
        Field("content_type", "string", length=255),
        Field("headers", "text", notnull=True),
        Field("body", "blob"),
        Field("status", "string", length=16, notnull=True),
        Field("response_status", "integer"),
        Field("response_body", "text"),
        Field("received_at", "datetime", notnull=True),
        Field("processed_at", "datetime"),
        migrate=migrate,
    )
    db.define_table(
        "hookline_api_key",
        Field("key_id", "string", length=32, notnull=True, unique=True),
        Field("name", "string", length=64, notnull=True),
        Field("prefix", "string", length=16, notnull=True),
        Field("key_hash", "string", length=64, notnull=True, unique=True),
        Field("created_at", "datetime", notnull=True),
        Field("last_used_at", "datetime"),
        Field("revoked_at", "datetime"),
        migrate=migrate,
    )
    return db


def ensure_indexes(db: DAL) -> None:
    """Create the indexes pydal does not express; idempotent."""
    for statement in _INDEXES:
        db.executesql(statement)
    db.commit()
