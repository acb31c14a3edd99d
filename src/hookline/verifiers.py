"""Verifying inbound webhooks on their raw bytes, one function per provider's scheme.

Pure: headers (lower-case names), the body bytes, the source's secrets and ``now`` in; a
``Verified`` (the provider's message id, event type, signed time) out, or ``SignatureError``
with a reason that names no secret. Every comparison is constant-time and tries every secret,
so a rotation (old and new secret both configured) is just two secrets.

- standard: ``webhook-signature`` ``v1,``/``v1a,`` over ``id.timestamp.body``; id webhook-id
- stripe: ``Stripe-Signature: t=..,v1=<hex>`` over ``t.body``; id and type in the body
- github: ``X-Hub-Signature-256: sha256=<hex>`` over the body; X-GitHub-Delivery / -Event
- shopify: ``X-Shopify-Hmac-Sha256: <base64>`` over the body; X-Shopify-Webhook-Id / -Topic
- hmac: header, hash, encoding and prefix as ``HmacScheme`` says, over the body
- none: nothing to verify
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from hookline.errors import ConfigError
from hookline.signing import DEFAULT_TOLERANCE, SignatureError
from hookline.signing import verify as verify_standard

__all__ = [
    "SOURCE_KINDS",
    "HmacScheme",
    "Verified",
    "verify_github",
    "verify_hmac",
    "verify_request",
    "verify_shopify",
    "verify_stripe",
]

SOURCE_KINDS = ("standard", "stripe", "github", "shopify", "hmac", "none")
MAX_SIGNATURE_HEADER = 4096
_ALGORITHMS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


@dataclass(frozen=True)
class Verified:
    """What a verified request says about itself (before its body is parsed)."""

    message_id: str | None = None
    event_type: str | None = None
    timestamp: int | None = None


@dataclass(frozen=True)
class HmacScheme:
    """A generic HMAC signature: which header, which hash, how it is encoded and prefixed."""

    header: str = "x-signature"
    algorithm: Literal["sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    id_header: str | None = None

    def __post_init__(self) -> None:
        # Decoded JSON may hold any type: a stored non-text prefix or id header would fail every
        # request to the source.
        text = (self.header, self.algorithm, self.encoding, self.prefix)
        if not all(isinstance(v, str) for v in text) or not isinstance(self.id_header, str | None):
            raise ConfigError("hmac header, algorithm, encoding, prefix and id header are text")
        if self.algorithm not in _ALGORITHMS:
            raise ConfigError(f"hmac algorithm must be sha256 or sha512, not {self.algorithm!r}")
        if self.encoding not in ("hex", "base64"):
            raise ConfigError(f"hmac encoding must be hex or base64, not {self.encoding!r}")
        if not self.header.strip():
            raise ConfigError("hmac header must be named")


def _header(headers: Mapping[str, str], name: str) -> str:
    value = (headers.get(name) or "").strip()
    if not value:
        raise SignatureError("missing_headers", f"missing header: {name}")
    if len(value) > MAX_SIGNATURE_HEADER:
        raise SignatureError("malformed_signature", f"{name} is too long")
    return value


def _need_secrets(secrets: Sequence[str]) -> list[bytes]:
    if isinstance(secrets, str) or not secrets:
        raise ConfigError("this source needs at least one secret")
    try:
        return [secret.encode("utf-8") for secret in secrets]
    except (UnicodeEncodeError, AttributeError):
        raise ConfigError("a secret of this source is not text") from None


def _any_match(given: Sequence[bytes], keys: Sequence[bytes], content: bytes, digest) -> bool:
    matched = False
    for key in keys:
        expected = hmac.new(key, content, digest).digest()
        for candidate in given:
            matched |= hmac.compare_digest(candidate, expected)
    return matched


def _hex(value: str) -> bytes:
    # bytes.fromhex would skip blanks inside the value; a signature has none.
    if not _HEX.fullmatch(value):
        raise SignatureError("malformed_signature", "the signature is not hex")
    return bytes.fromhex(value)


def _b64(value: str) -> bytes:
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("malformed_signature", "the signature is not base64") from None
    if not decoded:
        raise SignatureError("malformed_signature", "the signature is empty")
    return decoded


def _check_time(timestamp: int, now: int, tolerance: int) -> None:
    if now - timestamp > tolerance:
        raise SignatureError("timestamp_too_old", "the signed timestamp is too old")
    if timestamp - now > tolerance:
        raise SignatureError("timestamp_too_new", "the signed timestamp is in the future")


def verify_stripe(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: Sequence[str],
    now: int,
    tolerance: int = DEFAULT_TOLERANCE,
) -> Verified:
    """Stripe: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>[,v1=...]``."""
    if tolerance < 0:
        raise ConfigError("tolerance must not be negative")
    keys = _need_secrets(secrets)
    value = _header(headers, "stripe-signature")
    timestamp: int | None = None
    given: list[bytes] = []
    for item in value.split(","):
        name, sep, part = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed_signature", "Stripe-Signature items are key=value")
        if name == "t":
            if not part.isascii() or not part.isdigit() or len(part) > 15:
                raise SignatureError("malformed_timestamp", "Stripe-Signature t is not unix time")
            timestamp = int(part)
        elif name == "v1":
            given.append(_hex(part))
    if timestamp is None or not given:
        raise SignatureError("malformed_signature", "Stripe-Signature needs t= and v1=")
    _check_time(timestamp, now, tolerance)
    if not _any_match(given, keys, f"{timestamp}.".encode() + body, hashlib.sha256):
        raise SignatureError("no_matching_signature", "no matching signature")
    return Verified(timestamp=timestamp)


def verify_github(headers: Mapping[str, str], body: bytes, *, secrets: Sequence[str]) -> Verified:
    """GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``."""
    keys = _need_secrets(secrets)
    value = _header(headers, "x-hub-signature-256")
    scheme, sep, digest = value.partition("=")
    if not sep or scheme != "sha256":
        raise SignatureError("malformed_signature", "X-Hub-Signature-256 must be sha256=<hex>")
    if not _any_match([_hex(digest)], keys, body, hashlib.sha256):
        raise SignatureError("no_matching_signature", "no matching signature")
    return Verified(
        message_id=(headers.get("x-github-delivery") or "").strip() or None,
        event_type=(headers.get("x-github-event") or "").strip() or None,
    )


def verify_shopify(headers: Mapping[str, str], body: bytes, *, secrets: Sequence[str]) -> Verified:
    """Shopify: ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(secret, body)>``."""
    keys = _need_secrets(secrets)
    given = _b64(_header(headers, "x-shopify-hmac-sha256"))
    if not _any_match([given], keys, body, hashlib.sha256):
        raise SignatureError("no_matching_signature", "no matching signature")
    return Verified(
        message_id=(headers.get("x-shopify-webhook-id") or "").strip()
        or (headers.get("x-shopify-event-id") or "").strip()
        or None,
        event_type=(headers.get("x-shopify-topic") or "").strip() or None,
    )


def verify_hmac(
    headers: Mapping[str, str], body: bytes, *, secrets: Sequence[str], scheme: HmacScheme
) -> Verified:
    """A generic HMAC of the body, as ``scheme`` describes it."""
    keys = _need_secrets(secrets)
    value = _header(headers, scheme.header.lower())
    if scheme.prefix:
        if not value.startswith(scheme.prefix):
            raise SignatureError(
                "malformed_signature", f"the signature must start with {scheme.prefix}"
            )
        value = value[len(scheme.prefix) :]
    given = _hex(value) if scheme.encoding == "hex" else _b64(value)
    if not _any_match([given], keys, body, _ALGORITHMS[scheme.algorithm]):
        raise SignatureError("no_matching_signature", "no matching signature")
    message_id = headers.get(scheme.id_header.lower()) if scheme.id_header else None
    return Verified(message_id=(message_id or "").strip() or None)


def verify_request(
    kind: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: Sequence[str] = (),
    public_keys: Sequence[str] = (),
    scheme: HmacScheme | None = None,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE,
) -> Verified:
    """Verify a request for a source of ``kind``; raise ``SignatureError`` (a 401)."""
    if kind == "standard":
        verify_standard(
            headers, body, secrets=secrets, public_keys=public_keys, now=now, tolerance=tolerance
        )
        return Verified(
            message_id=headers.get("webhook-id"),
            timestamp=int(headers["webhook-timestamp"].strip(" \t")),
        )
    if kind == "stripe":
        return verify_stripe(headers, body, secrets=secrets, now=now, tolerance=tolerance)
    if kind == "github":
        return verify_github(headers, body, secrets=secrets)
    if kind == "shopify":
        return verify_shopify(headers, body, secrets=secrets)
    if kind == "hmac":
        return verify_hmac(headers, body, secrets=secrets, scheme=scheme or HmacScheme())
    if kind == "none":
        return Verified()
    raise ConfigError(f"unknown source kind {kind!r}; one of {', '.join(SOURCE_KINDS)}")
