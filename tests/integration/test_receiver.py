"""The seed's order webhook (``hookline.receiver``) against a real database, on both backends,
through each of its paths: a pydal transaction per request, the group committer (two of them
in the concurrency tests, as two web processes would have), and the ingest writer that
`hookline serve` runs (a real Unix socket; a client per request thread, as in a web process).

Guarantee 3: an accepted request is stored (and its work committed) before the 2xx, and a
duplicate message id is answered like the first and never processed twice. Guarantee 4: bad
input gets a clear 4xx with nothing written, never a 5xx or a crash, also under concurrency.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from inbound_requests import raw_body

from hookline import endpoints, orders, secretbox
from hookline.database import connect
from hookline.endpoint_rules import parse_endpoint
from hookline.groupcommit import GroupCommitter, connect_for
from hookline.netguard import NetworkPolicy
from hookline.order_rules import parse_patch
from hookline.receiver import receive_order_webhook, receive_order_webhook_grouped
from hookline.webio import Request, Response
from hookline.writer import IngestWriter
from hookline.writer_link import WriterLink

FORM = "application/x-www-form-urlencoded"
SEED_BODY = b"order_id=1234&product_name=example"
SUCCESS = {"status": "success", "message": "Webhook processed"}
LIMIT = 64 * 1024
NOW = dt.datetime(2026, 3, 1, 12, 0, 0)


_COMMITTERS: list[GroupCommitter] = []


class _WriterPath:
    """An ``IngestWriter`` serving from a thread, reached through a ``WriterLink`` as a web
    process would (a link per call here: each call runs its own event loop)."""

    def __init__(self, settings) -> None:
        self.directory = tempfile.mkdtemp(prefix="hl-")  # short: Unix socket paths are
        self.now: dt.datetime | None = None
        self.writer = IngestWriter(
            GroupCommitter(connect_for(settings)),
            Path(self.directory) / "w.sock",
            max_body_bytes=LIMIT,
            clock=lambda: self.now,
        )
        self.thread = threading.Thread(target=self.writer.serve, daemon=True)
        self.thread.start()

    def receive(self, request: Request, *, max_body_bytes: int, now: dt.datetime | None):
        # The writer has one limit and one clock; every call of a test passes the same ones.
        self.writer.max_body_bytes, self.now = max_body_bytes, now
        return asyncio.run(WriterLink(self.writer.path).receive(request))

    def close(self) -> None:
        self.writer.stop()
        self.thread.join(10)
        shutil.rmtree(self.directory, ignore_errors=True)


_WRITER: list[_WriterPath] = []


@pytest.fixture(params=["per-request", "grouped", "writer"], autouse=True)
def receiver_path(request, settings):
    """Run every test once per path; ``grouped`` answers through two group committers,
    ``writer`` through the ingest writer."""
    if request.param == "per-request":
        yield
        return
    if request.param == "writer":
        _WRITER.append(_WriterPath(settings))
        yield
        _WRITER.pop().close()
        return
    _COMMITTERS[:] = [GroupCommitter(connect_for(settings)) for _ in range(2)]
    yield
    for committer in _COMMITTERS:
        committer.close()
    _COMMITTERS.clear()


def _receive(db, request: Request, n: int = 0, **options: Any) -> Response:
    if _WRITER:
        response = _WRITER[0].receive(
            request, max_body_bytes=options["max_body_bytes"], now=options.get("now")
        )
    elif not _COMMITTERS:
        return receive_order_webhook(db, request, **options)
    else:
        committer = _COMMITTERS[n % len(_COMMITTERS)]
        response = receive_order_webhook_grouped(committer, request, **options)
    assert response is not None  # only a signed orders source sends it back to pydal
    return response


def _post(
    db,
    body: bytes = SEED_BODY,
    content_type: str | None = FORM,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    max_body_bytes: int = LIMIT,
    now: dt.datetime | None = None,
) -> Response:
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    request = Request.build(method, "/myapp/webhook", all_headers, body)
    return _receive(db, request, max_body_bytes=max_body_bytes, now=now)


def _counts(db) -> dict[str, int]:
    db.commit()  # end any read snapshot so we see only (and all) committed rows
    return {
        "orders": db(db.hookline_order).count(),
        "events": db(db.hookline_event).count(),
        "inbox": db(db.hookline_inbox).count(),
    }


NOTHING = {"orders": 0, "events": 0, "inbox": 0}


def _event_types(db) -> list[str]:
    db.commit()
    rows = db(db.hookline_event).select(orderby=db.hookline_event.event_id)
    return [row.type for row in rows]


def _assert_success(response: Response) -> None:
    assert response.status == 200, response.body
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == SUCCESS


# --- the seed ---------------------------------------------------------------------------------


def test_seed_curl_is_answered_with_the_seed_json(db, other_db):
    response = _post(db)

    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"status": "success", "message": "Webhook processed"}
    assert "Idempotent-Replayed" not in response.headers
    # Committed before the answer: another connection sees everything.
    assert _counts(other_db) == {"orders": 1, "events": 1, "inbox": 1}
    order = orders.get_order(other_db, "1234")
    assert order["product_name"] == "example"
    assert order["source"] == "webhook"
    assert order["status"] == "pending"
    assert _event_types(other_db) == ["order.created"]


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
def test_non_post_is_answered_invalid_request_and_writes_nothing(db, other_db, method):
    response = _post(db, method=method)
    assert response.status == 400
    assert response.body == b"Invalid request"
    assert _counts(other_db) == NOTHING


def test_lower_case_post_is_a_post(db, other_db):
    _assert_success(_post(db, method="post"))
    assert _counts(other_db)["orders"] == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"order_id": "1234", "product_name": "example"}', "application/json"),
        (b'{"order_id": 1234, "product_name": "example"}', "application/json; charset=utf-8"),
        (b'{"order_id": "1234", "product_name": "example"}', "application/vnd.shop+json"),
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="order_id"\r\n\r\n1234\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="product_name"\r\n\r\nexample\r\n'
            b"--XyZ--\r\n",
            "multipart/form-data; boundary=XyZ",
        ),
        (SEED_BODY, "application/x-www-form-urlencoded; charset=UTF-8"),
    ],
)
def test_json_and_multipart_bodies_get_the_same_answer(db, other_db, body, content_type):
    _assert_success(_post(db, body, content_type))
    assert orders.get_order(other_db, "1234")["product_name"] == "example"
    assert _counts(other_db) == {"orders": 1, "events": 1, "inbox": 1}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("order_id=1&product_name=café".encode(), FORM),
        (b"order_id=1&product_name=caf%C3%A9", FORM),
        (b"order_id=1&product_name=caf%c3%a9", FORM),
        ('{"order_id": "1", "product_name": "café"}'.encode(), "application/json"),
        (b'{"order_id": "1", "product_name": "caf\\u00e9"}', "application/json"),
    ],
)
def test_non_ascii_is_stored_as_utf8_text(db, other_db, body, content_type):
    _assert_success(_post(db, body, content_type))
    assert orders.get_order(other_db, "1")["product_name"] == "café"
    event = other_db(other_db.hookline_event).select().first()
    assert json.loads(event.payload)["data"]["order"]["product_name"] == "café"


def test_known_order_is_created_then_updated(db, other_db):
    _assert_success(_post(db, b"order_id=1234&product_name=example"))
    _assert_success(_post(db, b"order_id=1234&product_name=other&quantity=3"))

    order = orders.get_order(other_db, "1234")
    assert order["product_name"] == "other"
    assert order["quantity"] == 3
    assert order["version"] == 2
    assert _event_types(other_db) == ["order.created", "order.updated"]
    updated = other_db(other_db.hookline_event.type == "order.updated").select().first()
    assert json.loads(updated.payload)["data"]["changed"] == ["product_name", "quantity"]
    assert _counts(other_db) == {"orders": 1, "events": 2, "inbox": 2}


def test_resending_the_same_data_without_an_id_is_stored_but_publishes_nothing(db, other_db):
    _assert_success(_post(db))
    _assert_success(_post(db))
    assert _counts(other_db) == {"orders": 1, "events": 1, "inbox": 2}


# --- the inbox --------------------------------------------------------------------------------


def test_request_is_stored_raw_with_credentials_redacted(db, other_db):
    body = "order_id=1234&product_name=café+au+lait".encode()
    response = _post(
        db,
        body,
        headers={
            "Authorization": "Bearer hk_supersecret",
            "Cookie": "session=abc",
            "X-Api-Key": "also-secret",
            "User-Agent": "curl/8.5",
            "Webhook-Id": "msg_1",
        },
        now=NOW,
    )
    _assert_success(response)

    other_db.commit()
    row = other_db(other_db.hookline_inbox).select().first()
    assert row is not None
    assert row.source == "orders"
    assert row.message_id == "msg_1"
    assert row.method == "POST"
    assert row.content_type == FORM
    assert row.status == "processed"
    assert row.response_status == 200
    assert json.loads(row.response_body) == SUCCESS
    assert row.received_at == NOW
    assert row.processed_at == NOW
    assert row.inbox_id.startswith("msg_")
    assert raw_body(other_db, row.id) == body

    headers = dict(json.loads(row.headers))
    assert headers["authorization"] == "[redacted]"
    assert headers["cookie"] == "[redacted]"
    assert headers["x-api-key"] == "[redacted]"
    assert headers["user-agent"] == "curl/8.5"
    assert headers["webhook-id"] == "msg_1"
    assert headers["content-type"] == FORM
    for secret in ("hk_supersecret", "session=abc", "also-secret"):
        assert secret not in row.headers


def test_inbox_body_keeps_the_exact_bytes(db, other_db):
    body = b'{\n  "order_id": "7",\r\n  "product_name": "caf\xc3\xa9 \\u2603"  }\n\n'
    _assert_success(_post(db, body, "application/json"))
    other_db.commit()
    row = other_db(other_db.hookline_inbox).select().first()
    assert raw_body(other_db, row.id) == body


# --- idempotency ------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["webhook-id", "Webhook-Id", "Idempotency-Key"])
def test_duplicate_message_is_replayed_and_processed_once(db, other_db, header):
    first = _post(db, headers={header: "msg_42"})
    second = _post(db, headers={header: "msg_42"})
    # Even a changed body under the same id is a replay, never a second processing.
    third = _post(db, b"order_id=1234&product_name=changed", headers={header: "msg_42"})

    _assert_success(first)
    assert "Idempotent-Replayed" not in first.headers
    for again in (second, third):
        assert again.status == first.status
        assert again.body == first.body
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["Content-Type"] == "application/json"

    assert _counts(other_db) == {"orders": 1, "events": 1, "inbox": 1}
    assert orders.get_order(other_db, "1234")["product_name"] == "example"


def test_webhook_id_wins_over_idempotency_key(db, other_db):
    _assert_success(_post(db, headers={"webhook-id": "a", "idempotency-key": "k"}))
    replay = _post(db, headers={"webhook-id": "a", "idempotency-key": "other"})
    assert replay.headers.get("Idempotent-Replayed") == "true"
    other_db.commit()
    assert [r.message_id for r in other_db(other_db.hookline_inbox).select()] == ["a"]


def test_different_message_ids_are_processed_separately(db, other_db):
    _assert_success(_post(db, headers={"webhook-id": "m1"}))
    second = _post(db, b"order_id=1234&product_name=other", headers={"webhook-id": "m2"})
    _assert_success(second)
    assert "Idempotent-Replayed" not in second.headers
    assert _counts(other_db) == {"orders": 1, "events": 2, "inbox": 2}


def test_refused_request_does_not_burn_its_message_id(db, other_db):
    refused = _post(db, b"product_name=example", headers={"webhook-id": "m1"})
    assert refused.status == 422
    accepted = _post(db, headers={"webhook-id": "m1"})
    _assert_success(accepted)
    assert "Idempotent-Replayed" not in accepted.headers
    assert _counts(other_db) == {"orders": 1, "events": 1, "inbox": 1}


# --- refusals: a clear 4xx and nothing written ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "field", "reason"),
    [
        (b"product_name=example", FORM, "order_id", "is required"),
        (b"order_id=&product_name=example", FORM, "order_id", "must not be blank"),
        (b"order_id=%20%20&product_name=example", FORM, "order_id", "must not be blank"),
        (b'{"product_name": "example"}', "application/json", "order_id", "is required"),
        (b'{"order_id": null, "product_name": "x"}', "application/json", "order_id", "is required"),
        (b'{"order_id": "", "product_name": "x"}', "application/json", "order_id", "blank"),
        (b"", FORM, "order_id", "is required"),
        (b"order_id=1&order_id=2&product_name=x", FORM, "order_id", "more than once"),
        (b"order_id=bad%20id&product_name=x", FORM, "order_id", "may contain only"),
        (b"order_id=1", FORM, "product_name", "required"),
        (b"order_id=1&product_name=x&quantity=0", FORM, "quantity", "between"),
        (b"order_id=1&product_name=x&unit_price=1.00", FORM, "currency", "together"),
        (b"order_id=1&product_name=x&customer_email=nope", FORM, "customer_email", "email"),
    ],
)
def test_invalid_fields_get_422_naming_the_field(db, other_db, body, content_type, field, reason):
    response = _post(db, body, content_type, headers={"webhook-id": "m1"})
    assert response.status == 422
    assert response.headers["Content-Type"] == "application/json"
    answer = response.json()
    assert answer["status"] == "error"
    assert field in answer["errors"]
    assert reason in answer["errors"][field]
    assert _counts(other_db) == NOTHING


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"order_id": "1", ', "malformed JSON"),
        (b"", "empty"),
        (b'{"order_id": "1", "order_id": "2"}', "more than once"),
        (b'{"order_id": NaN}', "NaN"),
        (b'["order_id", "1"]', "must be an object"),
        (b'"just a string"', "must be an object"),
        (b'{"order_id": "caf\xe9"}', "UTF-8"),
        (b"[" * 100 + b"]" * 100, "nested deeper"),
    ],
)
def test_malformed_json_gets_400_with_a_reason(db, other_db, body, fragment):
    response = _post(db, body, "application/json", headers={"webhook-id": "m1"})
    assert response.status == 400
    answer = response.json()
    assert answer["status"] == "error"
    assert fragment in answer["message"]
    assert _counts(other_db) == NOTHING


def test_bad_utf8_form_gets_400(db, other_db):
    response = _post(db, b"order_id=1&product_name=caf\xe9", FORM)
    assert response.status == 400
    assert "UTF-8" in response.json()["message"]
    response = _post(db, b"order_id=1&product_name=caf%E9", FORM)
    assert response.status == 400
    assert _counts(other_db) == NOTHING


def test_long_message_ids_are_told_apart_past_the_column_and_still_deduplicated(db, other_db):
    """Ids longer than the stored key are kept apart by a digest of the whole id: cutting
    them short would answer a second, different message as a replay of the first."""
    first_id, second_id = "x" * 255 + "1", "x" * 300 + "2"

    first = _post(db, headers={"webhook-id": first_id})
    second = _post(db, b"order_id=1234&product_name=other", headers={"webhook-id": second_id})
    again = _post(db, headers={"webhook-id": first_id})

    _assert_success(first)
    _assert_success(second)
    assert "Idempotent-Replayed" not in second.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _counts(other_db) == {"orders": 1, "events": 2, "inbox": 2}
    stored = sorted(r.message_id for r in other_db(other_db.hookline_inbox).select())
    assert [len(key) for key in stored] == [255, 255]
    assert stored[0] != stored[1]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"order_id,product_name\n1234,example\n", "text/csv"),
        (b"<order><id>1</id></order>", "application/xml"),
        (SEED_BODY, "text/plain"),
        (SEED_BODY, None),
        (SEED_BODY, "application/x-www-form-urlencoded; charset=latin-1"),
        (
            b'--B\r\nContent-Disposition: form-data; name="order_id"; filename="a.txt"\r\n\r\n'
            b"1\r\n--B--\r\n",
            "multipart/form-data; boundary=B",
        ),
    ],
)
def test_unsupported_content_gets_415(db, other_db, body, content_type):
    response = _post(db, body, content_type, headers={"webhook-id": "m1"})
    assert response.status == 415
    assert response.json()["status"] == "error"
    assert response.json()["message"]
    assert _counts(other_db) == NOTHING


def test_oversized_body_gets_413(db, other_db):
    body = b"order_id=1234&product_name=" + b"x" * 100
    response = _post(db, body, max_body_bytes=len(body) - 1, headers={"webhook-id": "m1"})
    assert response.status == 413
    assert str(len(body)) in response.json()["message"]
    assert _counts(other_db) == NOTHING

    at_limit = _post(db, body[:-90], max_body_bytes=len(body) - 90)
    _assert_success(at_limit)


def test_oversized_body_is_refused_even_for_a_known_message_id(db, other_db):
    _assert_success(_post(db, headers={"webhook-id": "m1"}))
    big_body = SEED_BODY + b"&pad=" + b"x" * 200
    big = _post(db, big_body, headers={"webhook-id": "m1"}, max_body_bytes=100)
    assert big.status == 413
    assert _counts(other_db) == {"orders": 1, "events": 1, "inbox": 1}


def test_change_to_a_shipped_order_gets_409_and_writes_nothing(db, other_db):
    _assert_success(_post(db))
    orders.apply_patch(db, "1234", parse_patch({"status": "paid"}))
    orders.apply_patch(db, "1234", parse_patch({"status": "shipped"}))
    db.commit()
    before = _counts(other_db)

    response = _post(db, b"order_id=1234&product_name=other", headers={"webhook-id": "m9"})
    assert response.status == 409
    assert "shipped" in response.json()["message"]
    assert _counts(other_db) == before
    assert orders.get_order(other_db, "1234")["product_name"] == "example"


def test_connection_is_usable_after_a_refusal(db, other_db):
    assert _post(db, b"{", "application/json").status == 400
    assert _post(db, b"product_name=x").status == 422
    _assert_success(_post(db))
    assert _counts(other_db) == {"orders": 1, "events": 1, "inbox": 1}


# --- concurrency ------------------------------------------------------------------------------

THREADS = 8


def _concurrently(settings, make_request: Callable[[int], Request]) -> list[Any]:
    """Run the receiver from THREADS threads at once, each on its own connection (or, grouped,
    alternating between two committers);
    return each thread's Response (or the exception it raised)."""
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS

    def worker(n: int) -> None:
        db = connect(settings)
        try:
            request = make_request(n)
            barrier.wait(timeout=30)
            results[n] = _receive(db, request, n, max_body_bytes=LIMIT)
        except BaseException as error:  # report it to the test instead of losing it
            results[n] = error
        finally:
            db.rollback()
            db.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(thread.is_alive() for thread in threads), "a request never finished"
    return results


def _form(body: bytes, headers: dict[str, str]) -> Request:
    return Request.build("POST", "/myapp/webhook", {"Content-Type": FORM, **headers}, body)


def test_same_message_id_concurrently_is_processed_exactly_once(settings, other_db):
    results = _concurrently(settings, lambda n: _form(SEED_BODY, {"webhook-id": "msg_same"}))

    errors = [r for r in results if not isinstance(r, Response)]
    assert errors == []
    for response in results:
        _assert_success(response)
    replayed = [r for r in results if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == THREADS - 1
    assert _counts(other_db) == {"orders": 1, "events": 1, "inbox": 1}
    assert _event_types(other_db) == ["order.created"]


def test_different_message_ids_for_one_new_order_concurrently_make_one_order(settings, other_db):
    results = _concurrently(settings, lambda n: _form(SEED_BODY, {"webhook-id": f"msg_{n}"}))

    errors = [r for r in results if not isinstance(r, Response)]
    assert errors == []
    assert [r.status for r in results] == [200] * THREADS
    for response in results:
        _assert_success(response)
        assert "Idempotent-Replayed" not in response.headers
    assert _counts(other_db) == {"orders": 1, "events": 1, "inbox": THREADS}
    assert _event_types(other_db) == ["order.created"]
    assert orders.get_order(other_db, "1234")["version"] == 1


def test_concurrent_requests_without_message_id_for_one_new_order(settings, other_db):
    results = _concurrently(settings, lambda n: _form(SEED_BODY, {}))

    assert [r for r in results if not isinstance(r, Response)] == []
    assert [r.status for r in results] == [200] * THREADS
    assert _counts(other_db) == {"orders": 1, "events": 1, "inbox": THREADS}


def test_concurrent_updates_of_one_new_order_from_different_messages_all_succeed(
    settings, other_db
):
    """Different messages about one order, each with different data, racing each other.

    Each is valid input that does not conflict with the order's state, so each must be applied
    (last writer wins) and answered 200; losing an internal compare-and-set race is the
    receiver's to retry, like the uniqueness race it already retries, not the sender's fault.
    """
    names = [f"product {n}" for n in range(THREADS)]

    def request(n: int) -> Request:
        body = f"order_id=1234&product_name=product+{n}".encode()
        return _form(body, {"webhook-id": f"msg_{n}"})

    results = _concurrently(settings, request)

    assert [r for r in results if not isinstance(r, Response)] == []
    assert [r.status for r in results] == [200] * THREADS, [r.body for r in results]
    assert _counts(other_db) == {"orders": 1, "events": THREADS, "inbox": THREADS}
    assert _event_types(other_db) == ["order.created"] + ["order.updated"] * (THREADS - 1)
    order = orders.get_order(other_db, "1234")
    assert order["product_name"] in names
    assert order["version"] == THREADS


# --- one batch --------------------------------------------------------------------------------


def _json(order_id: str, **fields: Any) -> bytes:
    return json.dumps({"order_id": order_id, "product_name": "kettle", **fields}).encode()


def _in_one_batch(db, requests: dict[str, Request]) -> dict[str, Any]:
    """Answer ``requests``: one at a time per request, or, grouped, all in one batch of one
    committer (a first unit holds it until every request has queued behind it)."""
    if not _COMMITTERS:
        return {
            name: _receive(db, request, max_body_bytes=LIMIT) for name, request in requests.items()
        }
    committer = _COMMITTERS[0]
    started, release = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def hold(sql) -> None:
        started.set()
        release.wait(10)

    def call(name: str, request: Request) -> None:
        try:
            results[name] = _receive(db, request, max_body_bytes=LIMIT)
        except BaseException as error:  # report it to the test instead of losing it
            results[name] = error

    batches_before = committer.batches
    holder = threading.Thread(target=committer.run, args=(hold,))
    holder.start()
    assert started.wait(10)
    threads = [threading.Thread(target=call, args=item) for item in requests.items()]
    for thread in threads:
        thread.start()
    waited = 0  # every request reaches the committer, refusals too (they are checked there)
    while committer._queue.qsize() < len(requests) and waited < 1000:
        threading.Event().wait(0.01)
        waited += 1
    release.set()
    for thread in [holder, *threads]:
        thread.join(30)
    assert committer.batches - batches_before == 2  # the holder's, then all the others
    assert committer.together >= 3  # new, one of the message's two, one of the same order's
    return results


def test_a_batch_answers_and_writes_as_its_requests_would_one_at_a_time(db, other_db):
    box = secretbox.SecretBox([secretbox.generate_key()])
    network = NetworkPolicy.from_settings("127.0.0.0/8")
    subscribed = {}
    for name, types in (("created", ["order.created"]), ("paid", ["order.paid"])):
        changes = parse_endpoint(
            {"url": f"http://127.0.0.1:9/{name}", "event_types": types}, network, creating=True
        )
        view, _ = endpoints.create_endpoint(db, box, changes)
        subscribed[name] = endpoints.find_endpoint(db, view["endpoint_id"]).id
    db.commit()
    _assert_success(_post(db, _json("known", quantity=1), "application/json"))
    posted = {
        "new": _json("n1"),
        "message_first": _json("n2"),
        "message_again": _json("n3"),  # the same message id: a replay, never processed
        "same_order_a": _json("n4"),
        "same_order_b": _json("n4"),
        "update": _json("known", quantity=5),
        "invalid": _json("n5", quantity=-1),
        "too_big": _json("n6", note="x" * LIMIT),
    }
    message_ids = {"message_first": "msg_1", "message_again": "msg_1"}
    requests = {
        name: Request.build(
            "POST",
            "/myapp/webhook",
            {"Content-Type": "application/json"}
            | ({"webhook-id": message_ids[name]} if name in message_ids else {}),
            body,
        )
        for name, body in posted.items()
    }

    results = _in_one_batch(db, requests)

    assert [name for name, r in results.items() if not isinstance(r, Response)] == []
    assert {name: r.status for name, r in results.items()} == {
        **dict.fromkeys(posted, 200),
        "invalid": 422,
        "too_big": 413,
    }
    replays = [n for n, r in results.items() if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replays) == 1 and replays[0] in message_ids
    stored = {row.order_id: row for row in other_db(other_db.hookline_order).select()}
    replayed_order = {"message_first": "n2", "message_again": "n3"}[replays[0]]
    assert set(stored) == {"known", "n1", "n4"} | ({"n2", "n3"} - {replayed_order})
    assert stored["known"].quantity == 5 and stored["known"].version == 2
    assert stored["n4"].version == 1
    assert sorted(_event_types(other_db)) == sorted(
        ["order.created"] * 4 + ["order.updated"]  # known, n1, n2 or n3, n4; then the update
    )
    # One inbox row per request processed: the first, new, one of the message's two, both
    # same-order requests and the update; replays and refusals store nothing.
    assert _counts(other_db)["inbox"] == 6
    # Each order.created event fanned out to its one subscriber, pointing at its own row.
    e, d = other_db.hookline_event, other_db.hookline_delivery
    created = {row.id for row in other_db(e.type == "order.created").select(e.id)}
    fanned = [(row.event, row.endpoint) for row in other_db(d).select(d.event, d.endpoint)]
    assert sorted(fanned) == sorted((event, subscribed["created"]) for event in created)
