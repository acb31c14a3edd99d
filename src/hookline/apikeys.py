"""API keys for the management API: random, shown once, stored as a SHA-256 hash.

A key looks like ``hk_<43 url-safe characters>`` (256 random bits). Only its hash and a short
display prefix are stored, so a database leak does not leak usable keys; a plain hash is enough
because the secret has full entropy (no password stretching needed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from typing import Any

from pydal import DAL

from hookline.errors import NotFound, Unauthorized, ValidationFailed
from hookline.ids import new_id
from hookline.timeutil import isoformat, utcnow

__all__ = ["authenticate", "create_key", "hash_key", "list_keys", "revoke_key"]

KEY_PREFIX = "hk_"
_KEY_SHAPE = re.compile(r"hk_[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}")
#: ``last_used_at`` is refreshed at most this often, so reads do not each cost a write.
_TOUCH_EVERY = dt.timedelta(minutes=1)


def hash_key(key: str) -> str:
    """The stored form of a key: hex SHA-256."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _key_to_dict(row: Any) -> dict[str, Any]:
    return {
        "key_id": row.key_id,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": isoformat(row.created_at),
        "last_used_at": isoformat(row.last_used_at),
        "revoked_at": isoformat(row.revoked_at),
        "active": row.revoked_at is None,
    }


def create_key(db: DAL, name: str, *, now: dt.datetime | None = None) -> tuple[dict[str, Any], str]:
    """Create a key named ``name``; return its record and the key itself (shown only now).

    Commits. Raises ``ValidationFailed`` for a bad name.
    """
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise ValidationFailed(
            "invalid key name",
            errors={
                "name": "1-64 letters, digits, spaces or . _ @ -, starting with a letter or digit"
            },
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id("key")
    db.hookline_api_key.insert(
        key_id=key_id,
        name=name,
        prefix=key[:10],
        key_hash=hash_key(key),
        created_at=now or utcnow(),
    )
    db.commit()
    return _key_to_dict(db(db.hookline_api_key.key_id == key_id).select().first()), key


def list_keys(db: DAL) -> list[dict[str, Any]]:
    """Every key, oldest first, without secrets."""
    rows = db(db.hookline_api_key).select(orderby=db.hookline_api_key.id)
    return [_key_to_dict(row) for row in rows]


def revoke_key(
    db: DAL, key_id_or_name: str, *, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Revoke the key with this id, or every active key with this name; commits.

    Raises ``NotFound`` when nothing matches.
    """
    table = db.hookline_api_key
    query = ((table.key_id == key_id_or_name) | (table.name == key_id_or_name)) & (
        table.revoked_at == None
    )
    rows = db(query).select()
    if not rows:
        raise NotFound(f"no active key with id or name {key_id_or_name!r}")
    db(table.id.belongs([row.id for row in rows])).update(revoked_at=now or utcnow())
    db.commit()
    return [_key_to_dict(table[row.id]) for row in rows]


def authenticate(db: DAL, authorization: str, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The key record for an ``Authorization: Bearer <key>`` header; raise ``Unauthorized``.

    Refreshes ``last_used_at`` (at most once a minute) in the caller's transaction.
    """
    scheme, _, token = authorization.strip().partition(" ")
    if not authorization.strip():
        raise Unauthorized("missing API key: send Authorization: Bearer <key>")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("malformed Authorization header: expected Bearer <key>")
    token = token.strip()
    if not _KEY_SHAPE.fullmatch(token):
        raise Unauthorized("invalid API key")
    row = db(db.hookline_api_key.key_hash == hash_key(token)).select(limitby=(0, 1)).first()
    if row is None:
        raise Unauthorized("invalid API key")
    if row.revoked_at is not None:
        raise Unauthorized("API key revoked")
    now = now or utcnow()
    if row.last_used_at is None or now - row.last_used_at >= _TOUCH_EVERY:
        row.update_record(last_used_at=now)
    return _key_to_dict(row)
