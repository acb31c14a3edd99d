"""A real HTTP receiver for delivery tests, and small helpers around real worker processes.

``Sink`` is a threaded HTTP/1.1 server on ``127.0.0.1`` (a free port) that records every POST it
gets: path, headers (lower-case names), body, arrival and completion times. Each path behaves as
told with ``Sink.behave``: answer a status, fail the first N requests, answer slowly. Tests give
every endpoint a path of its own (``sink.url("name")``) and read what arrived with
``sink.received("name")`` or wait for it with ``sink.wait_for``.

The hookline processes are the real ones: the e2e ``server`` fixture (``conftest.py``) reads its
environment from ``os.environ`` when it starts, so ``server_env`` sets variables for a module
before that fixture runs; ``Workers`` starts and reaps ``hookline worker`` processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

__all__ = [
    "JSON",
    "Received",
    "Sink",
    "Workers",
    "endpoint_api",
    "server_env",
    "wait_until",
]

JSON = {"Content-Type": "application/json"}


def wait_until(
    probe: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.02,
    detail: Callable[[], object] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy; fail the test after ``timeout`` s
    (with ``detail()`` in the message when given)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail else ""
            pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {value!r}){extra}")
        time.sleep(interval)


@dataclass
class Received:
    """One request the sink got."""

    path: str
    headers: dict[str, str]
    body: bytes
    arrived: float  # time.monotonic() when the request had been read
    status: int  # what the sink answered
    completed: float | None = None  # time.monotonic() once the answer was written

    @property
    def webhook_id(self) -> str:
        """The ``webhook-id`` header."""
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass
class Behaviour:
    """How one path answers."""

    status: int = 200
    fail_times: int = 0
    fail_status: int = 500
    delay: float = 0.0
    seen: int = 0


@dataclass
class Sink:
    """A recording HTTP receiver; use as a context manager (it serves on a thread)."""

    requests: list[Received] = field(default_factory=list)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like a real receiver

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                name = self.path.lstrip("/")
                with sink.lock:
                    behaviour = sink.behaviours.setdefault(name, Behaviour())
                    behaviour.seen += 1
                    failing = behaviour.seen <= behaviour.fail_times
                    status = behaviour.fail_status if failing else behaviour.status
                    record = Received(
                        name,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                        status,
                    )
                    sink.requests.append(record)
                if behaviour.delay:
                    time.sleep(behaviour.delay)
                answer = json.dumps({"status": status}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    self.wfile.flush()
                except OSError:  # the sender went away (a killed worker)
                    self.close_connection = True
                    return
                record.completed = time.monotonic()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # many workers connect at once

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Sink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    @property
    def port(self) -> int:
        """The port the sink listens on."""
        return self.httpd.server_address[1]

    def url(self, name: str) -> str:
        """The URL of the sink's path ``name``."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def behave(
        self,
        name: str,
        *,
        status: int = 200,
        fail_times: int = 0,
        fail_status: int = 500,
        delay: float = 0.0,
    ) -> str:
        """Set how path ``name`` answers; returns its URL."""
        with self.lock:
            self.behaviours[name] = Behaviour(status, fail_times, fail_status, delay)
        return self.url(name)

    def received(self, name: str, webhook_id: str | None = None) -> list[Received]:
        """Requests that reached path ``name`` (only those with ``webhook_id`` when given)."""
        with self.lock:
            return [
                r
                for r in self.requests
                if r.path == name and (webhook_id is None or r.webhook_id == webhook_id)
            ]

    def wait_for(
        self, name: str, count: int = 1, *, timeout: float = 10.0, webhook_id: str | None = None
    ) -> list[Received]:
        """Wait until path ``name`` has at least ``count`` requests; returns them all."""

        def enough() -> list[Received] | None:
            got = self.received(name, webhook_id)
            return got if len(got) >= count else None

        what = f"{count} request(s) at /{name}" + (f" ({webhook_id})" if webhook_id else "")
        return wait_until(enough, timeout, what)


@contextmanager
def server_env(**variables: str) -> Iterator[None]:
    """Set environment variables for as long as the block runs (servers started inside it and
    the CLI calls made through them inherit them)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        yield


class EndpointApi:
    """Creates endpoints through ``POST /myapp/api/endpoints`` and deletes them afterwards,
    so that one test's endpoints do not receive the next test's events."""

    def __init__(self, server: Any, auth: dict[str, str]) -> None:
        self.server = server
        self.auth = auth
        self.created: list[str] = []

    def create(self, url: str, **fields: Any) -> dict[str, Any]:
        """Create an endpoint (201 expected); returns the answer with its ``secret``."""
        answer = self.server.request(
            "POST", "/myapp/api/endpoints", json.dumps({"url": url, **fields}), self.auth
        )
        assert answer.status == 201, answer.body
        endpoint = answer.json()
        self.created.append(endpoint["endpoint_id"])
        return endpoint

    def track(self, endpoint_id: str) -> None:
        """Delete this endpoint (made another way) at the end too."""
        self.created.append(endpoint_id)

    def get(self, path: str) -> Any:
        """GET an API path; asserts 200 and returns the JSON."""
        answer = self.server.request("GET", path, headers=self.auth)
        assert answer.status == 200, (path, answer.status, answer.body)
        return answer.json()

    def post(self, path: str, body: Any = None) -> Any:
        """POST JSON to an API path; returns the whole answer."""
        payload = json.dumps(body) if body is not None else b""
        return self.server.request("POST", path, payload, self.auth)

    def deliveries(self, **filters: str) -> list[dict[str, Any]]:
        """Every delivery matching ``filters`` (endpoint_id, event_id, status), all pages."""
        rows: list[dict[str, Any]] = []
        cursor = ""
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        while True:
            page = self.get(f"/myapp/api/deliveries?limit=200&{query}{cursor}")
            rows += page["data"]
            if not page["has_more"]:
                return rows
            cursor = f"&cursor={page['next_cursor']}"

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        """One delivery with its attempt log."""
        return self.get(f"/myapp/api/deliveries/{delivery_id}")

    def create_order(self, **fields: Any) -> dict[str, Any]:
        """Create an order through the orders API (201 expected)."""
        body = {"product_name": "kettle", "unit_price": "19.99", "currency": "USD", **fields}
        answer = self.server.request("POST", "/myapp/api/orders", json.dumps(body), self.auth)
        assert answer.status == 201, answer.body
        return answer.json()

    def delete_all(self) -> None:
        """Delete every endpoint this object made or tracked (already gone is fine)."""
        for endpoint_id in self.created:
            answer = self.server.request(
                "DELETE", f"/myapp/api/endpoints/{endpoint_id}", headers=self.auth
            )
            assert answer.status in (200, 404), answer.body


@contextmanager
def endpoint_api(server: Any, auth: dict[str, str]) -> Iterator[EndpointApi]:
    """An ``EndpointApi`` whose endpoints are deleted when the block ends."""
    api = EndpointApi(server, auth)
    try:
        yield api
    finally:
        api.delete_all()


class Workers:
    """``hookline worker`` processes started for one test; any still running at the end are
    killed (by their own pid)."""

    def __init__(self, hookline: str, env: dict[str, str], log_dir: Path) -> None:
        self.hookline = hookline
        self.env = env
        self.log_dir = log_dir
        self.started: list[subprocess.Popen] = []

    def _log(self, process: subprocess.Popen, stream: str) -> Path:
        return self.log_dir / f"worker-{process.pid}.{stream}"

    def start(self, *args: str) -> subprocess.Popen:
        """Start ``hookline worker ARGS``; its stdout and stderr go to files in the log dir."""
        out = self.log_dir / f"worker-{len(self.started)}.tmp"
        with open(out, "wb") as stdout, open(out.with_suffix(".err-tmp"), "wb") as stderr:
            process = subprocess.Popen(
                [self.hookline, "worker", *args], env=self.env, stdout=stdout, stderr=stderr
            )
        out.rename(self._log(process, "out"))
        out.with_suffix(".err-tmp").rename(self._log(process, "err"))
        self.started.append(process)
        return process

    def output(self, process: subprocess.Popen) -> str:
        """Everything a worker printed (stdout, then stderr)."""
        return self._log(process, "out").read_text() + self._log(process, "err").read_text()

    def stop(self, process: subprocess.Popen, timeout: float = 20.0) -> int:
        """SIGTERM, then wait (the test fails when it does not exit in time); the exit code."""
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"worker {process.pid} did not exit within {timeout:g}s of SIGTERM")

    def kill_leftovers(self) -> None:
        """SIGKILL any worker of this test that is still running."""
        for process in self.started:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def unique_name(prefix: str) -> str:
    """``prefix`` and 8 random hex digits: a sink path or name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
