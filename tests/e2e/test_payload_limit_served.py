"""``HOOKLINE_MAX_PAYLOAD_BYTES`` lowered to 1 KiB on a real `hookline serve` (SQLite and
PostgreSQL, worker off) and the CLI beside it.

An order change whose event would be over the limit is answered ``422`` naming the event's size
and the limit (``errors: {"data": "too large"}``), and writes nothing: no order or order change,
no event, no delivery. The same change with an event under the limit passes. hookline's own
events (``ping``, ``endpoint.disabled``) are published whatever the limit, from the API and the
CLI.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator

import pytest
from sinks import JSON, server_env

from hookline.config import Settings
from hookline.database import connect

pytestmark = pytest.mark.e2e

LIMIT = 1024
ORDER = {"product_name": "kettle", "quantity": 2, "unit_price": "19.99", "currency": "USD"}
TOO_LARGE = re.compile(r"event payload is (\d+) bytes; the limit is 1024")


@pytest.fixture(scope="module")
def _small_payload_limit() -> Iterator[None]:
    with server_env(
        HOOKLINE_MAX_PAYLOAD_BYTES=str(LIMIT),
        HOOKLINE_WORKER="false",  # deliveries stay pending, to be counted
        HOOKLINE_ALLOW_NETWORKS="127.0.0.0/8",
    ):
        yield


@pytest.fixture(scope="module")
def limited(_small_payload_limit, server):
    """conftest's ``server``, started with the 1 KiB limit (its CLI calls inherit it)."""
    assert server.env["HOOKLINE_MAX_PAYLOAD_BYTES"] == str(LIMIT)
    return server


@pytest.fixture(scope="module")
def auth(limited) -> dict[str, str]:
    return {"Authorization": f"Bearer {limited.new_api_key('payload-limit')}", **JSON}


@pytest.fixture(scope="module")
def db(limited) -> Iterator[object]:
    connection = connect(Settings.from_env(limited.env))
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def subscriber(limited, auth) -> str:
    """An endpoint subscribed to every event: each event published gets a delivery."""
    return new_endpoint(limited, auth)


def new_endpoint(server, auth, **fields) -> str:
    body = json.dumps({"url": "http://127.0.0.1:9/hook", **fields})
    answer = server.request("POST", "/myapp/api/endpoints", body, auth)
    assert answer.status == 201, answer.body
    return answer.json()["endpoint_id"]


def written(
    db, tables: tuple[str, ...] = ("hookline_order", "hookline_event", "hookline_delivery")
) -> dict[str, int]:
    db.commit()  # a fresh snapshot of what is committed
    return {table: int(db.executesql(f"SELECT COUNT(*) FROM {table}")[0][0]) for table in tables}


def events_of(db, event_type: str) -> int:
    db.commit()
    return db(db.hookline_event.type == event_type).count()


def assert_refused(answer) -> None:
    assert answer.status == 422, answer.body
    body = answer.json()
    assert body["status"] == "error"
    assert int(TOO_LARGE.fullmatch(body["message"]).group(1)) > LIMIT
    assert body["errors"] == {"data": "too large"}


# --- orders API ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product_name", "status"),
    [
        ("kettle", 201),  # order.created ~0.4 KiB
        ("é" * 200, 201),  # ~0.75 KiB
        ("🫖" * 200, 422),  # ~1.15 KiB
    ],
    ids=["small", "under-the-limit", "over-the-limit"],
)
def test_creating_an_order_whose_event_is_over_the_limit_is_refused(
    limited, auth, db, subscriber, product_name, status
):
    order_id = f"hl-create-{len(product_name.encode())}"
    before = written(db)
    body = json.dumps({**ORDER, "order_id": order_id, "product_name": product_name})

    answer = limited.request("POST", "/myapp/api/orders", body, auth)

    shown = limited.request("GET", f"/myapp/api/orders/{order_id}", headers=auth)
    if status == 422:
        assert_refused(answer)
        assert shown.status == 404
        assert written(db) == before
    else:
        assert answer.status == 201, answer.body
        assert shown.json()["product_name"] == product_name
        assert written(db) == {name: count + 1 for name, count in before.items()}


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"product_name": "🫖" * 200}, 422),
        ({"product_name": "é" * 200}, 200),
        ({"status": "paid"}, 200),
    ],
    ids=["edit-over-the-limit", "edit-under-the-limit", "pay"],
)
def test_changing_an_order_whose_event_is_over_the_limit_is_refused(
    limited, auth, db, subscriber, change, status
):
    created = limited.request("POST", "/myapp/api/orders", json.dumps(ORDER), auth)
    assert created.status == 201, created.body
    order = created.json()
    path = f"/myapp/api/orders/{order['order_id']}"
    before = written(db)

    answer = limited.request("PATCH", path, json.dumps(change), auth)

    shown = limited.request("GET", path, headers=auth).json()
    if status == 422:
        assert_refused(answer)
        assert shown == order  # unchanged, version 1
        assert written(db) == before
    else:
        assert answer.status == 200, answer.body
        assert shown["version"] == 2
        after = written(db)
        assert (after["hookline_event"], after["hookline_delivery"]) == (
            before["hookline_event"] + 1,
            before["hookline_delivery"] + 1,
        )


# --- the seed webhook -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product_name", "status"),
    [("é" * 200, 200), ("🫖" * 200, 422)],
    ids=["under-the-limit", "over-the-limit"],
)
def test_the_seed_webhook_creating_an_order_whose_event_is_over_the_limit(
    limited, db, subscriber, product_name, status
):
    order_id = f"hl-hook-{len(product_name.encode())}"
    tables = ("hookline_order", "hookline_event", "hookline_delivery", "hookline_inbox")
    before = written(db, tables)
    body = urllib.parse.urlencode({"order_id": order_id, "product_name": product_name})
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    answer = limited.request("POST", "/myapp/webhook", body, form)

    if status == 422:
        assert_refused(answer)
        assert written(db, tables) == before
    else:
        assert answer.status == 200, answer.body
        assert written(db, tables) == {name: count + 1 for name, count in before.items()}


# --- hookline's own events: endpoint.disabled and ping are not held to the limit -----------


def test_disabling_an_endpoint_through_the_api_is_never_refused_for_its_event(
    limited, auth, db, subscriber
):
    """A small limit must not stop an operator disabling an endpoint: its ``endpoint.disabled``
    (the endpoint's view, here ~1.3 KiB with its description) is published all the same."""
    endpoint_id = new_endpoint(limited, auth, description="é" * 512)
    path = f"/myapp/api/endpoints/{endpoint_id}"
    disabled_events = events_of(db, "endpoint.disabled")

    answer = limited.request("PATCH", path, json.dumps({"enabled": False}), auth)

    assert answer.status == 200, answer.body
    assert limited.request("GET", path, headers=auth).json()["enabled"] is False
    assert events_of(db, "endpoint.disabled") == disabled_events + 1


def test_a_ping_is_published_under_the_smallest_limit(limited, auth, db, subscriber):
    answer = limited.request("POST", f"/myapp/api/endpoints/{subscriber}/ping", b"", auth)

    assert answer.status == 202, answer.body
    db.commit()
    assert db(db.hookline_event.event_id == answer.json()["event_id"]).count() == 1


# --- the CLI ---------------------------------------------------------------------------------


def test_disabling_an_endpoint_with_a_long_reason_from_the_cli(limited, auth, db, subscriber):
    """The reason is kept to its first 512 characters, in the endpoint and in the event."""
    endpoint_id = new_endpoint(limited, auth, description="é" * 512)
    disabled_events = events_of(db, "endpoint.disabled")

    done = limited.cli("endpoints", "disable", endpoint_id, "--reason", "r" * 100_000)

    assert done.returncode == 0, done.stderr
    shown = limited.request("GET", f"/myapp/api/endpoints/{endpoint_id}", headers=auth).json()
    assert shown["enabled"] is False
    assert shown["disabled_reason"] == "r" * 512
    assert events_of(db, "endpoint.disabled") == disabled_events + 1
    db.commit()
    table = db.hookline_event
    event = db(table.type == "endpoint.disabled").select(orderby=~table.id).first()
    assert json.loads(event.payload)["data"]["reason"] == "r" * 512


def test_pinging_with_the_cli(limited, db, subscriber):
    before = written(db)

    done = limited.cli("endpoints", "ping", subscriber)

    assert done.stdout.startswith("ping evt_")
    assert written(db)["hookline_event"] == before["hookline_event"] + 1
