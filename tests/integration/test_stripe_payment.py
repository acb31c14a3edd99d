"""A Stripe payment marks its order paid (``hookline.integrations``), on SQLite and PostgreSQL.

Requests are signed by the ``stripe`` library itself (``WebhookSignature``) and received through
``inbound.receive`` for a source of kind ``stripe``; the built-in handler then runs through the
real worker (burst, recording transport) or ``process_messages``. The order becomes ``paid`` and
``order.paid`` is published in the same transaction (and fanned out to a subscriber); an order
already paid publishes nothing again; a cancelled order is dead-lettered for a refund; an order
that does not exist yet is retried; an event without the order id is dead-lettered; a Stripe
event sent twice is stored once and handled once.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid

import pytest
import standardwebhooks
import stripe

import hookline.integrations  # noqa: F401 - registers the built-in Stripe handler
from hookline import endpoints, inbound, orders, sources
from hookline.endpoint_rules import parse_endpoint
from hookline.handlers import claim_messages, process_messages
from hookline.netguard import NetworkPolicy
from hookline.order_rules import parse_create, parse_patch
from hookline.retry import RetryPolicy
from hookline.secretbox import load_secret_box
from hookline.transport import RecordingTransport
from hookline.webio import Request, Response
from hookline.worker import Worker, WorkerStats

pytestmark = pytest.mark.timeout(60)

SOURCE = "pay"
STRIPE_SECRET = "whsec_" + "stripe-test-secret-0123456789"
NETWORK = NetworkPolicy.from_settings("127.0.0.0/8")
SINK_URL = "http://127.0.0.1:9/paid"
LIMIT = 64 * 1024
RUN_TIMEOUT_S = 15.0


@pytest.fixture
def box(settings):
    return load_secret_box(settings.secret_key or None, settings.data_dir)


@pytest.fixture
def stripe_source(db, box) -> str:
    fields = {"name": SOURCE, "kind": "stripe", "secret": STRIPE_SECRET}
    sources.create_source(db, box, sources.parse_source(fields, creating=True))
    db.commit()
    return SOURCE


@pytest.fixture
def subscriber(db, box) -> dict:
    """An endpoint subscribed to ``order.paid`` only; its view with ``secret``."""
    changes = parse_endpoint(
        {"url": SINK_URL, "event_types": ["order.paid"]}, NETWORK, creating=True
    )
    view, credentials = endpoints.create_endpoint(db, box, changes)
    db.commit()
    return {**view, **credentials}


def new_order(db, status: str = "pending") -> str:
    order = orders.create_order(
        db, parse_create({"product_name": "kettle", "unit_price": "19.99", "currency": "USD"})
    )
    if status != "pending":
        orders.apply_patch(db, order["order_id"], parse_patch({"status": status}))
    db.commit()
    return order["order_id"]


def stripe_event(event_type: str, metadata: dict | None) -> dict:
    kind = "checkout.session" if event_type.startswith("checkout.") else "payment_intent"
    prefix = "cs" if kind == "checkout.session" else "pi"
    obj: dict = {"id": f"{prefix}_{uuid.uuid4().hex[:14]}", "object": kind, "amount": 1999}
    if metadata is not None:
        obj["metadata"] = metadata
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "type": event_type,
        "data": {"object": obj},
    }


def signed_request(event: dict, *, secret: str = STRIPE_SECRET, tamper: bool = False) -> Request:
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret)
    # The stripe library itself accepts what it signed.
    assert stripe.Webhook.construct_event(payload, header, secret)["id"] == event["id"]
    body = payload.encode()
    if tamper:
        body = body.replace(b'"livemode": false', b'"livemode": true ')
    headers = {"Content-Type": "application/json", "Stripe-Signature": header}
    return Request.build("POST", f"/myapp/webhook/{SOURCE}", headers, body)


def receive(db, box, request: Request) -> Response:
    return inbound.receive(db, request, SOURCE, box=box, default_max_body_bytes=LIMIT)


def post(db, box, event: dict) -> str:
    answer = receive(db, box, signed_request(event))
    assert answer.status == 200, answer.body
    assert answer.json()["status"] == "received"
    return answer.json()["inbox_id"]


def handle_all(db, policy: RetryPolicy | None = None) -> dict[str, int]:
    now = time.time() + 1
    messages = claim_messages(db, "test-worker", now=now, capacity=50, lease_s=30)
    return process_messages(
        db,
        messages,
        "test-worker",
        now=now,
        policy=policy or RetryPolicy(jitter=0),
        rng=random.Random(3),
    )


def run_worker(settings, transport) -> WorkerStats:
    async def main() -> WorkerStats:
        worker = Worker(settings, transport=transport, burst=True)
        return await asyncio.wait_for(worker.run(), RUN_TIMEOUT_S)

    return asyncio.run(main())


def item(db, inbox_id: str):
    db.commit()
    return db(db.hookline_inbox.inbox_id == inbox_id).select().first()


def order_events(db, order_id: str, event_type: str) -> list[dict]:
    db.commit()
    rows = db(db.hookline_event.type == event_type).select(orderby=db.hookline_event.id)
    payloads = [json.loads(r.payload) for r in rows]
    return [p for p in payloads if p["data"]["order"]["order_id"] == order_id]


def order_status(db, order_id: str) -> str:
    db.commit()
    return orders.get_order(db, order_id)["status"]


@pytest.mark.parametrize("event_type", ["payment_intent.succeeded", "checkout.session.completed"])
def test_a_payment_marks_the_order_paid_and_notifies_subscribers(
    settings, db, other_db, box, stripe_source, subscriber, event_type
):
    order_id = new_order(db)
    inbox_id = post(db, box, stripe_event(event_type, {"order_id": order_id}))
    assert item(other_db, inbox_id).status == "received"  # stored before the answer
    assert order_status(other_db, order_id) == "pending"
    transport = RecordingTransport()

    stats = run_worker(settings, transport)

    assert stats.handled == 1
    assert order_status(other_db, order_id) == "paid"
    done = item(other_db, inbox_id)
    assert (done.status, done.attempts, done.last_error) == ("processed", 1, None)
    assert done.event_type == event_type
    [paid] = order_events(other_db, order_id, "order.paid")
    assert paid["data"]["order"]["status"] == "paid"
    assert paid["data"]["previous_status"] == "pending"
    # Fanned out to the subscriber, and delivered by the same worker run.
    other_db.commit()
    event_row = other_db(other_db.hookline_event.type == "order.paid").select().first()
    [delivery] = other_db(other_db.hookline_delivery.event == event_row.id).select()
    assert delivery.status == "succeeded"
    [request] = [r for r in transport.requests if r.url == SINK_URL]
    received = standardwebhooks.Webhook(subscriber["secret"]).verify(
        request.body, dict(request.headers)
    )
    assert received["type"] == "order.paid"
    assert received["data"]["order"]["order_id"] == order_id


def test_order_paid_is_published_in_the_handlers_transaction(
    db, other_db, box, stripe_source, subscriber, monkeypatch
):
    """When publishing ``order.paid`` fails, the status change is rolled back with it."""
    order_id = new_order(db)
    inbox_id = post(db, box, stripe_event("payment_intent.succeeded", {"order_id": order_id}))
    real_publish = orders.publish

    def failing_publish(conn, event_type, *args, **kwargs):
        if event_type == "order.paid":
            raise RuntimeError("the outbox is full")
        return real_publish(conn, event_type, *args, **kwargs)

    monkeypatch.setattr(orders, "publish", failing_publish)

    assert handle_all(db)["retry"] == 1

    assert order_status(other_db, order_id) == "pending"
    assert order_events(other_db, order_id, "order.paid") == []
    other_db.commit()
    assert other_db(other_db.hookline_delivery).count() == 0
    again = item(other_db, inbox_id)
    assert (again.status, again.attempts) == ("received", 1)
    assert "the outbox is full" in again.last_error

    monkeypatch.setattr(orders, "publish", real_publish)
    db(db.hookline_inbox.inbox_id == inbox_id).update(next_attempt_at=0)
    db.commit()
    assert handle_all(db)["processed"] == 1
    assert order_status(other_db, order_id) == "paid"
    assert len(order_events(other_db, order_id, "order.paid")) == 1
    other_db.commit()
    assert other_db(other_db.hookline_delivery).count() == 1


def test_an_order_already_paid_gets_no_second_order_paid(db, other_db, box, stripe_source):
    order_id = new_order(db, "paid")
    assert len(order_events(other_db, order_id, "order.paid")) == 1
    inbox_id = post(db, box, stripe_event("checkout.session.completed", {"order_id": order_id}))

    assert handle_all(db) == {"processed": 1, "retry": 0, "failed": 0}

    assert item(other_db, inbox_id).status == "processed"
    assert order_status(other_db, order_id) == "paid"
    assert len(order_events(other_db, order_id, "order.paid")) == 1


def test_a_cancelled_order_is_dead_lettered_for_a_refund(db, other_db, box, stripe_source):
    order_id = new_order(db, "cancelled")
    inbox_id = post(db, box, stripe_event("payment_intent.succeeded", {"order_id": order_id}))

    assert handle_all(db) == {"processed": 0, "retry": 0, "failed": 1}

    dead = item(other_db, inbox_id)
    assert (dead.status, dead.attempts) == ("failed", 1)
    assert "refund" in dead.last_error
    assert order_status(other_db, order_id) == "cancelled"
    assert order_events(other_db, order_id, "order.paid") == []


def test_an_unknown_order_is_retried(db, other_db, box, stripe_source):
    inbox_id = post(db, box, stripe_event("payment_intent.succeeded", {"order_id": "ord_later"}))
    before = time.time()

    assert handle_all(db) == {"processed": 0, "retry": 1, "failed": 0}

    again = item(other_db, inbox_id)
    assert (again.status, again.attempts) == ("received", 1)
    assert "ord_later" in again.last_error
    assert again.next_attempt_at > before  # later, on the retry schedule
    other_db.commit()
    assert other_db(other_db.hookline_order.order_id == "ord_later").count() == 0


@pytest.mark.parametrize(
    "metadata",
    [None, {}, {"order_id": ""}, {"order_id": None}, {"order_id": True}],
    ids=["no-metadata", "empty", "blank", "null", "bool"],
)
def test_an_event_without_an_order_id_is_dead_lettered(db, other_db, box, stripe_source, metadata):
    inbox_id = post(db, box, stripe_event("payment_intent.succeeded", metadata))

    assert handle_all(db) == {"processed": 0, "retry": 0, "failed": 1}

    dead = item(other_db, inbox_id)
    assert (dead.status, dead.attempts) == ("failed", 1)
    assert "order_id" in dead.last_error
    assert dead.last_error.startswith("permanent: ")


def test_other_stripe_events_are_kept_but_change_nothing(db, other_db, box, stripe_source):
    order_id = new_order(db)
    inbox_id = post(db, box, stripe_event("payment_intent.payment_failed", {"order_id": order_id}))

    assert handle_all(db)["processed"] == 1

    kept = item(other_db, inbox_id)
    assert (kept.status, kept.last_error) == ("processed", "no handler registered")
    assert order_status(other_db, order_id) == "pending"


def test_the_same_stripe_event_twice_is_stored_once_and_handled_once(
    db, other_db, box, stripe_source, subscriber
):
    order_id = new_order(db)
    event = stripe_event("payment_intent.succeeded", {"order_id": order_id})
    first = receive(db, box, signed_request(event))
    second = receive(db, box, signed_request(event))  # a fresh signature, the same event

    assert (first.status, second.status) == (200, 200)
    assert second.json()["inbox_id"] == first.json()["inbox_id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    other_db.commit()
    assert other_db(other_db.hookline_inbox.source == SOURCE).count() == 1

    assert handle_all(db)["processed"] == 1
    assert handle_all(db) == {"processed": 0, "retry": 0, "failed": 0}
    third = receive(db, box, signed_request(event))  # after handling: still not again
    assert third.json()["inbox_id"] == first.json()["inbox_id"]
    assert handle_all(db) == {"processed": 0, "retry": 0, "failed": 0}
    assert len(order_events(other_db, order_id, "order.paid")) == 1
    other_db.commit()
    assert other_db(other_db.hookline_delivery).count() == 1


def test_a_tampered_or_wrongly_signed_payment_stores_nothing(db, other_db, box, stripe_source):
    order_id = new_order(db)
    event = stripe_event("payment_intent.succeeded", {"order_id": order_id})

    tampered = receive(db, box, signed_request(event, tamper=True))
    wrong_key = receive(db, box, signed_request(event, secret="whsec_someone-else-entirely"))

    assert (tampered.status, wrong_key.status) == (401, 401)
    other_db.commit()
    assert other_db(other_db.hookline_inbox).count() == 0
    assert handle_all(db) == {"processed": 0, "retry": 0, "failed": 0}
    assert order_status(other_db, order_id) == "pending"
