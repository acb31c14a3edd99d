"""A Stripe payment end to end with real processes, on SQLite and on PostgreSQL.

A real ``hookline serve`` (worker included, loopback deliveries allowed), a source made with the
real CLI (``hookline sources add pay --kind stripe``), an endpoint and an order made through the
API, and a ``payment_intent.succeeded`` signed by the ``stripe`` library POSTed to
``/myapp/webhook/pay``: it is stored once however often it is sent, refused when tampered with,
and within a few seconds the order is paid and a recording HTTP sink gets one ``order.paid``
that the PyPI ``standardwebhooks`` package verifies. The inbox API shows the item processed, and
a replay runs the handler again without a second ``order.paid``.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import stripe
from sinks import JSON, endpoint_api, wait_until
from standardwebhooks.webhooks import Webhook

pytestmark = pytest.mark.e2e

SOURCE = "pay"
STRIPE_SECRET = "whsec_e2e-stripe-signing-secret-4242"
PAID_WITHIN_S = 10.0
QUIET_S = 1.5  # how long "nothing else arrives" is watched for


@pytest.fixture(scope="module")
def auth(hook) -> dict[str, str]:
    return {"Authorization": f"Bearer {hook.new_api_key('stripe-e2e')}", **JSON}


@pytest.fixture(scope="module")
def pay_source(hook) -> str:
    """The ``pay`` source, made with the real CLI."""
    out = hook.cli("sources", "add", SOURCE, "--kind", "stripe", "--secret", STRIPE_SECRET)
    assert "/myapp/webhook/pay" in out.stdout, out.stdout + out.stderr
    return SOURCE


def payment_event(order_id: str) -> bytes:
    event = {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": f"pi_{uuid.uuid4().hex[:14]}",
                "object": "payment_intent",
                "amount": 1999,
                "currency": "usd",
                "metadata": {"order_id": order_id},
            }
        },
    }
    return json.dumps(event).encode()


def post_signed(hook, body: bytes, *, tamper: bool = False):
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), STRIPE_SECRET)
    if tamper:
        body = body.replace(b'"amount": 1999', b'"amount": 1')
    headers = {"Content-Type": "application/json", "Stripe-Signature": header}
    return hook.request("POST", f"/myapp/webhook/{SOURCE}", body, headers)


def test_a_stripe_payment_pays_the_order_and_notifies_the_subscriber(hook, auth, pay_source, sink):
    path = f"paid-{uuid.uuid4().hex[:8]}"
    with endpoint_api(hook, auth) as api:
        endpoint = api.create(sink.url(path), event_types=["order.paid"])
        order = api.create_order()
        order_id = order["order_id"]
        assert order["status"] == "pending"
        body = payment_event(order_id)

        tampered = post_signed(hook, body, tamper=True)
        assert tampered.status == 401, tampered.body
        first = post_signed(hook, body)
        assert first.status == 200, first.body
        inbox_id = first.json()["inbox_id"]
        assert first.json()["status"] == "received"
        second = post_signed(hook, body)  # Stripe retries the same event: a fresh signature
        assert second.status == 200, second.body
        assert second.json()["inbox_id"] == inbox_id
        assert second.headers.get("idempotent-replayed") == "true"

        def order_status() -> str:
            return api.get(f"/myapp/api/orders/{order_id}")["status"]

        wait_until(lambda: order_status() == "paid", PAID_WITHIN_S, "the order to be paid")
        [delivered] = sink.wait_for(path, 1, timeout=PAID_WITHIN_S)
        event = Webhook(endpoint["secret"]).verify(delivered.body, delivered.headers)
        assert event["type"] == "order.paid"
        assert event["data"]["order"]["order_id"] == order_id
        assert event["data"]["order"]["status"] == "paid"
        assert event["data"]["previous_status"] == "pending"

        def pay_items() -> list[dict]:
            return api.get(f"/myapp/api/inbox?source={SOURCE}")["data"]

        processed = wait_until(
            lambda: [i for i in pay_items() if i["status"] == "processed"] or None,
            PAID_WITHIN_S,
            "the inbox item to be processed",
            detail=pay_items,
        )
        items = pay_items()
        assert [i["inbox_id"] for i in items] == [inbox_id]  # stored once; the 401 stored nothing
        assert processed[0]["event_type"] == "payment_intent.succeeded"
        first_done = processed[0]["processed_at"]
        assert first_done is not None
        listed = json.loads(hook.cli("inbox", "list", "--source", SOURCE, "--json").stdout)
        assert [(i["inbox_id"], i["status"], i["attempts"]) for i in listed] == [
            (inbox_id, "processed", 1)
        ]
        assert listed[0]["last_error"] is None

        time.sleep(1.1)  # processed_at has (at least) whole seconds: let the clock move on
        replay = api.post(f"/myapp/api/inbox/{inbox_id}/replay")
        assert replay.status == 202, replay.body
        assert replay.json()["status"] == "received"

        def processed_again() -> dict | None:
            view = api.get(f"/myapp/api/inbox/{inbox_id}")
            done = view["status"] == "processed" and view["processed_at"] != first_done
            return view if done else None

        view = wait_until(processed_again, PAID_WITHIN_S, "the replayed item to be processed")
        assert json.loads(view["body"])["data"]["object"]["metadata"]["order_id"] == order_id
        time.sleep(QUIET_S)
        assert len(sink.received(path)) == 1, "a replay must not pay the order twice"
        assert order_status() == "paid"
        assert len(api.deliveries(endpoint_id=endpoint["endpoint_id"])) == 1
        unknown = api.post("/myapp/api/inbox/msg_nope/replay")
        assert unknown.status == 404, unknown.body
