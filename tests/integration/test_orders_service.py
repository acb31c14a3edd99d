"""The order service (``hookline.orders``) against a real database, on SQLite and PostgreSQL.

Every change must publish its event in the same transaction (guarantee 1), refused changes must
write nothing (guarantee 4), and updates are compare-and-set on ``version`` so a stale writer
loses with ``Conflict`` instead of overwriting a concurrent change.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from hookline import orders
from hookline.errors import Conflict, NotFound, ValidationFailed
from hookline.ids import is_id
from hookline.order_rules import OrderChanges, parse_create, parse_patch, parse_webhook

NOW = dt.datetime(2026, 3, 1, 12, 0, 0)


def _events(db) -> list[tuple[str, dict[str, Any]]]:
    """Every event visible to ``db``, in publish order, as ``(type, payload)``."""
    rows = db(db.hookline_event).select(orderby=db.hookline_event.event_id)
    result = []
    for row in rows:
        payload = json.loads(row.payload)
        assert payload["type"] == row.type
        result.append((row.type, payload))
    return result


def _committed_events(db) -> list[tuple[str, dict[str, Any]]]:
    db.commit()  # end any read snapshot so we see what others committed
    return _events(db)


def _create(db, order_id: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"product_name": "mug", "unit_price": "9.50", "currency": "EUR", **fields}
    if order_id is not None:
        body["order_id"] = order_id
    return orders.create_order(db, parse_create(body), now=NOW)


def _row(db, order_id: str):
    return db(db.hookline_order.order_id == order_id).select().first()


def _move(db, order_id: str, *statuses: str) -> dict[str, Any]:
    order: dict[str, Any] = {}
    for status in statuses:
        order = orders.apply_patch(db, order_id, parse_patch({"status": status}), now=NOW)
    return order


# --- create_order / get_order -----------------------------------------------------------------


def test_create_order_generates_an_ord_id_and_publishes_order_created(db, other_db):
    order = _create(db, quantity="2", customer_email="ann@example.com")
    db.commit()

    assert is_id(order["order_id"], "ord")
    assert order["status"] == "pending"
    assert order["version"] == 1
    assert order["source"] == "api"
    assert order["quantity"] == 2
    assert order["unit_price"] == "9.50"
    assert order["total"] == "19.00"
    assert order["currency"] == "EUR"
    assert order["customer_email"] == "ann@example.com"
    assert order["created_at"] == order["updated_at"] == "2026-03-01T12:00:00.000Z"

    assert orders.get_order(other_db, order["order_id"]) == order
    events = _committed_events(other_db)
    assert [t for t, _ in events] == ["order.created"]
    assert events[0][1]["data"] == {"order": order}


def test_generated_ids_are_distinct(db):
    ids = {_create(db)["order_id"] for _ in range(20)}
    db.commit()
    assert len(ids) == 20
    assert db(db.hookline_order).count() == 20
    assert db(db.hookline_event.type == "order.created").count() == 20


def test_create_order_keeps_the_clients_order_id(db, other_db):
    order = _create(db, "A-1001")
    db.commit()
    assert order["order_id"] == "A-1001"
    assert _row(other_db, "A-1001").product_name == "mug"
    assert orders.get_order(other_db, "A-1001")["order_id"] == "A-1001"


def test_duplicate_order_id_is_a_conflict_and_writes_nothing(db, other_db):
    first = _create(db, "A-1001")
    db.commit()

    with pytest.raises(Conflict) as info:
        _create(db, "A-1001", product_name="teapot")
    assert info.value.status == 409
    assert info.value.errors == {"order_id": "already exists"}
    db.commit()

    assert other_db(other_db.hookline_order).count() == 1
    assert orders.get_order(other_db, "A-1001") == first
    assert [t for t, _ in _committed_events(other_db)] == ["order.created"]


def test_duplicate_order_id_within_one_uncommitted_transaction_is_a_conflict(db):
    _create(db, "A-1")
    with pytest.raises(Conflict):
        _create(db, "A-1")
    assert db(db.hookline_order).count() == 1


def test_create_without_product_is_refused_and_writes_nothing(db):
    with pytest.raises(ValidationFailed) as info:
        orders.create_order(db, OrderChanges(order_id="A-1"))
    assert "product_name" in info.value.errors
    db.commit()
    assert db(db.hookline_order).count() == 0
    assert db(db.hookline_event).count() == 0


def test_get_order_unknown_is_not_found(db):
    with pytest.raises(NotFound) as info:
        orders.get_order(db, "nope")
    assert info.value.status == 404
    assert "nope" in info.value.message


# --- apply_patch: field edits -----------------------------------------------------------------


def test_field_edit_while_pending_publishes_order_updated_with_changed(db, other_db):
    _create(db, "A-1")
    db.commit()
    later = NOW + dt.timedelta(minutes=5)

    order = orders.apply_patch(
        db, "A-1", parse_patch({"quantity": 3, "product_name": "big mug"}), now=later
    )
    db.commit()

    assert order["quantity"] == 3
    assert order["product_name"] == "big mug"
    assert order["total"] == "28.50"
    assert order["version"] == 2
    assert order["status"] == "pending"
    assert order["updated_at"] == "2026-03-01T12:05:00.000Z"
    assert order["created_at"] == "2026-03-01T12:00:00.000Z"
    assert orders.get_order(other_db, "A-1") == order

    events = _committed_events(other_db)
    assert [t for t, _ in events] == ["order.created", "order.updated"]
    data = events[1][1]["data"]
    assert data["changed"] == ["product_name", "quantity"]
    assert data["order"] == order


def test_field_edit_only_lists_fields_that_really_changed(db):
    _create(db, "A-1")
    order = orders.apply_patch(db, "A-1", parse_patch({"quantity": 5, "product_name": "mug"}))
    db.commit()
    assert order["quantity"] == 5
    events = _events(db)
    assert events[-1][0] == "order.updated"
    assert events[-1][1]["data"]["changed"] == ["quantity"]


def test_field_edit_with_identical_values_is_a_no_op(db):
    _create(db, "A-1", quantity="2")
    db.commit()
    order = orders.apply_patch(db, "A-1", parse_patch({"quantity": "2", "product_name": "mug"}))
    db.commit()
    assert order["version"] == 1
    assert [t for t, _ in _events(db)] == ["order.created"]


@pytest.mark.parametrize("path", [("paid",), ("paid", "shipped"), ("cancelled",)])
def test_field_edit_after_pending_is_a_conflict_and_writes_nothing(db, other_db, path):
    _create(db, "A-1")
    before = _move(db, "A-1", *path)
    db.commit()
    events_before = _committed_events(other_db)

    with pytest.raises(Conflict) as info:
        orders.apply_patch(db, "A-1", parse_patch({"quantity": 7}))
    assert "status" in info.value.errors
    db.commit()

    assert orders.get_order(other_db, "A-1") == before
    assert _committed_events(other_db) == events_before


def test_patch_unknown_order_is_not_found(db):
    with pytest.raises(NotFound):
        orders.apply_patch(db, "missing", parse_patch({"status": "paid"}))
    db.commit()
    assert db(db.hookline_event).count() == 0


# --- apply_patch: transitions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "events"),
    [
        (("paid",), ["order.paid"]),
        (("paid", "shipped"), ["order.paid", "order.shipped"]),
        (("cancelled",), ["order.cancelled"]),
        (("paid", "cancelled"), ["order.paid", "order.cancelled"]),
    ],
)
def test_transitions_publish_their_event_with_previous_status(db, other_db, path, events):
    _create(db, "A-1")
    db.commit()

    previous = "pending"
    for step, status in enumerate(path, start=1):
        order = orders.apply_patch(db, "A-1", parse_patch({"status": status}), now=NOW)
        db.commit()
        assert order["status"] == status
        assert order["version"] == 1 + step
        stored = orders.get_order(other_db, "A-1")
        assert stored == order
        event_type, payload = _committed_events(other_db)[-1]
        assert event_type == f"order.{status}"
        assert payload["data"]["previous_status"] == previous
        assert payload["data"]["order"] == order
        previous = status

    assert [t for t, _ in _committed_events(other_db)] == ["order.created", *events]


def test_field_edit_and_transition_in_one_patch_publish_both_events(db):
    _create(db, "A-1")
    order = orders.apply_patch(db, "A-1", parse_patch({"quantity": 4, "status": "paid"}))
    db.commit()
    assert order["quantity"] == 4
    assert order["status"] == "paid"
    assert order["version"] == 3
    events = _events(db)
    assert [t for t, _ in events] == ["order.created", "order.updated", "order.paid"]
    assert events[1][1]["data"]["changed"] == ["quantity"]
    assert events[1][1]["data"]["order"]["status"] == "pending"
    assert events[2][1]["data"]["previous_status"] == "pending"
    assert events[2][1]["data"]["order"] == order


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ((), "shipped"),
        (("paid",), "pending"),
        (("paid", "shipped"), "paid"),
        (("paid", "shipped"), "cancelled"),
        (("paid", "shipped"), "pending"),
        (("cancelled",), "paid"),
        (("cancelled",), "pending"),
        (("paid", "cancelled"), "shipped"),
    ],
)
def test_illegal_transition_is_a_conflict_and_writes_nothing(db, other_db, path, target):
    _create(db, "A-1")
    before = _move(db, "A-1", *path) if path else orders.get_order(db, "A-1")
    db.commit()
    events_before = _committed_events(other_db)

    with pytest.raises(Conflict) as info:
        orders.apply_patch(db, "A-1", parse_patch({"status": target}))
    assert info.value.status == 409
    assert "status" in info.value.errors
    # Nothing is written even inside the caller's still-open transaction...
    assert orders.get_order(db, "A-1") == before
    assert _events(db) == events_before
    db.commit()
    # ...nor after the caller commits it.
    assert orders.get_order(other_db, "A-1") == before
    assert _committed_events(other_db) == events_before


def test_illegal_transition_with_field_edits_writes_nothing(db, other_db):
    before = _create(db, "A-1")
    db.commit()
    with pytest.raises(Conflict):
        orders.apply_patch(db, "A-1", parse_patch({"quantity": 9, "status": "shipped"}))
    assert orders.get_order(db, "A-1") == before
    db.commit()
    assert orders.get_order(other_db, "A-1") == before
    assert [t for t, _ in _committed_events(other_db)] == ["order.created"]


@pytest.mark.parametrize("path", [(), ("paid",), ("paid", "shipped"), ("cancelled",)])
def test_same_status_patch_is_a_no_op_without_event(db, other_db, path):
    _create(db, "A-1")
    before = _move(db, "A-1", *path) if path else orders.get_order(db, "A-1")
    db.commit()
    events_before = _committed_events(other_db)
    status = path[-1] if path else "pending"

    order = orders.apply_patch(
        db, "A-1", parse_patch({"status": status}), now=NOW + dt.timedelta(hours=1)
    )
    db.commit()

    assert order == before
    assert orders.get_order(other_db, "A-1") == before
    assert _committed_events(other_db) == events_before


# --- compare-and-set --------------------------------------------------------------------------


def _bump_before_first_update(db, other_db, order_id: str, monkeypatch) -> list[int]:
    """Make a concurrent writer (``other_db``) commit a change to ``order_id`` right after ``db``
    read the order and right before ``db`` writes it: the window compare-and-set protects."""
    bumped: list[int] = []
    started: list[bool] = []
    compare_and_set = orders._compare_and_set

    def bump_first(sql, row, values):
        if not started:
            started.append(True)  # the other writer's own update goes straight through
            other = orders.apply_patch(other_db, order_id, parse_patch({"quantity": 42}))
            other_db.commit()
            bumped.append(other["version"])
        return compare_and_set(sql, row, values)  # go on with db's own update

    monkeypatch.setattr(orders, "_compare_and_set", bump_first)
    return bumped


@pytest.mark.parametrize(
    "change", [{"status": "paid"}, {"quantity": 2}, {"quantity": 2, "status": "cancelled"}]
)
def test_stale_writer_gets_conflict_and_the_first_write_stands(db, other_db, change, monkeypatch):
    _create(db, "A-1")
    db.commit()
    bumped = _bump_before_first_update(db, other_db, "A-1", monkeypatch)

    with pytest.raises(Conflict) as info:
        orders.apply_patch(db, "A-1", parse_patch(change))
    assert info.value.errors == {"version": "stale"}
    db.rollback()

    assert bumped == [2]
    stored = orders.get_order(other_db, "A-1")
    assert stored["version"] == 2
    assert stored["quantity"] == 42
    assert stored["status"] == "pending"
    events = _committed_events(other_db)
    assert [t for t, _ in events] == ["order.created", "order.updated"]
    assert events[1][1]["data"]["changed"] == ["quantity"]


def test_second_writer_from_a_stale_read_loses_upsert(db, other_db, monkeypatch):
    orders.upsert_from_webhook(db, parse_webhook({"order_id": "W-1", "product_name": "mug"}))
    db.commit()
    _bump_before_first_update(db, other_db, "W-1", monkeypatch)

    with pytest.raises(Conflict):
        orders.upsert_from_webhook(db, parse_webhook({"order_id": "W-1", "product_name": "cup"}))
    db.rollback()

    stored = orders.get_order(other_db, "W-1")
    assert stored["product_name"] == "mug"
    assert stored["quantity"] == 42
    assert stored["version"] == 2


def test_writer_that_reads_after_the_commit_succeeds(db, other_db):
    _create(db, "A-1")
    db.commit()
    orders.apply_patch(other_db, "A-1", parse_patch({"quantity": 42}))
    other_db.commit()

    order = orders.apply_patch(db, "A-1", parse_patch({"status": "paid"}))
    db.commit()
    assert order["version"] == 3
    assert order["quantity"] == 42
    assert order["status"] == "paid"


# --- list_orders ------------------------------------------------------------------------------


def _walk(db, *, limit: int, status: str | None = None) -> tuple[list[str], list[dict]]:
    seen: list[str] = []
    pages: list[dict] = []
    cursor = None
    for _ in range(1000):  # a broken cursor must fail the test, not hang it
        page = orders.list_orders(db, status=status, limit=limit, cursor=cursor)
        pages.append(page)
        assert page["object"] == "list"
        assert len(page["data"]) <= limit
        seen.extend(order["order_id"] for order in page["data"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        assert len(page["data"]) == limit
        assert isinstance(page["next_cursor"], str)
        cursor = int(page["next_cursor"])
    else:
        pytest.fail("pagination never ended")
    return seen, pages


def test_list_orders_empty(db):
    page = orders.list_orders(db)
    assert page == {"object": "list", "data": [], "has_more": False, "next_cursor": None}


@pytest.mark.parametrize("limit", [1, 3, 7, 8, 50])
def test_list_orders_walks_every_page_exactly_once_newest_first(db, limit):
    created = [_create(db, f"A-{n}")["order_id"] for n in range(7)]
    db.commit()

    seen, pages = _walk(db, limit=limit)

    assert seen == list(reversed(created))
    assert len(pages) == max(1, -(-7 // limit))
    assert [len(p["data"]) for p in pages[:-1]] == [limit] * (len(pages) - 1)
    assert pages[-1]["has_more"] is False


def test_list_orders_page_shape(db):
    for n in range(3):
        _create(db, f"A-{n}")
    db.commit()
    page = orders.list_orders(db, limit=2)
    assert page["has_more"] is True
    assert page["next_cursor"] is not None
    assert [o["order_id"] for o in page["data"]] == ["A-2", "A-1"]
    assert page["data"][0] == orders.get_order(db, "A-2")


def test_list_orders_filters_by_status_and_paginates(db):
    for n in range(9):
        _create(db, f"A-{n}")
    for n in (1, 2, 4, 7, 8):
        _move(db, f"A-{n}", "paid")
    _move(db, "A-4", "shipped")
    _move(db, "A-3", "cancelled")
    db.commit()

    paid, _ = _walk(db, status="paid", limit=2)
    assert paid == ["A-8", "A-7", "A-2", "A-1"]
    pending, _ = _walk(db, status="pending", limit=2)
    assert pending == ["A-6", "A-5", "A-0"]
    assert _walk(db, status="shipped", limit=2)[0] == ["A-4"]
    assert _walk(db, status="cancelled", limit=2)[0] == ["A-3"]
    everything, _ = _walk(db, limit=4)
    assert everything == [f"A-{n}" for n in range(8, -1, -1)]
    for order in orders.list_orders(db, status="paid", limit=50)["data"]:
        assert order["status"] == "paid"


def test_list_orders_sees_new_orders_only_on_a_fresh_walk(db):
    for n in range(4):
        _create(db, f"A-{n}")
    db.commit()
    first = orders.list_orders(db, limit=2)
    _create(db, "A-new")
    db.commit()
    second = orders.list_orders(db, limit=2, cursor=int(first["next_cursor"]))
    assert [o["order_id"] for o in second["data"]] == ["A-1", "A-0"]
    assert second["has_more"] is False


# --- upsert_from_webhook ----------------------------------------------------------------------


def test_upsert_creates_then_updates_then_is_unchanged(db, other_db):
    order, outcome = orders.upsert_from_webhook(
        db, parse_webhook({"order_id": "1234", "product_name": "example"}), now=NOW
    )
    db.commit()
    assert outcome == "created"
    assert order["order_id"] == "1234"
    assert order["source"] == "webhook"
    assert order["quantity"] == 1
    assert order["unit_price"] is None
    assert order["version"] == 1
    assert [t for t, _ in _committed_events(other_db)] == ["order.created"]

    order, outcome = orders.upsert_from_webhook(
        db, parse_webhook({"order_id": "1234", "product_name": "other", "quantity": "2"})
    )
    db.commit()
    assert outcome == "updated"
    assert order["product_name"] == "other"
    assert order["quantity"] == 2
    assert order["version"] == 2
    events = _committed_events(other_db)
    assert [t for t, _ in events] == ["order.created", "order.updated"]
    assert events[1][1]["data"]["changed"] == ["product_name", "quantity"]
    assert events[1][1]["data"]["order"] == order

    again, outcome = orders.upsert_from_webhook(
        db, parse_webhook({"order_id": "1234", "product_name": "other", "extra": "ignored"})
    )
    db.commit()
    assert outcome == "unchanged"
    assert again == order
    assert len(_committed_events(other_db)) == 2
    assert orders.get_order(other_db, "1234") == order


def test_upsert_with_only_order_id_of_existing_order_is_unchanged(db):
    orders.upsert_from_webhook(db, parse_webhook({"order_id": "1", "product_name": "x"}))
    order, outcome = orders.upsert_from_webhook(db, parse_webhook({"order_id": "1"}))
    db.commit()
    assert outcome == "unchanged"
    assert order["version"] == 1
    assert db(db.hookline_event).count() == 1


def test_upsert_of_new_order_without_product_is_refused(db):
    with pytest.raises(ValidationFailed) as info:
        orders.upsert_from_webhook(db, parse_webhook({"order_id": "1"}))
    assert "product_name" in info.value.errors
    db.commit()
    assert db(db.hookline_order).count() == 0
    assert db(db.hookline_event).count() == 0


def test_upsert_without_order_id_is_refused(db):
    with pytest.raises(ValidationFailed) as info:
        orders.upsert_from_webhook(db, OrderChanges(product_name="x"))
    assert "order_id" in info.value.errors
    db.commit()
    assert db(db.hookline_order).count() == 0


@pytest.mark.parametrize("path", [("paid", "shipped"), ("cancelled",)])
def test_upsert_of_finished_order_with_different_fields_is_a_conflict(db, other_db, path):
    _create(db, "A-1")
    before = _move(db, "A-1", *path)
    db.commit()
    events_before = _committed_events(other_db)

    with pytest.raises(Conflict) as info:
        orders.upsert_from_webhook(db, parse_webhook({"order_id": "A-1", "product_name": "new"}))
    assert info.value.errors == {"order_id": f"order is {path[-1]}"}
    db.commit()
    assert orders.get_order(other_db, "A-1") == before
    assert _committed_events(other_db) == events_before


def test_upsert_of_shipped_order_with_same_fields_is_unchanged(db):
    _create(db, "A-1")
    before = _move(db, "A-1", "paid", "shipped")
    db.commit()
    order, outcome = orders.upsert_from_webhook(
        db, parse_webhook({"order_id": "A-1", "product_name": "mug", "quantity": "1"})
    )
    db.commit()
    assert outcome == "unchanged"
    assert order == before
    assert [t for t, _ in _events(db)] == ["order.created", "order.paid", "order.shipped"]
