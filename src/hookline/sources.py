"""Sources: the named senders hookline receives webhooks from, with how to verify each.

A source has a kind (``verifiers.SOURCE_KINDS``), one or more secrets (encrypted at rest; during
a rotation the old ones keep verifying until they expire) and limits. The built-in ``orders``
source is the seed's ``/myapp/webhook``: it accepts unsigned posts until it is given a secret.
Functions never commit, except ``record_verify_failure`` (a refused request stores nothing but
that counter, so it must not ride on a transaction that is rolled back).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pydal import DAL

from hookline import signing
from hookline.digits import read_digits
from hookline.errors import ConfigError, Conflict, NotFound, ValidationFailed
from hookline.ids import new_id
from hookline.secretbox import SecretBox
from hookline.signing import InvalidSecret
from hookline.timeutil import isoformat, utcnow
from hookline.verifiers import SOURCE_KINDS, HmacScheme

__all__ = [
    "ORDERS_SOURCE",
    "SourceSettings",
    "active_secrets",
    "create_source",
    "delete_source",
    "ensure_orders_source",
    "find_source",
    "get_source",
    "hmac_scheme_of",
    "is_unsigned",
    "list_sources",
    "parse_source",
    "record_verify_failure",
    "rotate_secret",
    "source_to_dict",
    "update_source",
]

ORDERS_SOURCE = "orders"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_FIELDS = {
    "name",
    "kind",
    "secret",
    "public_keys",
    "hmac_header",
    "hmac_algorithm",
    "hmac_encoding",
    "hmac_prefix",
    "hmac_id_header",
    "tolerance_s",
    "max_body_bytes",
    "enabled",
}


@dataclass(frozen=True)
class SourceSettings:
    """Validated source fields; ``None`` means "not given"."""

    name: str | None = None
    kind: str | None = None
    secret: str | None = None
    public_keys: tuple[str, ...] | None = None
    hmac_scheme: HmacScheme | None = None
    #: The HMAC fields as given: an update changes these and keeps the stored others.
    hmac_given: Mapping[str, Any] | None = None
    tolerance_s: int | None = None
    max_body_bytes: int | None = None
    enabled: bool | None = None


def _int(raw: Any, name: str, low: int, high: int, errors: dict[str, str]) -> int | None:
    text = str(raw).strip()
    # isdigit() alone admits "²" and "①", which int() then refuses.
    if (
        isinstance(raw, bool)
        or not isinstance(raw, int | str)
        or not text.isascii()
        or not text.isdigit()
    ):
        errors[name] = "must be a whole number"
        return None
    value = read_digits(text, high)
    if value is None or not low <= value <= high:
        errors[name] = f"must be between {low} and {high}"
        return None
    return value


_PUBLIC_KEYS_ONLY_STANDARD = "only a standard source verifies ed25519 (v1a) signatures"


def parse_source(data: Mapping[str, Any], *, creating: bool) -> SourceSettings:
    """Validate source fields (API body or CLI options); raise ``ValidationFailed``."""
    errors: dict[str, str] = {k: "unknown field" for k in data if k not in _FIELDS}
    values: dict[str, Any] = {}
    if creating or data.get("name") is not None:
        name = data.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            errors["name"] = "1-64 lowercase letters, digits, - or _, starting with a letter/digit"
        else:
            values["name"] = name
    if creating or data.get("kind") is not None:
        kind = data.get("kind")
        if kind not in SOURCE_KINDS:
            errors["kind"] = f"one of {', '.join(SOURCE_KINDS)}"
        else:
            values["kind"] = kind
    if data.get("secret") is not None:
        secret = data["secret"]
        if not isinstance(secret, str) or not 8 <= len(secret.strip()) <= 512:
            errors["secret"] = "must be a string of 8 to 512 characters"
        else:
            values["secret"] = secret.strip()
    if data.get("public_keys") is not None:
        keys = data["public_keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            errors["public_keys"] = "must be a list of whpk_ keys"
        else:
            values["public_keys"] = tuple(keys)
    hmac_fields = {k[5:]: data[k] for k in data if k.startswith("hmac_") and data[k] is not None}
    if hmac_fields:
        try:
            values["hmac_scheme"] = HmacScheme(**hmac_fields)
            values["hmac_given"] = dict(hmac_fields)
        except (TypeError, ValueError, ConfigError) as error:
            errors["hmac"] = str(error)
    if data.get("tolerance_s") is not None:
        values["tolerance_s"] = _int(data["tolerance_s"], "tolerance_s", 0, 86_400, errors)
    if data.get("max_body_bytes") is not None:
        values["max_body_bytes"] = _int(
            data["max_body_bytes"], "max_body_bytes", 1, 64 * 1024 * 1024, errors
        )
    if data.get("enabled") is not None:
        if not isinstance(data["enabled"], bool):
            errors["enabled"] = "must be true or false"
        else:
            values["enabled"] = data["enabled"]
    kind = values.get("kind")
    if creating and kind not in (None, "none", "standard") and "secret" not in values:
        errors.setdefault("secret", f"a {kind} source needs the provider's signing secret")
    if kind == "standard":
        _check_standard_keys(values, errors)
    elif values.get("public_keys"):
        if kind is not None:
            errors["public_keys"] = _PUBLIC_KEYS_ONLY_STANDARD
        else:  # an update: the stored kind is checked by update_source
            _check_public_keys(values, errors)
    if errors:
        raise ValidationFailed("the source is invalid", errors=errors)
    return SourceSettings(**values)


def _check_standard_keys(values: dict[str, Any], errors: dict[str, str]) -> None:
    # A bad key stored now would blame every later sender for the receiver's mistake.
    try:
        if values.get("secret") is not None:
            signing.decode_secret(values["secret"])
    except InvalidSecret:
        errors["secret"] = "a standard source's secret is a whsec_ key (base64, 24-64 bytes)"
    _check_public_keys(values, errors)


def _check_public_keys(values: dict[str, Any], errors: dict[str, str]) -> None:
    for key in values.get("public_keys") or ():
        try:
            signing.check_public_key(key)
        except InvalidSecret:
            errors["public_keys"] = f"{key[:12]}... is not a whpk_ ed25519 public key"


def hmac_scheme_of(row: Any) -> HmacScheme | None:
    """The generic-HMAC scheme stored with a source."""
    return HmacScheme(**json.loads(row.hmac_scheme)) if row.hmac_scheme else None


def source_to_dict(row: Any, box: SecretBox | None = None, now: dt.datetime | None = None) -> dict:
    """The public view of a source (never its secrets, only how many are active)."""
    active = len(active_secrets(box, row, now)) if box is not None else None
    scheme = hmac_scheme_of(row)
    return {
        "object": "source",
        "source_id": row.source_id,
        "name": row.name,
        "kind": row.kind,
        "url_path": "/myapp/webhook" if row.name == ORDERS_SOURCE else f"/myapp/webhook/{row.name}",
        "active_secrets": active,
        "public_keys": json.loads(row.public_keys),
        "hmac": asdict(scheme) if scheme else None,
        "tolerance_s": row.tolerance_s,
        "max_body_bytes": row.max_body_bytes,
        "enabled": bool(row.enabled),
        "verify_failures": row.verify_failures,
        "last_failure_at": isoformat(row.last_failure_at),
        "last_failure_reason": row.last_failure_reason,
        "created_at": isoformat(row.created_at),
        "updated_at": isoformat(row.updated_at),
    }


def _secrets(box: SecretBox, row: Any) -> list[dict[str, Any]]:
    return json.loads(box.decrypt(row.secrets_enc)) if row.secrets_enc else []


def is_unsigned(kind: str, name: str, *, has_secrets: bool, has_public_keys: bool) -> bool:
    """Whether requests to this source are accepted without a signature: a ``none`` source,
    and the built-in orders source (the seed's endpoint) until it is given a secret or key."""
    if kind == "none":
        return True
    return name == ORDERS_SOURCE and not has_secrets and not has_public_keys


def active_secrets(box: SecretBox, row: Any, now: dt.datetime | None = None) -> list[str]:
    """The secrets that verify requests for this source now, newest first."""
    stamp = isoformat(now or utcnow())
    return [
        item["secret"]
        for item in reversed(_secrets(box, row))
        if item.get("expires_at") is None or item["expires_at"] > stamp
    ]


def find_source(db: DAL, name: str) -> Any:
    """The source row named ``name``; raise ``NotFound``."""
    row = db(db.hookline_source.name == name).select(limitby=(0, 1)).first()
    if row is None:
        raise NotFound(f"no source {name!r}")
    return row


def get_source(db: DAL, box: SecretBox, name: str) -> dict[str, Any]:
    """The public view of source ``name``."""
    return source_to_dict(find_source(db, name), box)


def list_sources(db: DAL, box: SecretBox) -> list[dict[str, Any]]:
    """Every source, oldest first."""
    rows = db(db.hookline_source).select(orderby=db.hookline_source.id)
    return [source_to_dict(row, box) for row in rows]


def create_source(
    db: DAL, box: SecretBox, settings: SourceSettings, *, now: dt.datetime | None = None
) -> tuple[dict[str, Any], str | None]:
    """Create a source; returns it and, for a ``standard`` source given no secret, the
    ``whsec_`` secret generated for it (shown only now)."""
    now = now or utcnow()
    if db(db.hookline_source.name == settings.name).count():
        raise Conflict(f"source {settings.name!r} exists", errors={"name": "already exists"})
    generated = None
    secret = settings.secret
    if secret is None and settings.kind == "standard":
        secret = generated = signing.generate_secret()
    items = [{"secret": secret, "added_at": isoformat(now), "expires_at": None}] if secret else []
    db.hookline_source.insert(
        source_id=new_id("src"),
        name=settings.name,
        kind=settings.kind,
        secrets_enc=box.encrypt(json.dumps(items)) if items else None,
        public_keys=json.dumps(list(settings.public_keys or ())),
        hmac_scheme=json.dumps(asdict(settings.hmac_scheme)) if settings.hmac_scheme else None,
        tolerance_s=settings.tolerance_s if settings.tolerance_s is not None else 300,
        max_body_bytes=settings.max_body_bytes,
        enabled=1,
        created_at=now,
        updated_at=now,
    )
    return get_source(db, box, settings.name or ""), generated


def update_source(
    db: DAL, box: SecretBox, name: str, settings: SourceSettings, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Change a source's kind, keys, HMAC scheme, limits or enabled flag (secrets: ``rotate``)."""
    now = now or utcnow()
    row = find_source(db, name)
    values: dict[str, Any] = {}
    if settings.kind is not None:
        if settings.kind not in ("none", "standard") and not active_secrets(box, row, now):
            raise ValidationFailed(
                f"a {settings.kind} source needs a secret: rotate one in first",
                errors={"kind": "this source has no secret"},
            )
        if settings.kind == "standard":
            errors: dict[str, str] = {}
            for secret in active_secrets(box, row, now):
                _check_standard_keys({"secret": secret}, errors)
            if errors:
                raise ValidationFailed("its secrets are not whsec_ keys", errors=errors)
        values["kind"] = settings.kind
    if settings.public_keys is not None:
        if settings.public_keys and (settings.kind or row.kind) != "standard":
            raise ValidationFailed(
                "public keys need a standard source",
                errors={"public_keys": _PUBLIC_KEYS_ONLY_STANDARD},
            )
        values["public_keys"] = json.dumps(list(settings.public_keys))
    if settings.hmac_scheme is not None:
        current = hmac_scheme_of(row) or HmacScheme()
        given = settings.hmac_given or asdict(settings.hmac_scheme)
        try:
            merged = HmacScheme(**{**asdict(current), **given})
        except ConfigError as error:
            raise ValidationFailed("invalid HMAC scheme", errors={"hmac": str(error)}) from None
        values["hmac_scheme"] = json.dumps(asdict(merged))
    for field in ("tolerance_s", "max_body_bytes"):
        if getattr(settings, field) is not None:
            values[field] = getattr(settings, field)
    if settings.enabled is not None:
        values["enabled"] = int(settings.enabled)
    if settings.secret is not None:
        raise ValidationFailed("secrets change by rotation", errors={"secret": "use rotate"})
    row.update_record(updated_at=now, **values)
    return get_source(db, box, name)


def rotate_secret(
    db: DAL,
    box: SecretBox,
    name: str,
    *,
    secret: str | None = None,
    grace: dt.timedelta = dt.timedelta(hours=24),
    now: dt.datetime | None = None,
) -> str:
    """Add a secret (given, or a generated ``whsec_`` one); the current ones keep verifying for
    ``grace``, then expire. Returns the new secret."""
    now = now or utcnow()
    row = find_source(db, name)
    if secret is None:
        secret = signing.generate_secret()
    elif row.kind == "standard":
        problems: dict[str, str] = {}
        _check_standard_keys({"secret": secret}, problems)
        if problems:
            raise ValidationFailed("invalid secret", errors=problems)
    expires = isoformat(now + grace)
    items = _secrets(box, row)
    for item in items:
        if item.get("expires_at") is None or item["expires_at"] > expires:
            item["expires_at"] = expires
    items = [i for i in items if i["expires_at"] > isoformat(now)]
    items.append({"secret": secret, "added_at": isoformat(now), "expires_at": None})
    row.update_record(secrets_enc=box.encrypt(json.dumps(items)), updated_at=now)
    return secret


def delete_source(db: DAL, name: str) -> None:
    """Delete a source (the built-in ``orders`` source cannot be deleted; disable it)."""
    if name == ORDERS_SOURCE:
        raise Conflict("the orders source is built in; disable it instead", errors={"name": name})
    row = find_source(db, name)
    db(db.hookline_source.id == row.id).delete()


def record_verify_failure(
    db: DAL, source_row_id: int, reason: str, *, now: dt.datetime | None = None
) -> None:
    """Count a refused request against its source; commits (nothing else is stored for it)."""
    table = db.hookline_source
    db(table.id == source_row_id).update(
        verify_failures=table.verify_failures + 1,
        last_failure_at=now or utcnow(),
        last_failure_reason=reason[:64],
    )
    db.commit()


def ensure_orders_source(db: DAL, *, now: dt.datetime | None = None) -> None:
    """Create the built-in ``orders`` source (Standard Webhooks kind, no secret: unsigned posts
    are accepted until a secret is rotated in); idempotent."""
    if db(db.hookline_source.name == ORDERS_SOURCE).count():
        return
    now = now or utcnow()
    db.hookline_source.insert(
        source_id=new_id("src"),
        name=ORDERS_SOURCE,
        kind="standard",
        public_keys="[]",
        tolerance_s=300,
        enabled=1,
        created_at=now,
        updated_at=now,
    )
