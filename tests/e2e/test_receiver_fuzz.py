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
import http.client
import json
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import stripe
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sinks import server_env

from hookline.config import Settings
from hookline.database import connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

STRIPE_SOURCE = "fuzz-stripe"
STRIPE_SECRET = "whsec_fuzz_stripe_secret_5a5a5a5a"
MAX_BODY = 64 * 1024  # the e2e server's HOOKLINE_MAX_BODY_BYTES
TABLES = ("hookline_order", "hookline_event", "hookline_inbox")


@pytest.fixture(scope="module")
def _worker_off() -> Iterator[None]:
    with server_env(HOOKLINE_WORKER="false"):
        yield


@dataclass
class Target:
    server: object
    db: object

    def counts(self) -> dict[str, int]:
        self.db.commit()  # a fresh snapshot of what is committed
        return {t: int(self.db.executesql(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in TABLES}


@pytest.fixture(scope="module")
def target(_worker_off, server) -> Iterator[Target]:
    server.cli("sources", "add", STRIPE_SOURCE, "--kind", "stripe", "--secret", STRIPE_SECRET)
    db = connect(Settings.from_env(server.env))
    try:
        yield Target(server, db)
    finally:
        db.close()


# --- strategies -----------------------------------------------------------------------------

METHODS = st.sampled_from(["POST"] * 6 + ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "application/vnd.api+json",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-16",
        "multipart/form-data; boundary=zzz",
        "multipart/form-data",
        "text/plain",
        "application/octet-stream",
        ";;;=garbage",
        'application/json; charset=""',
    ]
)
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
HEADER_VALUES = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.text(st.characters(min_codepoint=0xA0, max_codepoint=0xFF), max_size=10),
    st.integers(0, 400).map(lambda n: "i" * n),
    st.just("t=1,v1=" + "ab" * 32),
)
ORDER_KEYS = st.sampled_from(
    ["order_id", "product_name", "status", "quantity", "unit_price", "currency", "x"]
)
ORDER_IDS = st.sampled_from(["fz-1", "fz-2", "fz-3", "fz-1", "fz-2", "", " ", "x" * 300])
PRODUCT_NAMES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30),
    st.text(max_size=30),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _form(pairs: list[tuple[str, str]]) -> bytes:
    return urllib.parse.urlencode(pairs).encode()


BODIES = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=50).map(lambda b: b"\xff\xfe\xc3(" + b),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.lists(st.tuples(ORDER_KEYS, st.text(max_size=12)), max_size=8).map(_form),
    st.deferred(lambda: FORM_ORDERS | JSON_ORDERS | STRIPE_EVENTS),
    st.sampled_from([MAX_BODY, MAX_BODY + 1, 3 * MAX_BODY]).map(lambda n: b"a" * n),
    st.just(b'--zzz\r\nContent-Disposition: form-data; name="order_id"\r\n\r\nm-1\r\n--zzz--\r\n'),
)


FORM_ORDERS = st.tuples(ORDER_IDS, PRODUCT_NAMES).map(
    lambda t: _form([("order_id", t[0]), ("product_name", t[1])])
)
JSON_ORDERS = st.tuples(ORDER_IDS, PRODUCT_NAMES).map(
    lambda t: json.dumps({"order_id": t[0], "product_name": t[1] or "p"}).encode()
)
STRIPE_EVENTS = st.tuples(ORDER_IDS, st.text(max_size=10)).map(
    lambda t: json.dumps(
        {"id": f"evt_{t[0]}", "object": "event", "type": t[1] or "charge.succeeded"}
    ).encode()
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


def _send(port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes):
    """One exchange with repeated headers allowed; returns (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


@dataclass(frozen=True)
class Exchange:
    """One request's answer and the table counts around it."""

    status: int
    headers: dict[str, str]
    body: bytes
    before: dict[str, int]
    after: dict[str, int]

    @property
    def replayed(self) -> bool:
        """Answered from the inbox as a duplicate of an earlier request."""
        return self.headers.get("idempotent-replayed") == "true"


def exchange(
    target: Target, method: str, path: str, headers: list[tuple[str, str]], body: bytes
) -> Exchange:
    """Send one request to ``target``; a connection error fails the test (it is no answer)."""
    before = target.counts()
    try:
        status, answer_headers, answer = _send(target.server.port, method, path, headers, body)
    except (OSError, http.client.HTTPException) as error:
        pytest.fail(f"connection error instead of an answer: {error!r}")
    return Exchange(status, answer_headers, answer, before, target.counts())


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
    seed = _send(
        target.server.port,
        "POST",
        "/myapp/webhook",
        [("Content-Type", "application/x-www-form-urlencoded")],
        b"order_id=fz-check&product_name=probe",
    )
    body = json.dumps({"id": "evt_fz_check", "object": "event", "type": "x.y"}).encode()
    signed = _send(
        target.server.port,
        "POST",
        f"/myapp/webhook/{STRIPE_SOURCE}",
        [("Content-Type", "application/json"), ("Stripe-Signature", _stripe_header(body))],
        body,
    )
    assert (seed[0], signed[0]) == (200, 200), (seed, signed)
