"""Delivery end to end: a real `hookline serve` (worker included) POSTs signed events to a real
HTTP sink on 127.0.0.1, on SQLite and on PostgreSQL.

Endpoints are made through the API and the CLI; what arrives is checked with the official
Standard Webhooks verifiers (PyPI, and npm through node), and the retry schedule, 410 handling,
secret rotation, ping, replay and the API's refusals are checked from the outside.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sinks import JSON, Received, unique_name, wait_until
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hookline import __version__
from hookline.signing import generate_secret
from npm_packages import npm_modules

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
HOOKLINE = str(Path(sys.executable).with_name("hookline"))
NPM_PACKAGE = "standardwebhooks"
NPM_VERSION = "1.1.1"
FIRST_DELIVERY_WITHIN_S = 1.0
QUIET_S = 0.5  # how long "nothing else arrives" is watched for


def _hmac_v1(secret: str, request: Received) -> str:
    """The v1 signature computed here from scratch (not with hookline's signing module)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
        + request.body
    )
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _signatures(request: Received) -> list[str]:
    entries = request.headers["webhook-signature"].split(" ")
    assert all(entry.startswith("v1,") for entry in entries), entries
    return [entry.removeprefix("v1,") for entry in entries]


def _verify(secret: str, request: Received) -> dict:
    """PyPI ``standardwebhooks`` verification (raises when it refuses)."""
    return Webhook(secret).verify(request.body, request.headers)


def _types(requests: list[Received]) -> list[str]:
    return sorted(r.json()["type"] for r in requests)


def _patch_order(hook, auth, order_id: str, status: str) -> None:
    answer = hook.request(
        "PATCH", f"/myapp/api/orders/{order_id}", json.dumps({"status": status}), auth
    )
    assert answer.status == 200, answer.body


def test_order_created_reaches_api_and_cli_endpoints_signed_within_a_second(hook, api, sink):
    by_api = unique_name("api")
    by_cli = unique_name("cli")
    endpoint = api.create(sink.url(by_api))
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["enabled"] is True
    added = hook.cli(
        "endpoints", "add", sink.url(by_cli), "--events", "order.created,order.paid"
    ).stdout
    cli_id = added.split()[1]
    cli_secret = added.split("secret ", 1)[1].split()[0]
    api.track(cli_id)
    assert added.startswith(f"endpoint {cli_id} -> {sink.url(by_cli)}")
    assert api.get(f"/myapp/api/endpoints/{cli_id}")["event_types"] == [
        "order.created",
        "order.paid",
    ]

    started = time.monotonic()
    order = api.create_order()
    [to_api] = sink.wait_for(by_api, timeout=10)
    [to_cli] = sink.wait_for(by_cli, timeout=10)
    for request in (to_api, to_cli):
        assert request.arrived - started <= FIRST_DELIVERY_WITHIN_S, request.arrived - started

    for request, endpoint_id, secret in (
        (to_api, endpoint["endpoint_id"], endpoint["secret"]),
        (to_cli, cli_id, cli_secret),
    ):
        body = _verify(secret, request)
        assert body["type"] == "order.created"
        assert body["data"]["order"]["order_id"] == order["order_id"]
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == f"hookline/{__version__}"
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 30
        assert _signatures(request) == [_hmac_v1(secret, request)]
        # webhook-id is the event id
        [delivery] = wait_until(
            lambda eid=endpoint_id: api.deliveries(endpoint_id=eid, status="succeeded"),
            10,
            "the delivery to be recorded",
        )
        assert delivery["event_type"] == "order.created"
        assert request.webhook_id == delivery["event_id"]
        assert request.webhook_id.startswith("evt_")
    assert to_api.webhook_id == to_cli.webhook_id
    with pytest.raises(WebhookVerificationError):
        _verify(generate_secret(), to_api)
    with pytest.raises(WebhookVerificationError):
        _verify(cli_secret, to_api)  # each endpoint has its own secret


def test_event_filter_is_respected(hook, api, auth, sink):
    every, created_paid = unique_name("all"), unique_name("created-paid")
    api.create(sink.url(every))
    added = hook.cli(
        "endpoints", "add", sink.url(created_paid), "--events", "order.created,order.paid"
    ).stdout
    filtered_id = added.split()[1]
    api.track(filtered_id)

    order = api.create_order()
    for status in ("paid", "shipped"):
        _patch_order(hook, auth, order["order_id"], status)
    everything = sink.wait_for(every, 3, timeout=10)
    assert _types(everything) == ["order.created", "order.paid", "order.shipped"]
    sink.wait_for(created_paid, 2, timeout=10)
    time.sleep(QUIET_S)
    assert _types(sink.received(created_paid)) == ["order.created", "order.paid"]
    assert sorted(d["event_type"] for d in api.deliveries(endpoint_id=filtered_id)) == [
        "order.created",
        "order.paid",
    ]


def test_failing_twice_then_success_follows_the_endpoint_schedule(api, sink):
    name = unique_name("flaky")
    sink.behave(name, fail_times=2, fail_status=500)
    endpoint = api.create(sink.url(name), retry_schedule="0,1s,2s", event_types=["order.created"])
    assert endpoint["retry_schedule"] == "0,1s,2s"
    api.create_order()

    first, second, third = sink.wait_for(name, 3, timeout=20)
    time.sleep(QUIET_S)
    assert len(sink.received(name)) == 3, "a fourth attempt after the success"
    assert [r.status for r in (first, second, third)] == [500, 500, 200]
    # jitter is +-20 %; the slack covers recording the outcome and waking up
    gap_1, gap_2 = second.arrived - first.arrived, third.arrived - second.arrived
    assert 0.8 - 0.05 <= gap_1 <= 1.2 + 0.6, gap_1
    assert 1.6 - 0.05 <= gap_2 <= 2.4 + 0.6, gap_2

    # the same message every time: same webhook-id (the event id) and body, each one signed
    assert first.webhook_id == second.webhook_id == third.webhook_id
    assert first.body == second.body == third.body
    for request in (first, second, third):
        _verify(endpoint["secret"], request)

    [delivery] = wait_until(
        lambda: api.deliveries(endpoint_id=endpoint["endpoint_id"], status="succeeded"),
        10,
        "the delivery to succeed",
    )
    assert delivery["event_id"] == first.webhook_id
    shown = api.delivery(delivery["delivery_id"])
    assert shown["attempts"] == 3
    log = shown["attempt_log"]
    assert [a["number"] for a in log] == [1, 2, 3]
    assert [a["status_code"] for a in log] == [500, 500, 200]
    assert [a["outcome"] for a in log] == ["retry", "retry", "succeeded"]
    assert json.loads(log[0]["response_body"]) == {"status": 500}
    assert shown["last_status_code"] == 200

    attempts = api.get(f"/myapp/api/attempts?endpoint_id={endpoint['endpoint_id']}")["data"]
    assert [(a["number"], a["outcome"], a["status_code"]) for a in attempts] == [
        (3, "succeeded", 200),
        (2, "retry", 500),
        (1, "retry", 500),
    ]
    assert {a["delivery_id"] for a in attempts} == {delivery["delivery_id"]}
    # Starts are kept to the second, and the second attempt may share the first one's second;
    # the third starts at least 1.6 s after the second.
    third = attempts[0]["started_at"]
    query = f"/myapp/api/attempts?delivery_id={delivery['delivery_id']}"
    assert [a["number"] for a in api.get(f"{query}&since={third}")["data"]] == [3]
    assert [a["number"] for a in api.get(f"{query}&until={third}")["data"]] == [2, 1]


def test_attempts_api_needs_a_key_and_refuses_bad_filters(hook, auth):
    assert hook.request("GET", "/myapp/api/attempts", headers=JSON).status == 401
    for query in (
        "outcome=maybe",
        "since=yesterday",
        "limit=0",
        "until=2026-13-01",
        "since=9999-12-31T23:59:59-12:00",
    ):
        answer = hook.request("GET", f"/myapp/api/attempts?{query}", headers=auth)
        assert answer.status == 422, (query, answer.body)
        assert query.split("=")[0] in answer.json()["errors"]
    answer = hook.request("GET", "/myapp/api/attempts?endpoint_id=ep_missing", headers=auth)
    assert answer.status == 404, answer.body


def test_410_gone_disables_the_endpoint(api, sink):
    gone, witness = unique_name("gone"), unique_name("witness")
    sink.behave(gone, status=410)
    endpoint = api.create(sink.url(gone), event_types=["order.created"])
    api.create(sink.url(witness), event_types=["order.created"])
    api.create_order()
    [request] = sink.wait_for(gone, timeout=10)
    assert request.status == 410

    path = f"/myapp/api/endpoints/{endpoint['endpoint_id']}"
    wait_until(lambda: not api.get(path)["enabled"], 10, "the endpoint to be disabled")
    shown = api.get(path)
    assert shown["enabled"] is False
    assert "410" in shown["disabled_reason"]
    assert shown["disabled_at"]
    [delivery] = api.deliveries(endpoint_id=endpoint["endpoint_id"])
    assert (delivery["status"], delivery["attempts"]) == ("failed", 1)

    # a disabled endpoint gets nothing new
    second = api.create_order()
    sink.wait_for(witness, 2, timeout=10)
    time.sleep(QUIET_S)
    assert len(sink.received(gone)) == 1
    assert second["order_id"] not in json.dumps(api.deliveries(endpoint_id=endpoint["endpoint_id"]))


def test_rotation_signs_with_old_and_new_secret_during_the_grace_period(api, sink):
    name = unique_name("rotated")
    endpoint = api.create(sink.url(name), event_types=["order.created"])
    old = endpoint["secret"]
    rotated = api.post(
        f"/myapp/api/endpoints/{endpoint['endpoint_id']}/rotate", {"grace_seconds": 3600}
    )
    assert rotated.status == 200, rotated.body
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != old

    api.create_order()
    [request] = sink.wait_for(name, timeout=10)
    signatures = _signatures(request)
    assert len(signatures) == 2
    assert sorted(signatures) == sorted([_hmac_v1(old, request), _hmac_v1(new, request)])
    assert _verify(old, request)["type"] == "order.created"
    assert _verify(new, request)["type"] == "order.created"
    with pytest.raises(WebhookVerificationError):
        _verify(generate_secret(), request)


def test_rotation_without_grace_signs_only_with_the_new_secret(api, sink):
    """Even right after deliveries signed with the old secret (a worker may have it cached)."""
    name = unique_name("rotated-now")
    endpoint = api.create(sink.url(name), event_types=["order.created"])
    old = endpoint["secret"]
    api.create_order()
    [before] = sink.wait_for(name, timeout=10)
    _verify(old, before)

    rotated = api.post(
        f"/myapp/api/endpoints/{endpoint['endpoint_id']}/rotate", {"grace_seconds": 0}
    )
    assert rotated.status == 200, rotated.body
    new = rotated.json()["secret"]
    api.create_order()
    _, after = sink.wait_for(name, 2, timeout=10)
    assert _signatures(after) == [_hmac_v1(new, after)], "signed with a secret that expired"
    with pytest.raises(WebhookVerificationError):
        _verify(old, after)


def test_ping_reaches_only_that_endpoint(api, sink):
    pinged, other = unique_name("pinged"), unique_name("not-pinged")
    endpoint = api.create(sink.url(pinged))
    api.create(sink.url(other))
    answer = api.post(f"/myapp/api/endpoints/{endpoint['endpoint_id']}/ping")
    assert answer.status == 202, answer.body
    event_id = answer.json()["event_id"]

    [request] = sink.wait_for(pinged, timeout=10)
    body = _verify(endpoint["secret"], request)
    assert body["type"] == "ping"
    assert body["data"]["endpoint_id"] == endpoint["endpoint_id"]
    assert request.webhook_id == event_id
    time.sleep(QUIET_S)
    assert sink.received(other) == []
    deliveries = api.deliveries(event_id=event_id)
    assert [d["endpoint_id"] for d in deliveries] == [endpoint["endpoint_id"]]
    assert api.post("/myapp/api/endpoints/ep_nosuchendpoint/ping").status == 404


def test_replay_resends_with_the_same_webhook_id(api, sink):
    name = unique_name("replayed")
    endpoint = api.create(sink.url(name), event_types=["order.created"])
    api.create_order()
    [original] = sink.wait_for(name, timeout=10)
    event_id = original.webhook_id
    [first_delivery] = api.deliveries(endpoint_id=endpoint["endpoint_id"])

    answer = api.post(
        f"/myapp/api/events/{event_id}/replay", {"endpoint_id": endpoint["endpoint_id"]}
    )
    assert answer.status == 202, answer.body
    replay = answer.json()
    assert replay["event_id"] == event_id
    assert len(replay["deliveries"]) == 1
    assert replay["deliveries"][0] != first_delivery["delivery_id"]

    _, again = sink.wait_for(name, 2, timeout=10)
    assert again.webhook_id == event_id
    assert again.body == original.body
    _verify(endpoint["secret"], again)
    assert api.post("/myapp/api/events/evt_nosuchevent/replay").status == 404


def test_endpoints_api_needs_a_key_and_refuses_forbidden_targets(hook, api, auth, sink):
    body = json.dumps({"url": sink.url(unique_name("nokey"))})
    for method, payload in (("POST", body), ("GET", "")):
        answer = hook.request(method, "/myapp/api/endpoints", payload, JSON)
        assert answer.status == 401, (method, answer.body)
        wrong = {**JSON, "Authorization": "Bearer hk_wrong"}
        assert hook.request(method, "/myapp/api/endpoints", payload, wrong).status == 401

    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/hooks"):
        answer = hook.request("POST", "/myapp/api/endpoints", json.dumps({"url": url}), auth)
        assert answer.status == 422, (url, answer.body)
        assert "url" in answer.json()["errors"]
    listed = api.get("/myapp/api/endpoints")["data"]
    assert not [e for e in listed if "169.254" in e["url"] or "10.0.0.1" in e["url"]]
    assert not [e for e in listed if "nokey" in e["url"]]


def test_cli_refuses_loopback_unless_allowed(hook, sink):
    env = {k: v for k, v in hook.env.items() if k != "HOOKLINE_ALLOW_NETWORKS"}
    refused = subprocess.run(
        [HOOKLINE, "endpoints", "add", sink.url("x")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "loopback" in refused.stderr
    assert sink.url("x") not in hook.cli("endpoints", "list", "--json").stdout


def test_order_webhook_produces_an_order_created_delivery(hook, api, sink):
    name = unique_name("from-webhook")
    endpoint = api.create(sink.url(name), event_types=["order.created"])
    order_id = unique_name("wh")
    answer = hook.request(
        "POST",
        "/myapp/webhook",
        f"order_id={order_id}&product_name=example",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (answer.status, answer.json()["status"]) == (200, "success")
    [request] = sink.wait_for(name, timeout=10)
    body = _verify(endpoint["secret"], request)
    assert body["type"] == "order.created"
    assert body["data"]["order"]["order_id"] == order_id
    assert body["data"]["order"]["product_name"] == "example"


# --- the npm library verifies a captured delivery ------------------------------------------

NODE_VERIFY = r"""
const fs = require("fs");
const path = require("path");
const [modulesDir, casesFile] = process.argv.slice(2);
const { Webhook } = require(path.join(modulesDir, "standardwebhooks"));
const results = {};
for (const c of JSON.parse(fs.readFileSync(casesFile, "utf8"))) {
  try {
    const verified = new Webhook(c.secret).verify(Buffer.from(c.body_b64, "base64"), c.headers);
    results[c.name] = { ok: true, type: verified.type };
  } catch (err) {
    results[c.name] = { ok: false, error: String(err && err.message) };
  }
}
process.stdout.write(JSON.stringify(results));
"""


@pytest.fixture(scope="session")
def npm_standardwebhooks() -> Path:
    """``node_modules`` with the npm ``standardwebhooks`` (shared with tests/interop)."""
    return npm_modules(
        NPM_PACKAGE,
        NPM_VERSION,
        env_var="HOOKLINE_NPM_INTEROP_DIR",
        default_dir=REPO_ROOT / ".cache" / "npm-interop",
    )


def test_npm_standardwebhooks_verifies_a_captured_delivery(
    api, sink, npm_standardwebhooks, tmp_path
):
    name = unique_name("npm")
    endpoint = api.create(sink.url(name), event_types=["order.created"])
    api.create_order(product_name="Grüße 🔑 kettle")
    [request] = sink.wait_for(name, timeout=10)
    _verify(endpoint["secret"], request)  # PyPI agrees first

    headers = {
        k: request.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    body_b64 = base64.b64encode(request.body).decode()
    cases = [
        {
            "name": "captured",
            "secret": endpoint["secret"],
            "body_b64": body_b64,
            "headers": headers,
        },
        {
            "name": "other-secret",
            "secret": generate_secret(),
            "body_b64": body_b64,
            "headers": headers,
        },
        {
            "name": "tampered",
            "secret": endpoint["secret"],
            "body_b64": base64.b64encode(request.body.replace(b"kettle", b"kettlf")).decode(),
            "headers": headers,
        },
    ]
    (tmp_path / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    (tmp_path / "verify.cjs").write_text(NODE_VERIFY, encoding="utf-8")
    done = subprocess.run(
        [
            "node",
            str(tmp_path / "verify.cjs"),
            str(npm_standardwebhooks),
            str(tmp_path / "cases.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["captured"] == {"ok": True, "type": "order.created"}
    assert results["other-secret"]["ok"] is False
    assert results["tampered"]["ok"] is False
