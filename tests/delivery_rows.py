"""Delivery rows as an operator sees them, for tests.

A delivery being sent is stored as a ``pending`` row plus a row of ``hookline_lease``
(``queue.py``). ``as_seen`` folds the lease into the delivery row: status ``sending``, the
lease's owner and end, and ``attempts`` counting the attempt in flight.
"""

from __future__ import annotations

from typing import Any


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
