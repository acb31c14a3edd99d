"""Requests to the receivers, signed the way each provider signs, and what they left stored.

Shared by ``test_inbound.py`` and ``test_inbound_kinds.py`` (SQLite and PostgreSQL):

- the test clock (``NOW``, ``NOW_TS``), the default body limit and content types;
- each kind's test secret (``SECRETS``, ``HMAC_FIELDS`` for the generic ``hmac`` scheme) and a
  wrong one; ``add_source`` creates a source with them;
- ``sign``: the headers a provider sends with a body (Standard Webhooks with the PyPI
  ``standardwebhooks`` library, Stripe with the ``stripe`` library, GitHub / Shopify / generic
  HMAC with ``hmac``); ``body_for``: a provider-shaped JSON body;
- ``receive`` (a named source, ``hookline.inbound.receive``) and ``seed_post`` (the seed's
  ``/myapp/webhook``, through the built-in ``orders`` source);
- what was stored: ``inbox_rows``, ``raw_body``, ``failures`` (a source's verification
  failures) and ``counts`` (orders, events, inbox rows).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import standardwebhooks
import stripe

from hookline import sources
from hookline.receiver import receive_order_webhook
from hookline.sources import parse_source
from hookline.webio import Request, Response

NOW = dt.datetime(2026, 3, 1, 12, 0, 0)
NOW_TS = int(NOW.replace(tzinfo=dt.UTC).timestamp())
LIMIT = 64 * 1024
JSON_CT = "application/json"
STD_SECRET = "whsec_" + base64.b64encode(b"standard-secret-32-bytes-long!!!").decode()
STRIPE_SECRET = "whsec_stripe_test_secret_4e1d2c3b"
GITHUB_SECRET = "github-hook-secret-0123456789"
SHOPIFY_SECRET = "shpss_shopify_app_secret_abcdef"
HMAC_SECRET = "generic-hmac-secret-zyxwvu"
WRONG_SECRET = "whsec_" + base64.b64encode(b"this-is-the-wrong-key-32-bytes!!").decode()
SECRETS = {
    "standard": STD_SECRET,
    "stripe": STRIPE_SECRET,
    "github": GITHUB_SECRET,
    "shopify": SHOPIFY_SECRET,
    "hmac": HMAC_SECRET,
}
HMAC_FIELDS = {
    "hmac_header": "X-Acme-Signature",
    "hmac_algorithm": "sha512",
    "hmac_encoding": "base64",
    "hmac_prefix": "sha512=",
    "hmac_id_header": "X-Acme-Delivery",
}


def add_source(db, box, kind: str, name: str | None = None, **fields: Any) -> str:
    """Create and commit a source of ``kind`` with the test secret (and scheme) for it."""
    name = name or f"src-{kind}"
    data: dict[str, Any] = {"name": name, "kind": kind, **fields}
    if kind in SECRETS and "secret" not in fields:
        data["secret"] = SECRETS[kind]
    if kind == "hmac":
        data = {**HMAC_FIELDS, **data}
    sources.create_source(db, box, parse_source(data, creating=True), now=NOW)
    db.commit()
    return name


# --- signing, the providers' way ------------------------------------------------------------


def sign(
    kind: str,
    body: bytes,
    *,
    secret: str | None = None,
    msg_id: str = "msg_1",
    timestamp: int = NOW_TS,
    event: str = "push",
    content_type: str = JSON_CT,
) -> dict[str, str]:
    """The headers a ``kind`` provider sends with ``body``; ``msg_id`` is its delivery id."""
    key = secret or SECRETS[kind]
    headers = {"Content-Type": content_type}
    if kind in ("standard", "stripe") and not _is_utf8(body):
        return headers | _sign_bytes_by_recipe(kind, body, key, msg_id, timestamp)
    if kind == "standard":
        when = dt.datetime.fromtimestamp(timestamp, dt.UTC)
        headers |= {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": standardwebhooks.Webhook(key).sign(msg_id, when, body.decode()),
        }
    elif kind == "stripe":
        headers["Stripe-Signature"] = stripe.WebhookSignature.generate_signature_header(
            body.decode(), key, timestamp=timestamp
        )
    elif kind == "github":
        digest = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
        headers |= {
            "X-Hub-Signature-256": f"sha256={digest}",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": msg_id,
        }
    elif kind == "shopify":
        digest = base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()
        headers |= {
            "X-Shopify-Hmac-Sha256": digest,
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Webhook-Id": msg_id,
        }
    elif kind == "hmac":
        digest = base64.b64encode(hmac.new(key.encode(), body, hashlib.sha512).digest()).decode()
        headers |= {"X-Acme-Signature": f"sha512={digest}", "X-Acme-Delivery": msg_id}
    return headers


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _sign_bytes_by_recipe(
    kind: str, body: bytes, key: str, msg_id: str, timestamp: int
) -> dict[str, str]:
    """The providers' documented recipes, for bodies their libraries (str only) cannot take."""
    if kind == "stripe":
        digest = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
        return {"Stripe-Signature": f"t={timestamp},v1={digest.hexdigest()}"}
    raw_key = base64.b64decode(key.removeprefix("whsec_"))
    content = f"{msg_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(raw_key, content, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


def body_for(kind: str, msg_id: str = "msg_1") -> bytes:
    """A provider-shaped JSON body (Stripe's carries the event id and type)."""
    if kind == "stripe":
        payload = {"id": msg_id, "object": "event", "type": "payment_intent.succeeded"}
    else:
        payload = {"type": "invoice.paid", "data": {"note": "Grüße 🔑", "n": [1, 2.5, None]}}
    return json.dumps(payload, ensure_ascii=False).encode()


def receive(
    db, box, name: str, body: bytes, headers: dict[str, str], *, method: str = "POST", **kw
) -> Response:
    from hookline import inbound

    request = Request.build(method, f"/myapp/webhook/{name}", headers, body)
    kw.setdefault("now", NOW)
    kw.setdefault("default_max_body_bytes", LIMIT)
    return inbound.receive(db, request, name, box=box, **kw)


def inbox_rows(other_db) -> list[Any]:
    other_db.commit()  # a fresh snapshot: only committed rows
    return list(other_db(other_db.hookline_inbox).select(orderby=other_db.hookline_inbox.id))


def raw_body(db, row_id: int) -> bytes:
    """The inbox body exactly as stored (pydal keeps blobs base64-encoded)."""
    sql = db(db.hookline_inbox.id == row_id)._select(db.hookline_inbox.body)
    value = db.executesql(sql)[0][0]
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, str):
        value = value.encode("ascii")
    return base64.b64decode(value)


def failures(other_db, name: str) -> int:
    other_db.commit()
    return sources.find_source(other_db, name).verify_failures


# --- the seed's /myapp/webhook through the orders source ------------------------------------

FORM = "application/x-www-form-urlencoded"


def seed_post(db, box, body: bytes, headers: dict[str, str], now: dt.datetime = NOW) -> Response:
    request = Request.build("POST", "/myapp/webhook", headers, body)
    return receive_order_webhook(db, request, max_body_bytes=LIMIT, box=box, now=now)


def counts(other_db) -> dict[str, int]:
    other_db.commit()
    return {
        "orders": other_db(other_db.hookline_order).count(),
        "events": other_db(other_db.hookline_event).count(),
        "inbox": other_db(other_db.hookline_inbox).count(),
    }
