"""Real processes: a `hookline serve` per backend on a free loopback port, and the CLI beside it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HOOKLINE = str(Path(sys.executable).with_name("hookline"))


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class HttpAnswer:
    """Status, headers (lower-case names) and body of one HTTP exchange."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        """The body as JSON."""
        return json.loads(self.body)


@dataclass
class Server:
    """A running `hookline serve` and the environment its CLI calls need."""

    port: int
    env: dict[str, str]
    process: subprocess.Popen
    data_dir: Path

    @property
    def base(self) -> str:
        """The server's root URL."""
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, body: bytes | str = b"", headers: dict[str, str] | None = None
    ) -> HttpAnswer:
        """One HTTP request over a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            payload = body.encode() if isinstance(body, str) else body
            conn.request(method, path, body=payload or None, headers=headers or {})
            resp = conn.getresponse()
            return HttpAnswer(
                resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
            )
        finally:
            conn.close()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the `hookline` command against this server's database."""
        return subprocess.run(
            [HOOKLINE, *args], env=self.env, capture_output=True, text=True, check=check, timeout=60
        )

    def new_api_key(self, name: str = "e2e") -> str:
        """Create a key with the CLI and return it (the last line it prints)."""
        return self.cli("keys", "create", name).stdout.strip().splitlines()[-1]


def start_server(tmp_dir: Path, database_url: str | None) -> Server:
    """Start `hookline serve` and wait until its health check answers."""
    port = free_port()
    env = {
        **os.environ,
        "HOOKLINE_DATA_DIR": str(tmp_dir / "data"),
        "HOOKLINE_PORT": str(port),
        "HOOKLINE_MAX_BODY_BYTES": str(64 * 1024),
    }
    env.pop("HOOKLINE_DATABASE_URL", None)
    if database_url:
        env["HOOKLINE_DATABASE_URL"] = database_url
    log = open(tmp_dir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    # Its own process group: stopping it also reaches granian's worker processes and the
    # delivery worker, even if the main process is gone.
    process = subprocess.Popen(
        [HOOKLINE, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Server(port, env, process, tmp_dir / "data")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hookline serve exited: {(tmp_dir / 'server.log').read_text()}")
        try:
            if server.request("GET", "/myapp/health").status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"hookline serve did not answer: {(tmp_dir / 'server.log').read_text()}")


def stop_server(server: Server) -> None:
    """SIGTERM, then SIGKILL if it lingers; then SIGKILL whatever is left of its group."""
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(request, tmp_path_factory) -> Iterator[Server]:
    """A real server per backend, shared by a module's tests."""
    database_url = None
    if request.param == "postgres":
        database_url = request.getfixturevalue("postgres_server").create_database()
    running = start_server(tmp_path_factory.mktemp(f"serve-{request.param}"), database_url)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def _loopback_allowed():
    """Start this module's server with deliveries to 127.0.0.1 allowed."""
    from sinks import server_env

    with server_env(HOOKLINE_ALLOW_NETWORKS="127.0.0.0/8"):
        yield


@pytest.fixture(scope="module")
def hook(_loopback_allowed, server):
    """conftest's ``server`` (one per backend, worker included), started while
    ``_loopback_allowed`` set its environment: deliveries may reach a sink on 127.0.0.1."""
    assert server.env.get("HOOKLINE_ALLOW_NETWORKS") == "127.0.0.0/8"
    return server


@pytest.fixture(scope="module")
def auth(request, hook) -> dict[str, str]:
    """JSON headers with a fresh API key of this module's own, on ``hook``'s server (modules
    that talk to ``server`` instead define their own)."""
    from sinks import JSON

    name = request.module.__name__.rpartition(".")[2]
    return {"Authorization": f"Bearer {hook.new_api_key(name)}", **JSON}


@pytest.fixture
def api(hook, auth):
    """Endpoint/delivery API helper on ``hook``'s server; the test's endpoints are deleted
    afterwards."""
    from sinks import endpoint_api

    with endpoint_api(hook, auth) as helper:
        yield helper


@pytest.fixture(scope="module")
def sink():
    """One recording HTTP receiver for the module; each endpoint gets its own path."""
    from sinks import Sink

    with Sink() as running:
        yield running


@pytest.fixture
def own_server(tmp_path) -> Iterator[Server]:
    """A SQLite server of the test's own, which the test may stop or kill."""
    server = start_server(tmp_path, None)
    yield server
    stop_server(server)
