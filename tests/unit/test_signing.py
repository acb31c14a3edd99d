"""Standard Webhooks signing and verification (``hookline.signing``).

Known answers come from the specification's reference libraries: the PyPI ``standardwebhooks``
package (computed live, plus the published vector its test suite uses) and the reference Go
implementation's ed25519 vector. Everything we sign must also pass the official verifier.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookline.errors import ConfigError, Unauthorized, ValidationFailed
from hookline.signing import (
    DEFAULT_TOLERANCE,
    MAX_SIGNATURE_HEADER_LENGTH,
    MAX_SIGNATURES,
    InvalidSecret,
    SignatureError,
    decode_secret,
    generate_ed25519_keypair,
    generate_secret,
    outbound_headers,
    public_key_of,
    sign_v1,
    sign_v1a,
    signature_header,
    verify,
)

NOW = 1_700_000_000
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
BODY = b'{"type":"order.created","timestamp":"2026-01-02T03:04:05Z","data":{"id":"ord_1"}}'
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()

# Published vector of the Standard Webhooks / Svix libraries (PyPI standardwebhooks test suite).
SPEC_SECRET = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_V1 = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# Reference Go implementation, libraries/go/webhook_asymmetric_test.go (TestAsymmetricWebhookSign):
# whsk_ holds the base64 of the 32-byte ed25519 seed.
SPEC_ED25519_SEED = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk="
SPEC_V1A = (
    "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="
)


def _headers(msg_id: str = MSG_ID, ts: int = NOW, body: bytes = BODY, **keys) -> dict[str, str]:
    keys.setdefault("secrets", [SECRET])
    return outbound_headers(msg_id, ts, body, **keys)


def _official_verify(secret: str, body: bytes, headers: dict[str, str]) -> None:
    standardwebhooks.Webhook(secret).verify(body, headers, json_parse=False)


# ---------------------------------------------------------------- known answers


@pytest.mark.parametrize(
    ("secret", "prefix"),
    [(SPEC_SECRET, ""), (SPEC_SECRET, "whsec_")],
    ids=["bare", "prefixed"],
)
def test_published_v1_vector(secret, prefix):
    assert sign_v1(prefix + secret, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_V1


@pytest.mark.parametrize("prefix", ["", "whsk_"])
def test_reference_v1a_vector(prefix):
    private = prefix + SPEC_ED25519_SEED
    assert sign_v1a(private, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_V1A


@pytest.mark.parametrize(
    ("secret", "msg_id", "ts", "body"),
    [
        (SPEC_SECRET, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY.decode()),
        (SECRET, MSG_ID, NOW, BODY.decode()),
        (OTHER_SECRET, "evt_01JD3Z", 0, ""),
        ("whsec_" + base64.b64encode(b"k" * 64).decode(), "x", 1, '{"name":"Grüße, 世界"}'),
        (generate_secret(), "msg_1", 4_102_444_800, "line one\nline two\r\n"),
    ],
    ids=["spec", "32-byte", "empty-body", "64-byte-unicode", "random-secret-newlines"],
)
def test_sign_v1_matches_official_library_byte_for_byte(secret, msg_id, ts, body):
    official = standardwebhooks.Webhook(secret).sign(
        msg_id, datetime.fromtimestamp(ts, tz=UTC), body
    )
    assert sign_v1(secret, msg_id, ts, body.encode("utf-8")) == official


# ---------------------------------------------------------------- interop with the official lib


@pytest.mark.parametrize(
    ("signers", "verifiers"),
    [
        ({"secrets": [SECRET]}, [SECRET]),
        ({"secrets": [SECRET, OTHER_SECRET]}, [SECRET, OTHER_SECRET]),
        ({"secrets": [OTHER_SECRET], "signing_keys": [SPEC_ED25519_SEED]}, [OTHER_SECRET]),
    ],
    ids=["one-secret", "rotation", "with-v1a"],
)
def test_official_library_verifies_our_headers(signers, verifiers):
    now = int(time.time())
    headers = outbound_headers(MSG_ID, now, BODY, **signers)
    for secret in verifiers:
        _official_verify(secret, BODY, headers)
        verify(headers, BODY, secrets=[secret], now=now)


def test_official_library_rejects_our_headers_with_tampered_body_or_wrong_secret():
    now = int(time.time())
    headers = outbound_headers(MSG_ID, now, BODY, secrets=[SECRET])
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        _official_verify(SECRET, BODY + b" ", headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        _official_verify(OTHER_SECRET, BODY, headers)


def test_we_verify_what_the_official_library_signs():
    now = int(time.time())
    signature = standardwebhooks.Webhook(SECRET).sign(
        MSG_ID, datetime.fromtimestamp(now, tz=UTC), BODY.decode()
    )
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(now), "webhook-signature": signature}
    verify(headers, BODY, secrets=[SECRET], now=now)
    with pytest.raises(SignatureError):
        verify(headers, BODY, secrets=[OTHER_SECRET], now=now)


# ---------------------------------------------------------------- headers and rotation


def test_outbound_headers_shape():
    headers = _headers(secrets=[SECRET, OTHER_SECRET], signing_keys=[SPEC_ED25519_SEED])
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == MSG_ID
    assert headers["webhook-timestamp"] == str(NOW)
    parts = headers["webhook-signature"].split(" ")
    assert parts == [
        sign_v1(SECRET, MSG_ID, NOW, BODY),
        sign_v1(OTHER_SECRET, MSG_ID, NOW, BODY),
        sign_v1a(SPEC_ED25519_SEED, MSG_ID, NOW, BODY),
    ]


def test_rotation_header_carries_two_v1_signatures_and_either_secret_verifies():
    header = signature_header(MSG_ID, NOW, BODY, secrets=[SECRET, OTHER_SECRET])
    versions = [part.split(",", 1)[0] for part in header.split(" ")]
    assert versions == ["v1", "v1"]
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(NOW), "webhook-signature": header}
    verify(headers, BODY, secrets=[SECRET], now=NOW)
    verify(headers, BODY, secrets=[OTHER_SECRET], now=NOW)
    with pytest.raises(SignatureError) as info:
        verify(headers, BODY, secrets=[generate_secret()], now=NOW)
    assert info.value.reason == "no_matching_signature"


def test_receiver_mid_rotation_accepts_old_sender():
    headers = _headers(secrets=[SECRET])
    verify(headers, BODY, secrets=[OTHER_SECRET, SECRET], now=NOW)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "secrets"),
        ({"secrets": [SECRET] * (MAX_SIGNATURES + 1)}, "secrets"),
        ({"secrets": SECRET}, "secrets"),
    ],
    ids=["nothing-to-sign-with", "too-many", "string-not-list"],
)
def test_signature_header_refuses_bad_key_lists(kwargs, field):
    with pytest.raises(ValidationFailed) as info:
        signature_header(MSG_ID, NOW, BODY, **kwargs)
    assert field in info.value.errors


@pytest.mark.parametrize(
    ("msg_id", "ts", "body", "field"),
    [
        ("", NOW, BODY, "msg_id"),
        ("msg.1", NOW, BODY, "msg_id"),
        ("msg 1", NOW, BODY, "msg_id"),
        ("msg_é", NOW, BODY, "msg_id"),
        ("m" * 257, NOW, BODY, "msg_id"),
        (MSG_ID, -1, BODY, "timestamp"),
        (MSG_ID, 1.5, BODY, "timestamp"),
        (MSG_ID, True, BODY, "timestamp"),
        (MSG_ID, NOW, "text", "body"),
    ],
)
def test_signing_refuses_malformed_parts(msg_id, ts, body, field):
    with pytest.raises(ValidationFailed) as info:
        sign_v1(SECRET, msg_id, ts, body)
    assert field in info.value.errors


# ---------------------------------------------------------------- verification failures


def _replace(headers: dict[str, str], **changes: str | None) -> dict[str, str]:
    out = dict(headers)
    for name, value in changes.items():
        key = name.replace("_", "-")
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


GOOD = _headers()
GOOD_SIG = GOOD["webhook-signature"]


@pytest.mark.parametrize(
    ("headers", "body", "secret", "now", "reason"),
    [
        (GOOD, BODY + b"x", SECRET, NOW, "no_matching_signature"),
        (GOOD, BODY.replace(b"ord_1", b"ord_2"), SECRET, NOW, "no_matching_signature"),
        (GOOD, b"", SECRET, NOW, "no_matching_signature"),
        (GOOD, BODY, OTHER_SECRET, NOW, "no_matching_signature"),
        (_replace(GOOD, webhook_id="msg_other"), BODY, SECRET, NOW, "no_matching_signature"),
        (
            _replace(GOOD, webhook_timestamp=str(NOW + 1)),
            BODY,
            SECRET,
            NOW,
            "no_matching_signature",
        ),
        (GOOD, BODY, SECRET, NOW + DEFAULT_TOLERANCE + 1, "timestamp_too_old"),
        (GOOD, BODY, SECRET, NOW - DEFAULT_TOLERANCE - 1, "timestamp_too_new"),
        (_replace(GOOD, webhook_id=None), BODY, SECRET, NOW, "missing_headers"),
        (_replace(GOOD, webhook_timestamp=None), BODY, SECRET, NOW, "missing_headers"),
        (_replace(GOOD, webhook_signature=None), BODY, SECRET, NOW, "missing_headers"),
        (_replace(GOOD, webhook_signature="  "), BODY, SECRET, NOW, "missing_headers"),
        ({}, BODY, SECRET, NOW, "missing_headers"),
        (_replace(GOOD, webhook_id="msg.1"), BODY, SECRET, NOW, "malformed_id"),
        (_replace(GOOD, webhook_timestamp="abc"), BODY, SECRET, NOW, "malformed_timestamp"),
        (_replace(GOOD, webhook_timestamp="-5"), BODY, SECRET, NOW, "malformed_timestamp"),
        (_replace(GOOD, webhook_timestamp="1.7e9"), BODY, SECRET, NOW, "malformed_timestamp"),
        (_replace(GOOD, webhook_timestamp="1" * 16), BODY, SECRET, NOW, "malformed_timestamp"),
        (_replace(GOOD, webhook_timestamp="١٢٣"), BODY, SECRET, NOW, "malformed_timestamp"),
        (_replace(GOOD, webhook_signature="v1"), BODY, SECRET, NOW, "malformed_signature"),
        (_replace(GOOD, webhook_signature="v1,"), BODY, SECRET, NOW, "malformed_signature"),
        (
            _replace(GOOD, webhook_signature="," + GOOD_SIG[3:]),
            BODY,
            SECRET,
            NOW,
            "malformed_signature",
        ),
        (
            _replace(GOOD, webhook_signature=GOOD_SIG.replace("v1,", "sha256=")),
            BODY,
            SECRET,
            NOW,
            "malformed_signature",
        ),
        (
            _replace(GOOD, webhook_signature="v1,not*base64!"),
            BODY,
            SECRET,
            NOW,
            "malformed_signature",
        ),
        (
            _replace(GOOD, webhook_signature=" ".join([GOOD_SIG] * (MAX_SIGNATURES + 1))),
            BODY,
            SECRET,
            NOW,
            "malformed_signature",
        ),
        (
            _replace(GOOD, webhook_signature=GOOD_SIG + " v2," + "A" * MAX_SIGNATURE_HEADER_LENGTH),
            BODY,
            SECRET,
            NOW,
            "malformed_signature",
        ),
        (
            _replace(GOOD, webhook_signature="v2," + GOOD_SIG[3:]),
            BODY,
            SECRET,
            NOW,
            "no_matching_signature",
        ),
        (
            _replace(GOOD, webhook_signature="v1a," + GOOD_SIG[3:]),
            BODY,
            SECRET,
            NOW,
            "no_matching_signature",
        ),
        (
            _replace(GOOD, webhook_signature="v1," + GOOD_SIG[3:-4] + "AAA="),
            BODY,
            SECRET,
            NOW,
            "no_matching_signature",
        ),
    ],
)
def test_verify_refuses(headers, body, secret, now, reason):
    with pytest.raises(SignatureError) as info:
        verify(headers, body, secrets=[secret], now=now)
    error = info.value
    assert error.reason == reason
    assert isinstance(error, Unauthorized)
    assert error.status == 401
    # the reason is safe to show: it names no secret, in any encoding
    text = str(error) + repr(error.as_dict())
    for secret_text in (SECRET, SECRET[6:], OTHER_SECRET[6:]):
        assert secret_text not in text


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (0, True),
        (DEFAULT_TOLERANCE, True),
        (-DEFAULT_TOLERANCE, True),
        (DEFAULT_TOLERANCE + 1, False),
        (-DEFAULT_TOLERANCE - 1, False),
    ],
)
def test_tolerance_boundaries(offset, ok):
    now = NOW + offset
    if ok:
        verify(GOOD, BODY, secrets=[SECRET], now=now)
    else:
        with pytest.raises(SignatureError):
            verify(GOOD, BODY, secrets=[SECRET], now=now)


def test_custom_tolerance():
    verify(GOOD, BODY, secrets=[SECRET], now=NOW + 3600, tolerance=3600)
    with pytest.raises(SignatureError):
        verify(GOOD, BODY, secrets=[SECRET], now=NOW + 11, tolerance=10)


def test_unknown_versions_are_skipped_next_to_a_good_signature():
    headers = _replace(GOOD, webhook_signature="v2,AAAA v1a,AAAA " + GOOD_SIG)
    verify(headers, BODY, secrets=[SECRET], now=NOW)


def test_extra_spaces_between_signatures_are_tolerated():
    header = signature_header(MSG_ID, NOW, BODY, secrets=[OTHER_SECRET, SECRET])
    verify(
        _replace(GOOD, webhook_signature="  " + header.replace(" ", "   ") + " "),
        BODY,
        secrets=[SECRET],
        now=NOW,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"secrets": [], "public_keys": []},
        {"secrets": SECRET},
        {"secrets": [SECRET], "tolerance": -1},
    ],
    ids=["nothing", "empty-lists", "string-not-list", "negative-tolerance"],
)
def test_verify_without_usable_configuration_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        verify(GOOD, BODY, now=NOW, **kwargs)


def test_verify_with_an_undecodable_secret_raises_invalid_secret():
    with pytest.raises(InvalidSecret):
        verify(GOOD, BODY, secrets=["whsec_***"], now=NOW)


# ---------------------------------------------------------------- secrets


def test_generate_secret_format_and_randomness():
    secrets = {generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(decode_secret(secret)) == 32
        assert base64.b64decode(secret[6:], validate=True) == decode_secret(secret)


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        (SECRET, bytes(range(32))),
        (SECRET[6:], bytes(range(32))),
        (f" {SECRET}\n", bytes(range(32))),
        ("whsec_" + SPEC_SECRET, base64.b64decode(SPEC_SECRET)),
        ("whsec_" + base64.b64encode(b"z" * 25).decode().rstrip("="), b"z" * 25),
    ],
    ids=["prefixed", "bare", "surrounding-space", "24-bytes", "unpadded"],
)
def test_decode_secret_accepts(secret, expected):
    assert decode_secret(secret) == expected


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "   ",
        "whsec_",
        "whsec_***notbase64***",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_" + base64.b64encode(b"x" * 23).decode(),
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
        "whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),
        "whsec_" + base64.b64encode(b"x" * 32).decode() + "===",
        "whsk_" + SPEC_ED25519_SEED,
        "whpk_" + SPEC_ED25519_SEED,
        None,
        b"whsec_AAAA",
    ],
)
def test_decode_secret_refuses(secret):
    with pytest.raises(InvalidSecret) as info:
        decode_secret(secret)
    assert isinstance(info.value, ValidationFailed)
    assert info.value.status == 422
    assert "secret" in info.value.errors


def test_invalid_secret_message_does_not_echo_the_secret():
    bad = "whsec_" + base64.b64encode(b"super-secret-but-short").decode()
    with pytest.raises(InvalidSecret) as info:
        decode_secret(bad)
    assert bad[6:] not in str(info.value)


# ---------------------------------------------------------------- ed25519


def test_keypair_format_and_public_key_of():
    private, public = generate_ed25519_keypair()
    assert private.startswith("whsk_")
    assert public.startswith("whpk_")
    assert len(base64.b64decode(private[5:], validate=True)) == 32
    assert len(base64.b64decode(public[5:], validate=True)) == 32
    assert public_key_of(private) == public
    assert generate_ed25519_keypair() != (private, public)


def test_ed25519_roundtrip_and_tampering():
    private, public = generate_ed25519_keypair()
    headers = _headers(secrets=[], signing_keys=[private])
    assert headers["webhook-signature"].startswith("v1a,")
    verify(headers, BODY, public_keys=[public], now=NOW)
    verify(headers, BODY, public_keys=[generate_ed25519_keypair()[1], public], now=NOW)
    for body, keys, changes in [
        (BODY + b"\n", [public], {}),
        (BODY, [generate_ed25519_keypair()[1]], {}),
        (BODY, [public], {"webhook_id": "msg_other"}),
        (BODY, [public], {"webhook_timestamp": str(NOW - 1)}),
    ]:
        with pytest.raises(SignatureError) as info:
            verify(_replace(headers, **changes), body, public_keys=keys, now=NOW)
        assert info.value.reason == "no_matching_signature"


def test_v1a_signature_with_flipped_bit_is_rejected():
    private, public = generate_ed25519_keypair()
    signature = base64.b64decode(sign_v1a(private, MSG_ID, NOW, BODY)[4:])
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    headers = _replace(GOOD, webhook_signature="v1a," + base64.b64encode(flipped).decode())
    with pytest.raises(SignatureError):
        verify(headers, BODY, public_keys=[public], now=NOW)


def test_mixed_header_verifies_with_either_kind_of_key():
    private, public = generate_ed25519_keypair()
    headers = _headers(secrets=[SECRET], signing_keys=[private])
    verify(headers, BODY, secrets=[SECRET], now=NOW)
    verify(headers, BODY, public_keys=[public], now=NOW)
    # a v1 signature never satisfies a public key and a v1a never satisfies a secret
    with pytest.raises(SignatureError):
        verify(_headers(secrets=[SECRET]), BODY, public_keys=[public], now=NOW)
    with pytest.raises(SignatureError):
        verify(_headers(secrets=[], signing_keys=[private]), BODY, secrets=[SECRET], now=NOW)


def test_sixty_four_byte_private_keys_are_read_when_consistent():
    private, public = generate_ed25519_keypair()
    seed = base64.b64decode(private[5:])
    pub = base64.b64decode(public[5:])
    long_form = "whsk_" + base64.b64encode(seed + pub).decode()
    assert public_key_of(long_form) == public
    assert sign_v1a(long_form, MSG_ID, NOW, BODY) == sign_v1a(private, MSG_ID, NOW, BODY)
    mismatched = "whsk_" + base64.b64encode(seed + bytes(32)).decode()
    with pytest.raises(InvalidSecret):
        sign_v1a(mismatched, MSG_ID, NOW, BODY)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "whsk_",
        "whsk_***",
        "whsk_" + base64.b64encode(b"x" * 31).decode(),
        "whsk_" + base64.b64encode(b"x" * 48).decode(),
        "whpk_" + SPEC_ED25519_SEED,
        "whsec_" + SPEC_ED25519_SEED,
    ],
)
def test_bad_private_keys_are_invalid_secret(key):
    with pytest.raises(InvalidSecret):
        sign_v1a(key, MSG_ID, NOW, BODY)
    with pytest.raises(InvalidSecret):
        public_key_of(key)


@pytest.mark.parametrize(
    "key",
    [
        "whpk_",
        "whpk_" + base64.b64encode(b"x" * 33).decode(),
        "whsk_" + SPEC_ED25519_SEED,
        "whpk_%%%",
    ],
)
def test_bad_public_keys_are_invalid_secret(key):
    with pytest.raises(InvalidSecret):
        verify(GOOD, BODY, public_keys=[key], now=NOW)


# ---------------------------------------------------------------- properties

MSG_IDS = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="."),
    min_size=1,
    max_size=256,
)
TIMESTAMPS = st.integers(min_value=0, max_value=10**12)


@settings(database=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=4096), msg_id=MSG_IDS, ts=TIMESTAMPS)
def test_property_verify_accepts_what_we_sign(body, msg_id, ts):
    headers = outbound_headers(msg_id, ts, body, secrets=[SECRET, OTHER_SECRET])
    verify(headers, body, secrets=[OTHER_SECRET], now=ts)
    verify(headers, body, secrets=[SECRET], now=ts)


@settings(database=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=1024), msg_id=MSG_IDS, ts=TIMESTAMPS)
def test_property_ed25519_verify_accepts_what_we_sign(body, msg_id, ts):
    headers = outbound_headers(msg_id, ts, body, signing_keys=[SPEC_ED25519_SEED])
    verify(headers, body, public_keys=[public_key_of(SPEC_ED25519_SEED)], now=ts)


@settings(database=None, max_examples=200)
@given(body=st.binary(min_size=1, max_size=1024), data=st.data())
def test_property_any_changed_byte_is_rejected(body, data):
    headers = outbound_headers(MSG_ID, NOW, body, secrets=[SECRET])
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    delta = data.draw(st.integers(min_value=1, max_value=255))
    tampered = body[:index] + bytes([(body[index] + delta) % 256]) + body[index + 1 :]
    with pytest.raises(SignatureError):
        verify(headers, tampered, secrets=[SECRET], now=NOW)


@settings(database=None, max_examples=100)
@given(text=st.text(st.characters(exclude_categories=("Cs",)), max_size=512), msg_id=MSG_IDS)
def test_property_official_library_accepts_what_we_sign(text, msg_id):
    now = int(time.time())
    body = text.encode("utf-8")
    headers = outbound_headers(msg_id, now, body, secrets=[SECRET])
    _official_verify(SECRET, body, headers)
