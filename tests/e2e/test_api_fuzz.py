"""Property test of the management API over real HTTP: DESIGN §3.4 (bad input gets a clear 4xx
with a reason, never a 5xx, a crash or a partial write) and §3.5 (nobody reaches a management
route without credentials).

Hypothesis (derandomized, so a failure replays the same way) sends requests to every route under
``/myapp/api/`` of a real `hookline serve` (its worker off, so only requests change the
database), and reads every ``hookline_*`` table through a direct database connection around each
one:

- JSON bodies for every route that takes one (orders, endpoints, sources, rotations, recovery,
  replay): plausible fields beside wrong types, nulls, huge numbers, NaN/Infinity, deep nesting,
  unknown fields, non-ASCII and control characters, empty and very long strings, duplicate
  keys, non-object JSON, invalid UTF-8, other content types, bodies over the limit;
- query strings for every list route (``limit``, ``cursor``, ``status``, ``outcome``,
  ``since``, ``until``, the id filters ...), repeated, misspelt and percent-encoded junk;
- path ids that do not exist or are odd (percent-encoded, NUL, CR, LF, very long, unicode);
- every route without credentials or with a bad one (wrong, revoked, malformed, elsewhere).

Properties: no answer is a 5xx (or no answer); every 4xx is JSON with a ``message``; a 4xx
changes nothing (row counts and contents; an API key's ``last_used_at`` aside), nor does a GET;
a request without valid credentials is a JSON 401 and changes nothing at all, whatever the
method (a method a route does not take is a JSON 405 with ``Allow``, once the key is checked).

Not covered, because there is no such route: API keys are managed with the CLI only.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fuzz_requests import send_raw
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sinks import server_env

from hookline.config import Settings
from hookline.database import connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

API = "/myapp/api"
MAX_BODY = 64 * 1024  # the e2e server's HOOKLINE_MAX_BODY_BYTES
TABLES = (
    "hookline_order",
    "hookline_event",
    "hookline_endpoint",
    "hookline_endpoint_secret",
    "hookline_delivery",
    "hookline_lease",
    "hookline_attempt",
    "hookline_source",
    "hookline_inbox",
    "hookline_api_key",
)
#: Using a key refreshes its ``last_used_at`` (at most once a minute), whatever the answer.
KEY_COLUMNS = "id, key_id, name, prefix, key_hash, created_at, revoked_at"
ULID = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
FUZZ_SETTINGS = {
    "derandomize": True,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


# --- the server and the database beside it ----------------------------------------------------


@pytest.fixture(scope="module")
def _worker_off() -> Iterator[None]:
    with server_env(HOOKLINE_WORKER="false"):
        yield


@dataclass
class Answer:
    """One exchange: the answer and the database before and after it."""

    status: int
    headers: dict[str, str]
    body: bytes
    before: dict[str, tuple[int, str]]
    after: dict[str, tuple[int, str]]

    def json(self) -> Any:
        return json.loads(self.body)


class Target:
    """The running server, a database connection to it, a valid and a revoked key."""

    def __init__(self, server: Any, db: Any, key: str, revoked: str) -> None:
        self.server, self.db, self.key, self.revoked = server, db, key, revoked

    def __repr__(self) -> str:  # what Hypothesis shows of a failing example: not the env
        return f"Target(port={self.server.port})"

    def snapshot(self, *, key_use: bool = False) -> dict[str, tuple[int, str]]:
        """Each table's row count and a digest of its rows (with ``key_use``, the API keys'
        ``last_used_at`` too)."""
        self.db.commit()  # a fresh snapshot of what is committed
        state = {}
        for table in TABLES:
            columns = KEY_COLUMNS if table == "hookline_api_key" and not key_use else "*"
            rows = self.db.executesql(f"SELECT {columns} FROM {table} ORDER BY id")
            # psycopg2 reads a bytea as a memoryview, whose repr is its address
            rows = [[bytes(v) if isinstance(v, memoryview) else v for v in row] for row in rows]
            state[table] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()[:16])
        return state

    def live(self, kind: str) -> list[str]:
        """The ids (names for sources) of this kind that exist now."""
        self.db.commit()
        sql = {
            "order": "SELECT order_id FROM hookline_order",
            "endpoint": "SELECT endpoint_id FROM hookline_endpoint WHERE deleted_at IS NULL",
            "delivery": "SELECT delivery_id FROM hookline_delivery",
            "event": "SELECT event_id FROM hookline_event",
            "source": "SELECT name FROM hookline_source",
            "inbox": "SELECT inbox_id FROM hookline_inbox",
        }[kind]
        return [row[0] for row in self.db.executesql(sql + " ORDER BY id")]

    def send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        *,
        key_use: bool = False,
    ) -> Answer:
        """Send one request; a dropped connection fails the test (it is no answer)."""
        before = self.snapshot(key_use=key_use)
        try:
            status, answer_headers, data = send_raw(
                self.server.port, method, path, headers or [], body
            )
        except (OSError, http.client.HTTPException) as error:
            pytest.fail(f"connection error instead of an answer to {method} {path}: {error!r}")
        return Answer(status, answer_headers, data, before, self.snapshot(key_use=key_use))

    def auth(self) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {self.key}")]


@pytest.fixture(scope="module")
def target(_worker_off, server) -> Iterator[Target]:
    """The server with a little of everything: endpoints (one disabled), an order with its event
    and delivery, sources, an inbox item, and a revoked key."""
    key = server.new_api_key("api-fuzz")
    revoked = server.new_api_key("api-fuzz-revoked")
    server.cli("keys", "revoke", "api-fuzz-revoked")
    db = connect(Settings.from_env(server.env))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(path: str, body: dict) -> dict:
        answer = server.request("POST", f"{API}/{path}", json.dumps(body), headers)
        assert answer.status in (200, 201), (path, answer.status, answer.body)
        return answer.json()

    post("endpoints", {"url": "https://example.com/fuzz-a", "description": "fuzz"})
    disabled = post("endpoints", {"url": "https://example.com/fuzz-b", "fifo": True})
    post(
        "orders",
        {"product_name": "kettle", "quantity": 2, "unit_price": "19.99", "currency": "USD"},
    )
    patched = server.request(
        "PATCH",
        f"{API}/endpoints/{disabled['endpoint_id']}",
        json.dumps({"enabled": False}),
        headers,
    )
    assert patched.status == 200, patched.body
    post("sources", {"name": "fuzz-none", "kind": "none"})
    post("sources", {"name": "fuzz-std", "kind": "standard"})
    received = server.request(
        "POST", "/myapp/webhook/fuzz-none", b'{"type": "thing.happened"}', {**headers}
    )
    assert received.status == 200, received.body
    try:
        yield Target(server, db, key, revoked)
    finally:
        db.close()


# --- what every answer must be ----------------------------------------------------------------


def _check(answer: Answer, where: str) -> None:
    """Never a 5xx; a 4xx is JSON with a reason and writes nothing."""
    assert answer.status < 500, f"{where} -> {answer.status} {answer.body[:300]!r}"
    assert 200 <= answer.status < 300 or 400 <= answer.status < 500, where
    if answer.status >= 400:
        assert answer.headers.get("content-type", "").startswith("application/json"), (
            f"{where} -> {answer.status} not JSON: {answer.body[:200]!r}"
        )
        reason = answer.json()
        assert reason.get("status") == "error", (where, reason)
        assert isinstance(reason.get("message"), str) and reason["message"].strip(), (
            where,
            reason,
        )
        assert answer.after == answer.before, (
            f"a {answer.status} changed the database ({where}):"
            f" {_changed(answer.before, answer.after)}"
        )
    elif answer.body:
        answer.json()  # a 2xx is JSON too


def _changed(before: dict, after: dict) -> dict:
    return {t: (before[t], after[t]) for t in before if before[t] != after[t]}


def _where(method: str, path: str, body: bytes, headers: list[tuple[str, str]]) -> str:
    shown = {name: value[:60] for name, value in headers if name != "Authorization"}
    return f"{method} {path[:300]} {shown} {body[:300]!r}"


# --- strategies: ids --------------------------------------------------------------------------

#: Each route: method, path with at most one ``{kind}`` id, and what body it takes.
ROUTES = (
    ("GET", "orders", None),
    ("POST", "orders", "order"),
    ("GET", "orders/{order}", None),
    ("PATCH", "orders/{order}", "order_patch"),
    ("GET", "endpoints", None),
    ("POST", "endpoints", "endpoint"),
    ("GET", "endpoints/{endpoint}", None),
    ("PATCH", "endpoints/{endpoint}", "endpoint_patch"),
    ("DELETE", "endpoints/{endpoint}", None),
    ("POST", "endpoints/{endpoint}/rotate", "rotate"),
    ("POST", "endpoints/{endpoint}/ping", None),
    ("POST", "endpoints/{endpoint}/recover", "recover"),
    ("GET", "deliveries", None),
    ("GET", "deliveries/{delivery}", None),
    ("POST", "deliveries/{delivery}/retry", None),
    ("GET", "attempts", None),
    ("POST", "events/{event}/replay", "replay"),
    ("GET", "sources", None),
    ("POST", "sources", "source"),
    ("GET", "sources/{source}", None),
    ("PATCH", "sources/{source}", "source_patch"),
    ("DELETE", "sources/{source}", None),
    ("POST", "sources/{source}/rotate", "source_rotate"),
    ("GET", "inbox", None),
    ("GET", "inbox/{inbox}", None),
    ("POST", "inbox/{inbox}/replay", None),
)
ID_PREFIXES = {"order": "ord", "endpoint": "ep", "delivery": "dlv", "event": "evt", "inbox": "msg"}


@dataclass(frozen=True)
class Live:
    """An id that exists when the request is sent: the ``pick``-th of its kind, modulo."""

    kind: str
    pick: int


def _quote(text: str) -> str:
    """``text`` as one percent-encoded path segment (UTF-8)."""
    return urllib.parse.quote_from_bytes(text.encode("utf-8", "surrogatepass"), safe="")


def _kind_of(template: str) -> str | None:
    """The kind of id a route template takes (``orders/{order}`` -> ``order``), if any."""
    return template.split("{")[1].split("}")[0] if "{" in template else None


ODD_IDS = st.one_of(
    st.sampled_from(
        [
            "%00",
            "a%00b",
            "%0D",
            "%0A",
            "a%0Db",
            "%FF",
            "%ED%A0%80",  # a UTF-8 encoded surrogate
            "%C0%80",  # an overlong NUL
            "%2F",
            "%25",
            "%20",
            "%2e%2e",
            "%E2%80%AE",
            "%F0%9F%98%80",
            "orders",
            "null",
            "0",
            "-1",
            "9" * 30,
        ]
    ),
    st.builds(
        lambda prefix, body: f"{prefix}_{body}",
        st.sampled_from(["ord", "ep", "dlv", "evt", "msg", "src", "key"]),
        st.text(ULID, min_size=26, max_size=26),
    ),
    st.text(max_size=30).map(_quote),
    st.text(st.characters(min_codepoint=0x80, max_codepoint=0x2FFFF), min_size=1, max_size=20).map(
        _quote
    ),
    st.sampled_from([65, 256, 2049, 8000]).map(lambda n: "x" * n),
)


def _ids(kind: str) -> st.SearchStrategy:
    """Mostly ids that exist (so the handler gets to validate the body), sometimes odd ones."""
    return st.one_of(
        st.integers(0, 10**6).map(lambda pick: Live(kind, pick)),
        st.integers(0, 10**6).map(lambda pick: Live(kind, pick)),
        ODD_IDS,
    )


def _path(target: Target, template: str, ident: Any = None) -> str:
    """The route's path with ``ident`` (a ``Live`` pick, or an already encoded segment); a
    ``Live`` of a kind with no rows left becomes an id that does not exist."""
    kind = _kind_of(template)
    if kind is None:
        return f"{API}/{template}"
    if ident is None:
        ident = Live(kind, 0)
    if isinstance(ident, Live):
        live = target.live(ident.kind)
        ident = (
            _quote(live[ident.pick % len(live)]) if live else f"{ID_PREFIXES.get(kind, kind)}_none"
        )
    return f"{API}/" + template.replace("{" + kind + "}", ident)


# --- strategies: JSON bodies ------------------------------------------------------------------

LONG_TEXT = st.sampled_from([300, 2049, 20_000, MAX_BODY + 1]).map(lambda n: "é" * n)
ODD_TEXT = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(max_codepoint=0x1F), max_size=10),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\u202e", "\ufeff", "\ud7ff", "NaN", "Infinity"]),
    LONG_TEXT,
)
HUGE_NUMBERS = st.sampled_from(
    [10**400, -(10**400), 2**63, 2**64, -(2**63) - 1, 1e308, -1e308, 5e-324, -0.0, 0]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE_NUMBERS,
    st.floats(),  # NaN and Infinity become their (non-JSON) literals
    ODD_TEXT,
)
HOSTILE = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
TIMES = st.sampled_from(
    [
        "2026-01-01T00:00:00Z",
        "2020-01-01",
        "2026-13-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-05:00",
        "now",
        "1700000000",
        "2026-01-01T00:00:00+25:00",
        "2026-01-01T00:00:00.123456789Z",
    ]
)
STATUSES = ["pending", "paid", "shipped", "cancelled", "PAID", "refunded"]
EVENT_TYPES = ["order.created", "order.paid", "ping", "endpoint.disabled", "order.*", "nope"]

#: Per body kind: each field with plausible values (valid and nearly so).
FIELDS: dict[str, dict[str, st.SearchStrategy]] = {
    "order": {
        "product_name": st.sampled_from(["kettle", "tea pot", "찻주전자", "x" * 200, "x" * 201]),
        "quantity": st.sampled_from([1, 2, "3", 0, -1, 1_000_000, 1_000_001, 1.5, "1e3"]),
        "unit_price": st.sampled_from(
            ["19.99", "0", "0.001", "-1", "1e3", "1e15", "1_000", " 5 ", 19.99, 20, "Infinity"]
        ),
        "currency": st.sampled_from(["USD", "usd", "KRW", "KWD", "XXX", "US", "USDD"]),
        "customer_email": st.sampled_from(["kim@example.com", "kim@", "a@b", "ü@example.com"]),
        "order_id": st.sampled_from(["fz-1", "fz-2", "-lead", "a" * 65, "ord:1", "a b"]),
    },
    "endpoint": {
        "url": st.sampled_from(
            [
                "https://example.com/hook",
                "http://example.com:8080/h?x=1",
                "https://127.0.0.1/h",
                "http://localhost/h",
                "http://169.254.169.254/latest",
                "ftp://example.com/",
                "https://user:pw@example.com/",
                "https://example.com:0/",
                "https://example.com:99999/",
                "https://[::1/",
                "https://xn--/h",
                "https://bücher.example/h",
                "https://" + "a" * 64 + ".com/",
                "https://example.com/" + "p" * 2040,
                "//example.com",
                "example.com",
            ]
        ),
        "description": st.sampled_from(["", "line\nbreak", "tab\there", "é" * 512, "é" * 513]),
        "event_types": st.one_of(
            st.lists(st.sampled_from(EVENT_TYPES), max_size=4),
            st.sampled_from(["order.created,order.paid", "", ",", "order.created, nope"]),
        ),
        "headers": st.one_of(
            st.dictionaries(
                st.sampled_from(["X-Team", "x-a", "Webhook-Id", "Host", "-bad", "X Y", "é", ""]),
                st.sampled_from(["v", "", "a\tb", "a\r\nb", "é", "v" * 1025]),
                max_size=3,
            ),
            st.integers(19, 22).map(lambda n: {f"X-H{i}": "v" for i in range(n)}),
        ),
        "retry_schedule": st.one_of(
            st.sampled_from(["0,5s,5m,1h", "0", "", "5x", "-5s", "1e400", "9" * 400 + "s"]),
            st.lists(st.sampled_from([0, 5, "1m", -1, 1e300, "x", None]), max_size=4),
        ),
        "timeout_s": st.sampled_from([0.1, 15, 120, 121, 0, "15", "fast", 1e-320]),
        "connect_timeout_s": st.sampled_from([0.1, 5, 60, 61, "5", -5]),
        "max_in_flight": st.sampled_from([1, 20, 1000, 1001, 1.5, "20", 0]),
        "rate_limit": st.sampled_from([None, 0.01, 10, 100_000, 100_001, 0, "5", "slow"]),
        "fifo": st.sampled_from([True, False, "true", "FALSE", "yes", 1]),
        "ed25519": st.sampled_from([True, False, "true", 0]),
        "enabled": st.sampled_from([True, False, "false", 1]),
    },
    "rotate": {"grace_seconds": st.sampled_from([0, 60, 86400, 2592000, 2592001, -1, "60", 1.5])},
    "recover": {"since": TIMES},
    "replay": {"endpoint_id": st.sampled_from(["ep_none", "", "\x00", "ep_" + "0" * 26])},
    "source": {
        "name": st.sampled_from(["fz-a", "fz-b", "orders", "Fz", "-x", "a" * 65, "ü"]),
        "kind": st.sampled_from(["none", "standard", "stripe", "github", "hmac", "paypal"]),
        "secret": st.sampled_from(
            ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "short", "s" * 16, "s" * 513]
        ),
        "public_keys": st.sampled_from([[], ["whpk_x"], "whpk_x", [1]]),
        "hmac_header": st.sampled_from(["X-Sig", "", " ", "X\x00Y"]),
        "hmac_algorithm": st.sampled_from(["sha256", "sha512", "md5"]),
        "hmac_encoding": st.sampled_from(["hex", "base64", "b32"]),
        "hmac_prefix": st.sampled_from(["", "sha256=", "é"]),
        "hmac_id_header": st.sampled_from(["X-Id", ""]),
        "hmac_bogus": st.just("x"),
        "tolerance_s": st.sampled_from([0, 300, 86400, 86401, "300", "1" * 5000, "\u0663", 1.5]),
        "max_body_bytes": st.sampled_from([1, 1024, 64 * 1024 * 1024 + 1, "9" * 5000, 0]),
        "enabled": st.sampled_from([True, False, "yes"]),
    },
    "source_rotate": {
        "secret": st.sampled_from(["s" * 16, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "short"]),
        "grace_seconds": st.sampled_from([0, 3600, 2592001, -1, True]),
    },
}
FIELDS["order_patch"] = {**FIELDS["order"], "status": st.sampled_from(STATUSES)}
FIELDS["endpoint_patch"] = FIELDS["endpoint"]
FIELDS["source_patch"] = FIELDS["source"]

#: A body each kind would accept, so that reaching the handler would write.
VALID = {
    "order": {"product_name": "kettle", "unit_price": "19.99", "currency": "USD"},
    "order_patch": {"quantity": 3},
    "endpoint": {"url": "https://example.com/valid"},
    "endpoint_patch": {"description": "changed"},
    "rotate": {},
    "recover": {"since": "2020-01-01T00:00:00Z"},
    "replay": {},
    "source": {"name": "fz-valid", "kind": "none"},
    "source_patch": {"tolerance_s": 60},
    "source_rotate": {},
    None: {},
}


@st.composite
def json_objects(draw, kind: str | None) -> dict:
    """A JSON object for a body kind: a few of its fields, each plausible or hostile, and
    perhaps an unknown one."""
    fields = FIELDS.get(kind or "", {})
    names = (
        draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=5)) if fields else []
    )
    obj = {}
    if draw(st.booleans()):
        obj.update(VALID[kind])
    for name in names:
        obj[name] = draw(fields[name] if draw(st.integers(0, 3)) else HOSTILE)
    if draw(st.integers(0, 5)) == 0:
        obj[draw(st.sampled_from(["colour", "", "x" * 300, "\x00", "é"]))] = draw(SCALARS)
    return obj


def _deep(n: int, kind: str) -> bytes:
    return (b'{"a":' * n + b"1" + b"}" * n) if kind == "object" else (b"[" * n + b"]" * n)


def _duplicate_first_key(obj: dict) -> bytes:
    text = json.dumps(obj)
    if not obj:
        return b'{"a": 1, "a": 2}'
    first = json.dumps(next(iter(obj)))
    return (text[:-1] + f", {first}: null}}").encode()


@st.composite
def bodies(draw, kind: str | None) -> bytes:
    """A body for a route taking ``kind``: mostly an object of its fields in some encoding,
    sometimes anything at all."""
    shape = draw(st.sampled_from(["valid"] * 3 + ["object"] * 5 + ["dup", "latin1", "bom", "raw"]))
    if shape == "valid":  # a body the route accepts, perhaps with one more plausible field
        fields = FIELDS.get(kind or "", {})
        extra = draw(st.sampled_from([None, *sorted(fields)]))
        obj = {**VALID[kind], **({extra: draw(fields[extra])} if extra else {})}
        return json.dumps(obj).encode()
    obj = draw(json_objects(kind))
    if shape == "object":
        return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if shape == "dup":
        return _duplicate_first_key(obj)
    if shape == "latin1":  # invalid UTF-8 wherever there is non-ASCII text
        return json.dumps({**obj, "é": "ü"}, ensure_ascii=False).encode("latin-1", "replace")
    if shape == "bom":
        return b"\xef\xbb\xbf" + json.dumps(obj).encode()
    return draw(
        st.one_of(
            st.sampled_from(
                [
                    b"",
                    b" ",
                    b"null",
                    b"[]",
                    b'"x"',
                    b"1",
                    b"NaN",
                    b'{"a": NaN}',
                    b'{"a": Infinity}',
                    b'{"a": -Infinity}',
                    b'{"a": 1e400}',
                    b'{"quantity": ' + b"1" * 5000 + b"}",
                    b"{",
                    b'{"a": "\\ud800"}',
                    b"\xff\xfe{}",
                    b'{"a": "\xc3("}',
                ]
            ),
            st.binary(max_size=100),
            st.integers(1, 5000).flatmap(
                lambda n: st.sampled_from([_deep(n, "object"), _deep(n, "list")])
            ),
            st.sampled_from([MAX_BODY, MAX_BODY + 1, 3 * MAX_BODY]).map(
                lambda n: b'{"description": "' + b"a" * (n - 19) + b'"}'
            ),
            HOSTILE.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
        )
    )


CONTENT_TYPES = st.sampled_from(
    ["application/json"] * 20
    + [
        None,
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        'application/json; charset=""',
        "application/vnd.api+json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/plain",
        ";;",
    ]
)


# --- the properties ---------------------------------------------------------------------------


@settings(max_examples=800, **FUZZ_SETTINGS)
@given(
    route=st.sampled_from(ROUTES).flatmap(
        lambda r: st.tuples(st.just(r), _ids(_kind_of(r[1])) if _kind_of(r[1]) else st.none())
    ),
    data=st.data(),
)
def test_bodies_get_a_deliberate_answer_and_a_refusal_writes_nothing(target, route, data):
    (method, template, kind), ident = route
    body = data.draw(bodies(kind), label="body")
    content_type = data.draw(CONTENT_TYPES, label="content type")
    headers = target.auth()
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    path = _path(target, template, ident)
    answer = target.send(method, path, body, headers)
    event(f"{method} {template} {answer.status}")  # shown by --hypothesis-show-statistics
    where = _where(method, path, body, headers)
    _check(answer, where)
    if method == "GET":
        assert answer.after == answer.before, (
            f"a GET changed {_changed(answer.before, answer.after)}: {where}"
        )


#: Every list route and the parameters it reads.
LISTS = {
    "orders": ("status", "limit", "cursor"),
    "endpoints": (),
    "deliveries": ("endpoint_id", "event_id", "status", "limit", "cursor"),
    "attempts": (
        "endpoint_id",
        "delivery_id",
        "event_id",
        "outcome",
        "since",
        "until",
        "limit",
        "cursor",
    ),
    "sources": (),
    "inbox": ("source", "status", "type", "since", "until", "limit", "cursor"),
}
PARAM_NAMES = [*sorted({name for names in LISTS.values() for name in names}), "x", "", "LIMIT"]
QUERY_VALUES = st.one_of(
    st.sampled_from(
        [
            *STATUSES,
            *("sending", "succeeded", "failed", "discarded", "retry", "received", "processed"),
            *("0", "1", "50", "200", "201", "-1", "+5", " 5", "1.5", "1e3", "0x10"),
            *("\u0663", "\u00b2", "\uff11"),  # digits to isdigit(), not ASCII
            *("0" * 30 + "50", "9" * 30, "1" * 5000),
            *("", "\x00", "a\x00b", "é", "\u202e"),
        ]
    ),
    TIMES,
    st.text(max_size=20),
    st.integers(0, 10**6).map(lambda pick: Live("endpoint", pick)),
    st.integers(0, 10**6).map(lambda pick: Live("event", pick)),
    st.integers(0, 10**6).map(lambda pick: Live("delivery", pick)),
    st.integers(0, 10**6).map(lambda pick: Live("source", pick)),
)
RAW_QUERY = st.sampled_from(["", "%", "%G1", "%00", "%FF", "&&", "=", "a=b=c", ";", "+", "limit"])


@settings(max_examples=300, **FUZZ_SETTINGS)
@given(
    route=st.sampled_from(sorted(LISTS)),
    params=st.lists(
        st.tuples(st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=6)), QUERY_VALUES),
        max_size=5,
    ),
    raw=RAW_QUERY,
)
def test_list_queries_get_a_deliberate_answer_and_write_nothing(target, route, params, raw):
    pairs = []
    for name, value in params:
        if isinstance(value, Live):
            live = target.live(value.kind)
            value = live[value.pick % len(live)] if live else "none"
        pairs.append((name, value))
    query = urllib.parse.urlencode(pairs, encoding="utf-8", errors="surrogatepass")
    path = f"{API}/{route}?{query}{'&' if query and raw else ''}{raw}"
    answer = target.send("GET", path, headers=target.auth())
    event(f"GET {route} {answer.status}")
    where = _where("GET", path, b"", [])
    _check(answer, where)
    assert answer.after == answer.before, (
        f"a GET changed {_changed(answer.before, answer.after)}: {where}"
    )
    if answer.status == 200:
        page = answer.json()
        assert page["object"] == "list" and isinstance(page["data"], list), where


@settings(max_examples=200, **FUZZ_SETTINGS)
@given(
    route=st.sampled_from([r for r in ROUTES if "{" in r[1]]),
    ident=ODD_IDS,
    tail=st.sampled_from(["", "", "", "/", "/x", "//"]),
)
def test_odd_path_ids_get_a_deliberate_answer_and_write_nothing(target, route, ident, tail):
    method, template, kind = route
    path = _path(target, template, ident) + tail
    body = json.dumps(VALID[kind]).encode()
    headers = [*target.auth(), ("Content-Type", "application/json")]
    answer = target.send(method, path, body, headers)
    event(f"{method} {template} {answer.status}")
    _check(answer, _where(method, path, body, headers))


#: Ways to send no valid credentials: name -> (headers, query string) for a target.
BAD_CREDENTIALS = {
    "none": lambda t: ([], ""),
    "empty": lambda t: ([("Authorization", "")], ""),
    "scheme only": lambda t: ([("Authorization", "Bearer")], ""),
    "scheme and space": lambda t: ([("Authorization", "Bearer ")], ""),
    "basic": lambda t: ([("Authorization", "Basic YWRtaW46YWRtaW4=")], ""),
    "unknown key": lambda t: ([("Authorization", "Bearer hk_" + "A" * 43)], ""),
    "revoked key": lambda t: ([("Authorization", f"Bearer {t.revoked}")], ""),
    "truncated key": lambda t: ([("Authorization", f"Bearer {t.key[:-1]}")], ""),
    "longer key": lambda t: ([("Authorization", f"Bearer {t.key}x")], ""),
    "key twice": lambda t: ([("Authorization", f"Bearer {t.key} {t.key}")], ""),
    "other case": lambda t: ([("Authorization", f"Bearer {t.key.swapcase()}")], ""),
    "no scheme": lambda t: ([("Authorization", t.key)], ""),
    "token scheme": lambda t: ([("Authorization", f"Token {t.key}")], ""),
    "tab": lambda t: ([("Authorization", f"Bearer\t{t.key}")], ""),
    "latin-1": lambda t: ([("Authorization", "Bearer hk_" + "é" * 43)], ""),
    "x-api-key": lambda t: ([("X-Api-Key", t.key)], ""),
    "cookie": lambda t: ([("Cookie", f"api_key={t.key}")], ""),
    "query": lambda t: ([], f"?api_key={t.key}"),
}


@settings(max_examples=200, **FUZZ_SETTINGS)
@given(
    route=st.one_of(
        st.sampled_from(ROUTES),
        st.sampled_from(["GET", "POST", "PUT", "DELETE"]).flatmap(
            lambda m: st.tuples(
                st.just(m), st.sampled_from(["keys", "api_keys", "orders/x/y", "admin"]), st.none()
            )
        ),
    ),
    pick=st.integers(0, 10**6),
    credentials=st.sampled_from(sorted(BAD_CREDENTIALS)),
)
def test_no_route_is_reached_without_valid_credentials(target, route, pick, credentials):
    method, template, kind = route
    path = _path(target, template, Live(_kind_of(template) or "", pick))
    headers, query = BAD_CREDENTIALS[credentials](target)
    body = json.dumps(VALID[kind]).encode()
    answer = target.send(
        method, path + query, body, [*headers, ("Content-Type", "application/json")], key_use=True
    )
    event(f"{credentials} {answer.status}")
    where = f"{method} {path}{query} with {credentials}"
    assert answer.status == 401, f"{where} -> {answer.status} {answer.body[:200]!r}"
    assert answer.headers.get("www-authenticate", "").startswith("Bearer"), where
    assert answer.json()["message"], where
    assert answer.after == answer.before, f"{where} changed {_changed(answer.before, answer.after)}"


def test_the_fuzzer_reaches_both_outcomes(target):
    """The properties above see 2xx answers too: the valid bodies and live ids do work."""
    headers = [*target.auth(), ("Content-Type", "application/json")]
    made = target.send("POST", f"{API}/orders", json.dumps(VALID["order"]).encode(), headers)
    assert made.status == 201, made.body
    shown = target.send("GET", f"{API}/orders/{made.json()['order_id']}", headers=headers)
    assert shown.status == 200, shown.body
    listed = target.send("GET", f"{API}/deliveries?limit=1", headers=headers)
    assert listed.status == 200 and listed.json()["data"], listed.body


# --- what the fuzzing found: each was a 500 (one an HTML 404) before its fix -----------------

FOUND = [
    # A JSON integer beyond any float: float() raised OverflowError (endpoint_rules._number).
    ("POST", "endpoints", {"url": "https://example.com/h", "timeout_s": 10**400}, 422),
    ("PATCH", "endpoints/{endpoint}", {"rate_limit": 10**400}, 422),
    ("PATCH", "endpoints/{endpoint}", {"max_in_flight": -(10**400)}, 422),
    # More digits than int() converts (4300): a ValueError (webio.query_int, sources._int).
    ("POST", "sources", {"name": "fz-digits", "kind": "none", "tolerance_s": "1" * 5000}, 422),
    ("PATCH", "sources/orders", {"max_body_bytes": "9" * 5000}, 422),
    ("GET", "orders?limit=" + "1" * 5000, None, 422),
    ("GET", "inbox?cursor=" + "1" * 5000, None, 422),
    ("GET", "attempts?limit=" + "0" * 5000 + "5", None, 200),
    # A NUL in what is looked up: neither database driver takes one in a query
    # (orders/%00 on PostgreSQL only: the orders table is read with bound parameters).
    ("GET", "endpoints/%00", None, 400),
    ("GET", "orders/%00", None, 400),
    ("PATCH", "sources/a%00b", {"enabled": True}, 400),
    ("POST", "events/%00/replay", {}, 400),
    ("POST", "inbox/%00/replay", None, 400),
    ("GET", "deliveries?endpoint_id=%00", None, 422),
    ("GET", "attempts?event_id=x%00", None, 422),
    ("GET", "inbox?type=%00", None, 422),
    ("POST", "events/{event}/replay", {"endpoint_id": "\x00"}, 422),
    # A segment that is just CR: py4web's router marks parameters with one, so the path matched
    # the route without its argument (a TypeError). A LF fell out of <path:path> (HTML 404).
    ("GET", "orders/%0D", None, 400),
    ("DELETE", "endpoints/%0D", None, 400),
    ("POST", "sources/%0D/rotate", {}, 400),
    ("GET", "orders/%0A/x", None, 400),
    # An HMAC scheme field that is not text: a 500 for the header; a prefix or id header was
    # stored, and then every signed request to the source was a 500.
    (
        "POST",
        "sources",
        {"name": "fz-h", "kind": "hmac", "secret": "s" * 16, "hmac_header": 5},
        422,
    ),
    (
        "POST",
        "sources",
        {"name": "fz-h", "kind": "hmac", "secret": "s" * 16, "hmac_prefix": 5},
        422,
    ),
    ("PATCH", "sources/orders", {"hmac_id_header": ["X-Id"]}, 422),
]


@pytest.mark.parametrize(
    ("method", "template", "body", "status"), FOUND, ids=[f"{m} {t[:40]}" for m, t, *_ in FOUND]
)
def test_what_the_fuzzing_found(target, method, template, body, status):
    path = _path(target, template)
    payload = json.dumps(body).encode() if body is not None else b""
    headers = [*target.auth(), ("Content-Type", "application/json")]
    answer = target.send(method, path, payload, headers)
    assert answer.status == status, (path[:100], answer.status, answer.body[:300])
    _check(answer, _where(method, path, payload, headers))


# --- methods a route does not take -------------------------------------------------------------


UNDECLARED = [
    ("PUT", "/orders", "GET, POST"),
    ("DELETE", "/orders/x", "GET, PATCH"),
    ("PATCH", "/attempts", "GET"),
    ("OPTIONS", "/endpoints/x/rotate", "POST"),
]


@pytest.mark.parametrize(("method", "path", "allow"), UNDECLARED)
def test_undeclared_methods_are_a_json_401_without_a_key(target, method, path, allow):
    answer = target.send(method, API + path)
    assert answer.status == 401 and answer.json()["message"], (answer.status, answer.body[:100])


@pytest.mark.parametrize(("method", "path", "allow"), UNDECLARED)
def test_undeclared_methods_are_a_json_405_naming_the_allowed_ones_with_a_key(
    target, method, path, allow
):
    answer = target.send(method, API + path, b"", target.auth())
    assert answer.status == 405, (answer.status, answer.body[:100])
    assert answer.headers["allow"] == allow
    assert method in answer.json()["message"]
    assert answer.after == answer.before


@pytest.mark.parametrize("path", ["", "/"])
def test_the_api_root_is_a_json_401_without_a_key_and_a_404_with_one(target, path):
    assert target.send("GET", API + path).status == 401
    answer = target.send("GET", API + path, b"", target.auth())
    assert answer.status == 404 and answer.json()["status"] == "error"
