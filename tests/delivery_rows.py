"""Delivery rows as an operator sees them, and deliveries sent once, for tests.

A delivery being sent is stored as a ``pending`` row plus a row of ``hookline_lease``
(``queue.py``). ``as_seen`` folds the lease into the delivery row: status ``sending``, the
lease's owner and end, and ``attempts`` counting the attempt in flight.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from hookline import queue
from hookline.queue import SendResult
from hookline.retry import RetryPolicy


def as_seen(db: Any, rows: list) -> list:
    """``rows`` of ``hookline_delivery``, each with its lease (if any) folded in."""
    ids = [row.id for row in rows]
    lease = db.hookline_lease
    leases = {r.delivery: r for r in db(lease.delivery.belongs(ids)).select()} if ids else {}
    for row in rows:
        held = leases.get(row.id)
        if held is not None and row.status == "pending":
            row.status = "sending"
            row.lease_owner = held.owner
            row.lease_until = held.until_at
            row.attempts = held.attempt
    return rows


def seen_deliveries(db: Any, **where: Any) -> list:
    """Every delivery as seen (fresh snapshot), filtered by column values, ``status`` as seen."""
    db.commit()
    d = db.hookline_delivery
    status = where.pop("status", None)
    query = d.id > 0
    for name, value in where.items():
        query &= d[name] == value
    rows = as_seen(db, list(db(query).select(orderby=d.id)))
    return [row for row in rows if status is None or row.status == status]


def send_once(db, at: float, status: int, *, capacity: int = 100) -> list[str]:
    """Claim what is due at ``at`` and record ``status`` for each; return their delivery ids."""
    claimed = queue.claim(db, "ops-test", now=at, capacity=capacity, lease_s=60)
    results = [
        SendResult(
            delivery_row=c.delivery_row,
            endpoint_row=c.endpoint_row,
            endpoint_id=c.endpoint_id,
            attempt=c.attempt,
            lease_owner=c.lease_owner,
            started_at=at,
            duration_ms=3.0,
            status_code=status,
            response_body=b"body %d" % status,
            retry_schedule=c.retry_schedule,
        )
        for c in claimed
    ]
    queue.record_results(
        db,
        results,
        now=at,
        policy=RetryPolicy(),
        rng=random.Random(1),
        disable_after=dt.timedelta(days=365),
    )
    return [c.delivery_id for c in claimed]
