"""Receiving (``hookline.inbound.receive`` and the seed's receiver) on SQLite and PostgreSQL:
what ``test_inbound.py`` leaves out.

- A ``standard`` source with an ed25519 public key (``whpk_``) accepts ``v1a`` signatures made
  with its private key, and refuses a tampered body or another key's signature.
- A ``none`` source takes unsigned requests and stores their exact bytes.
- Verification comes before parsing: a request with a bad signature is a 401 (counted, nothing
  stored) even when its body is not JSON or its content type is not accepted, which would
  otherwise be a 400 / 415; the same for the seed's ``orders`` source once it has a secret.
- Header limits (100 headers, 16 KiB of them) on the seed's ``/myapp/webhook``, on both the
  per-request (verifying) path and the group-commit path the web processes use.

Signing helpers, the request helper and the seed's helpers come from ``inbound_requests.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from inbound_requests import (
    FORM,
    JSON_CT,
    LIMIT,
    NOW,
    NOW_TS,
    SECRETS,
    STD_SECRET,
    WRONG_SECRET,
    body_for,
    counts,
    failures,
    inbox_rows,
    raw_body,
    receive,
    seed_post,
    sign,
)
from inbound_requests import (
    add_source as add_test_source,
)

from hookline import signing, sources
from hookline.database import connect
from hookline.groupcommit import GroupCommitter, connect_for
from hookline.inbound import MAX_HEADER_BYTES, MAX_HEADERS
from hookline.receiver import receive_order_webhook, receive_order_webhook_grouped
from hookline.secretbox import SecretBox, generate_key
from hookline.sources import ORDERS_SOURCE
from hookline.webio import Request, Response

SIGNED_KINDS = tuple(SECRETS)
NOTHING = {"orders": 0, "events": 0, "inbox": 0}


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([generate_key()])


def add_source(db, box: SecretBox, kind: str, name: str | None = None, **fields: Any) -> str:
    return add_test_source(db, box, kind, name or f"kinds-{kind}", **fields)


@pytest.fixture
def orders_source(db) -> None:
    sources.ensure_orders_source(db)  # PostgreSQL tables are emptied between tests
    db.commit()


@pytest.fixture
def signed_orders(db, box, orders_source) -> None:
    sources.rotate_secret(db, box, ORDERS_SOURCE, secret=STD_SECRET, now=NOW)
    db.commit()


# --- standard with an ed25519 public key (v1a) ----------------------------------------------


def v1a_headers(private_key: str, body: bytes, msg_id: str, stamp: int = NOW_TS) -> dict:
    return {
        "Content-Type": JSON_CT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signing.sign_v1a(private_key, msg_id, stamp, body),
    }


@pytest.fixture
def ed25519_source(db, box) -> tuple[str, str]:
    """A standard source verifying with a fresh key pair's public key; (name, private key)."""
    private, public = signing.generate_ed25519_keypair()
    name = add_source(db, box, "standard", "ed-src", public_keys=[public])
    return name, private


def test_standard_source_accepts_a_v1a_signature_from_its_public_key_and_stores_it_once(
    db, other_db, box, ed25519_source
):
    name, private = ed25519_source
    body = body_for("standard", "msg_ed_1")
    headers = v1a_headers(private, body, "msg_ed_1")
    assert headers["webhook-signature"].startswith("v1a,")

    first = receive(db, box, name, body, headers)

    assert first.status == 200, first.body
    assert first.json()["source"] == name
    [row] = inbox_rows(other_db)
    assert (row.source, row.message_id, row.event_type) == (name, "msg_ed_1", "invoice.paid")
    assert raw_body(other_db, row.id) == body

    again = receive(db, box, name, body, headers, now=NOW + dt.timedelta(seconds=20))

    assert again.status == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    assert len(inbox_rows(other_db)) == 1
    assert failures(other_db, name) == 0


def test_standard_source_refuses_a_v1a_signature_over_a_tampered_body(
    db, other_db, box, ed25519_source
):
    name, private = ed25519_source
    body = body_for("standard", "msg_ed_2")
    headers = v1a_headers(private, body, "msg_ed_2")

    answer = receive(db, box, name, body.replace(b"invoice", b"invoicf"), headers)

    assert answer.status == 401, answer.body
    assert inbox_rows(other_db) == []
    assert failures(other_db, name) == 1


def test_standard_source_refuses_a_v1a_signature_from_another_key(
    db, other_db, box, ed25519_source
):
    name, _private = ed25519_source
    stranger, _ = signing.generate_ed25519_keypair()
    body = body_for("standard", "msg_ed_3")

    answer = receive(db, box, name, body, v1a_headers(stranger, body, "msg_ed_3"))

    assert answer.status == 401, answer.body
    assert inbox_rows(other_db) == []
    assert failures(other_db, name) == 1


def test_standard_source_refuses_a_stale_v1a_signature(db, other_db, box, ed25519_source):
    name, private = ed25519_source
    body = body_for("standard", "msg_ed_4")

    answer = receive(db, box, name, body, v1a_headers(private, body, "msg_ed_4", NOW_TS - 301))

    assert answer.status == 401
    assert inbox_rows(other_db) == []


def test_a_public_key_does_not_verify_a_v1_hmac_made_with_it_as_a_secret(
    db, other_db, box, ed25519_source
):
    """The public key is public: it must never work as an HMAC secret."""
    name, private = ed25519_source
    public = signing.public_key_of(private)
    as_secret = "whsec_" + public.removeprefix("whpk_")
    body = body_for("standard", "msg_ed_5")
    headers = sign("standard", body, msg_id="msg_ed_5", secret=as_secret)

    answer = receive(db, box, name, body, headers)

    assert answer.status == 401
    assert inbox_rows(other_db) == []


# --- none: unsigned -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/octet-stream", b"\x00\xff\xfe raw \r\n bytes \x80"),
        ("text/plain; charset=latin-1", "caf\xe9".encode("latin-1")),
        (JSON_CT, b'{ "b" : 1,\n\t"a":"caf\\u00e9" }\r\n'),
        (None, b""),
    ],
    ids=["binary", "latin-1", "json-as-sent", "empty-no-type"],
)
def test_none_source_accepts_an_unsigned_request_and_stores_its_exact_bytes(
    db, other_db, box, content_type, body
):
    name = add_source(db, box, "none", "open")
    headers = {"Content-Type": content_type} if content_type else {}

    answer = receive(db, box, name, body, headers)

    assert answer.status == 200, answer.body
    assert answer.json()["status"] == "received"
    [row] = inbox_rows(other_db)
    assert row.source == name and row.status == "received"
    assert raw_body(other_db, row.id) == body
    assert failures(other_db, name) == 0


def test_none_source_dedupes_on_idempotency_key_and_keeps_requests_without_one(db, other_db, box):
    name = add_source(db, box, "none", "open")
    keyed = {"Content-Type": JSON_CT, "Idempotency-Key": "key-1"}

    first = receive(db, box, name, b'{"n": 1}', keyed)
    second = receive(db, box, name, b'{"n": 2}', keyed)
    plain = [receive(db, box, name, b"{}", {"Content-Type": JSON_CT}) for _ in range(2)]

    assert first.status == second.status == 200
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.json() == first.json()
    assert [p.status for p in plain] == [200, 200]
    rows = inbox_rows(other_db)
    assert len(rows) == 3
    assert [r.message_id for r in rows] == ["key-1", None, None]
    assert raw_body(other_db, rows[0].id) == b'{"n": 1}'


def test_none_source_still_refuses_malformed_json_with_400(db, other_db, box):
    name = add_source(db, box, "none", "open")
    answer = receive(db, box, name, b'{"a": ', {"Content-Type": JSON_CT})
    assert answer.status == 400
    assert inbox_rows(other_db) == []


# --- verification before parsing ------------------------------------------------------------

UNPARSABLE = {
    "malformed-json": (b'{"type": "x", ', JSON_CT),
    "not-utf8": (b"\xff\xfe{}", JSON_CT),
    "unsupported-type": (b"<xml>nope</xml>", "application/xml"),
    "no-type": (b"{}", None),
}


def _bad_signature(kind: str, body: bytes, content_type: str | None, how: str) -> dict:
    if how == "unsigned":
        headers = {"Content-Type": content_type or ""}
    else:
        headers = sign(kind, body, msg_id="msg_unparsable", secret=WRONG_SECRET)
        headers["Content-Type"] = content_type or ""
    if content_type is None:
        del headers["Content-Type"]
    return headers


@pytest.mark.parametrize("how", ["wrong-secret", "unsigned"])
@pytest.mark.parametrize("case", list(UNPARSABLE))
@pytest.mark.parametrize("kind", SIGNED_KINDS)
def test_a_bad_signature_is_401_before_the_body_is_parsed(db, other_db, box, kind, case, how):
    name = add_source(db, box, kind)
    body, content_type = UNPARSABLE[case]

    answer = receive(db, box, name, body, _bad_signature(kind, body, content_type, how))

    assert answer.status == 401, answer.body
    assert answer.json()["status"] == "error"
    assert inbox_rows(other_db) == []
    assert failures(other_db, name) == 1


PARSED_ANSWER = {"malformed-json": 400, "not-utf8": 400, "unsupported-type": 415, "no-type": 415}


@pytest.mark.parametrize("case", list(UNPARSABLE))
@pytest.mark.parametrize("kind", SIGNED_KINDS)
def test_the_same_body_correctly_signed_gets_the_parsers_answer(db, other_db, box, kind, case):
    """The control for the test above: with a good signature, parsing decides (the generic
    ``hmac`` kind stores a body of any content type, but still parses one declared JSON)."""
    name = add_source(db, box, kind)
    body, content_type = UNPARSABLE[case]
    headers = sign(kind, body, msg_id="msg_unparsable")
    headers.pop("Content-Type")
    if content_type is not None:
        headers["Content-Type"] = content_type

    answer = receive(db, box, name, body, headers)

    expected = PARSED_ANSWER[case]
    if kind == "hmac" and expected == 415:
        expected = 200
    assert answer.status == expected, answer.body
    assert failures(other_db, name) == 0


SEED_UNPARSABLE = {
    "malformed-json": (b'{"order_id": "v-1",', JSON_CT),
    "unsupported-type": (b"order_id,product_name\nv-1,x", "text/csv"),
    "missing-order-id": (b"product_name=x", FORM),
    "not-utf8-form": (b"order_id=v-1&product_name=\xff", FORM),
}


@pytest.mark.parametrize("how", ["wrong-secret", "unsigned"])
@pytest.mark.parametrize("case", list(SEED_UNPARSABLE))
def test_signed_orders_source_answers_a_bad_signature_401_before_parsing(
    db, other_db, box, signed_orders, case, how
):
    body, content_type = SEED_UNPARSABLE[case]
    headers = {"Content-Type": content_type}
    if how == "wrong-secret":
        signed = sign("standard", body, msg_id="msg_seed_bad", secret=WRONG_SECRET)
        headers = signed | headers

    answer = seed_post(db, box, body, headers)

    assert answer.status == 401, answer.body
    assert STD_SECRET not in answer.body.decode()
    assert counts(other_db) == NOTHING
    assert failures(other_db, ORDERS_SOURCE) == 1


@pytest.mark.parametrize("case", list(SEED_UNPARSABLE))
def test_unsigned_orders_source_parses_the_same_bodies_into_a_4xx(
    db, other_db, box, orders_source, case
):
    """The control: without a secret the seed's own answers (400 / 415 / 422) come back."""
    body, content_type = SEED_UNPARSABLE[case]

    answer = seed_post(db, box, body, {"Content-Type": content_type})

    assert answer.status in (400, 415, 422), answer.body
    assert counts(other_db) == NOTHING
    assert failures(other_db, ORDERS_SOURCE) == 0


# --- header limits on the seed's /myapp/webhook ---------------------------------------------


@pytest.fixture
def committer(settings) -> Iterator[GroupCommitter]:
    running = GroupCommitter(connect_for(settings))
    yield running
    running.close()


def seed_request(headers: dict[str, str], order_id: str = "h-1") -> Request:
    body = f"order_id={order_id}&product_name=kettle".encode()
    return Request.build("POST", "/myapp/webhook", {"Content-Type": FORM} | headers, body)


def many_headers(total: int) -> dict[str, str]:
    """Extra headers that, with the form's Content-Type, make ``total`` headers."""
    return {f"X-Extra-{i}": "v" for i in range(total - 1)}


def big_header(total_bytes: int) -> dict[str, str]:
    """One extra header that makes the request's header bytes (names + values) ``total_bytes``."""
    used = len("content-type") + len(FORM) + len("x-big")
    return {"X-Big": "z" * (total_bytes - used)}


def per_request(db, box, request: Request, committer) -> Response:
    return receive_order_webhook(db, request, max_body_bytes=LIMIT, box=box, now=NOW)


def grouped(db, box, request: Request, committer) -> Response:
    """As the web process does it: the group committer, or the verifying path when it hands
    the request back (the orders source has a secret)."""
    answer = receive_order_webhook_grouped(committer, request, max_body_bytes=LIMIT, now=NOW)
    return answer if answer is not None else per_request(db, box, request, committer)


PATHS = {"per-request": per_request, "grouped": grouped}


@pytest.mark.parametrize("path", list(PATHS))
def test_seed_webhook_refuses_more_than_100_headers_with_431(
    db, other_db, box, orders_source, committer, path
):
    answer = PATHS[path](db, box, seed_request(many_headers(MAX_HEADERS + 1)), committer)

    assert answer.status == 431, answer.body
    assert str(MAX_HEADERS) in answer.json()["message"]
    assert counts(other_db) == NOTHING
    fits = PATHS[path](db, box, seed_request(many_headers(MAX_HEADERS), "h-2"), committer)
    assert fits.status == 200, fits.body
    assert counts(other_db) == {"orders": 1, "events": 1, "inbox": 1}


@pytest.mark.parametrize("path", list(PATHS))
def test_seed_webhook_refuses_more_than_16_kib_of_headers_with_431(
    db, other_db, box, orders_source, committer, path
):
    answer = PATHS[path](db, box, seed_request(big_header(MAX_HEADER_BYTES + 1)), committer)

    assert answer.status == 431, answer.body
    assert str(MAX_HEADER_BYTES) in answer.json()["message"]
    assert counts(other_db) == NOTHING
    fits = PATHS[path](db, box, seed_request(big_header(MAX_HEADER_BYTES), "h-2"), committer)
    assert fits.status == 200, fits.body
    assert counts(other_db)["orders"] == 1


@pytest.mark.parametrize("path", list(PATHS))
def test_signed_orders_source_checks_header_limits_before_the_signature(
    db, other_db, box, signed_orders, committer, path
):
    request = seed_request(many_headers(MAX_HEADERS + 1))

    answer = PATHS[path](db, box, request, committer)

    assert answer.status == 431, answer.body
    assert counts(other_db) == NOTHING
    assert failures(other_db, ORDERS_SOURCE) == 0


@pytest.mark.parametrize("path", list(PATHS))
def test_signed_orders_source_answers_an_unsigned_request_with_a_bad_webhook_id_401(
    db, other_db, box, signed_orders, committer, path
):
    """Verification comes first on every path: a request that is not signed is refused as
    such (and counted), whatever else is wrong with its headers."""
    request = seed_request({"webhook-id": "i" * 300})

    answer = PATHS[path](db, box, request, committer)

    assert answer.status == 401, answer.body
    assert counts(other_db) == NOTHING
    assert failures(other_db, ORDERS_SOURCE) == 1


@pytest.mark.parametrize("path", list(PATHS))
def test_signed_orders_source_takes_the_longest_standard_webhook_id(
    db, other_db, box, signed_orders, committer, path
):
    """A signed 256-character id (the most Standard Webhooks allows) is one past the stored
    key; it is kept apart from its 255-character prefix, not refused."""
    answers = []
    for n, msg_id in enumerate(["o" * 255 + "1", "o" * 255 + "2", "o" * 255]):
        body = f"order_id=long-{n}&product_name=kettle".encode()
        headers = sign("standard", body, msg_id=msg_id, content_type=FORM)
        answers.append(
            PATHS[path](db, box, Request.build("POST", "/myapp/webhook", headers, body), committer)
        )

    assert [answer.status for answer in answers] == [200, 200, 200], [a.body for a in answers]
    assert counts(other_db) == {"orders": 3, "events": 3, "inbox": 3}


def test_signed_orders_source_accepts_a_good_signature_through_the_grouped_path(
    db, other_db, box, signed_orders, committer
):
    body = b"order_id=g-1&product_name=kettle"
    headers = sign("standard", body, msg_id="msg_grouped_1", content_type=FORM)
    request = Request.build("POST", "/myapp/webhook", headers, body)

    assert receive_order_webhook_grouped(committer, request, max_body_bytes=LIMIT, now=NOW) is None
    answer = grouped(db, box, request, committer)

    assert answer.status == 200, answer.body
    assert counts(other_db) == {"orders": 1, "events": 1, "inbox": 1}
    assert json.loads(answer.body) == {"status": "success", "message": "Webhook processed"}


@pytest.mark.parametrize("kind", ["github", "standard"])
def test_one_delivery_sent_by_eight_threads_at_once_is_stored_once(
    settings, db, other_db, box, kind
):
    """The unique (source, message id) index decides a race that every request's "seen?" read
    missed: one store, and every other request gets the same 2xx as a replay."""
    name = add_source(db, box, kind)
    body = body_for(kind)
    headers = sign(kind, body, msg_id="race-1")
    threads = 8
    barrier = threading.Barrier(threads)
    answers: list[Any] = [None] * threads

    def send(n: int) -> None:
        own = connect(settings)
        try:
            barrier.wait(timeout=30)
            answers[n] = receive(own, box, name, body, headers)
        except BaseException as error:  # reported to the test, not lost in the thread
            answers[n] = error
        finally:
            own.rollback()
            own.close()

    workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert all(isinstance(a, Response) and a.status == 200 for a in answers), answers
    replays = [a for a in answers if a.headers.get("Idempotent-Replayed") == "true"]
    assert len(replays) == threads - 1
    assert {a.json()["inbox_id"] for a in answers} == {inbox_rows(other_db)[0].inbox_id}
    assert len(inbox_rows(other_db)) == 1


@pytest.mark.parametrize("kind", ["standard", "stripe", "github", "shopify", "none"])
def test_long_message_ids_sharing_the_stored_prefix_are_two_messages(db, other_db, box, kind):
    """An id longer than the stored key is kept whole through a digest: two deliveries whose
    ids differ only past character 255 are both stored, and each is deduplicated on its own."""
    name = add_source(db, box, kind)
    ids = ["d" * 255 + "1", "d" * 255 + "2"]  # 256: the longest Standard Webhooks allows

    def send(msg_id: str) -> Response:
        body = body_for(kind, msg_id)
        if kind == "none":
            return receive(db, box, name, body, {"Content-Type": JSON_CT, "webhook-id": msg_id})
        return receive(db, box, name, body, sign(kind, body, msg_id=msg_id))

    first, second, again = send(ids[0]), send(ids[1]), send(ids[0])

    assert first.status == second.status == again.status == 200, (first.body, second.body)
    assert "Idempotent-Replayed" not in second.headers
    assert again.headers.get("Idempotent-Replayed") == "true"
    keys = [row.message_id for row in inbox_rows(other_db)]
    assert len(keys) == 2 and keys[0] != keys[1]
    assert all(len(key) == 255 and key.startswith("d" * 100) for key in keys)
