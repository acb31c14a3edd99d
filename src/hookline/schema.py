"""hookline's tables, defined on any pydal ``db`` (a py4web app's, a web2py app's, a script's).

Table names carry a ``hookline_`` prefix so they never collide with an application's own tables.
Indexes that pydal cannot express (composite, partial) are created with plain SQL that both
SQLite and PostgreSQL understand.
"""

from __future__ import annotations

from pydal import DAL, Field

__all__ = [
    "ATTEMPT_OUTCOMES",
    "DELIVERY_STATUSES",
    "ORDER_STATUSES",
    "define_tables",
    "ensure_indexes",
]

ORDER_STATUSES = ("pending", "paid", "shipped", "cancelled")

_ATTEMPT_ENDPOINT_INDEX = (
    "CREATE INDEX IF NOT EXISTS hookline_attempt_endpoint_idx ON hookline_attempt (endpoint, id)"
)

_INDEXES = (
    "CREATE INDEX IF NOT EXISTS hookline_order_status_idx ON hookline_order (status, id)",
    "CREATE INDEX IF NOT EXISTS hookline_event_created_idx ON hookline_event (created_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS hookline_inbox_message_idx"
    " ON hookline_inbox (source, message_id)",
    "CREATE INDEX IF NOT EXISTS hookline_inbox_received_idx ON hookline_inbox (received_at)",
    "CREATE INDEX IF NOT EXISTS hookline_inbox_due_idx"
    " ON hookline_inbox (next_attempt_at) WHERE status = 'received'",
    "CREATE INDEX IF NOT EXISTS hookline_inbox_lease_idx"
    " ON hookline_inbox (lease_until) WHERE status = 'processing'",
    # A lease is a row of hookline_lease, not a change to the delivery: the delivery row and
    # its indexes are written when the attempt is recorded, not when it is claimed (a claim of
    # 100 at a million pending: 11 ms when it rewrote the rows, docs/benchmarks.md).
    #
    # The claim reads due deliveries in time order from this partial index: O(log n) however
    # many deliveries wait in the future or are finished. It carries the endpoint, so choosing
    # candidates reads no delivery row.
    "CREATE INDEX IF NOT EXISTS hookline_delivery_due_ep_idx"
    " ON hookline_delivery (next_attempt_at, endpoint) WHERE status = 'pending'",
    # Each endpoint's pending deliveries in time order: what a claim reads endpoint by endpoint
    # when other endpoints, left out of the claim (full, rate-limited, FIFO), hold the front of
    # the due index, so that it does not step over their backlog.
    "CREATE INDEX IF NOT EXISTS hookline_delivery_pending_ep_idx"
    " ON hookline_delivery (endpoint, next_attempt_at) WHERE status = 'pending'",
    # An endpoint's deliveries, unfinished ones first: FIFO's "is an earlier one unfinished?",
    # discarding an endpoint's unfinished deliveries, its history, cascading deletes. finished_at
    # is NULL exactly while a delivery is pending (queries still test the status).
    "CREATE INDEX IF NOT EXISTS hookline_delivery_by_endpoint_idx"
    " ON hookline_delivery (endpoint, finished_at, id)",
    "CREATE INDEX IF NOT EXISTS hookline_delivery_event_idx ON hookline_delivery (event)",
    "CREATE INDEX IF NOT EXISTS hookline_delivery_created_idx ON hookline_delivery (created_at)",
    "CREATE INDEX IF NOT EXISTS hookline_attempt_delivery_idx ON hookline_attempt (delivery, id)",
    "CREATE INDEX IF NOT EXISTS hookline_attempt_started_idx ON hookline_attempt (started_at)",
    # An endpoint's attempts newest first, however many other endpoints have: through the
    # delivery, listing a quiet endpoint beside a busy one read and sorted either's whole history
    # (0.7-2 s at 1.5 million attempts, docs/benchmarks.md).
    _ATTEMPT_ENDPOINT_INDEX,
    "CREATE INDEX IF NOT EXISTS hookline_endpoint_secret_idx"
    " ON hookline_endpoint_secret (endpoint)",
    # In-flight counts per endpoint. (Leases that ran out are found by reading the table: it
    # holds only what is in flight, and an index on the end would cost every lease a write.)
    "CREATE INDEX IF NOT EXISTS hookline_lease_endpoint_idx ON hookline_lease (endpoint)",
)

# Indexes an earlier version created; dropped when found.
_RETIRED_INDEXES = (
    "hookline_delivery_due_idx",
    "hookline_delivery_lease_idx",
    "hookline_delivery_endpoint_idx",
)

#: Delivery states (DESIGN §5). ``sending`` is not stored: it is a ``pending`` delivery with a
#: row in ``hookline_lease``.
DELIVERY_STATUSES = ("pending", "sending", "succeeded", "failed", "discarded")
#: What each attempt led to (``retry.Decision.action``): done, another attempt planned, or given up.
ATTEMPT_OUTCOMES = ("succeeded", "retry", "failed")


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
        Field("event_type", "string", length=128),
        # Handler processing (received -> processing -> processed | received again | failed).
        Field("attempts", "integer", notnull=True, default=0),
        Field("next_attempt_at", "double"),
        Field("lease_until", "double"),
        Field("lease_owner", "string", length=64),
        Field("last_error", "text"),
        migrate=migrate,
    )
    db.define_table(
        "hookline_source",
        Field("source_id", "string", length=32, notnull=True, unique=True),
        Field("name", "string", length=64, notnull=True, unique=True),
        Field("kind", "string", length=16, notnull=True),
        Field("secrets_enc", "text"),
        Field("public_keys", "text", notnull=True, default="[]"),
        Field("hmac_scheme", "text"),
        Field("tolerance_s", "integer", notnull=True, default=300),
        Field("max_body_bytes", "integer"),
        Field("enabled", "integer", notnull=True, default=1),
        Field("verify_failures", "bigint", notnull=True, default=0),
        Field("last_failure_at", "datetime"),
        Field("last_failure_reason", "string", length=64),
        Field("created_at", "datetime", notnull=True),
        Field("updated_at", "datetime", notnull=True),
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
    _define_delivery_tables(db, migrate)
    return db


def _define_delivery_tables(db: DAL, migrate: bool) -> None:
    # Flags are integers 0/1, not pydal booleans ('T'/'F' strings), and queue times are epoch
    # seconds (double), not pydal datetimes (stored to the second): the claim SQL reads them.
    db.define_table(
        "hookline_endpoint",
        Field("endpoint_id", "string", length=32, notnull=True, unique=True),
        Field("url", "string", length=2048, notnull=True),
        Field("description", "string", length=512, notnull=True, default=""),
        Field("event_types", "text", notnull=True, default="[]"),
        Field("custom_headers", "text", notnull=True, default="{}"),
        Field("signing_key_enc", "text"),
        Field("enabled", "integer", notnull=True, default=1),
        Field("disabled_reason", "string", length=512),
        Field("disabled_at", "datetime"),
        Field("retry_schedule", "text"),
        Field("timeout_s", "double", notnull=True, default=15.0),
        Field("connect_timeout_s", "double", notnull=True, default=5.0),
        Field("max_in_flight", "integer", notnull=True, default=20),
        Field("rate_limit", "double"),
        Field("fifo", "integer", notnull=True, default=0),
        Field("next_send_at", "double"),
        Field("failing_since", "datetime"),
        Field("created_at", "datetime", notnull=True),
        Field("updated_at", "datetime", notnull=True),
        Field("deleted_at", "datetime"),
        # Bumped by every rotation: workers key their cache of decrypted secrets on it.
        Field("secrets_version", "integer", notnull=True, default=1),
        migrate=migrate,
    )
    db.define_table(
        "hookline_endpoint_secret",
        Field("endpoint", "reference hookline_endpoint", notnull=True, ondelete="CASCADE"),
        Field("secret_enc", "text", notnull=True),
        Field("created_at", "datetime", notnull=True),
        Field("expires_at", "datetime"),
        migrate=migrate,
    )
    db.define_table(
        "hookline_delivery",
        Field("delivery_id", "string", length=32, notnull=True, unique=True),
        Field("event", "reference hookline_event", notnull=True, ondelete="CASCADE"),
        Field("endpoint", "reference hookline_endpoint", notnull=True, ondelete="CASCADE"),
        Field("status", "string", length=16, notnull=True, default="pending"),
        Field("attempts", "integer", notnull=True, default=0),
        Field("next_attempt_at", "double", notnull=True),
        # Unused since leases moved to hookline_lease; kept so that no migration drops columns.
        Field("lease_until", "double"),
        Field("lease_owner", "string", length=64),
        Field("last_status_code", "integer"),
        Field("last_error", "text"),
        Field("created_at", "datetime", notnull=True),
        Field("updated_at", "datetime", notnull=True),
        Field("finished_at", "datetime"),
        migrate=migrate,
    )
    # A delivery being sent: at most one lease per delivery (the unique key is what two
    # PostgreSQL workers racing for the same delivery meet on). ``attempt`` is the number this
    # send will be recorded as; the delivery's own ``attempts`` counts recorded ones. No foreign
    # key: its check locked the delivery row per lease (a third of a PostgreSQL claim's insert),
    # and a lease outlives its delivery only if that was purged while in flight, which the
    # recovery of expired leases then clears.
    db.define_table(
        "hookline_lease",
        Field("delivery", "integer", notnull=True, unique=True),
        Field("endpoint", "integer", notnull=True),
        Field("owner", "string", length=64, notnull=True),
        Field("attempt", "integer", notnull=True),
        Field("until_at", "double", notnull=True),
        migrate=migrate,
    )
    db.define_table(
        "hookline_attempt",
        Field("delivery", "reference hookline_delivery", notnull=True, ondelete="CASCADE"),
        # The delivery's endpoint, which never changes, copied so that an endpoint's attempts
        # have an index of their own (no foreign key: the delivery's already cascades).
        # NULL only in rows written before it existed and not yet filled by ``ensure_indexes``.
        Field("endpoint", "integer"),
        Field("number", "integer", notnull=True),
        Field("started_at", "datetime", notnull=True),
        Field("duration_ms", "double"),
        Field("status_code", "integer"),
        Field("response_headers", "text"),
        Field("response_body", "text"),
        Field("error", "text"),
        Field("outcome", "string", length=16, notnull=True),
        Field("worker", "string", length=64),
        migrate=migrate,
    )


def _existing_indexes(db: DAL) -> set[str]:
    if db._adapter.dbengine == "postgres":
        sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
    return {row[0] for row in db.executesql(sql)}


def ensure_indexes(db: DAL) -> None:
    """Create the indexes pydal does not express, and drop retired ones; idempotent.

    Only missing ones are created, each in its own transaction: on PostgreSQL even
    ``CREATE INDEX IF NOT EXISTS`` locks its table, and holding one table's lock while waiting
    for the next could deadlock with workers writing to both.
    """
    existing = _existing_indexes(db)
    db.commit()
    if "hookline_attempt_endpoint_idx" not in existing:
        _fill_attempt_endpoints(db)  # an upgrade (or a new database, with nothing to fill)
    for statement in _INDEXES:
        name = statement.split(" IF NOT EXISTS ", 1)[1].split()[0]
        if name not in existing:
            db.executesql(statement)
            db.commit()
    if "hookline_delivery_lease_idx" in existing:
        # A database of a version that stored leases in the delivery row; that partial index
        # (WHERE status = 'sending') finds its leased rows without reading the table.
        _release_stored_sending(db)
    # After the new ones exist, so no query goes without its index meanwhile.
    for name in _RETIRED_INDEXES:
        if name in existing:
            db.executesql(f"DROP INDEX IF EXISTS {name}")
            db.commit()


#: Attempts filled per transaction when an upgraded database gets ``hookline_attempt.endpoint``.
FILL_BATCH = 10_000


def _fill_attempt_endpoints(db: DAL) -> int:
    """Copy each attempt's endpoint from its delivery where an earlier version left it out.

    Run before the endpoint index exists (an upgrade), in batches of ids with a commit each, so
    that no transaction holds the table long. Returns how many rows were filled.
    """
    low, high = db.executesql(
        "SELECT MIN(id), MAX(id) FROM hookline_attempt WHERE endpoint IS NULL"
    )[0]
    db.commit()
    filled = 0
    while low is not None and low <= high:
        db.executesql(
            "UPDATE hookline_attempt SET endpoint = (SELECT d.endpoint FROM hookline_delivery d"
            " WHERE d.id = hookline_attempt.delivery)"
            f" WHERE id >= {int(low)} AND id < {int(low) + FILL_BATCH} AND endpoint IS NULL"
        )
        filled += db._adapter.cursor.rowcount
        db.commit()
        low += FILL_BATCH
    return filled


def _release_stored_sending(db: DAL) -> int:
    """Make deliveries that an earlier version stored as ``sending`` pending again.

    Their leases were columns of the delivery, which this version no longer reads: they are sent
    again (at least once), and a late result from an old worker is kept as an attempt only.
    """
    count = db(db.hookline_delivery.status == "sending").update(
        status="pending", lease_owner=None, lease_until=None
    )
    db.commit()
    return count
