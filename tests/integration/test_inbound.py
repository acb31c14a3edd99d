"""Receiving from named sources (``hookline.inbound.receive``) on SQLite and PostgreSQL.

Each kind is signed the way its provider signs: Standard Webhooks with the PyPI
``standardwebhooks`` library, Stripe with the ``stripe`` library's
``WebhookSignature.generate_signature_header``, GitHub / Shopify / generic HMAC with ``hmac``
(``sign`` and the other request helpers are in ``inbound_requests.py``). DESIGN §3.3 (stored
before acknowledged, a duplicate answered like the first and stored once), §3.4 (bad input is a
clean 4xx with nothing written) and §3.5 (bad or stale signatures are refused and counted). The
last part drives the seed's ``/myapp/webhook`` through the built-in ``orders`` source: unsigned
until a secret is rotated in, then Standard-Webhooks-signed.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
from inbound_requests import (
    FORM,
    JSON_CT,
    NOW,
    NOW_TS,
    SECRETS,
    STD_SECRET,
    WRONG_SECRET,
    add_source,
    body_for,
    counts,
    failures,
    inbox_rows,
    raw_body,
    receive,
    seed_post,
    sign,
)

from hookline import orders, sources
from hookline.secretbox import SecretBox, generate_key
from hookline.sources import ORDERS_SOURCE, parse_source

KINDS = tuple(SECRETS)


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([generate_key()])


@pytest.fixture
def make_source(db, box) -> Callable[..., str]:
    def make(kind: str, name: str | None = None, **fields: Any) -> str:
        return add_source(db, box, kind, name, **fields)

    return make


EXPECTED_TYPE = {
    "standard": "invoice.paid",
    "stripe": "payment_intent.succeeded",
    "github": "push",
    "shopify": "orders/create",
    "hmac": "invoice.paid",  # a JSON body's "type", whatever the kind
}


# --- each kind: accepted, stored once, replayed ---------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_signed_request_is_stored_once_and_replayed(db, other_db, box, make_source, kind):
    name = make_source(kind)
    msg_id = f"msg_{kind}_0001"
    body = body_for(kind, msg_id)
    headers = sign(kind, body, msg_id=msg_id)

    first = receive(db, box, name, body, headers)

    assert first.status == 200, first.body
    assert first.headers["Content-Type"] == JSON_CT
    answer = first.json()
    assert answer["status"] == "received" and answer["source"] == name
    assert answer["inbox_id"].startswith("msg_")
    assert "Idempotent-Replayed" not in first.headers
    rows = inbox_rows(other_db)  # committed before the answer
    assert len(rows) == 1
    row = rows[0]
    assert (row.inbox_id, row.source, row.status) == (answer["inbox_id"], name, "received")
    assert row.event_type == EXPECTED_TYPE[kind]
    assert row.message_id == msg_id
    assert row.response_status == 200 and row.method == "POST"
    assert raw_body(other_db, row.id) == body

    again = receive(db, box, name, body, headers, now=NOW + dt.timedelta(seconds=30))

    assert again.status == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == answer
    assert len(inbox_rows(other_db)) == 1
    assert failures(other_db, name) == 0


def test_the_same_delivery_id_at_another_source_is_another_message(db, other_db, box, make_source):
    make_source("github", "gh-a")
    make_source("github", "gh-b")
    body = b'{"zen": "x"}'
    headers = sign("github", body, msg_id="same-delivery")
    assert receive(db, box, "gh-a", body, headers).status == 200
    assert receive(db, box, "gh-b", body, headers).status == 200
    assert sorted(r.source for r in inbox_rows(other_db)) == ["gh-a", "gh-b"]


def test_stripe_redelivery_with_a_new_signature_is_still_one_message(
    db, other_db, box, make_source
):
    # Stripe re-signs each retry (new t=), but the event id in the body is the same.
    name = make_source("stripe")
    body = body_for("stripe", "evt_retry_1")
    first = receive(db, box, name, body, sign("stripe", body))
    later = NOW + dt.timedelta(minutes=10)
    retry = receive(db, box, name, body, sign("stripe", body, timestamp=NOW_TS + 600), now=later)
    assert first.status == retry.status == 200
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json()["inbox_id"] == first.json()["inbox_id"]
    assert len(inbox_rows(other_db)) == 1


def test_raw_bytes_are_stored_exactly_not_reencoded(db, other_db, box, make_source):
    name = make_source("shopify")
    body = b'{ "b":1,\n\t"a" : "caf\xc3\xa9",  "esc":"\\u00e9" }\r\n'
    assert receive(db, box, name, body, sign("shopify", body, msg_id="raw-1")).status == 200
    row = inbox_rows(other_db)[0]
    assert raw_body(other_db, row.id) == body


# --- refusals: 401 for bad signatures -------------------------------------------------------


def _refusal_cases(kind: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    body = body_for(kind, "msg_bad")
    good = sign(kind, body, msg_id="msg_bad")
    cases = {
        "tampered": (body.replace(b"}", b', "x": 1}', 1), good),
        "wrong-secret": (body, sign(kind, body, msg_id="msg_bad", secret=WRONG_SECRET)),
        "unsigned": (body, {"Content-Type": JSON_CT}),
    }
    if kind in ("standard", "stripe"):
        cases["stale"] = (body, sign(kind, body, msg_id="msg_bad", timestamp=NOW_TS - 301))
        cases["future"] = (body, sign(kind, body, msg_id="msg_bad", timestamp=NOW_TS + 301))
    return cases


REFUSALS = [(kind, case) for kind in KINDS for case in _refusal_cases(kind)]


@pytest.mark.parametrize(("kind", "case"), REFUSALS)
def test_bad_signature_is_401_stores_nothing_and_counts(db, other_db, box, make_source, kind, case):
    name = make_source(kind)
    body, headers = _refusal_cases(kind)[case]

    answer = receive(db, box, name, body, headers)

    assert answer.status == 401, answer.body
    assert answer.headers["Content-Type"] == JSON_CT
    message = answer.json()["message"]
    assert message
    text = answer.body.decode()
    for secret in (SECRETS[kind], SECRETS[kind].removeprefix("whsec_"), WRONG_SECRET):
        assert secret not in text
    assert inbox_rows(other_db) == []
    assert failures(other_db, name) == 1
    stored = sources.find_source(other_db, name)
    assert stored.last_failure_reason
    assert SECRETS[kind] not in stored.last_failure_reason


def test_timestamp_at_the_edge_of_the_tolerance_is_accepted(db, other_db, box, make_source):
    name = make_source("stripe", tolerance_s=60)
    body = body_for("stripe", "evt_edge")
    assert receive(db, box, name, body, sign("stripe", body, timestamp=NOW_TS - 60)).status == 200
    body2 = body_for("stripe", "evt_edge_2")
    stale = receive(db, box, name, body2, sign("stripe", body2, timestamp=NOW_TS - 61))
    assert stale.status == 401
    assert failures(other_db, name) == 1


# --- GitHub specifics -----------------------------------------------------------------------


def test_github_ping_is_answered_pong(db, other_db, box, make_source):
    name = make_source("github")
    body = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    answer = receive(db, box, name, body, sign("github", body, msg_id="ping-1", event="ping"))
    assert answer.status == 200
    assert answer.json()["message"] == "pong"
    row = inbox_rows(other_db)[0]
    assert (row.event_type, row.message_id) == ("ping", "ping-1")


def test_github_form_encoded_delivery_is_accepted(db, other_db, box, make_source):
    name = make_source("github")
    payload = json.dumps({"action": "opened", "number": 7, "title": "a&b=c"})
    body = urllib.parse.urlencode({"payload": payload}).encode()
    headers = sign(
        "github",
        body,
        msg_id="form-1",
        event="pull_request",
        content_type="application/x-www-form-urlencoded",
    )
    answer = receive(db, box, name, body, headers)
    assert answer.status == 200, answer.body
    row = inbox_rows(other_db)[0]
    assert (row.event_type, row.message_id) == ("pull_request", "form-1")
    assert raw_body(other_db, row.id) == body


@pytest.mark.parametrize(
    "body",
    [b"other=1", b"payload=%7B&payload=%7D", b"payload=not-json"],
    ids=["no-payload", "two-payloads", "bad-json"],
)
def test_github_form_without_one_json_payload_is_400(db, other_db, box, make_source, body):
    name = make_source("github")
    headers = sign("github", body, content_type="application/x-www-form-urlencoded")
    answer = receive(db, box, name, body, headers)
    assert answer.status == 400, answer.body
    assert inbox_rows(other_db) == []
    assert failures(other_db, name) == 0


# --- request-level refusals -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
def test_non_post_is_405_with_allow(db, other_db, box, make_source, method):
    name = make_source("stripe")
    body = body_for("stripe")
    answer = receive(db, box, name, body, sign("stripe", body), method=method)
    assert answer.status == 405
    assert answer.headers["Allow"] == "POST"
    assert inbox_rows(other_db) == []


def test_unknown_source_is_404(db, other_db, box):
    answer = receive(db, box, "nobody", b"{}", {"Content-Type": JSON_CT})
    assert answer.status == 404
    assert inbox_rows(other_db) == []


def test_disabled_source_is_404_even_when_signed(db, other_db, box, make_source):
    name = make_source("github")
    sources.update_source(db, box, name, parse_source({"enabled": False}, creating=False))
    db.commit()
    body = b'{"a": 1}'
    answer = receive(db, box, name, body, sign("github", body))
    assert answer.status == 404
    assert inbox_rows(other_db) == []
    assert failures(other_db, name) == 0


def test_body_over_the_sources_limit_is_413(db, other_db, box, make_source):
    name = make_source("github", max_body_bytes=100)
    fits = json.dumps({"p": "x" * 80}).encode()
    assert len(fits) <= 100
    assert receive(db, box, name, fits, sign("github", fits, msg_id="fits")).status == 200
    big = json.dumps({"p": "x" * 100}).encode()
    answer = receive(db, box, name, big, sign("github", big, msg_id="big"))
    assert answer.status == 413
    assert [r.message_id for r in inbox_rows(other_db)] == ["fits"]


def test_body_over_the_default_limit_is_413(db, other_db, box, make_source):
    name = make_source("shopify")
    body = json.dumps({"p": "y" * 2000}).encode()
    answer = receive(db, box, name, body, sign("shopify", body), default_max_body_bytes=1000)
    assert answer.status == 413
    assert inbox_rows(other_db) == []


def test_more_than_100_headers_is_431(db, other_db, box, make_source):
    name = make_source("github")
    body = b'{"a": 1}'
    headers = sign("github", body)
    headers |= {f"X-Extra-{i}": "v" for i in range(101 - len(headers))}
    assert len(headers) == 101
    answer = receive(db, box, name, body, headers)
    assert answer.status == 431
    assert inbox_rows(other_db) == []
    # 100 headers are fine.
    headers.pop("X-Extra-0")
    assert receive(db, box, name, body, headers).status == 200


def test_huge_header_bytes_are_431(db, other_db, box, make_source):
    name = make_source("github")
    body = b'{"a": 1}'
    headers = sign("github", body) | {"X-Big": "z" * (17 * 1024)}
    assert receive(db, box, name, body, headers).status == 431
    assert inbox_rows(other_db) == []


@pytest.mark.parametrize("kind", ["standard", "stripe", "github", "shopify"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", ""])
def test_json_kinds_refuse_other_content_types_with_415(
    db, other_db, box, make_source, kind, content_type
):
    name = make_source(kind)
    body = body_for(kind)
    headers = sign(kind, body, content_type=content_type)
    if not content_type:
        del headers["Content-Type"]
    answer = receive(db, box, name, body, headers)
    assert answer.status == 415, answer.body
    assert inbox_rows(other_db) == []


def test_hmac_kind_stores_a_non_json_body(db, other_db, box, make_source):
    name = make_source("hmac")
    body = b"\x00\xffnot json at all"
    answer = receive(db, box, name, body, sign("hmac", body, content_type="text/plain"))
    assert answer.status == 200
    row = inbox_rows(other_db)[0]
    assert raw_body(other_db, row.id) == body
    assert row.event_type is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "body",
    [b"{", b'{"a": 1,}', b'{"a": NaN}', b'{"a": 1, "a": 2}', b"\xff\xfe{}", b"   "],
    ids=["truncated", "trailing-comma", "nan", "duplicate-key", "not-utf8", "blank"],
)
def test_malformed_json_after_a_valid_signature_is_400(db, other_db, box, make_source, kind, body):
    name = make_source(kind)
    answer = receive(db, box, name, body, sign(kind, body, msg_id="msg_malformed"))
    assert answer.status == 400, answer.body
    assert inbox_rows(other_db) == []
    assert failures(other_db, name) == 0  # it was authentic: not a verification failure


# --- the seed's /myapp/webhook through the orders source ------------------------------------


@pytest.fixture
def orders_source(db) -> None:
    sources.ensure_orders_source(db)  # PostgreSQL tables are emptied between tests
    db.commit()


def test_seed_webhook_is_unsigned_until_a_secret_is_rotated_in(db, other_db, box, orders_source):
    unsigned = seed_post(db, box, b"order_id=s-1&product_name=kettle", {"Content-Type": FORM})
    assert unsigned.status == 200, unsigned.body
    assert counts(other_db) == {"orders": 1, "events": 1, "inbox": 1}

    sources.rotate_secret(db, box, ORDERS_SOURCE, secret=STD_SECRET, now=NOW)
    db.commit()

    refused = seed_post(db, box, b"order_id=s-2&product_name=kettle", {"Content-Type": FORM})
    assert refused.status == 401, refused.body
    assert STD_SECRET not in refused.body.decode()
    assert counts(other_db) == {"orders": 1, "events": 1, "inbox": 1}
    assert failures(other_db, ORDERS_SOURCE) == 1

    body = b"order_id=s-2&product_name=kettle"
    wrong = sign("standard", body, msg_id="msg_seed_2", secret=WRONG_SECRET, content_type=FORM)
    assert seed_post(db, box, body, wrong).status == 401
    assert counts(other_db)["orders"] == 1

    headers = sign("standard", body, msg_id="msg_seed_2", content_type=FORM)
    signed = seed_post(db, box, body, headers)
    assert signed.status == 200, signed.body
    assert signed.json() == {"status": "success", "message": "Webhook processed"}
    assert counts(other_db) == {"orders": 2, "events": 2, "inbox": 2}
    order = orders.get_order(other_db, "s-2")
    assert order["product_name"] == "kettle" and order["source"] == "webhook"

    replay = seed_post(db, box, body, headers, now=NOW + dt.timedelta(seconds=5))
    assert replay.status == 200
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert counts(other_db) == {"orders": 2, "events": 2, "inbox": 2}

    stale = sign("standard", body, msg_id="msg_seed_3", timestamp=NOW_TS - 3600, content_type=FORM)
    assert seed_post(db, box, body, stale).status == 401
    assert counts(other_db)["inbox"] == 2


def test_seed_webhook_signed_json_body_creates_the_order(db, other_db, box, orders_source):
    sources.rotate_secret(db, box, ORDERS_SOURCE, secret=STD_SECRET, now=NOW)
    db.commit()
    body = json.dumps({"order_id": "j-1", "product_name": "tea"}).encode()
    answer = seed_post(db, box, body, sign("standard", body, msg_id="msg_json_1"))
    assert answer.status == 200, answer.body
    assert orders.get_order(other_db, "j-1")["product_name"] == "tea"


def test_disabled_orders_source_refuses_the_seed_webhook(db, other_db, box, orders_source):
    sources.update_source(db, box, ORDERS_SOURCE, parse_source({"enabled": False}, creating=False))
    db.commit()
    answer = seed_post(db, box, b"order_id=d-1&product_name=x", {"Content-Type": FORM})
    assert answer.status == 404
    assert counts(other_db) == {"orders": 0, "events": 0, "inbox": 0}
