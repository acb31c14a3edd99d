"""Property test of the receivers over real HTTP: DESIGN §3.4 (bad input gets a clear 4xx, never
a 5xx, never a crash, never a partial write) and §3.3 (a 2xx means stored, once).

Hypothesis (derandomized, so a failure replays the same way) sends methods, header sets
(repeated, very many, very large), content types and bodies (empty, binary, invalid UTF-8, deep
JSON, repeated form keys, over the size limit, sometimes validly Stripe-signed) to the seed's
``/myapp/webhook`` and to ``/myapp/webhook/<stripe source>`` of a real `hookline serve` (its
worker off, so only requests change the database), and counts ``hookline_order``,
``hookline_event`` and ``hookline_inbox`` through a direct database connection around each one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import pytest
import stripe
from fuzz_requests import (
    BODIES,
    CONTENT_TYPES,
    FORM_ORDERS,
    HEADER_VALUES,
    JSON_ORDERS,
    METHODS,
    STRIPE_EVENTS,
    TABLES,
    Target,
    exchange,
    send_raw,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sinks import server_env

from hookline.config import Settings
from hookline.database import connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

STRIPE_SOURCE = "fuzz-stripe"
STRIPE_SECRET = "whsec_fuzz_stripe_secret_5a5a5a5a"


@pytest.fixture(scope="module")
def _worker_off() -> Iterator[None]:
    with server_env(HOOKLINE_WORKER="false"):
        yield


@pytest.fixture(scope="module")
def target(_worker_off, server) -> Iterator[Target]:
    server.cli("sources", "add", STRIPE_SOURCE, "--kind", "stripe", "--secret", STRIPE_SECRET)
    db = connect(Settings.from_env(server.env))
    try:
        yield Target(server, db)
    finally:
        db.close()


# --- strategies -----------------------------------------------------------------------------

HEADER_NAMES = st.sampled_from(
    [
        "X-Fuzz",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "Idempotency-Key",
        "Stripe-Signature",
        "X-Repeated",
        "Accept",
        "Authorization",
    ]
)


@st.composite
def requests(draw) -> dict:
    """One request: where, method, headers (a list: names may repeat), body, signed or not.

    Half are well-formed for their receiver (so 2xx answers and replays are exercised), then
    perhaps disturbed by extra headers; the rest are drawn from everything."""
    where = draw(st.sampled_from(["seed", "stripe"]))
    headers: list[tuple[str, str]] = []
    if draw(st.booleans()):
        method = "POST"
        sign = True
        if where == "seed":
            content_type, body = draw(
                st.sampled_from(["application/x-www-form-urlencoded", "application/json"]).flatmap(
                    lambda ct: st.tuples(
                        st.just(ct), FORM_ORDERS if ct.endswith("urlencoded") else JSON_ORDERS
                    )
                )
            )
        else:
            content_type, body = "application/json", draw(STRIPE_EVENTS)
    else:
        method = draw(METHODS)
        content_type = draw(CONTENT_TYPES)
        body = draw(BODIES)
        sign = draw(st.booleans())
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    headers += draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=4))
    shape = draw(st.sampled_from(["plain"] * 7 + ["many", "huge", "repeated"]))
    if shape == "many":
        headers += [(f"X-Many-{i}", "v") for i in range(draw(st.integers(90, 140)))]
    elif shape == "huge":
        headers.append(("X-Huge", "h" * draw(st.sampled_from([8_000, 17_000, 60_000]))))
    elif shape == "repeated":
        headers += [("X-Repeated", str(i)) for i in range(draw(st.integers(2, 120)))]
    return {"where": where, "method": method, "headers": headers, "body": body, "sign": sign}


def _stripe_header(body: bytes) -> str:
    try:
        return stripe.WebhookSignature.generate_signature_header(body.decode(), STRIPE_SECRET)
    except UnicodeDecodeError:  # the library signs text; Stripe's recipe for raw bytes:
        stamp = int(time.time())
        digest = hmac.new(STRIPE_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        return f"t={stamp},v1={digest.hexdigest()}"


# --- the property ---------------------------------------------------------------------------


@settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=requests())
def test_every_answer_is_deliberate_and_nothing_is_half_written(target, case):
    headers = list(case["headers"])
    path = "/myapp/webhook"
    if case["where"] == "stripe":
        path = f"/myapp/webhook/{STRIPE_SOURCE}"
        if case["sign"]:
            headers = [h for h in headers if h[0].lower() != "stripe-signature"]
            headers.append(("Stripe-Signature", _stripe_header(case["body"])))
    sent = exchange(target, case["method"], path, headers, case["body"])
    status, body, replayed = sent.status, sent.body, sent.replayed
    before, after = sent.before, sent.after
    # Shown by --hypothesis-show-statistics:
    event(f"{case['where']} {status}{' replay' if replayed else ''}")
    where = f"{case['method']} {path} -> {status} {body[:200]!r}"
    assert 200 <= status < 300 or 400 <= status < 500, where
    if status >= 400:
        assert after == before, f"a {status} changed the database: {before} -> {after} ({where})"
        return
    assert case["method"] == "POST", where
    added = {table: after[table] - before[table] for table in TABLES}
    if replayed:
        assert added == dict.fromkeys(TABLES, 0), where
        return
    assert added["hookline_inbox"] == 1, (added, where)
    if case["where"] == "stripe":
        assert added["hookline_order"] == added["hookline_event"] == 0, (added, where)
        assert json.loads(body)["inbox_id"].startswith("msg_"), where
    else:
        assert added["hookline_order"] in (0, 1), (added, where)
        assert added["hookline_event"] in (0, 1), (added, where)
        assert json.loads(body) == {"status": "success", "message": "Webhook processed"}, where


def test_the_fuzzer_reaches_both_outcomes(target):
    """The property above must be able to see 2xx answers on both receivers (not only 4xx)."""
    seed = send_raw(
        target.server.port,
        "POST",
        "/myapp/webhook",
        [("Content-Type", "application/x-www-form-urlencoded")],
        b"order_id=fz-check&product_name=probe",
    )
    body = json.dumps({"id": "evt_fz_check", "object": "event", "type": "x.y"}).encode()
    signed = send_raw(
        target.server.port,
        "POST",
        f"/myapp/webhook/{STRIPE_SOURCE}",
        [("Content-Type", "application/json"), ("Stripe-Signature", _stripe_header(body))],
        body,
    )
    assert (seed[0], signed[0]) == (200, 200), (seed, signed)
