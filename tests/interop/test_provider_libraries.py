"""The providers' own libraries sign what ``hookline.verifiers`` accepts.

- Stripe: the official ``stripe`` Python library (dev/test dependency, pinned at 16.1.0) makes
  ``Stripe-Signature`` headers with its own code (``WebhookSignature.generate_signature_header``
  and ``_compute_signature``); ``verify_stripe`` must accept them and refuse tampered, wrong-key
  and stale ones. The library's ``WebhookSignature.verify_header`` must accept a header built here
  from Stripe's documented recipe, so the recipe the unit tests rely on is the real one.
- GitHub: npm ``@octokit/webhooks-methods`` ``sign(secret, payload)``, run by node, installed into
  ``.cache/npm-interop-octokit/`` (override with ``HOOKLINE_NPM_OCTOKIT_DIR``).
- Standard Webhooks: PyPI ``standardwebhooks.Webhook(secret).sign(...)``.

Without ``stripe``, ``node`` or ``npm`` the affected tests are skipped locally and fail when
``CI=true``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import standardwebhooks

from hookline.signing import DEFAULT_TOLERANCE, SignatureError
from hookline.verifiers import Verified, verify_github, verify_request, verify_stripe
from npm_packages import npm_modules, run_node, unavailable

pytestmark = pytest.mark.interop

STRIPE_VERSION = "16.1.0"
OCTOKIT_PACKAGE = "@octokit/webhooks-methods"
OCTOKIT_VERSION = "6.0.0"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OCTOKIT_DIR = REPO_ROOT / ".cache" / "npm-interop-octokit"

NOW = 1_700_000_000
PAYLOADS = {
    "ascii": '{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}',
    "unicode": '{"id":"evt_2","object":"event","data":{"note":"Grüße, 世界 🔑"}}',
    "spaces-and-newlines": '{\n  "id": "evt_3",\n  "object": "event"\n}\n',
    "one-char": "x",
}
SECRET = "whsec_test_5f2b9c1e8d7a6b4c3e2f1a0b"
OLD_SECRET = "whsec_test_old_0a1b2c3d4e5f6a7b8c9d"
OTHER_SECRET = "whsec_test_other_ffffffffffffffffffff"


def _refused(call, reason: str) -> None:
    with pytest.raises(SignatureError) as info:
        call()
    assert type(info.value) is SignatureError
    assert info.value.reason == reason, info.value.reason
    for secret in (SECRET, OLD_SECRET, OTHER_SECRET):
        assert secret not in str(info.value)


# --- Stripe ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stripe_lib():
    """The ``stripe`` package at the pinned version (signing helpers are version-specific)."""
    try:
        import stripe
    except ImportError:
        unavailable(f"pip install stripe=={STRIPE_VERSION}")
    if stripe.VERSION != STRIPE_VERSION:
        unavailable(f"stripe {stripe.VERSION} installed, these tests pin {STRIPE_VERSION}")
    return stripe


def _stripe_documented_header(secret: str, ts: int, payload: str) -> str:
    """Stripe's documented recipe: ``t=<ts>,v1=<hex HMAC-SHA256(secret, "<ts>.<payload>")>``."""
    digest = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_stripe_library_header_is_accepted(stripe_lib, name):
    payload = PAYLOADS[name]
    header = stripe_lib.WebhookSignature.generate_signature_header(payload, SECRET, timestamp=NOW)
    assert header.startswith(f"t={NOW},v1=")
    result = verify_stripe(
        {"stripe-signature": header}, payload.encode(), secrets=[SECRET], now=NOW
    )
    assert result == Verified(timestamp=NOW)
    via_dispatch = verify_request(
        "stripe", {"stripe-signature": header}, payload.encode(), secrets=[SECRET], now=NOW
    )
    assert via_dispatch == result


def test_stripe_library_header_with_default_timestamp_is_accepted_now(stripe_lib):
    payload = PAYLOADS["ascii"]
    header = stripe_lib.WebhookSignature.generate_signature_header(payload, SECRET)
    now = int(time.time())
    result = verify_stripe(
        {"stripe-signature": header}, payload.encode(), secrets=[SECRET], now=now
    )
    assert result.timestamp is not None
    assert abs(result.timestamp - now) <= 5


def test_stripe_library_rotation_header_two_v1_signatures(stripe_lib):
    """During a secret roll Stripe sends one ``v1`` per active secret."""
    payload = PAYLOADS["unicode"]
    compute = stripe_lib.WebhookSignature._compute_signature
    signed = f"{NOW}.{payload}"
    header = f"t={NOW},v1={compute(signed, OLD_SECRET)},v1={compute(signed, SECRET)}"
    body = payload.encode()
    for secrets in ([SECRET], [OLD_SECRET], [OLD_SECRET, SECRET]):
        assert verify_stripe({"stripe-signature": header}, body, secrets=secrets, now=NOW)
    _refused(
        lambda: verify_stripe({"stripe-signature": header}, body, secrets=[OTHER_SECRET], now=NOW),
        "no_matching_signature",
    )


def test_stripe_library_header_tampered_body_is_refused(stripe_lib):
    payload = PAYLOADS["ascii"]
    header = stripe_lib.WebhookSignature.generate_signature_header(payload, SECRET, timestamp=NOW)
    tampered = payload.replace("evt_1", "evt_9").encode()
    _refused(
        lambda: verify_stripe({"stripe-signature": header}, tampered, secrets=[SECRET], now=NOW),
        "no_matching_signature",
    )


def test_stripe_library_header_wrong_secret_is_refused(stripe_lib):
    payload = PAYLOADS["ascii"]
    header = stripe_lib.WebhookSignature.generate_signature_header(payload, SECRET, timestamp=NOW)
    _refused(
        lambda: verify_stripe(
            {"stripe-signature": header}, payload.encode(), secrets=[OTHER_SECRET], now=NOW
        ),
        "no_matching_signature",
    )


def test_stripe_library_header_tampered_timestamp_is_refused(stripe_lib):
    payload = PAYLOADS["ascii"]
    header = stripe_lib.WebhookSignature.generate_signature_header(
        payload, SECRET, timestamp=NOW - 1000
    )
    replayed = header.replace(f"t={NOW - 1000}", f"t={NOW}")
    assert replayed != header
    _refused(
        lambda: verify_stripe(
            {"stripe-signature": replayed}, payload.encode(), secrets=[SECRET], now=NOW
        ),
        "no_matching_signature",
    )


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (-DEFAULT_TOLERANCE, None),
        (-DEFAULT_TOLERANCE - 1, "timestamp_too_old"),
        (-3600, "timestamp_too_old"),
        (DEFAULT_TOLERANCE, None),
        (DEFAULT_TOLERANCE + 1, "timestamp_too_new"),
    ],
)
def test_stripe_library_header_timestamp_tolerance(stripe_lib, offset, reason):
    payload = PAYLOADS["ascii"]
    ts = NOW + offset
    header = stripe_lib.WebhookSignature.generate_signature_header(payload, SECRET, timestamp=ts)
    call = lambda: verify_stripe(  # noqa: E731
        {"stripe-signature": header}, payload.encode(), secrets=[SECRET], now=NOW
    )
    if reason is None:
        assert call().timestamp == ts
    else:
        _refused(call, reason)


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_stripe_library_verifies_the_documented_recipe(stripe_lib, name):
    """Our tests' independent recipe is what Stripe's own verifier accepts."""
    payload = PAYLOADS[name]
    ts = int(time.time())
    header = _stripe_documented_header(SECRET, ts, payload)
    assert stripe_lib.WebhookSignature.verify_header(payload.encode(), header, SECRET, 300)
    assert verify_stripe({"stripe-signature": header}, payload.encode(), secrets=[SECRET], now=ts)
    # ... and it is the same header the library makes
    assert header == stripe_lib.WebhookSignature.generate_signature_header(
        payload, SECRET, timestamp=ts
    )


@pytest.mark.parametrize(
    "mutation", ["tampered-body", "wrong-secret", "stale", "other-scheme-only"]
)
def test_stripe_library_and_ours_refuse_the_same_bad_headers(stripe_lib, mutation):
    payload = PAYLOADS["ascii"]
    now = int(time.time())
    body, secret, ts = payload, SECRET, now
    if mutation == "tampered-body":
        body = payload + " "
    elif mutation == "wrong-secret":
        secret = OTHER_SECRET
    elif mutation == "stale":
        ts = now - 3600
    header = _stripe_documented_header(SECRET, ts, payload)
    if mutation == "other-scheme-only":
        header = header.replace(",v1=", ",v0=")
    with pytest.raises(stripe_lib.SignatureVerificationError):
        stripe_lib.WebhookSignature.verify_header(body.encode(), header, secret, 300)
    with pytest.raises(SignatureError):
        verify_stripe({"stripe-signature": header}, body.encode(), secrets=[secret], now=now)


# --- GitHub (@octokit/webhooks-methods) ------------------------------------------------------

OCTOKIT_SCRIPT = r"""
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
const [modulesDir, casesFile] = process.argv.slice(2);
const entry = path.join(modulesDir, "@octokit", "webhooks-methods", "dist-node", "index.js");
const { sign } = await import(pathToFileURL(entry).href);
const cases = JSON.parse(fs.readFileSync(casesFile, "utf8"));
const results = {};
for (const c of cases) {
  const payload = Buffer.from(c.payload_b64, "base64").toString("utf8");
  try {
    const signature = await sign(c.secret, payload);
    results[c.name] = { ok: true, signature, version: sign.VERSION };
  } catch (err) {
    results[c.name] = { ok: false, error: String(err && err.message) };
  }
}
process.stdout.write(JSON.stringify(results));
"""


@pytest.fixture(scope="session")
def octokit_modules() -> Path:
    """``node_modules`` holding ``@octokit/webhooks-methods@6.0.0``, installed on first use."""
    return npm_modules(
        OCTOKIT_PACKAGE,
        OCTOKIT_VERSION,
        env_var="HOOKLINE_NPM_OCTOKIT_DIR",
        default_dir=DEFAULT_OCTOKIT_DIR,
    )


GITHUB_SECRETS = {
    "plain": "It's a Secret to Everybody",
    "unicode": "geheim-Grüße-🔑",
    "long": "s" * 200,
}


@pytest.fixture(scope="module")
def octokit(octokit_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One node run: octokit signs every (secret, payload) pair."""
    cases = []
    for secret_name, secret in GITHUB_SECRETS.items():
        for payload_name, payload in PAYLOADS.items():
            cases.append(
                {
                    "name": f"sign/{secret_name}/{payload_name}",
                    "secret": secret,
                    "payload_b64": base64.b64encode(payload.encode()).decode(),
                }
            )
    # GitHub's documented example (docs: "Validating webhook deliveries")
    cases.append(
        {
            "name": "sign/docs-example",
            "secret": "It's a Secret to Everybody",
            "payload_b64": base64.b64encode(b"Hello, World!").decode(),
        }
    )
    workdir = tmp_path_factory.mktemp("octokit")
    return run_node(OCTOKIT_SCRIPT, "octokit.mjs", octokit_modules, workdir, cases)


def test_octokit_is_the_pinned_version(octokit):
    assert octokit["sign/docs-example"]["version"] == OCTOKIT_VERSION


def test_octokit_signs_githubs_documented_example(octokit):
    # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    assert octokit["sign/docs-example"]["signature"] == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )
    headers = {"x-hub-signature-256": octokit["sign/docs-example"]["signature"]}
    assert verify_github(headers, b"Hello, World!", secrets=["It's a Secret to Everybody"])


@pytest.mark.parametrize("secret_name", list(GITHUB_SECRETS))
@pytest.mark.parametrize("payload_name", list(PAYLOADS))
def test_octokit_signature_is_accepted(octokit, secret_name, payload_name):
    result = octokit[f"sign/{secret_name}/{payload_name}"]
    assert result["ok"], result
    signature = result["signature"]
    assert signature.startswith("sha256=")
    headers = {
        "x-hub-signature-256": signature,
        "x-github-delivery": "d-1",
        "x-github-event": "push",
    }
    body = PAYLOADS[payload_name].encode()
    secret = GITHUB_SECRETS[secret_name]
    assert verify_github(headers, body, secrets=[secret]) == Verified(
        message_id="d-1", event_type="push"
    )
    assert verify_request("github", headers, body, secrets=["rotated-out", secret], now=NOW)


@pytest.mark.parametrize("secret_name", list(GITHUB_SECRETS))
@pytest.mark.parametrize("payload_name", list(PAYLOADS))
def test_octokit_signature_tampered_is_refused(octokit, secret_name, payload_name):
    signature = octokit[f"sign/{secret_name}/{payload_name}"]["signature"]
    body = PAYLOADS[payload_name].encode()
    secret = GITHUB_SECRETS[secret_name]
    headers = {"x-hub-signature-256": signature}
    _refused(
        lambda: verify_github(headers, body + b"\n", secrets=[secret]), "no_matching_signature"
    )
    _refused(lambda: verify_github(headers, body, secrets=[secret + "x"]), "no_matching_signature")
    digest = signature.removeprefix("sha256=")
    flipped = digest[:10] + ("1" if digest[10] == "0" else "0") + digest[11:]
    _refused(
        lambda: verify_github({"x-hub-signature-256": "sha256=" + flipped}, body, secrets=[secret]),
        "no_matching_signature",
    )
    _refused(
        lambda: verify_github({"x-hub-signature-256": digest}, body, secrets=[secret]),
        "malformed_signature",
    )


# --- Standard Webhooks (PyPI standardwebhooks) -----------------------------------------------

STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STANDARD_OTHER = "whsec_" + base64.b64encode(b"another-secret-of-24-bytes!!").decode()


def _standard_headers(secret: str, msg_id: str, ts: int, payload: str) -> dict[str, str]:
    when = datetime.fromtimestamp(ts, tz=UTC)
    signature = standardwebhooks.Webhook(secret).sign(msg_id, when, payload)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def test_standardwebhooks_published_vector_is_accepted():
    """The vector from the library's own test suite: its signer and ours agree on it."""
    headers = _standard_headers(
        STANDARD_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'
    )
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    result = verify_request(
        "standard", headers, b'{"test": 2432232314}', secrets=[STANDARD_SECRET], now=1614265330
    )
    assert result == Verified(message_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330)


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_standardwebhooks_signature_is_accepted(name):
    payload = PAYLOADS[name]
    headers = _standard_headers(STANDARD_SECRET, "msg_2Kx9", NOW, payload)
    result = verify_request(
        "standard", headers, payload.encode(), secrets=[STANDARD_SECRET], now=NOW
    )
    assert result == Verified(message_id="msg_2Kx9", timestamp=NOW)
    rotated = verify_request(
        "standard", headers, payload.encode(), secrets=[STANDARD_OTHER, STANDARD_SECRET], now=NOW
    )
    assert rotated == result


def test_standardwebhooks_rotation_header_with_both_signatures():
    payload = PAYLOADS["ascii"]
    when = datetime.fromtimestamp(NOW, tz=UTC)
    signatures = [
        standardwebhooks.Webhook(secret).sign("msg_rot", when, payload)
        for secret in (STANDARD_OTHER, STANDARD_SECRET)
    ]
    headers = {
        "webhook-id": "msg_rot",
        "webhook-timestamp": str(NOW),
        "webhook-signature": " ".join(signatures),
    }
    for secret in (STANDARD_SECRET, STANDARD_OTHER):
        assert verify_request("standard", headers, payload.encode(), secrets=[secret], now=NOW)


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        ("tampered-body", "no_matching_signature"),
        ("tampered-id", "no_matching_signature"),
        ("wrong-secret", "no_matching_signature"),
        ("stale", "timestamp_too_old"),
        ("future", "timestamp_too_new"),
    ],
)
def test_standardwebhooks_bad_messages_are_refused(mutation, reason):
    payload = PAYLOADS["ascii"]
    ts = {"stale": NOW - DEFAULT_TOLERANCE - 1, "future": NOW + DEFAULT_TOLERANCE + 1}.get(
        mutation, NOW
    )
    headers = _standard_headers(STANDARD_SECRET, "msg_bad", ts, payload)
    body = payload.encode()
    secret = STANDARD_SECRET
    if mutation == "tampered-body":
        body = body.replace(b"evt_1", b"evt_2")
    elif mutation == "tampered-id":
        headers["webhook-id"] = "msg_other"
    elif mutation == "wrong-secret":
        secret = STANDARD_OTHER
    _refused(lambda: verify_request("standard", headers, body, secrets=[secret], now=NOW), reason)
