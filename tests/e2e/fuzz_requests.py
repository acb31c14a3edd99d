"""Requests for the receiver property tests over real HTTP, and the table counts around them.

Shared by ``test_receiver_fuzz.py`` and ``test_receiver_fuzz_kinds.py``:

- Hypothesis strategies for what any receiver may be sent: ``METHODS``, ``CONTENT_TYPES``,
  ``HEADER_VALUES`` and ``BODIES`` (empty, binary, invalid UTF-8, deep JSON, repeated form keys,
  well-formed orders and Stripe events, over the size limit), and the well-formed
  ``FORM_ORDERS``, ``JSON_ORDERS`` and ``STRIPE_EVENTS``;
- ``Target``: a running server and a direct database connection that counts ``TABLES``;
- ``send_raw`` (one HTTP exchange, repeated headers allowed) and ``exchange`` (the same, with
  the counts before and after).
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass

import pytest
from hypothesis import strategies as st

MAX_BODY = 64 * 1024  # the e2e server's HOOKLINE_MAX_BODY_BYTES
TABLES = ("hookline_order", "hookline_event", "hookline_inbox")


@dataclass
class Target:
    server: object
    db: object

    def counts(self) -> dict[str, int]:
        self.db.commit()  # a fresh snapshot of what is committed
        return {t: int(self.db.executesql(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in TABLES}


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


def send_raw(port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes):
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
        status, answer_headers, answer = send_raw(target.server.port, method, path, headers, body)
    except (OSError, http.client.HTTPException) as error:
        pytest.fail(f"connection error instead of an answer: {error!r}")
    return Exchange(status, answer_headers, answer, before, target.counts())
