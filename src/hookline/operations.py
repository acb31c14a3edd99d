"""Operator actions on deliveries: inspect, retry, recover, replay, ping, purge.

Each function works in the caller's transaction except ``recover_endpoint`` and ``purge``,
which commit in batches so that a large recovery or purge never holds one long transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from pydal import DAL

from hookline import endpoints
from hookline.errors import Conflict, NotFound
from hookline.fanout import fan_out, is_postgres, subscribers
from hookline.outbox import publish
from hookline.timeutil import from_epoch, isoformat, to_epoch, utcnow

__all__ = [
    "delivery_to_dict",
    "get_delivery",
    "list_attempts",
    "list_deliveries",
    "purge",
    "recover_endpoint",
    "replay_event",
    "retry_delivery",
    "send_ping",
]

MAX_PAGE = 200
_BATCH = 500


def delivery_to_dict(
    row: Any, event: Any, endpoint: Any, *, leased: bool = False
) -> dict[str, Any]:
    """The public view of a delivery; ``leased``: a worker is sending it (status ``sending``)."""
    status = "sending" if leased and row.status == "pending" else row.status
    return {
        "object": "delivery",
        "delivery_id": row.delivery_id,
        "event_id": event.event_id,
        "event_type": event.type,
        "endpoint_id": endpoint.endpoint_id,
        "status": status,
        "attempts": row.attempts,
        "next_attempt_at": isoformat(from_epoch(row.next_attempt_at))
        if status == "pending"
        else None,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "created_at": isoformat(row.created_at),
        "updated_at": isoformat(row.updated_at),
        "finished_at": isoformat(row.finished_at),
    }


def _attempt_to_dict(row: Any) -> dict[str, Any]:
    return {
        "number": row.number,
        "started_at": isoformat(row.started_at),
        "duration_ms": row.duration_ms,
        "status_code": row.status_code,
        "outcome": row.outcome,
        "error": row.error,
        "response_headers": json.loads(row.response_headers) if row.response_headers else {},
        "response_body": row.response_body,
        "worker": row.worker,
    }


def _joined(db: DAL, query: Any, limit: int | None = None) -> list[dict[str, Any]]:
    d, ev, ep = db.hookline_delivery, db.hookline_event, db.hookline_endpoint
    rows = db(query & (d.event == ev.id) & (d.endpoint == ep.id)).select(
        d.ALL,
        ev.event_id,
        ev.type,
        ep.endpoint_id,
        orderby=~d.id,
        limitby=(0, limit) if limit else None,
    )
    leased = _leased_among(db, [r.hookline_delivery.id for r in rows])
    return [
        delivery_to_dict(
            r.hookline_delivery,
            r.hookline_event,
            r.hookline_endpoint,
            leased=r.hookline_delivery.id in leased,
        )
        for r in rows
    ]


def _leased_among(db: DAL, delivery_rows: list[int]) -> set[int]:
    """Which of these deliveries a worker holds a lease on (is sending)."""
    if not delivery_rows:
        return set()
    lease = db.hookline_lease
    return {r.delivery for r in db(lease.delivery.belongs(delivery_rows)).select(lease.delivery)}


def _status_query(db: DAL, status: str) -> Any:
    # "sending" is stored as a pending delivery with a lease (queue.py).
    d, lease = db.hookline_delivery, db.hookline_lease
    if status == "sending":
        return (d.status == "pending") & d.id.belongs(db(lease)._select(lease.delivery))
    if status == "pending":
        return (d.status == "pending") & ~d.id.belongs(db(lease)._select(lease.delivery))
    return d.status == status


def _find(db: DAL, delivery_id: str) -> Any:
    row = db(db.hookline_delivery.delivery_id == delivery_id).select(limitby=(0, 1)).first()
    if row is None:
        raise NotFound(f"no delivery {delivery_id!r}")
    return row


def _find_event(db: DAL, event_id: str) -> Any:
    row = db(db.hookline_event.event_id == event_id).select(limitby=(0, 1)).first()
    if row is None:
        raise NotFound(f"no event {event_id!r}")
    return row


def get_delivery(db: DAL, delivery_id: str) -> dict[str, Any]:
    """A delivery with every attempt, oldest first; raise ``NotFound``."""
    row = _find(db, delivery_id)
    [view] = _joined(db, db.hookline_delivery.id == row.id)
    attempts = db(db.hookline_attempt.delivery == row.id).select(orderby=db.hookline_attempt.id)
    view["attempt_log"] = [_attempt_to_dict(a) for a in attempts]
    return view


def list_deliveries(
    db: DAL,
    *,
    endpoint_id: str | None = None,
    event_id: str | None = None,
    status: str | None = None,
    limit: int = 50,
    cursor: int | None = None,
) -> dict[str, Any]:
    """A page of deliveries, newest first, filtered by endpoint, event and status."""
    d = db.hookline_delivery
    query = d.id > 0
    if endpoint_id is not None:
        query &= d.endpoint == endpoints.find_endpoint(db, endpoint_id).id
    if event_id is not None:
        query &= d.event == _find_event(db, event_id).id
    if status is not None:
        query &= _status_query(db, status)
    if cursor is not None:
        query &= d.id < cursor
    limit = max(1, min(limit, MAX_PAGE))
    ids = [r.id for r in db(query).select(d.id, orderby=~d.id, limitby=(0, limit + 1))]
    page = ids[:limit]
    data = _joined(db, d.id.belongs(page)) if page else []
    return {
        "object": "list",
        "data": data,
        "has_more": len(ids) > limit,
        "next_cursor": str(page[-1]) if len(ids) > limit else None,
    }


def list_attempts(
    db: DAL,
    *,
    endpoint_id: str | None = None,
    delivery_id: str | None = None,
    event_id: str | None = None,
    outcome: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    cursor: int | None = None,
) -> dict[str, Any]:
    """A page of attempts, newest first, filtered by endpoint, delivery, event, outcome and
    start time (``since`` inclusive, ``until`` exclusive, naive UTC); ``NotFound`` for an
    endpoint, delivery or event that does not exist. ``next_cursor`` continues the listing."""
    a, d = db.hookline_attempt, db.hookline_delivery
    ev, ep = db.hookline_event, db.hookline_endpoint
    query = (a.delivery == d.id) & (d.event == ev.id) & (d.endpoint == ep.id)
    if endpoint_id is not None:
        endpoint_row = endpoints.find_endpoint(db, endpoint_id).id
        query &= (a.endpoint >= endpoint_row) & (a.endpoint <= endpoint_row)
    if delivery_id is not None:
        query &= a.delivery == _find(db, delivery_id).id
    if event_id is not None:
        query &= d.event == _find_event(db, event_id).id
    if outcome is not None:
        query &= a.outcome == outcome
    if since is not None:
        query &= a.started_at >= since
    if until is not None:
        query &= a.started_at < until
    if cursor is not None:
        query &= a.id < cursor
    limit = max(1, min(limit, MAX_PAGE))
    # With an endpoint, the same order spelled through its index, and the endpoint as a range:
    # PostgreSQL drops a sort key that an equality makes constant, then walked the whole table
    # newest first (taking the endpoint for a third of it): 0.2-0.4 s for an endpoint whose
    # attempts were all old, ~9 ms through the index (bench/listings.py).
    order = ~a.endpoint | ~a.id if endpoint_id is not None else ~a.id
    rows = db(query).select(
        a.ALL,
        d.delivery_id,
        ev.event_id,
        ev.type,
        ep.endpoint_id,
        orderby=order,
        limitby=(0, limit + 1),
    )
    page = rows[:limit]
    data = [
        {
            "object": "attempt",
            "delivery_id": r.hookline_delivery.delivery_id,
            "endpoint_id": r.hookline_endpoint.endpoint_id,
            "event_id": r.hookline_event.event_id,
            "event_type": r.hookline_event.type,
            **_attempt_to_dict(r.hookline_attempt),
        }
        for r in page
    ]
    more = len(rows) > limit
    return {
        "object": "list",
        "data": data,
        "has_more": more,
        "next_cursor": str(page[-1].hookline_attempt.id) if more else None,
    }


def retry_delivery(db: DAL, delivery_id: str, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Send a delivery again now (whatever it ended as), unless it is being sent right now."""
    now = now or utcnow()
    row = _find(db, delivery_id)
    if _leased_among(db, [row.id]):
        raise Conflict(
            f"delivery {delivery_id} is being sent right now", errors={"status": "sending"}
        )
    endpoint = db.hookline_endpoint[row.endpoint]
    if not endpoint.enabled:
        raise Conflict(
            f"endpoint {endpoint.endpoint_id} is disabled; enable it first",
            errors={"endpoint": "disabled"},
        )
    row.update_record(
        status="pending", next_attempt_at=to_epoch(now), updated_at=now, finished_at=None
    )
    _notify(db)
    return get_delivery(db, delivery_id)


def recover_endpoint(
    db: DAL,
    endpoint_id: str,
    since: dt.datetime,
    *,
    now: dt.datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Retry every failed delivery of an endpoint created since ``since``; commits in batches.

    ``progress(done, total)`` is called after each batch. Returns how many were recovered.
    """
    now = now or utcnow()
    endpoint = endpoints.find_endpoint(db, endpoint_id)
    if not endpoint.enabled:
        raise Conflict(
            f"endpoint {endpoint_id} is disabled; enable it first", errors={"endpoint": "disabled"}
        )
    d = db.hookline_delivery
    query = (d.endpoint == endpoint.id) & (d.status == "failed") & (d.created_at >= since)
    total, done = db(query).count(), 0
    while True:
        ids = [r.id for r in db(query).select(d.id, orderby=d.id, limitby=(0, _BATCH))]
        if not ids:
            break
        db(d.id.belongs(ids)).update(
            status="pending", next_attempt_at=to_epoch(now), updated_at=now, finished_at=None
        )
        _notify(db)
        db.commit()
        done += len(ids)
        if progress:
            progress(done, total)
    return done


def replay_event(
    db: DAL, event_id: str, *, endpoint_id: str | None = None, now: dt.datetime | None = None
) -> list[str]:
    """Deliver an event again, as new deliveries, to one endpoint or to every current subscriber.

    Receivers see the same ``webhook-id`` (the event id), so a replay is idempotent for them.
    """
    now = now or utcnow()
    event = _find_event(db, event_id)
    if endpoint_id is not None:
        endpoint = endpoints.find_endpoint(db, endpoint_id)
        if not endpoint.enabled:
            raise Conflict(f"endpoint {endpoint_id} is disabled", errors={"endpoint": "disabled"})
        targets = [endpoint.id]
    else:
        targets = subscribers(db, event.type)
    created = fan_out(db, event.id, targets, now)
    d = db.hookline_delivery
    return [r.delivery_id for r in db(d.id.belongs(created)).select(d.delivery_id, orderby=d.id)]


def send_ping(db: DAL, endpoint_id: str, *, now: dt.datetime | None = None) -> str:
    """Publish a ``ping`` event to one endpoint only; return the event id."""
    endpoint = endpoints.find_endpoint(db, endpoint_id)
    if not endpoint.enabled:
        raise Conflict(f"endpoint {endpoint_id} is disabled", errors={"endpoint": "disabled"})
    return publish(
        db,
        "ping",
        {"endpoint_id": endpoint_id, "message": "a test event from hookline"},
        now=now,
        endpoint_ids=[endpoint.id],
    )


def _notify(db: DAL) -> None:
    if is_postgres(db):
        from hookline.fanout import NOTIFY_CHANNEL

        db.executesql(f"NOTIFY {NOTIFY_CHANNEL}")


def _delete_batches(db: DAL, table: Any, query: Any) -> int:
    deleted = 0
    while True:
        ids = [r.id for r in db(query).select(table.id, limitby=(0, _BATCH))]
        if not ids:
            return deleted
        deleted += db(table.id.belongs(ids)).delete()
        db.commit()


def purge(db: DAL, older_than: dt.timedelta, *, now: dt.datetime | None = None) -> dict[str, int]:
    """Delete attempts, finished deliveries, events without unfinished deliveries and inbox rows
    older than ``older_than``, in batches (each committed). Returns the counts per table."""
    now = now or utcnow()
    try:
        cutoff = now - older_than
    except OverflowError:  # older than the calendar: nothing is
        cutoff = dt.datetime.min
    d, a, ev, inbox = (
        db.hookline_delivery,
        db.hookline_attempt,
        db.hookline_event,
        db.hookline_inbox,
    )
    counts = {"attempts": _delete_batches(db, a, a.started_at < cutoff)}
    finished = d.status.belongs(("succeeded", "failed", "discarded"))
    old_deliveries = finished & (d.created_at < cutoff)
    counts["attempts"] += _delete_batches(
        db, a, a.delivery.belongs(db(old_deliveries)._select(d.id))
    )
    counts["deliveries"] = _delete_batches(db, d, old_deliveries)
    # Only events no delivery refers to any more: deleting one would cascade to its deliveries,
    # and a recent replay of an old event must live out its own retention.
    open_events = db(d.id > 0)._select(d.event)
    counts["events"] = _delete_batches(
        db, ev, (ev.created_at < cutoff) & ~ev.id.belongs(open_events)
    )
    counts["inbox"] = _delete_batches(db, inbox, inbox.received_at < cutoff)
    return counts
