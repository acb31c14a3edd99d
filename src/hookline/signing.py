"""Standard Webhooks signatures: sign outbound deliveries, verify inbound ones.

Pure functions, no I/O; the caller passes ``now``. The signed content is
``{msg_id}.{timestamp}.{body}`` (https://www.standardwebhooks.com) and it travels in three
headers: ``webhook-id``, ``webhook-timestamp`` (integer unix seconds) and ``webhook-signature``,
a space-separated list of ``<version>,<base64 signature>``:

- ``v1``: HMAC-SHA256 keyed with a ``whsec_`` secret (``whsec_`` + standard base64 of 24..64
  random bytes). During rotation the old and the new secret both sign, so the header carries one
  ``v1`` signature per secret and the receiver accepts any of them.
- ``v1a``: ed25519 over the same content. Key encodings follow the Standard Webhooks reference
  implementation (Go, ``webhook_asymmetric.go``): ``whsk_`` + standard base64 of the 32-byte
  ed25519 seed (the private key) and ``whpk_`` + standard base64 of the 32-byte raw public key.
  ``whsk_`` values holding 64 bytes (seed followed by its public key, the libsodium layout) are
  read too, after checking that both halves belong together.

Unknown signature versions in a received header are skipped (forward compatibility). Errors:
``InvalidSecret`` (422) for a secret or key that cannot be decoded, ``SignatureError`` (401) for
a request that fails verification; its ``reason`` is a short code and its message never
contains a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hookline.errors import ConfigError, Unauthorized, ValidationFailed

__all__ = [
    "DEFAULT_TOLERANCE",
    "HEADER_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "MAX_SIGNATURES",
    "MAX_SIGNATURE_HEADER_LENGTH",
    "InvalidSecret",
    "SignatureError",
    "check_public_key",
    "decode_secret",
    "generate_ed25519_keypair",
    "generate_secret",
    "outbound_headers",
    "public_key_of",
    "sign_v1",
    "sign_v1a",
    "signature_header",
    "verify",
]

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

#: Seconds a timestamp may be away from ``now`` (either way) before it is refused.
DEFAULT_TOLERANCE = 300
#: Most signatures one header may carry, and its longest accepted length in characters.
MAX_SIGNATURES = 16
MAX_SIGNATURE_HEADER_LENGTH = 4096
#: Longest accepted ``webhook-id``.
MAX_MSG_ID_LENGTH = 256

SECRET_PREFIX = "whsec_"
PRIVATE_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
_SECRET_BYTES = 32  # what generate_secret draws; the spec asks for at least 24
_MIN_SECRET_BYTES = 24
_MAX_SECRET_BYTES = 64  # the spec's maximum: 512 bits
_ED25519_KEY_BYTES = 32

_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_MSG_ID = re.compile(rf"[\x21-\x2d\x2f-\x7e]{{1,{MAX_MSG_ID_LENGTH}}}")  # printable, no '.'
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_VERSION = re.compile(r"v[0-9]+[a-z]?")


class InvalidSecret(ValidationFailed):
    """A signing secret or key cannot be decoded (wrong prefix, bad base64, wrong length)."""


class SignatureError(Unauthorized):
    """A request failed signature verification; ``reason`` is a short code saying why.

    Codes: ``missing_headers``, ``malformed_timestamp``, ``malformed_id``,
    ``malformed_signature``, ``timestamp_too_old``, ``timestamp_too_new``,
    ``no_matching_signature``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64; the padding may be left off."""
    if not _B64.fullmatch(text):
        raise InvalidSecret(f"{what} is not base64", errors={what: "not base64"})
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret(f"{what} is not base64", errors={what: "not base64"}) from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _strip_prefix(value: object, prefix: str, what: str, others: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidSecret(f"{what} is empty or not text", errors={what: "empty"})
    value = value.strip()
    if value.startswith(prefix):
        return value[len(prefix) :]
    for other in others:
        if value.startswith(other):
            raise InvalidSecret(
                f"{what} must start with {prefix}, not {other}", errors={what: "wrong kind of key"}
            )
    return value


def generate_secret() -> str:
    """A new random HMAC secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + _b64(os.urandom(_SECRET_BYTES))


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_`` secret (the prefix is optional); ``InvalidSecret`` if bad."""
    raw = _b64decode(
        _strip_prefix(secret, SECRET_PREFIX, "secret", (PRIVATE_KEY_PREFIX, PUBLIC_KEY_PREFIX)),
        "secret",
    )
    if not _MIN_SECRET_BYTES <= len(raw) <= _MAX_SECRET_BYTES:
        raise InvalidSecret(
            f"secret must decode to {_MIN_SECRET_BYTES}..{_MAX_SECRET_BYTES} bytes, got {len(raw)}",
            errors={"secret": "wrong length"},
        )
    return raw


def _private_key(private_key: str) -> Ed25519PrivateKey:
    raw = _b64decode(
        _strip_prefix(
            private_key, PRIVATE_KEY_PREFIX, "signing_key", (SECRET_PREFIX, PUBLIC_KEY_PREFIX)
        ),
        "signing_key",
    )
    if len(raw) not in (_ED25519_KEY_BYTES, 2 * _ED25519_KEY_BYTES):
        raise InvalidSecret(
            f"signing key must decode to 32 bytes (or 64: seed and public key), got {len(raw)}",
            errors={"signing_key": "wrong length"},
        )
    key = Ed25519PrivateKey.from_private_bytes(raw[:_ED25519_KEY_BYTES])
    if len(raw) == 2 * _ED25519_KEY_BYTES and not hmac.compare_digest(
        raw[_ED25519_KEY_BYTES:], _public_bytes(key.public_key())
    ):
        raise InvalidSecret(
            "signing key's public half does not match its seed",
            errors={"signing_key": "inconsistent"},
        )
    return key


def _public_key(public_key: str) -> Ed25519PublicKey:
    raw = _b64decode(
        _strip_prefix(
            public_key, PUBLIC_KEY_PREFIX, "public_key", (SECRET_PREFIX, PRIVATE_KEY_PREFIX)
        ),
        "public_key",
    )
    if len(raw) != _ED25519_KEY_BYTES:
        raise InvalidSecret(
            f"public key must decode to 32 bytes, got {len(raw)}",
            errors={"public_key": "wrong length"},
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """``{msg_id}.{timestamp}.{body}`` after checking the parts (``ValidationFailed`` if bad)."""
    if not isinstance(msg_id, str) or not _MSG_ID.fullmatch(msg_id):
        raise ValidationFailed(
            "msg_id must be 1..256 printable ASCII characters without '.' or spaces",
            errors={"msg_id": "invalid"},
        )
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValidationFailed(
            "timestamp must be a non-negative integer", errors={"timestamp": "invalid"}
        )
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise ValidationFailed("body must be bytes", errors={"body": "not bytes"})
    return b"%s.%d.%s" % (msg_id.encode("ascii"), timestamp, bytes(body))


def sign_v1(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The symmetric signature ``v1,<base64 HMAC-SHA256(secret, msg_id.timestamp.body)>``."""
    key = decode_secret(secret)
    digest = hmac.new(key, _signed_content(msg_id, timestamp, body), hashlib.sha256).digest()
    return "v1," + _b64(digest)


def check_public_key(public_key: str) -> None:
    """Raise ``InvalidSecret`` unless ``public_key`` is a usable ``whpk_`` ed25519 key."""
    _public_key(public_key)


def generate_ed25519_keypair() -> tuple[str, str]:
    """A new ed25519 key pair ``(whsk_<base64 seed>, whpk_<base64 public key>)``."""
    key = Ed25519PrivateKey.generate()
    private = PRIVATE_KEY_PREFIX + _b64(key.private_bytes_raw())
    return private, PUBLIC_KEY_PREFIX + _b64(_public_bytes(key.public_key()))


def public_key_of(private_key: str) -> str:
    """The ``whpk_`` public key that verifies what the ``whsk_`` ``private_key`` signs."""
    return PUBLIC_KEY_PREFIX + _b64(_public_bytes(_private_key(private_key).public_key()))


def sign_v1a(private_key: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The asymmetric signature ``v1a,<base64 ed25519(private_key, msg_id.timestamp.body)>``."""
    key = _private_key(private_key)
    return "v1a," + _b64(key.sign(_signed_content(msg_id, timestamp, body)))


def signature_header(
    msg_id: str,
    timestamp: int,
    body: bytes,
    *,
    secrets: Sequence[str] = (),
    signing_keys: Sequence[str] = (),
) -> str:
    """The ``webhook-signature`` value: one ``v1`` per secret, then one ``v1a`` per ed25519 key.

    Pass the old and the new secret during a rotation. At least one secret or key is required
    and at most ``MAX_SIGNATURES`` in all (``ValidationFailed`` otherwise).
    """
    if isinstance(secrets, str) or isinstance(signing_keys, str):
        raise ValidationFailed(
            "secrets and signing_keys are sequences of strings, not one string",
            errors={"secrets": "not a sequence"},
        )
    count = len(secrets) + len(signing_keys)
    if count == 0:
        raise ValidationFailed(
            "nothing to sign with: pass at least one secret or signing key",
            errors={"secrets": "empty"},
        )
    if count > MAX_SIGNATURES:
        raise ValidationFailed(
            f"at most {MAX_SIGNATURES} signatures per message, got {count}",
            errors={"secrets": "too many"},
        )
    signatures = [sign_v1(secret, msg_id, timestamp, body) for secret in secrets]
    signatures += [sign_v1a(key, msg_id, timestamp, body) for key in signing_keys]
    return " ".join(signatures)


def outbound_headers(
    msg_id: str,
    timestamp: int,
    body: bytes,
    *,
    secrets: Sequence[str] = (),
    signing_keys: Sequence[str] = (),
) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt of ``body``."""
    signature = signature_header(
        msg_id, timestamp, body, secrets=secrets, signing_keys=signing_keys
    )
    return {HEADER_ID: msg_id, HEADER_TIMESTAMP: str(timestamp), HEADER_SIGNATURE: signature}


def _parse_signatures(header: str) -> list[tuple[str, str]]:
    if len(header) > MAX_SIGNATURE_HEADER_LENGTH:
        raise SignatureError("malformed_signature", "webhook-signature header is too long")
    entries = header.split()
    if len(entries) > MAX_SIGNATURES:
        raise SignatureError("malformed_signature", "webhook-signature has too many signatures")
    parsed = []
    for entry in entries:
        version, comma, value = entry.partition(",")
        if not comma or not _VERSION.fullmatch(version) or not value:
            raise SignatureError(
                "malformed_signature", "webhook-signature entries must be <version>,<signature>"
            )
        parsed.append((version, value))
    return parsed


def _signature_bytes(value: str) -> bytes:
    try:
        return _b64decode(value, "signature")
    except InvalidSecret:
        raise SignatureError("malformed_signature", "a signature is not base64") from None


def verify(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: Sequence[str] = (),
    public_keys: Sequence[str] = (),
    now: int,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Check a received message; return ``None`` when it is authentic, else ``SignatureError``.

    ``headers`` uses lower-case names. ``now`` is the current unix time in seconds; the message's
    timestamp may differ from it by at most ``tolerance`` seconds either way. Any ``v1`` signature
    made with one of ``secrets`` or ``v1a`` signature made with one of ``public_keys`` is enough;
    other versions are skipped. Verifying with no secret and no key is a ``ConfigError``, and a
    secret or key that cannot be decoded is ``InvalidSecret``: both are the receiver's mistakes.
    """
    if isinstance(secrets, str) or isinstance(public_keys, str):
        raise ConfigError("secrets and public_keys are sequences of strings, not one string")
    if not secrets and not public_keys:
        raise ConfigError("verify() needs at least one secret or public key")
    if tolerance < 0:
        raise ConfigError("tolerance must not be negative")
    hmac_keys = [decode_secret(secret) for secret in secrets]
    ed_keys = [_public_key(key) for key in public_keys]

    msg_id = headers.get(HEADER_ID) or ""
    raw_timestamp = headers.get(HEADER_TIMESTAMP) or ""
    raw_signature = headers.get(HEADER_SIGNATURE) or ""
    missing = [
        name
        for name, value in (
            (HEADER_ID, msg_id),
            (HEADER_TIMESTAMP, raw_timestamp),
            (HEADER_SIGNATURE, raw_signature),
        )
        if not value.strip()
    ]
    if missing:
        raise SignatureError("missing_headers", "missing header(s): " + ", ".join(missing))
    if not _MSG_ID.fullmatch(msg_id):
        raise SignatureError("malformed_id", "webhook-id is malformed")
    raw_timestamp = raw_timestamp.strip(" \t")  # str.strip() would also eat \x1c-\x1f
    if not _TIMESTAMP.fullmatch(raw_timestamp):
        raise SignatureError("malformed_timestamp", "webhook-timestamp must be unix seconds")
    timestamp = int(raw_timestamp)
    if now - timestamp > tolerance:
        raise SignatureError("timestamp_too_old", "webhook-timestamp is too old")
    if timestamp - now > tolerance:
        raise SignatureError("timestamp_too_new", "webhook-timestamp is in the future")
    signatures = _parse_signatures(raw_signature)
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise ValidationFailed("body must be bytes", errors={"body": "not bytes"})
    content = _signed_content(msg_id, timestamp, bytes(body))

    expected = [hmac.new(key, content, hashlib.sha256).digest() for key in hmac_keys]
    matched = False
    for version, value in signatures:
        if version == "v1" and expected:
            given = _signature_bytes(value)
            # compare with every key, without stopping early, in constant time per key
            for digest in expected:
                matched |= hmac.compare_digest(given, digest)
        elif version == "v1a" and ed_keys:
            given = _signature_bytes(value)
            for key in ed_keys:
                try:
                    key.verify(given, content)
                except InvalidSignature:
                    continue
                matched = True
    if not matched:
        raise SignatureError("no_matching_signature", "no matching signature")
