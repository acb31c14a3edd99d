"""Guarantee 1: an event exists iff the change that caused it committed."""

from __future__ import annotations

import json

import pytest

from hookline import orders, outbox
from hookline.errors import InvalidEvent
from hookline.ids import is_id
from hookline.order_rules import parse_create


def _counts(db) -> tuple[int, int]:
    db.commit()  # end any read snapshot so we see what others committed
    return db(db.hookline_order).count(), db(db.hookline_event).count()


def test_rollback_leaves_neither_order_nor_event(db, other_db):
    orders.create_order(
        db, parse_create({"product_name": "mug", "unit_price": "9.50", "currency": "EUR"})
    )
    assert _counts(other_db) == (0, 0)  # not visible before commit
    db.rollback()
    assert _counts(other_db) == (0, 0)


def test_commit_makes_order_and_event_visible_together(db, other_db):
    order = orders.create_order(
        db, parse_create({"product_name": "mug", "unit_price": "9.50", "currency": "EUR"})
    )
    db.commit()
    assert _counts(other_db) == (1, 1)
    event = other_db(other_db.hookline_event).select().first()
    payload = json.loads(event.payload)
    assert event.type == payload["type"] == "order.created"
    assert payload["data"]["order"]["order_id"] == order["order_id"]
    assert payload["data"]["order"]["unit_price"] == "9.50"
    assert payload["timestamp"].endswith("Z")
    assert is_id(event.event_id, "evt")


def test_event_ids_are_unique_and_sorted_in_publish_order(db):
    ids = [outbox.publish(db, "ping", {"n": n}) for n in range(200)]
    db.commit()
    assert len(set(ids)) == 200
    assert ids == sorted(ids)
    stored = [
        row.event_id for row in db(db.hookline_event).select(orderby=db.hookline_event.event_id)
    ]
    assert stored == ids


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("order.exploded", {"a": 1}),
        ("order.created", ["not", "an", "object"]),
        ("order.created", {"when": object()}),
        ("order.created", {"x": float("nan")}),
        ("order.created", {"big": "x" * (300 * 1024)}),
    ],
)
def test_refused_events_write_nothing(db, event_type, data):
    with pytest.raises(InvalidEvent):
        outbox.publish(db, event_type, data)
    db.commit()
    assert db(db.hookline_event).count() == 0
