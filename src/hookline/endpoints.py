"""Endpoints: where events are delivered, with their secrets and per-endpoint policy.

Secrets are stored encrypted (``secretbox``) and shown once: at creation and at rotation. A
rotated secret keeps signing beside the new one for a grace period, so receivers can switch
without dropping a delivery. Functions never commit; the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pydal import DAL

from hookline import discard, signing
from hookline.endpoint_rules import EndpointChanges
from hookline.errors import Conflict, NotFound
from hookline.ids import new_id
from hookline.outbox import publish
from hookline.retry import format_schedule
from hookline.secretbox import SecretBox
from hookline.timeutil import isoformat, utcnow

__all__ = [
    "DEFAULT_ROTATION_GRACE",
    "active_secrets",
    "create_endpoint",
    "delete_endpoint",
    "endpoint_to_dict",
    "find_endpoint",
    "get_endpoint",
    "list_endpoints",
    "rotate_secret",
    "set_enabled",
    "update_endpoint",
]

DEFAULT_ROTATION_GRACE = dt.timedelta(hours=24)


def endpoint_to_dict(row: Any) -> dict[str, Any]:
    """The public view of an endpoint (never its secrets)."""
    schedule = json.loads(row.retry_schedule) if row.retry_schedule else None
    return {
        "object": "endpoint",
        "endpoint_id": row.endpoint_id,
        "url": row.url,
        "description": row.description,
        "event_types": json.loads(row.event_types),
        "headers": json.loads(row.custom_headers),
        "enabled": bool(row.enabled),
        "disabled_reason": row.disabled_reason,
        "disabled_at": isoformat(row.disabled_at),
        "retry_schedule": format_schedule(tuple(schedule)) if schedule else None,
        "timeout_s": row.timeout_s,
        "connect_timeout_s": row.connect_timeout_s,
        "max_in_flight": row.max_in_flight,
        "rate_limit": row.rate_limit,
        "fifo": bool(row.fifo),
        "ed25519": row.signing_key_enc is not None,
        "failing_since": isoformat(row.failing_since),
        "created_at": isoformat(row.created_at),
        "updated_at": isoformat(row.updated_at),
    }


def find_endpoint(db: DAL, endpoint_id: str) -> Any:
    """The endpoint row (not deleted); raise ``NotFound``."""
    table = db.hookline_endpoint
    row = (
        db((table.endpoint_id == endpoint_id) & (table.deleted_at == None))
        .select(limitby=(0, 1))
        .first()
    )
    if row is None:
        raise NotFound(f"no endpoint {endpoint_id!r}")
    return row


def get_endpoint(db: DAL, endpoint_id: str) -> dict[str, Any]:
    """The endpoint ``endpoint_id``; raise ``NotFound``."""
    return endpoint_to_dict(find_endpoint(db, endpoint_id))


def list_endpoints(db: DAL) -> list[dict[str, Any]]:
    """Every endpoint that is not deleted, oldest first."""
    table = db.hookline_endpoint
    rows = db(table.deleted_at == None).select(orderby=table.id)
    return [endpoint_to_dict(row) for row in rows]


def _columns(changes: EndpointChanges) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in changes.given().items():
        if name == "event_types":
            values["event_types"] = json.dumps(list(value))
        elif name == "headers":
            values["custom_headers"] = json.dumps(value, sort_keys=True)
        elif name == "retry_schedule":
            values["retry_schedule"] = json.dumps(list(value))
        elif name in ("fifo", "enabled"):
            values[name] = int(value)
        elif name != "ed25519":
            values[name] = value
    if changes.clear_rate:
        values["rate_limit"] = None
    return values


def create_endpoint(
    db: DAL, box: SecretBox, changes: EndpointChanges, *, now: dt.datetime | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Create an endpoint; return it and its new credentials (shown only now).

    The credentials are ``{"secret": "whsec_..."}`` plus ``"public_key": "whpk_..."`` when
    ed25519 signing was asked for.
    """
    now = now or utcnow()
    secret = signing.generate_secret()
    credentials = {"secret": secret}
    signing_key_enc = None
    if changes.ed25519:
        private_key, public_key = signing.generate_ed25519_keypair()
        signing_key_enc = box.encrypt(private_key)
        credentials["public_key"] = public_key
    row_id = db.hookline_endpoint.insert(
        endpoint_id=new_id("ep"),
        signing_key_enc=signing_key_enc,
        created_at=now,
        updated_at=now,
        **_columns(changes),
    )
    db.hookline_endpoint_secret.insert(
        endpoint=row_id, secret_enc=box.encrypt(secret), created_at=now
    )
    return endpoint_to_dict(db.hookline_endpoint[row_id]), credentials


def update_endpoint(
    db: DAL,
    box: SecretBox,
    endpoint_id: str,
    changes: EndpointChanges,
    *,
    now: dt.datetime | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Change an endpoint's settings; ``enabled`` goes through ``set_enabled``.

    Returns the endpoint and any new credentials (a public key when ed25519 was switched on).
    """
    now = now or utcnow()
    row = find_endpoint(db, endpoint_id)
    credentials: dict[str, str] = {}
    values = _columns(changes)
    enabled = values.pop("enabled", None)
    if changes.ed25519 is True and row.signing_key_enc is None:
        private_key, public_key = signing.generate_ed25519_keypair()
        values["signing_key_enc"] = box.encrypt(private_key)
        credentials["public_key"] = public_key
    elif changes.ed25519 is False:
        values["signing_key_enc"] = None
    if values:
        row.update_record(updated_at=now, **values)
    if enabled is not None and bool(enabled) != bool(row.enabled):
        set_enabled(db, endpoint_id, bool(enabled), reason="changed by an operator", now=now)
    return get_endpoint(db, endpoint_id), credentials


def _discard_unfinished(db: DAL, endpoint_row_id: int, now: dt.datetime, why: str) -> None:
    # Leases go too: a result still in flight is then kept as an attempt and changes nothing.
    # A first batch here, the rest a batch per transaction (``discard``): with a large backlog,
    # one transaction held SQLite's write lock for seconds.
    db(db.hookline_lease.endpoint == endpoint_row_id).delete()
    discard.discard_batch(
        db, endpoint_row_id, now, why, discard.DISCARD_BATCH, while_disabled=False
    )


def set_enabled(
    db: DAL, endpoint_id: str, enabled: bool, *, reason: str, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Enable or disable an endpoint. Disabling discards its unfinished deliveries (a first
    batch here, the rest by ``discard.discard_left_behind``) and publishes ``endpoint.disabled``;
    enabling clears the failure clock, and is refused (``Conflict``) while deliveries from its
    disabling are still to be discarded: they would be sent."""
    now = now or utcnow()
    row = find_endpoint(db, endpoint_id)
    if enabled:
        if not row.enabled:
            left = discard.left_behind_count(db, row.id)
            if left:
                raise Conflict(
                    f"endpoint {endpoint_id} still has {left} deliveries from when it was"
                    " disabled, being discarded; enable it once they are (the worker discards"
                    " them in the background; `hookline endpoints enable` waits for it)",
                    errors={"enabled": "deliveries left to discard"},
                )
        row.update_record(
            enabled=1, disabled_reason=None, disabled_at=None, failing_since=None, updated_at=now
        )
        return get_endpoint(db, endpoint_id)
    if not row.enabled:
        return endpoint_to_dict(row)
    # Deliveries before the endpoint row: the order in which recording an attempt locks them.
    _discard_unfinished(db, row.id, now, f"endpoint disabled: {reason[:512]}")
    row.update_record(enabled=0, disabled_reason=reason[:512], disabled_at=now, updated_at=now)
    view = get_endpoint(db, endpoint_id)
    publish(db, "endpoint.disabled", {"endpoint": view, "reason": view["disabled_reason"]}, now=now)
    return view


def delete_endpoint(db: DAL, endpoint_id: str, *, now: dt.datetime | None = None) -> None:
    """Delete an endpoint: it stops receiving at once; its history stays for the retention. Its
    unfinished deliveries are discarded as when it is disabled."""
    now = now or utcnow()
    row = find_endpoint(db, endpoint_id)
    _discard_unfinished(db, row.id, now, "endpoint deleted")
    row.update_record(deleted_at=now, enabled=0, updated_at=now)


def rotate_secret(
    db: DAL,
    box: SecretBox,
    endpoint_id: str,
    *,
    grace: dt.timedelta = DEFAULT_ROTATION_GRACE,
    now: dt.datetime | None = None,
) -> str:
    """Add a new signing secret; the current ones keep signing for ``grace``. Return the new one."""
    now = now or utcnow()
    row = find_endpoint(db, endpoint_id)
    table = db.hookline_endpoint_secret
    expires = now + grace
    current = (table.endpoint == row.id) & (
        (table.expires_at == None) | (table.expires_at > expires)
    )
    db(current).update(expires_at=expires)
    secret = signing.generate_secret()
    table.insert(endpoint=row.id, secret_enc=box.encrypt(secret), created_at=now)
    row.update_record(updated_at=now, secrets_version=row.secrets_version + 1)
    return secret


def active_secrets(
    db: DAL, box: SecretBox, endpoint_row_id: int, *, now: dt.datetime | None = None
) -> list[str]:
    """The secrets that sign deliveries to an endpoint right now, newest first."""
    now = now or utcnow()
    table = db.hookline_endpoint_secret
    query = (table.endpoint == endpoint_row_id) & (
        (table.expires_at == None) | (table.expires_at > now)
    )
    rows = db(query).select(table.secret_enc, orderby=~table.id)
    return [box.decrypt(row.secret_enc) for row in rows]
