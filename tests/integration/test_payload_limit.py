"""The event payload limit (``HOOKLINE_MAX_PAYLOAD_BYTES``) on every engine path that publishes,
on SQLite and PostgreSQL.

Each publishing operation (an order created, edited, paid, upserted by the seed webhook, paid by
the Stripe handler; a ping; an endpoint disabled by an operator) runs with its event's exact size
as the limit, and passes; with one byte less it raises ``InvalidEvent`` naming the size and the
limit, and after the caller's rollback nothing is written: no order change, no event, no
delivery, no endpoint change. The worker's own disabling (``410 Gone``) is not stopped by the
limit: the endpoint is disabled without its oversized ``endpoint.disabled``, and the worker
carries on. The limit reaches the worker from its settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest

from hookline import endpoints, integrations, operations, orders, sources
from hookline.endpoint_rules import parse_endpoint
from hookline.errors import InvalidEvent
from hookline.handlers import InboxMessage, PermanentFailure
from hookline.netguard import NetworkPolicy
from hookline.order_rules import parse_create, parse_patch, parse_webhook
from hookline.outbox import MAX_PAYLOAD_BYTES
from hookline.secretbox import load_secret_box
from hookline.timeutil import utcnow
from hookline.transport import RecordingTransport, TransportResult
from hookline.worker import Worker

pytestmark = pytest.mark.timeout(60)

NETWORK = NetworkPolicy.from_settings("127.0.0.0/8")
ORDER = {"product_name": "kettle", "unit_price": "19.99", "currency": "USD"}


@pytest.fixture
def box(settings):
    # The key the worker itself loads (HOOKLINE_SECRET_KEY unset: the key file in data_dir).
    return load_secret_box(settings.secret_key or None, settings.data_dir)


@pytest.fixture
def t0() -> dt.datetime:
    # Whole seconds, as rows hold them: the same event measured twice has the same size.
    return utcnow().replace(microsecond=0)


def make_endpoint(db, box, **fields) -> str:
    data = {"url": "http://127.0.0.1:9/hook", **fields}
    view, _ = endpoints.create_endpoint(db, box, parse_endpoint(data, NETWORK, creating=True))
    return view["endpoint_id"]


@pytest.fixture
def subscriber(db, box) -> str:
    """An endpoint subscribed to every event type: each event published gets a delivery."""
    endpoint_id = make_endpoint(db, box)
    db.commit()
    return endpoint_id


def new_order(db, order_id: str, **fields: Any) -> str:
    orders.create_order(db, parse_create({**ORDER, "order_id": order_id, **fields}))
    db.commit()
    return order_id


def payment(order_id: str, max_payload_bytes: int) -> InboxMessage:
    """A Stripe payment for ``order_id`` as the worker hands it to the built-in handler."""
    body = {
        "id": "evt_limit",
        "type": "payment_intent.succeeded",
        "data": {"object": {"object": "payment_intent", "metadata": {"order_id": order_id}}},
    }
    return InboxMessage(
        row_id=0,
        inbox_id="in_limit",
        source="pay",
        kind="stripe",
        event_type="payment_intent.succeeded",
        message_id="evt_limit",
        body=json.dumps(body).encode(),
        max_payload_bytes=max_payload_bytes,
    )


@dataclasses.dataclass(frozen=True)
class Case:
    """``setup(db, box)`` commits what the operation needs and returns it; ``act(db, box,
    given, now, limit)`` publishes one event through the operation with ``limit``."""

    setup: Callable[[Any, Any], Any]
    act: Callable[[Any, Any, Any, dt.datetime, int], Any]


def _create(db, box, _, now, limit):
    changes = parse_create({**ORDER, "order_id": "hl-new", "product_name": "🫖" * 50})
    return orders.create_order(db, changes, now=now, max_payload_bytes=limit)


def _edit(db, box, order_id, now, limit):
    changes = parse_patch({"product_name": "a larger kettle"})
    return orders.apply_patch(db, order_id, changes, now=now, max_payload_bytes=limit)


def _pay(db, box, order_id, now, limit):
    changes = parse_patch({"status": "paid"})
    return orders.apply_patch(db, order_id, changes, now=now, max_payload_bytes=limit)


def _webhook_creates(db, box, _, now, limit):
    changes = parse_webhook({"order_id": "hl-hook", "product_name": "kettle"})
    return orders.upsert_from_webhook(db, changes, now=now, max_payload_bytes=limit)


def _webhook_creates_prepared(db, box, _, now, limit):
    # The grouped receiver's way: the order and its event prepared before the transaction.
    changes = parse_webhook({"order_id": "hl-hook", "product_name": "kettle"})
    prepared = orders.prepare_insert(changes, "webhook", now, max_payload_bytes=limit)
    return orders.upsert_from_webhook(db, changes, now=now, prepared=prepared)


def _webhook_updates(db, box, order_id, now, limit):
    changes = parse_webhook({"order_id": order_id, "quantity": "3"})
    return orders.upsert_from_webhook(db, changes, now=now, max_payload_bytes=limit)


def _stripe_pays(db, box, order_id, now, limit):
    return integrations.mark_order_paid(db, payment(order_id, limit))


CASES = {
    "create an order": Case(lambda db, box: None, _create),
    "edit an order": Case(lambda db, box: new_order(db, "hl-edit"), _edit),
    "pay an order": Case(lambda db, box: new_order(db, "hl-pay"), _pay),
    "the webhook creates an order": Case(lambda db, box: None, _webhook_creates),
    "the webhook creates a prepared order": Case(lambda db, box: None, _webhook_creates_prepared),
    "the webhook updates an order": Case(lambda db, box: new_order(db, "hl-up"), _webhook_updates),
    "a Stripe payment pays an order": Case(lambda db, box: new_order(db, "hl-pi"), _stripe_pays),
}


def written(db) -> dict[str, Any]:
    """Everything a publishing operation may change."""
    o, e = db.hookline_order, db.hookline_endpoint
    return {
        "orders": [
            (r.order_id, r.product_name, r.quantity, r.status, r.version)
            for r in db(o).select(orderby=o.id)
        ],
        "events": [(r.event_id, r.type) for r in db(db.hookline_event).select()],
        "deliveries": db(db.hookline_delivery).count(),
        "endpoints": [
            (r.endpoint_id, r.enabled, r.disabled_reason) for r in db(e).select(orderby=e.id)
        ],
    }


def newest_event(db):
    table = db.hookline_event
    return db(table).select(orderby=~table.id, limitby=(0, 1)).first()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_every_publishing_operation_honours_the_limit(db, box, subscriber, t0, case):
    given = case.setup(db, box)
    db.commit()
    before = written(db)
    case.act(db, box, given, t0, MAX_PAYLOAD_BYTES)
    event = newest_event(db)
    size = len(event.payload.encode("utf-8"))
    db.rollback()
    assert written(db) == before

    with pytest.raises((InvalidEvent, PermanentFailure)) as refused:
        case.act(db, box, given, t0, size - 1)
    assert f"event payload is {size} bytes; the limit is {size - 1}" in str(refused.value)
    if isinstance(refused.value, InvalidEvent):  # a 422 to the caller
        assert refused.value.status == 422
        assert refused.value.errors == {"data": "too large"}
    else:  # the payment handler: dead-lettered, since a retry would make the same event
        assert case.act is _stripe_pays
    db.rollback()  # as every caller does (webio.run, the CLI session, the handler queue)
    assert written(db) == before

    case.act(db, box, given, t0, size)
    db.commit()
    after = written(db)
    assert len(after["events"]) == len(before["events"]) + 1
    assert after["deliveries"] == before["deliveries"] + 1  # to the subscriber
    assert newest_event(db).type == event.type


# --- the worker ------------------------------------------------------------------------------


def run_worker(settings, transport) -> None:
    async def main() -> None:
        await asyncio.wait_for(Worker(settings, transport=transport, burst=True).run(), 15)

    asyncio.run(main())


def test_the_worker_disabling_a_gone_endpoint_publishes_its_event_over_a_small_limit(
    settings, db, other_db, box, t0
):
    """hookline's own ``endpoint.disabled`` is not held to the limit on order events: the
    endpoint is disabled and its watcher gets the event (~1.3 KiB against a 1 KiB limit)."""
    gone = make_endpoint(db, box, event_types=["ping"], description="é" * 512)
    watcher = make_endpoint(db, box, event_types=["endpoint.disabled"])
    operations.send_ping(db, gone, now=t0)
    db.commit()
    small = dataclasses.replace(settings, max_payload_bytes=1024)

    run_worker(small, RecordingTransport([TransportResult(410), TransportResult(200)]))

    view = endpoints.get_endpoint(other_db, gone)
    assert view["enabled"] is False
    assert "410" in view["disabled_reason"]
    [event] = other_db(other_db.hookline_event.type == "endpoint.disabled").select()
    assert len(event.payload.encode()) > 1024
    watcher_row = endpoints.find_endpoint(other_db, watcher).id
    assert other_db(other_db.hookline_delivery.endpoint == watcher_row).count() == 1


def test_the_worker_hands_its_limit_to_the_stripe_handler(settings, db, other_db, box, subscriber):
    """A received payment whose ``order.paid`` would be over the worker's limit is
    dead-lettered at once (the same order would make the same event on every retry), the order
    still pending; nothing of it is written."""
    order_id = new_order(db, "hl-big", product_name="🫖" * 200)  # order.paid ~1.3 KiB
    stripe = {"name": "pay", "kind": "stripe", "secret": "whsec_limit-test-secret-0123456789"}
    sources.create_source(db, box, sources.parse_source(stripe, creating=True))
    db.hookline_inbox.insert(
        inbox_id="in_big",
        source="pay",
        message_id="evt_limit",
        method="POST",
        content_type="application/json",
        headers="{}",
        body=payment(order_id, 0).body,
        status="received",
        received_at=utcnow(),
        event_type="payment_intent.succeeded",
        attempts=0,
        next_attempt_at=0,
    )
    db.commit()
    before = written(other_db)
    small = dataclasses.replace(settings, max_payload_bytes=1024)

    run_worker(small, RecordingTransport())

    assert orders.get_order(other_db, order_id)["status"] == "pending"
    assert written(other_db) == before
    item = other_db(other_db.hookline_inbox.inbox_id == "in_big").select().first()
    assert item.status == "failed"
    assert item.attempts == 1
    assert "order.paid not published" in item.last_error
    assert "the limit is 1024" in item.last_error
