"""The official npm ``standardwebhooks`` library verifies what ``hookline.signing`` signs.

The package is installed once into ``.cache/npm-interop/`` at the repository root (override with
``HOOKLINE_NPM_INTEROP_DIR``) and reused by later runs. One node process reads every case from a
JSON file and prints one JSON result per case. Without ``node``/``npm`` (or when the install
fails) the tests are skipped locally and fail when ``CI=true``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hookline.signing import (
    DEFAULT_TOLERANCE,
    generate_ed25519_keypair,
    generate_secret,
    outbound_headers,
    sign_v1,
)
from npm_packages import npm_modules
from npm_packages import run_node as run_node_script

pytestmark = pytest.mark.interop

NPM_PACKAGE = "standardwebhooks"
NPM_VERSION = "1.1.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_INSTALL_DIR = REPO_ROOT / ".cache" / "npm-interop"

NODE_SCRIPT = r"""
const fs = require("fs");
const path = require("path");
const [modulesDir, casesFile] = process.argv.slice(2);
const { Webhook } = require(path.join(modulesDir, "standardwebhooks"));
const cases = JSON.parse(fs.readFileSync(casesFile, "utf8"));
const results = {};
for (const c of cases) {
  const payload = Buffer.from(c.payload_b64, "base64");
  try {
    const wh = new Webhook(c.secret);
    if (c.op === "sign") {
      const when = new Date(c.timestamp * 1000);
      results[c.name] = { ok: true, signature: wh.sign(c.msg_id, when, payload) };
    } else {
      wh.verify(payload, c.headers);
      results[c.name] = { ok: true };
    }
  } catch (err) {
    results[c.name] = { ok: false, error: String(err && err.message), kind: err && err.name };
  }
}
process.stdout.write(JSON.stringify(results));
"""


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``node_modules`` holding ``standardwebhooks@1.1.1``, installed on first use."""
    return npm_modules(
        NPM_PACKAGE,
        NPM_VERSION,
        env_var="HOOKLINE_NPM_INTEROP_DIR",
        default_dir=DEFAULT_INSTALL_DIR,
    )


def run_node(node_modules: Path, tmp_path: Path, cases: list[dict]) -> dict[str, dict]:
    """Run the node script on ``cases``; its JSON answer keyed by case name."""
    return run_node_script(NODE_SCRIPT, "verify.cjs", node_modules, tmp_path, cases)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _verify_case(name: str, secret: str, body: bytes, headers: dict[str, str]) -> dict:
    return {
        "name": name,
        "op": "verify",
        "secret": secret,
        "payload_b64": _b64(body),
        "headers": headers,
    }


BODY = b'{"type":"order.created","timestamp":"2026-01-02T03:04:05Z","data":{"id":"ord_1"}}'
UNICODE_BODY = '{"type":"order.created","data":{"note":"Grüße, 世界 🔑"}}'.encode()
OLD = generate_secret()
NEW = generate_secret()
OTHER = generate_secret()
SIGNING_KEY, _PUBLIC_KEY = generate_ed25519_keypair()

# name -> (build(now) -> case, expected ok, expected error text when it must fail)
CaseBuilder = Callable[[int], dict]
CASES: dict[str, tuple[CaseBuilder, bool, str | None]] = {
    "single-secret": (
        lambda now: _verify_case(
            "single-secret", NEW, BODY, outbound_headers("msg_1", now, BODY, secrets=[NEW])
        ),
        True,
        None,
    ),
    "unicode-body": (
        lambda now: _verify_case(
            "unicode-body",
            NEW,
            UNICODE_BODY,
            outbound_headers("msg_2", now, UNICODE_BODY, secrets=[NEW]),
        ),
        True,
        None,
    ),
    "rotation-old-secret-verifies": (
        lambda now: _verify_case(
            "rotation-old-secret-verifies",
            OLD,
            BODY,
            outbound_headers("msg_3", now, BODY, secrets=[OLD, NEW]),
        ),
        True,
        None,
    ),
    "rotation-new-secret-verifies": (
        lambda now: _verify_case(
            "rotation-new-secret-verifies",
            NEW,
            BODY,
            outbound_headers("msg_3", now, BODY, secrets=[OLD, NEW]),
        ),
        True,
        None,
    ),
    "rotation-third-secret-fails": (
        lambda now: _verify_case(
            "rotation-third-secret-fails",
            OTHER,
            BODY,
            outbound_headers("msg_3", now, BODY, secrets=[OLD, NEW]),
        ),
        False,
        "No matching signature found",
    ),
    "v1-next-to-v1a": (
        lambda now: _verify_case(
            "v1-next-to-v1a",
            NEW,
            BODY,
            outbound_headers("msg_4", now, BODY, secrets=[NEW], signing_keys=[SIGNING_KEY]),
        ),
        True,
        None,
    ),
    "v1a-only-is-not-a-v1-match": (
        lambda now: _verify_case(
            "v1a-only-is-not-a-v1-match",
            NEW,
            BODY,
            outbound_headers("msg_5", now, BODY, signing_keys=[SIGNING_KEY]),
        ),
        False,
        "No matching signature found",
    ),
    "tampered-body-fails": (
        lambda now: _verify_case(
            "tampered-body-fails",
            NEW,
            BODY.replace(b"ord_1", b"ord_2"),
            outbound_headers("msg_6", now, BODY, secrets=[NEW]),
        ),
        False,
        "No matching signature found",
    ),
    "tampered-id-fails": (
        lambda now: _verify_case(
            "tampered-id-fails",
            NEW,
            BODY,
            {
                **outbound_headers("msg_7", now, BODY, secrets=[NEW]),
                "webhook-id": "msg_8",
            },
        ),
        False,
        "No matching signature found",
    ),
    "wrong-secret-fails": (
        lambda now: _verify_case(
            "wrong-secret-fails", OTHER, BODY, outbound_headers("msg_9", now, BODY, secrets=[NEW])
        ),
        False,
        "No matching signature found",
    ),
    "stale-timestamp-fails": (
        lambda now: _verify_case(
            "stale-timestamp-fails",
            NEW,
            BODY,
            outbound_headers("msg_10", now - DEFAULT_TOLERANCE - 60, BODY, secrets=[NEW]),
        ),
        False,
        "Message timestamp too old",
    ),
}


@pytest.fixture(scope="module")
def node_results(node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every case in ``CASES`` and the sign cases, answered by one node process."""
    now = int(time.time())
    cases = [build(now) for build, _, _ in CASES.values()]
    cases += [
        {
            "name": f"sign-{index}",
            "op": "sign",
            "secret": secret,
            "msg_id": msg_id,
            "timestamp": ts,
            "payload_b64": _b64(body),
        }
        for index, (secret, msg_id, ts, body) in enumerate(SIGN_CASES)
    ]
    return run_node(node_modules, tmp_path_factory.mktemp("npm-interop"), cases)


@pytest.mark.parametrize("name", list(CASES))
def test_npm_library_verdict_on_our_headers(node_results, name):
    _, expected_ok, expected_error = CASES[name]
    result = node_results[name]
    assert result["ok"] is expected_ok, result
    if not expected_ok:
        assert result["kind"] == "WebhookVerificationError"
        assert result["error"] == expected_error


SIGN_CASES = [
    (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    ),
    (NEW, "evt_01JD3Z", 1_700_000_000, BODY),
    (OLD, "x", 0, UNICODE_BODY),
]


@pytest.mark.parametrize("index", range(len(SIGN_CASES)))
def test_npm_library_signs_byte_for_byte_like_us(node_results, index):
    secret, msg_id, ts, body = SIGN_CASES[index]
    assert node_results[f"sign-{index}"] == {
        "ok": True,
        "signature": sign_v1(secret, msg_id, ts, body),
    }
