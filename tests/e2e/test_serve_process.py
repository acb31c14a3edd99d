"""`hookline serve` as a process tree: the delivery worker and the ingest writer it starts do not
outlive it, and a writer that dies is started again."""

from __future__ import annotations

import base64
import datetime as dt
import os
import signal
import sqlite3
import time
from pathlib import Path

import standardwebhooks

from conftest import start_server, stop_server
from hookline.config import default_web_workers


def _children(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            found.append((int(entry.name), cmdline))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (its parent, now gone, cannot reap it; init will).
    return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_a_killed_serve_takes_its_delivery_worker_with_it(own_server):
    serve = own_server.process
    workers = [pid for pid, cmd in _children(serve.pid) if "hookline worker" in cmd]
    assert len(workers) == 1, _children(serve.pid)

    os.kill(serve.pid, signal.SIGKILL)  # no chance to stop its children itself
    serve.wait(timeout=10)

    deadline = time.monotonic() + 20
    while _alive(workers[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(workers[0]), "the delivery worker outlived `hookline serve`"


def _writer_of(serve_pid: int) -> int:
    writers = [pid for pid, cmd in _children(serve_pid) if "hookline.writer" in cmd]
    assert len(writers) == 1, _children(serve_pid)
    return writers[0]


def _web_processes(serve_pid: int) -> list[int]:
    # granian forks its workers from `hookline serve`: they share its command line.
    return [pid for pid, cmd in _children(serve_pid) if "hookline serve" in cmd]


def test_the_web_processes_leave_the_ingest_writer_a_cpu(own_server):
    _writer_of(own_server.process.pid)

    web = _web_processes(own_server.process.pid)

    assert len(web) == default_web_workers(with_writer=True), _children(own_server.process.pid)


def _post_order(server, order_id: str):
    return server.request(
        "POST",
        "/myapp/webhook",
        f"order_id={order_id}&product_name=kettle",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )


def test_a_killed_serve_takes_its_ingest_writer_with_it(own_server):
    writer = _writer_of(own_server.process.pid)

    os.kill(own_server.process.pid, signal.SIGKILL)
    own_server.process.wait(timeout=10)

    deadline = time.monotonic() + 20
    while _alive(writer) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(writer), "the ingest writer outlived `hookline serve`"


def test_a_dead_ingest_writer_is_restarted_and_only_503s_meanwhile(own_server):
    before = _writer_of(own_server.process.pid)
    assert _post_order(own_server, "before").status == 200

    os.kill(before, signal.SIGKILL)
    statuses = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = _post_order(own_server, f"during-{len(statuses)}")
        statuses.append(answer.status)
        if answer.status == 200:
            break
        assert answer.status == 503 and answer.headers.get("retry-after"), answer
        time.sleep(0.1)

    assert statuses[-1] == 200, statuses
    assert _writer_of(own_server.process.pid) != before
    with sqlite3.connect(own_server.data_dir / "hookline.sqlite") as database:
        stored = {row[0] for row in database.execute("SELECT order_id FROM hookline_order")}
    # Every 2xx was stored; a 503 stored nothing.
    assert stored == {"before", f"during-{len(statuses) - 1}"}


def test_a_signed_orders_source_is_verified_behind_the_ingest_writer(own_server):
    """The writer cannot verify (it has no secret box): it sends the request back, and the web
    process answers it through py4web's verifying action with the body it already read."""
    secret = "whsec_" + base64.b64encode(b"e2e-orders-source-secret-0123456").decode()
    own_server.cli("sources", "rotate", "orders", "--secret", secret)
    body = "order_id=signed-1&product_name=kettle"
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    unsigned = own_server.request("POST", "/myapp/webhook", body, form)
    now = dt.datetime.now(dt.UTC)
    signature = standardwebhooks.Webhook(secret).sign("msg_signed_1", now, body)
    signed_headers = {
        **form,
        "webhook-id": "msg_signed_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    signed = own_server.request("POST", "/myapp/webhook", body, signed_headers)

    assert unsigned.status == 401, unsigned.body
    assert signed.status == 200, signed.body
    assert signed.json() == {"status": "success", "message": "Webhook processed"}
    with sqlite3.connect(own_server.data_dir / "hookline.sqlite") as database:
        stored = [row[0] for row in database.execute("SELECT order_id FROM hookline_order")]
    assert stored == ["signed-1"]


def test_without_the_ingest_writer_the_wsgi_app_commits_the_seed_webhook(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLINE_INGEST_WRITER", "false")
    server = start_server(tmp_path, None)
    try:
        children = _children(server.process.pid)
        web = _web_processes(server.process.pid)
        answer = _post_order(server, "no-writer")
    finally:
        stop_server(server)

    assert not [cmd for _, cmd in children if "hookline.writer" in cmd], children
    assert len(web) == default_web_workers(with_writer=False), children  # the writer's CPU too
    assert answer.status == 200
    assert answer.json() == {"status": "success", "message": "Webhook processed"}
    with sqlite3.connect(tmp_path / "data" / "hookline.sqlite") as database:
        stored = [row[0] for row in database.execute("SELECT order_id FROM hookline_order")]
    assert stored == ["no-writer"]
