"""Shared helpers for the hookline benchmarks (bench-only; never imported by src/).

- ``BenchDB``: a fresh, migrated database per run (a temp SQLite dir, or a throw-away
  PostgreSQL database created on the local server and dropped afterwards).
- ``Sink``: the receiving end, ``bench/sink.py`` run as a separate process.
- ``publish_events``: N events through the real ``outbox.publish`` (fan-out included).
- ``machine_info`` / ``update_docs``: the machine description and the per-bench sections of
  ``docs/benchmarks.md`` (each bench rewrites only the text between its own markers).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DOCS = ROOT / "docs" / "benchmarks.md"
PG_ADMIN_URL = os.environ.get(
    "HOOKLINE_BENCH_POSTGRES_URL", "postgres://hookline:hookline@127.0.0.1:5432/hookline"
)
ALLOW = "127.0.0.0/8"
# One fixed Fernet key so subprocess workers and the bench agree without a key file race.
SECRET_KEY = "bWFrZS1iZW5jaG1hcmtzLWRldGVybWluaXN0aWMtMTI="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_json(url: str, data: bytes | None = None, timeout: float = 30.0) -> Any:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


# --------------------------------------------------------------------------- the sink process


class Sink:
    """``bench/sink.py`` in its own process: answers 200 (after ``delay`` seconds) and counts."""

    def __init__(self, *, delay: float = 0.0, record: bool = False) -> None:
        self.port = free_port()
        args = [sys.executable, str(BENCH_DIR / "sink.py"), "--port", str(self.port)]
        if delay:
            args += ["--delay", str(delay)]
        if record:
            args.append("--record")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.time() + 15
        while True:
            try:
                self.stats()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the sink did not start") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stats(self) -> dict[str, Any]:
        return _http_json(f"http://127.0.0.1:{self.port}/_stats")

    def arrivals(self) -> dict[str, float]:
        return _http_json(f"http://127.0.0.1:{self.port}/_arrivals")

    def first_request(self) -> dict[str, Any] | None:
        return _http_json(f"http://127.0.0.1:{self.port}/_first")

    def reset(self) -> None:
        _http_json(f"http://127.0.0.1:{self.port}/_reset", data=b"")

    def wait_count(self, n: int, timeout: float) -> dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            stats = self.stats()
            if stats["count"] >= n or time.time() > deadline:
                return stats
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- databases


def _with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def _pg_admin():
    import psycopg2

    conn = psycopg2.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://", 1))
    conn.autocommit = True
    return conn


class BenchDB:
    """A fresh migrated hookline database for one run; ``engine`` is "sqlite" or "postgres"."""

    def __init__(self, engine: str, *, extra_env: dict[str, str] | None = None) -> None:
        from hookline.config import Settings
        from hookline.database import migrate

        self.engine = engine
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"hookline-bench-{engine}-"))
        self.pg_name: str | None = None
        env = {
            "HOOKLINE_DATA_DIR": str(self.data_dir),
            "HOOKLINE_ALLOW_NETWORKS": ALLOW,
            "HOOKLINE_SECRET_KEY": SECRET_KEY,
            **(extra_env or {}),
        }
        if engine == "postgres":
            self.pg_name = f"hookline_bench_{os.getpid()}_{secrets.token_hex(3)}"
            conn = _pg_admin()
            try:
                conn.cursor().execute(f'CREATE DATABASE "{self.pg_name}"')
            finally:
                conn.close()
            env["HOOKLINE_DATABASE_URL"] = _with_database(PG_ADMIN_URL, self.pg_name)
        elif engine != "sqlite":
            raise ValueError(f"unknown engine {engine!r}")
        self.env = env
        self.settings = Settings.from_env(env)
        migrate(self.settings)

    def subprocess_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def connect(self):
        from hookline.database import connect

        return connect(self.settings)

    def box(self):
        from hookline.secretbox import load_secret_box

        return load_secret_box(self.settings.secret_key, self.settings.data_dir)

    def close(self) -> None:
        if self.pg_name:
            import psycopg2

            conn = _pg_admin()
            try:
                # FORCE may not end a session our role does not own (autovacuum, analysing the
                # freshly loaded tables): wait for it to finish instead.
                for _ in range(60):
                    try:
                        conn.cursor().execute(
                            f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)'
                        )
                        break
                    except psycopg2.errors.InsufficientPrivilege:
                        time.sleep(1)
            finally:
                conn.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> BenchDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_endpoint(bdb: BenchDB, url: str, **fields: Any) -> tuple[dict[str, Any], str]:
    """An endpoint through the real validation and ``endpoints.create_endpoint``; commits."""
    from hookline import endpoints
    from hookline.endpoint_rules import parse_endpoint
    from hookline.netguard import NetworkPolicy

    changes = parse_endpoint(
        {"url": url, **fields}, NetworkPolicy.from_settings(ALLOW), creating=True
    )
    db = bdb.connect()
    try:
        endpoint, credentials = endpoints.create_endpoint(db, bdb.box(), changes)
        db.commit()
    finally:
        db.close()
    return endpoint, credentials["secret"]


def order_data(i: int) -> dict[str, Any]:
    """A realistic ``order.created`` body (about 400 bytes once enveloped)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "order": {
            "object": "order",
            "order_id": f"ord_bench_{i:08d}",
            "product_name": "stainless kettle 1.7 l",
            "quantity": 2,
            "unit_price": "19.99",
            "currency": "USD",
            "total": "39.98",
            "customer_email": f"customer{i}@example.com",
            "status": "pending",
            "source": "api",
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
    }


def publish_events(bdb: BenchDB, n: int, *, batch: int = 500) -> float:
    """Publish ``n`` events with the real ``outbox.publish`` (committing every ``batch``)."""
    from hookline.outbox import publish

    db = bdb.connect()
    started = time.perf_counter()
    try:
        for i in range(n):
            publish(db, "order.created", order_data(i))
            if (i + 1) % batch == 0:
                db.commit()
        db.commit()
    finally:
        db.close()
    return time.perf_counter() - started


def db_counts(bdb: BenchDB) -> dict[str, int]:
    """Deliveries per status and the number of recorded attempts."""
    db = bdb.connect()
    try:
        rows = db.executesql("SELECT status, COUNT(*) FROM hookline_delivery GROUP BY status")
        counts = {str(s): int(c) for s, c in rows}
        counts["attempts"] = int(db.executesql("SELECT COUNT(*) FROM hookline_attempt")[0][0])
        db.commit()
    finally:
        db.close()
    return counts


# --------------------------------------------------------------------------- redis


class Redis:
    """A private ``redis-server`` (no persistence) on a free port, for the Celery broker."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --------------------------------------------------------------------------- numbers and docs


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb = line.split()[:2]
                values[key] = int(kb) / 1024
    return values.get("VmRSS:", 0.0), values.get("VmHWM:", 0.0)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    pg = "unreachable"
    with contextlib.suppress(Exception):
        conn = _pg_admin()
        cur = conn.cursor()
        cur.execute("SHOW server_version")
        pg = cur.fetchone()[0]
        conn.close()
    import sqlite3

    redis_v = "not installed"
    exe = shutil.which("redis-server")
    if exe:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"v=(\S+)", out)
        redis_v = m.group(1) if m else out.strip()
    return {
        "nproc": str(os.cpu_count()),
        "CPU": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "aiohttp": _version("aiohttp"),
        "pydal": _version("pydal"),
        "psycopg2-binary": _version("psycopg2-binary"),
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL server": pg,
        "celery": _version("celery"),
        "redis (py)": _version("redis"),
        "redis-server": redis_v,
        "requests": _version("requests"),
    }


_DOC_HEADER = """# Benchmarks

Produced by the scripts in [`bench/`](../bench/README.md); each script rewrites only its own
section below (between its `bench:<name>` markers) and the machine description. Numbers are
medians of `--runs` runs unless a row says otherwise. The machine is small and shared (2 cores,
noisy neighbours): treat differences under ~10 % as noise.
"""

_ORDER = [
    "machine",
    "summary",
    "throughput",
    "latency",
    "isolation",
    "claim",
    "backlogs",
    "handlers",
    "ingest",
    "listings",
    "findings",
]


def update_docs(key: str, text: str) -> None:
    """Replace section ``key`` of docs/benchmarks.md (created if missing); refresh the machine."""
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    doc = DOCS.read_text() if DOCS.exists() else _DOC_HEADER
    sections = {key: text}
    if key != "machine":
        info = machine_info()
        sections["machine"] = (
            "## Machine\n\n"
            + md_table(["", "value"], list(info.items()))
            + f"\n\nLast updated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `{key}`.\n"
        )
    for name, body in sections.items():
        start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
        block = f"{start}\n{body.strip()}\n{end}"
        if start in doc:
            pattern = re.escape(start) + r".*?" + re.escape(end)
            doc = re.sub(pattern, lambda _m, block=block: block, doc, flags=re.S)
        else:
            # Insert in the canonical order, before the first later section present.
            later = [
                n for n in _ORDER[_ORDER.index(name) + 1 :] if f"<!-- bench:{n}:start -->" in doc
            ]
            if later:
                marker = f"<!-- bench:{later[0]}:start -->"
                doc = doc.replace(marker, block + "\n\n" + marker, 1)
            else:
                doc = doc.rstrip() + "\n\n" + block + "\n"
    DOCS.write_text(doc)


def argv_command() -> str:
    """The command line that produced a result, for the docs."""
    return ".venv/bin/python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box: list[float] = []
    started = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - started)
