"""The order service: every change writes its event through the outbox in the same transaction.

Functions here never commit: the caller owns the transaction, so an order and its event are
committed or rolled back together. Updates are compare-and-set on ``version``, so two concurrent
changes to one order cannot both win. Every function that publishes takes ``max_payload_bytes``
(``HOOKLINE_MAX_PAYLOAD_BYTES``, passed down by the caller): a change whose event would be larger
raises ``InvalidEvent`` (422), and the caller's rollback leaves nothing of it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pydal import DAL
from pydal.objects import Row

from hookline import order_rules
from hookline.errors import Conflict, NotFound, StaleWrite, ValidationFailed
from hookline.ids import new_id
from hookline.order_rules import OrderChanges
from hookline.outbox import (
    MAX_PAYLOAD_BYTES,
    PreparedEvent,
    insert_event,
    insert_events,
    prepare_event,
    publish,
)
from hookline.sqlconn import SqlConn, as_sql, marks
from hookline.timeutil import isoformat, utcnow

__all__ = [
    "PreparedOrder",
    "apply_patch",
    "create_order",
    "get_order",
    "insert_prepared",
    "list_orders",
    "order_to_dict",
    "prepare_insert",
    "upsert_from_webhook",
]

MAX_PAGE = 200


def order_to_dict(row: Any) -> dict[str, Any]:
    """The public representation of an order row (what the API returns and events carry)."""
    unit_price = order_rules.format_minor(row.unit_price_minor, row.currency)
    total = (
        order_rules.format_minor(row.unit_price_minor * row.quantity, row.currency)
        if row.unit_price_minor is not None
        else None
    )
    return {
        "object": "order",
        "order_id": row.order_id,
        "product_name": row.product_name,
        "quantity": row.quantity,
        "unit_price": unit_price,
        "currency": row.currency,
        "total": total,
        "customer_email": row.customer_email,
        "status": row.status,
        "source": row.source,
        "version": row.version,
        "created_at": isoformat(row.created_at),
        "updated_at": isoformat(row.updated_at),
    }


_COLUMNS = (
    "id",
    "order_id",
    "product_name",
    "quantity",
    "unit_price_minor",
    "currency",
    "customer_email",
    "status",
    "source",
    "version",
    "created_at",
    "updated_at",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM hookline_order"
_INSERT_HEAD = f"INSERT INTO hookline_order ({', '.join(_COLUMNS[1:])})"
_INSERT = f"{_INSERT_HEAD} VALUES ({', '.join('?' * (len(_COLUMNS) - 1))})"
#: Fields an update may set (never ``id``, ``order_id``, ``created_at``).
_UPDATABLE = frozenset(_COLUMNS) - {"id", "order_id", "created_at", "version"}


def _row(values: tuple | None) -> Row | None:
    if values is None:
        return None
    row = Row(zip(_COLUMNS, values, strict=True))
    row.created_at = SqlConn.read_when(row.created_at)
    row.updated_at = SqlConn.read_when(row.updated_at)
    return row


def _find(db: DAL | SqlConn, order_id: str) -> Row | None:
    return _row(as_sql(db).one(_SELECT + " WHERE order_id = ?", (order_id,)))


def get_order(db: DAL, order_id: str) -> dict[str, Any]:
    """The order ``order_id``; raise ``NotFound``."""
    row = _find(db, order_id)
    if row is None:
        raise NotFound(f"no order {order_id!r}")
    return order_to_dict(row)


@dataclass(frozen=True)
class PreparedOrder:
    """A new order ready to insert with its ``order.created`` event (see ``prepare_insert``)."""

    order_id: str
    values: tuple[Any, ...]  # in _COLUMNS[1:] order; datetimes converted at insert
    order: dict[str, Any]
    event: PreparedEvent


def prepare_insert(
    changes: OrderChanges,
    source: str,
    now: dt.datetime,
    *,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> PreparedOrder:
    """Everything a new order needs that does not depend on the database: its row, its public
    form and its event. Raises ``ValidationFailed`` without a product, ``InvalidEvent`` when
    its ``order.created`` would be over ``max_payload_bytes``."""
    if changes.product_name is None:
        raise ValidationFailed(
            "a new order needs a product", errors={"product_name": "is required for a new order"}
        )
    order_id = changes.order_id or new_id("ord")
    stored_now = now.replace(microsecond=0)  # as the row will hold it
    values = {
        **dict.fromkeys(_COLUMNS[1:]),
        "quantity": 1,
        **changes.given(),
        "order_id": order_id,
        "status": "pending",
        "source": source,
        "version": 1,
        "created_at": stored_now,
        "updated_at": stored_now,
    }
    order = order_to_dict(Row(values))
    event = prepare_event("order.created", {"order": order}, now=now, max_bytes=max_payload_bytes)
    return PreparedOrder(order_id, tuple(values[name] for name in _COLUMNS[1:]), order, event)


def insert_prepared(db: DAL | SqlConn, prepared: PreparedOrder) -> dict[str, Any]:
    """Insert a prepared order and its event in the caller's transaction; return the order."""
    sql = as_sql(db)
    sql.insert(_INSERT, sql.params(prepared.values))
    insert_event(sql, prepared.event)
    return prepared.order


def insert_prepared_many(sql: SqlConn, prepared: list[PreparedOrder]) -> None:
    """``insert_prepared`` for several new orders at once (multi-row inserts)."""
    sql.insert_rows(_INSERT_HEAD, [sql.params(p.values) for p in prepared])
    insert_events(sql, [p.event for p in prepared])


def existing_order_ids(sql: SqlConn, order_ids: list[str]) -> set[str]:
    """Which of ``order_ids`` name stored orders (one query)."""
    if not order_ids:
        return set()
    rows = sql.all(
        f"SELECT order_id FROM hookline_order WHERE order_id IN ({marks(len(order_ids))})",
        order_ids,
    )
    return {row[0] for row in rows}


def _insert(
    db: DAL | SqlConn,
    changes: OrderChanges,
    source: str,
    now: dt.datetime,
    max_payload_bytes: int,
) -> dict[str, Any]:
    prepared = prepare_insert(changes, source, now, max_payload_bytes=max_payload_bytes)
    return insert_prepared(db, prepared)


def create_order(
    db: DAL | SqlConn,
    changes: OrderChanges,
    *,
    source: str = "api",
    now: dt.datetime | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> dict[str, Any]:
    """Create an order and publish ``order.created``; raise ``Conflict`` if the id is taken,
    ``InvalidEvent`` if the event would be over ``max_payload_bytes``."""
    if changes.order_id is not None and _find(db, changes.order_id) is not None:
        raise Conflict(
            f"order {changes.order_id!r} already exists", errors={"order_id": "already exists"}
        )
    return _insert(db, changes, source, now or utcnow(), max_payload_bytes)


def _compare_and_set(db: DAL | SqlConn, row: Any, values: dict[str, Any]) -> Row:
    sql = as_sql(db)
    unknown = set(values) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    assignments = ", ".join(f"{name} = ?" for name in values)
    cursor = sql.execute(
        f"UPDATE hookline_order SET version = ?, {assignments} WHERE id = ? AND version = ?",
        sql.params((row.version + 1, *values.values(), row.id, row.version)),
    )
    if cursor.rowcount != 1:
        raise StaleWrite(
            f"order {row.order_id!r} was changed by another request; retry",
            errors={"version": "stale"},
        )
    return _row(sql.one(_SELECT + " WHERE id = ?", (row.id,)))


def _update_fields(
    db: DAL | SqlConn, row: Any, changes: OrderChanges, now: dt.datetime, max_payload_bytes: int
) -> tuple[Any, list[str]]:
    changed = {k: v for k, v in changes.given().items() if row[k] != v}
    if not changed:
        return row, []
    row = _compare_and_set(db, row, {**changed, "updated_at": now})
    publish(
        db,
        "order.updated",
        {"order": order_to_dict(row), "changed": sorted(changed)},
        now=now,
        max_bytes=max_payload_bytes,
    )
    return row, sorted(changed)


def upsert_from_webhook(
    db: DAL | SqlConn,
    changes: OrderChanges,
    *,
    now: dt.datetime | None = None,
    prepared: PreparedOrder | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> tuple[dict[str, Any], str]:
    """Create the order ``changes.order_id`` or update its given fields.

    Returns the order and what happened: ``"created"``, ``"updated"`` or ``"unchanged"`` (no
    event is published when nothing changed). ``prepared`` (``prepare_insert`` of the same
    changes, ``now`` and limit) is inserted as is when the order is new.
    """
    now = now or utcnow()
    if changes.order_id is None:
        raise ValidationFailed("order_id is required", errors={"order_id": "is required"})
    row = _find(db, changes.order_id)
    if row is None:
        if prepared is not None:
            return insert_prepared(db, prepared), "created"
        return _insert(db, changes, "webhook", now, max_payload_bytes), "created"
    if row.status in ("shipped", "cancelled") and changes.given():
        fields_differ = any(row[k] != v for k, v in changes.given().items())
        if fields_differ:
            raise Conflict(
                f"order {row.order_id!r} is {row.status} and can no longer change",
                errors={"order_id": f"order is {row.status}"},
            )
    row, changed = _update_fields(db, row, changes, now, max_payload_bytes)
    return order_to_dict(row), ("updated" if changed else "unchanged")


def apply_patch(
    db: DAL | SqlConn,
    order_id: str,
    changes: OrderChanges,
    *,
    now: dt.datetime | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> dict[str, Any]:
    """Change an order's fields (only while pending) and/or move it to a new status.

    Publishes ``order.updated`` for field changes and ``order.<status>`` for a transition.
    Raises ``NotFound``, ``Conflict`` for an illegal transition or a stale concurrent write, or
    ``InvalidEvent`` for an event over ``max_payload_bytes`` (the caller rolls back).
    """
    now = now or utcnow()
    row = _find(db, order_id)
    if row is None:
        raise NotFound(f"no order {order_id!r}")
    if changes.given() and row.status != "pending":
        differs = any(row[k] != v for k, v in changes.given().items())
        if differs:
            raise Conflict(
                f"order {order_id!r} is {row.status}; only pending orders can be edited",
                errors={"status": f"order is {row.status}"},
            )
    if changes.status is not None and changes.status != row.status:
        order_rules.check_transition(row.status, changes.status)
    row, _ = _update_fields(db, row, changes, now, max_payload_bytes)
    if changes.status is not None and changes.status != row.status:
        previous = row.status
        row = _compare_and_set(db, row, {"status": changes.status, "updated_at": now})
        publish(
            db,
            order_rules.status_event(changes.status),
            {"order": order_to_dict(row), "previous_status": previous},
            now=now,
            max_bytes=max_payload_bytes,
        )
    return order_to_dict(row)


def list_orders(
    db: DAL, *, status: str | None = None, limit: int = 50, cursor: int | None = None
) -> dict[str, Any]:
    """A page of orders, newest first: ``{"data", "has_more", "next_cursor"}``."""
    limit = max(1, min(limit, MAX_PAGE))
    table = db.hookline_order
    query = table.id > 0
    if status is not None:
        query &= table.status == status
    if cursor is not None:
        query &= table.id < cursor
    rows = db(query).select(orderby=~table.id, limitby=(0, limit + 1))
    page = list(rows)[:limit]
    has_more = len(rows) > limit
    return {
        "object": "list",
        "data": [order_to_dict(row) for row in page],
        "has_more": has_more,
        "next_cursor": str(page[-1].id) if has_more and page else None,
    }
