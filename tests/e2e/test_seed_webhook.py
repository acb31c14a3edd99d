"""The seed's receiver, exactly as the blog post tests it, against a real `hookline serve`."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

# The seed's test command, verbatim (../shared/seed): only the port is the test server's.
SEED_CURL = (
    'curl -X POST -d "order_id=1234&product_name=example" http://localhost:8000/myapp/webhook'
)
SEED_ANSWER = {"status": "success", "message": "Webhook processed"}

pytestmark = pytest.mark.e2e


def _orders(server, key: str) -> dict[str, dict]:
    answer = server.request(
        "GET", "/myapp/api/orders?limit=200", headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status == 200
    return {order["order_id"]: order for order in answer.json()["data"]}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_seed_curl_prints_the_seed_answer(server):
    argv = shlex.split(SEED_CURL.replace("localhost:8000", f"localhost:{server.port}"))
    printed = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
    assert json.loads(printed) == SEED_ANSWER

    argv_with_status = [
        *argv[:1],
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{content_type}",
        *argv[1:],
    ]
    status_line = subprocess.run(
        argv_with_status, capture_output=True, text=True, timeout=30
    ).stdout
    assert status_line == "200 application/json"

    order = _orders(server, server.new_api_key())["1234"]
    assert order["product_name"] == "example"
    assert order["source"] == "webhook"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_other_methods_get_400_invalid_request(server, method):
    answer = server.request(method, "/myapp/webhook")
    assert (answer.status, answer.body) == (400, b"Invalid request")


def test_json_body_gets_the_same_answer_and_utf8_forms_are_decoded(server):
    answer = server.request(
        "POST",
        "/myapp/webhook",
        json.dumps({"order_id": "j-1", "product_name": "tea"}),
        {"Content-Type": "application/json"},
    )
    assert (answer.status, answer.json()) == (200, SEED_ANSWER)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    raw = server.request(
        "POST", "/myapp/webhook", "order_id=raw-1&product_name=café".encode(), form
    )
    escaped = server.request(
        "POST", "/myapp/webhook", "order_id=pct-1&product_name=caf%C3%A9", form
    )
    assert raw.status == escaped.status == 200
    orders = _orders(server, server.new_api_key())
    assert orders["raw-1"]["product_name"] == orders["pct-1"]["product_name"] == "café"
    assert orders["j-1"]["product_name"] == "tea"


def test_an_order_webhook_updates_an_existing_order(server):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    server.request("POST", "/myapp/webhook", "order_id=upd-1&product_name=old", form)
    server.request("POST", "/myapp/webhook", "order_id=upd-1&product_name=new&quantity=3", form)
    order = _orders(server, server.new_api_key())["upd-1"]
    assert (order["product_name"], order["quantity"], order["version"]) == ("new", 3, 2)


def test_a_repeated_idempotency_key_is_answered_and_not_processed_again(server):
    form = {"Content-Type": "application/x-www-form-urlencoded", "Idempotency-Key": "idem-e2e-1"}
    first = server.request("POST", "/myapp/webhook", "order_id=idem-1&product_name=a", form)
    second = server.request("POST", "/myapp/webhook", "order_id=idem-1&product_name=b", form)
    assert first.status == second.status == 200
    assert first.json() == second.json() == SEED_ANSWER
    assert second.headers.get("idempotent-replayed") == "true"
    assert _orders(server, server.new_api_key())["idem-1"]["product_name"] == "a"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        ("product_name=x", "application/x-www-form-urlencoded", 422, "order_id"),
        ("order_id=%20&product_name=x", "application/x-www-form-urlencoded", 422, "order_id"),
        ('{"order_id": 1,', "application/json", 400, "malformed JSON"),
        ("order_id,product_name\n1,x", "text/csv", 415, "not supported"),
        (
            "order_id=1&product_name=" + "x" * 70_000,
            "application/x-www-form-urlencoded",
            413,
            "limit",
        ),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_writes_nothing(server, body, content_type, status, needle):
    key = server.new_api_key()
    before = _orders(server, key)
    answer = server.request("POST", "/myapp/webhook", body, {"Content-Type": content_type})
    assert answer.status == status
    assert answer.headers["content-type"].startswith("application/json")
    assert needle in answer.body.decode()
    assert _orders(server, key) == before


def test_runtime_state_stays_in_the_data_directory(server):
    import hookline

    package_dir = Path(hookline.__file__).parent
    leftovers = [
        path
        for pattern in (".service", "*.sqlite*", "*.table", "databases", "sql.log", "*.storage")
        for path in package_dir.rglob(pattern)
    ]
    assert leftovers == []
    assert any(server.data_dir.glob("*.sqlite")) or "HOOKLINE_DATABASE_URL" in server.env
    assert (server.data_dir / "py4web" / "session.secret").exists()


def _post_chunked(server, chunks: list[bytes]) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/myapp/webhook",
            body=iter(chunks),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_chunked_bodies_are_read_and_bounded(server):
    status, body = _post_chunked(server, [b"order_id=chunk-1", b"&product_name=", b"chunky"])
    assert (status, body) == (200, SEED_ANSWER)
    status, body = _post_chunked(server, [b"order_id=chunk-2&product_name="] + [b"x" * 8192] * 10)
    assert status == 413
    assert "limit" in body["message"]
