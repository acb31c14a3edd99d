"""Discarding the unfinished deliveries of a disabled or deleted endpoint, a batch at a time.

Disabling or deleting an endpoint discards its unfinished deliveries. In one transaction that
took 1.2-1.5 s of SQLite's write lock for 200,000 of them (publishers and the receiver's writer
waiting) and 5.1 s on PostgreSQL, and a backlog is largest exactly when an endpoint has failed
for days and is disabled for it. So the transaction that disables discards only a first batch;
the rest ("left behind") is discarded a batch per committed transaction: by the worker, in the
background, or by the CLI command that disabled it, which waits. Meanwhile no claim takes them
(claims take from enabled endpoints only, and do not step over their backlog), and an endpoint
is enabled again only once nothing is left behind: otherwise its old deliveries would be sent.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from pydal import DAL

from hookline.database import begin_write
from hookline.fanout import dialect_sql, is_postgres
from hookline.timeutil import sql_datetime, utcnow

__all__ = [
    "DISCARD_BATCH",
    "LeftBehind",
    "discard_batch",
    "discard_left_behind",
    "left_behind",
    "left_behind_count",
]

#: Deliveries discarded per transaction. On this machine a batch of 1,000 held SQLite's write
#: lock 11 ms (at most 33 ms) and took 36 ms (at most 83 ms) on PostgreSQL.
DISCARD_BATCH = 1_000

#: Pause between two batches, so that writers waiting for SQLite's lock get it in between.
PAUSE_BETWEEN_BATCHES_S = 0.02

# In no particular order: an order would let the planner read the primary key through the
# finished history. SQLite: INDEXED BY, for with the statistics of a table whose deliveries
# were all pending once it scanned the whole table for every batch (200,000: 21 s).
_DISCARD_BATCH = """
UPDATE hookline_delivery SET status = 'discarded', last_error = %s, updated_at = %s,
    finished_at = %s
WHERE id IN (
    SELECT d.id FROM hookline_delivery d {indexed}
    WHERE d.endpoint = %s AND d.status = 'pending' {still_disabled}
    LIMIT %s)
"""
# A batch after the disabling transaction discards only while the endpoint is still disabled:
# never what was fanned out to it after it was enabled again.
_STILL_DISABLED = (
    "AND EXISTS (SELECT 1 FROM hookline_endpoint e WHERE e.id = d.endpoint AND e.enabled = 0)"
)


def discard_batch(
    db: DAL,
    endpoint_row: int,
    now: dt.datetime,
    why: str,
    limit: int,
    *,
    while_disabled: bool = True,
) -> int:
    """Discard up to ``limit`` of an endpoint's unfinished deliveries, with ``why`` as their
    last error; returns how many. With ``while_disabled`` (any batch but the one in the
    disabling transaction) only if the endpoint is disabled. Never commits; leaves leases to
    the caller."""
    statement = dialect_sql(
        db,
        _DISCARD_BATCH.format(
            indexed="" if is_postgres(db) else "INDEXED BY hookline_delivery_pending_ep_idx",
            still_disabled=_STILL_DISABLED if while_disabled else "",
        ),
    )
    stamp = sql_datetime(now)
    cursor = db._adapter.cursor
    cursor.execute(statement, [why, stamp, stamp, endpoint_row, limit])
    return max(cursor.rowcount, 0)


class LeftBehind(NamedTuple):
    """A disabled or deleted endpoint that still has unfinished deliveries."""

    id: int
    endpoint_id: str
    reason: str


def _reason(deleted_at: Any, disabled_reason: str | None) -> str:
    if deleted_at is not None:
        return "endpoint deleted"
    return f"endpoint disabled: {disabled_reason or ''}"


# A lookup in the pending index per disabled or deleted endpoint, in one statement: the worker
# asks every few seconds, and deleted endpoints are kept for their history.
_LEFT_BEHIND = """
SELECT e.id, e.endpoint_id, e.deleted_at, e.disabled_reason FROM hookline_endpoint e
WHERE e.enabled = 0 AND EXISTS (
    SELECT 1 FROM hookline_delivery d WHERE d.endpoint = e.id AND d.status = 'pending')
ORDER BY e.id
"""


def left_behind(db: DAL) -> list[LeftBehind]:
    """Disabled or deleted endpoints whose unfinished deliveries are not all discarded yet.
    Reads only, and ends the read transaction (commits)."""
    rows = db.executesql(_LEFT_BEHIND)
    db.commit()
    return [LeftBehind(int(row[0]), row[1], _reason(row[2], row[3])) for row in rows]


def left_behind_count(db: DAL, endpoint_row: int) -> int:
    """How many of a disabled endpoint's unfinished deliveries are still to be discarded."""
    d = db.hookline_delivery
    return db((d.endpoint == endpoint_row) & (d.status == "pending")).count()


def discard_left_behind(
    db: DAL,
    *,
    endpoint_row: int | None = None,
    batches: int | None = None,
    pause_s: float | None = None,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], dt.datetime] = utcnow,
) -> int:
    """Discard what disabled or deleted endpoints (or only ``endpoint_row``) left behind, a
    batch per committed transaction, at most ``batches`` batches (None: until nothing is left
    or ``stop()`` says so, asked between batches), ``pause_s`` apart (None:
    ``PAUSE_BETWEEN_BATCHES_S``). Commits what the caller had open first. ``progress`` gets each
    batch's count. Returns how many were discarded."""
    db.commit()
    endpoints = [ep for ep in left_behind(db) if endpoint_row in (None, ep.id)]
    discarded = 0
    for endpoint in endpoints:
        while (batches is None or batches > 0) and not stop():
            if batches is not None:
                batches -= 1
            begin_write(db)
            try:
                n = discard_batch(db, endpoint.id, clock(), endpoint.reason, DISCARD_BATCH)
                db.commit()
            except BaseException:
                db.rollback()
                raise
            discarded += n
            if progress is not None:
                progress(n)
            if n < DISCARD_BATCH:
                break
            time.sleep(PAUSE_BETWEEN_BATCHES_S if pause_s is None else pause_s)
    return discarded
