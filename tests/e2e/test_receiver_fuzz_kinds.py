"""Property test of named sources over real HTTP, for the kinds ``test_receiver_fuzz.py`` does
not reach: ``standard``, ``github``, ``shopify`` and ``hmac`` (DESIGN §3.3-§3.5).

Hypothesis (derandomized) sends methods, header sets (repeated, very many, very large), content
types and bodies (empty, binary, invalid UTF-8, deep JSON, over the size limit) to
``/myapp/webhook/<source>`` of a real `hookline serve` (worker off), half of them validly signed
for their source, and checks around each request, through a direct database connection:

- every answer is a 2xx or a 4xx, never a 5xx or a dropped connection;
- a 4xx writes nothing (``hookline_order``, ``hookline_event``, ``hookline_inbox`` unchanged);
- a 2xx is a POST with a valid signature, and adds exactly one inbox row, unless it is a
  replay, which adds nothing and answers the first delivery's ``inbox_id``;
- a validly signed request is never answered 401, and one message id is stored once per source;
- a well-formed signed request (a JSON POST) is accepted, as new or as a replay of its id, or
  refused only for its headers (431).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import pytest
from fuzz_requests import (
    BODIES,
    CONTENT_TYPES,
    HEADER_VALUES,
    METHODS,
    TABLES,
    Target,
    exchange,
    send_raw,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sinks import server_env

from hookline import signing
from hookline.config import Settings
from hookline.database import connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SECRETS = {
    "standard": "whsec_" + base64.b64encode(b"fuzz-kinds-standard-secret-32b!!").decode(),
    "github": "fuzz-kinds-github-secret-0001",
    "shopify": "fuzz-kinds-shopify-secret-0002",
    "hmac": "fuzz-kinds-hmac-secret-0003",
}
HMAC_OPTIONS = (
    "--hmac-header",
    "X-Acme-Signature",
    "--hmac-algorithm",
    "sha512",
    "--hmac-encoding",
    "base64",
    "--hmac-prefix",
    "sha512=",
    "--hmac-id-header",
    "X-Acme-Delivery",
)
#: The headers each kind signs with (and takes its message id from).
SIGNATURE_HEADERS = {
    "standard": ("webhook-id", "webhook-timestamp", "webhook-signature"),
    "github": ("x-hub-signature-256", "x-github-delivery", "x-github-event"),
    "shopify": ("x-shopify-hmac-sha256", "x-shopify-webhook-id", "x-shopify-topic"),
    "hmac": ("x-acme-signature", "x-acme-delivery"),
}
KINDS = tuple(SECRETS)


def source_name(kind: str) -> str:
    return f"fuzz-{kind}"


@pytest.fixture(scope="module")
def _worker_off() -> Iterator[None]:
    with server_env(HOOKLINE_WORKER="false"):
        yield


class KindsTarget(Target):
    """The fuzz target, plus the inbox id each ``(source, message id)`` was first stored as."""

    stored: dict[tuple[str, str], str]


@pytest.fixture(scope="module")
def target(_worker_off, server) -> Iterator[KindsTarget]:
    for kind in KINDS:
        options = HMAC_OPTIONS if kind == "hmac" else ()
        server.cli(
            "sources", "add", source_name(kind), "--kind", kind, "--secret", SECRETS[kind], *options
        )
    db = connect(Settings.from_env(server.env))
    try:
        running = KindsTarget(server, db)
        running.stored = {}
        yield running
    finally:
        db.close()


def sign(kind: str, body: bytes, msg_id: str) -> list[tuple[str, str]]:
    """The signature headers ``kind``'s provider sends with ``body``, signed now."""
    secret = SECRETS[kind]
    if kind == "standard":
        stamp = int(time.time())
        return [
            ("webhook-id", msg_id),
            ("webhook-timestamp", str(stamp)),
            ("webhook-signature", signing.sign_v1(secret, msg_id, stamp, body)),
        ]
    if kind == "github":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return [
            ("X-Hub-Signature-256", f"sha256={digest}"),
            ("X-GitHub-Delivery", msg_id),
            ("X-GitHub-Event", "push"),
        ]
    if kind == "shopify":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        return [
            ("X-Shopify-Hmac-Sha256", base64.b64encode(digest).decode()),
            ("X-Shopify-Webhook-Id", msg_id),
            ("X-Shopify-Topic", "orders/create"),
        ]
    digest = hmac.new(secret.encode(), body, hashlib.sha512).digest()
    return [
        ("X-Acme-Signature", "sha512=" + base64.b64encode(digest).decode()),
        ("X-Acme-Delivery", msg_id),
    ]


# --- strategies -----------------------------------------------------------------------------

HEADER_NAMES = st.sampled_from(
    [
        "X-Fuzz",
        "Idempotency-Key",
        "Authorization",
        *(name for names in SIGNATURE_HEADERS.values() for name in names),
    ]
)
MESSAGE_IDS = st.one_of(
    st.sampled_from(["fzk-1", "fzk-2", "fzk-3"]),
    st.integers(0, 10**9).map(lambda n: f"fzk-{n}"),
)
EVENTS = st.builds(
    lambda n, kind, note: json.dumps({"type": f"fuzz.{kind}", "n": n, "note": note}).encode(),
    st.integers(0, 3),
    st.sampled_from(["created", "paid", "x"]),
    st.text(max_size=12),
)


@st.composite
def requests(draw) -> dict:
    """One request to a source: method, headers (names may repeat), body, signed or not.

    Half are well-formed (a signed JSON POST), perhaps disturbed by extra headers; the rest are
    drawn from everything, signed or not."""
    kind = draw(st.sampled_from(KINDS))
    if draw(st.booleans()):
        method, content_type, body, signed = "POST", "application/json", draw(EVENTS), True
        wellformed = True
    else:
        wellformed = False
        method = draw(METHODS)
        content_type = draw(CONTENT_TYPES)
        body = draw(BODIES)
        signed = draw(st.booleans())
    headers: list[tuple[str, str]] = []
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    headers += draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=4))
    shape = draw(st.sampled_from(["plain"] * 7 + ["many", "huge", "repeated"]))
    if shape == "many":
        headers += [(f"X-Many-{i}", "v") for i in range(draw(st.integers(85, 110)))]
    elif shape == "huge":
        headers.append(("X-Huge", "h" * draw(st.sampled_from([8_000, 17_000]))))
    elif shape == "repeated":
        headers += [("X-Repeated", str(i)) for i in range(draw(st.integers(2, 110)))]
    msg_id = draw(MESSAGE_IDS)
    return {
        "kind": kind,
        "method": method,
        "headers": headers,
        "body": body,
        "signed": signed,
        "wellformed": wellformed,
        "msg_id": msg_id,
    }


# --- the property ---------------------------------------------------------------------------


@settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=requests())
def test_every_answer_is_deliberate_and_only_signed_requests_are_stored(target, case):
    kind, name = case["kind"], source_name(case["kind"])
    headers = list(case["headers"])
    if case["signed"]:
        own = SIGNATURE_HEADERS[kind]
        headers = [h for h in headers if h[0].lower() not in own]
        headers += sign(kind, case["body"], case["msg_id"])
    path = f"/myapp/webhook/{name}"
    sent = exchange(target, case["method"], path, headers, case["body"])
    status, body, replayed = sent.status, sent.body, sent.replayed
    before, after = sent.before, sent.after
    event(f"{kind} {status}{' replay' if replayed else ''}")
    where = f"{case['method']} {path} signed={case['signed']} -> {status} {body[:200]!r}"
    assert 200 <= status < 300 or 400 <= status < 500, where
    assert not (case["signed"] and status == 401), where
    key = (name, case["msg_id"])
    if case["wellformed"]:
        assert status in (200, 431), where
        assert replayed == (status == 200 and key in target.stored), where
    if status >= 400:
        assert after == before, f"a {status} changed the database: {before} -> {after} ({where})"
        return
    assert case["method"] == "POST" and case["signed"], where
    answer = json.loads(body)
    assert answer["source"] == name, where
    added = {table: after[table] - before[table] for table in TABLES}
    if replayed:
        assert added == dict.fromkeys(TABLES, 0), where
        assert answer["inbox_id"] == target.stored[key], where
        return
    assert added == {"hookline_order": 0, "hookline_event": 0, "hookline_inbox": 1}, where
    assert key not in target.stored, f"{key} stored twice ({where})"
    target.stored[key] = answer["inbox_id"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_fuzzer_reaches_a_2xx_for_every_kind(target, kind):
    """The property above must be able to see accepted requests, not only refusals."""
    body = json.dumps({"type": "fuzz.check", "kind": kind}).encode()
    headers = [("Content-Type", "application/json"), *sign(kind, body, f"fzk-check-{kind}")]

    status, _headers, answer = send_raw(
        target.server.port, "POST", f"/myapp/webhook/{source_name(kind)}", headers, body
    )

    assert status == 200, answer
    assert json.loads(answer)["source"] == source_name(kind)
