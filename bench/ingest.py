"""Durable ingest: requests/s and latency of ``POST /myapp/webhook`` with every 2xx on disk.

Load: ``wrk -t2 -c64 -d<S>s --latency -s bench/ingest_orders.lua`` (64 keep-alive connections),
each request a new order as JSON ``{"order_id": <unique>, "product_name": "kettle",
"quantity": 1}``. Targets, each started fresh per run in its own temporary directory:

  bare       the ceiling: a py4web action under granian that reads the body and answers the
             seed's JSON, writing nothing (bench/ingest_apps/bare)
  naive      the blog post's receiver in py4web: DAL fixture, one ``db.orders.insert`` and the
             fixture's commit per request (bench/ingest_apps/naive)
  starlette  Starlette on uvicorn (as many workers as the py4web servers, uvloop +
             httptools), one sqlite3 insert + commit per request right in the async route, a
             connection per process (bench/ingest_starlette.py)
  hookline   ``hookline serve`` (what ``make run`` runs; delivery worker included unless
             --no-worker) on a fresh HOOKLINE_DATA_DIR

bare and naive run on hookline's server config without its writer: granian WSGI over
``py4web.core.wsgi`` with the web workers / threads ``hookline serve`` gives py4web's WSGI app
when the writer is off, a process per CPU (bench/ingest_server.py). Every writer uses SQLite in
WAL mode with ``synchronous=FULL``.

Each run: start the server, poll until it answers, 2 s of wrk warm-up (not counted), the
measured wrk run, stop the server. Warm-up and measured requests carry different random tags in
their order_id, so the durability check is exact: after the server has stopped, the rows of
the measured run (order_id starting with its tag; for hookline also the inbox rows carrying the
tag in the stored headers) must be >= the 2xx answers wrk counted. A run with any non-2xx
answer, socket error (timeouts included) or missing row is marked FAILED and left out of the
medians.

Goals (medians of the per-round ratios): hookline >= 0.75x bare, >= 4x naive,
>= 1.5x starlette; hookline p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, SECRET_KEY, argv_command, free_port, md_table, median, update_docs

TARGETS = ("bare", "naive", "starlette", "hookline")
WRITERS = ("naive", "starlette", "hookline")
LUA = BENCH_DIR / "ingest_orders.lua"
APPS = BENCH_DIR / "ingest_apps"
PATH = "/myapp/webhook"
WRK_TIMEOUT_SECONDS = 10
WARMUP_SECONDS = 2
# (target, goal ratio hookline/target); and hookline's p99 goal in ms.
RATIO_GOALS = {"bare": 0.75, "naive": 4.0, "starlette": 1.5}
P99_GOAL_MS = 50.0
# The orders table of the naive and Starlette receivers (pydal's DDL for the naive app's fields).
ORDERS_DDL = (
    "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " order_id CHAR(512), product_name CHAR(512), quantity INTEGER)"
)


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    """What one wrk run reported (latencies in ms)."""

    rps: float
    p50: float
    p99: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]
    output: str

    @property
    def ok_responses(self) -> int:
        """Responses wrk counted as 2xx/3xx (every response minus the non-2xx ones)."""
        return self.requests - self.non_2xx

    def problems(self) -> list[str]:
        """Why this run does not count, empty if it does."""
        out = []
        if self.non_2xx:
            out.append(f"{self.non_2xx} non-2xx responses")
        errors = {k: v for k, v in self.socket_errors.items() if v}
        if errors:
            out.append("socket errors " + ", ".join(f"{k} {v}" for k, v in errors.items()))
        if self.requests == 0:
            out.append("no requests completed")
        return out


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if m is None:
        raise ValueError(f"unreadable wrk duration {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Parse wrk's text report (run with ``--latency``); raise ``ValueError`` if it is not one."""

    def need(pattern: str) -> re.Match[str]:
        m = re.search(pattern, output, re.M)
        if m is None:
            raise ValueError(f"wrk output has no match for {pattern!r}:\n{output}")
        return m

    socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:  # wrk prints the line only when there were some
        socket_errors = dict(zip(socket_errors, map(int, m.groups()), strict=True))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        rps=float(need(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50=_ms(need(r"^\s+50%\s+(\S+)").group(1)),
        p99=_ms(need(r"^\s+99%\s+(\S+)").group(1)),
        requests=int(need(r"^\s+(\d+) requests in ").group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
        output=output,
    )


def run_wrk(port: int, seconds: int, connections: int, threads: int, tag: str) -> WrkResult:
    """One wrk run against ``127.0.0.1:port`` posting orders tagged ``tag``."""
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        # wrk's default 2 s timeout would drop the slow tail of a per-request-commit receiver
        # as errors; 10 s keeps it in the latency distribution, where it belongs.
        f"--timeout={WRK_TIMEOUT_SECONDS}s",
        "--latency",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}",
        "--",
        tag,
        PATH,
    ]
    # subprocess.run kills wrk if we are interrupted; wrk stays in our process group, so a
    # Ctrl-C in the terminal reaches it too.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


# --------------------------------------------------------------------------- servers


def hookline_env(data_dir: Path) -> dict[str, str]:
    """The environment for ``hookline serve``: ours without HOOKLINE_*, plus a fresh data dir.

    Stray HOOKLINE_* variables (a PostgreSQL URL, other threads) would change what is measured.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env.update(HOOKLINE_DATA_DIR=str(data_dir), HOOKLINE_SECRET_KEY=SECRET_KEY)
    return env


def hookline_web_config() -> tuple[int, int]:
    """(web workers, threads) of the py4web servers: what ``hookline serve`` runs py4web's WSGI
    app with when it has no ingest writer (one process per CPU; with the writer it leaves the
    writer a CPU, which the peers have no use for)."""
    from hookline.config import Settings

    env = {**hookline_env(Path(tempfile.gettempdir())), "HOOKLINE_INGEST_WRITER": "false"}
    settings = Settings.from_env(env)
    return settings.web_workers, settings.web_threads


def create_orders_db(path: Path) -> None:
    """The SQLite file of the naive and Starlette receivers: WAL, with the ``orders`` table."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
        conn.execute(ORDERS_DDL)
        conn.commit()
    finally:
        conn.close()


@dataclass
class Server:
    """One target's server process (its own process group), its data and its log."""

    target: str
    workdir: Path
    port: int = field(default_factory=free_port)
    db_path: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def command(self, web_workers: int, web_threads: int, with_worker: bool) -> tuple[list, dict]:
        """The command line and environment that start this target."""
        env = dict(os.environ)
        py = sys.executable
        if self.target in ("bare", "naive"):
            # A private apps folder whose only app is a copy named myapp: same URL as hookline,
            # py4web loads nothing else, and nothing (bytecode, .service) lands in the repo.
            apps = self.workdir / "apps"
            apps.mkdir()
            (apps / "__init__.py").touch()
            shutil.copytree(
                APPS / self.target, apps / "myapp", ignore=shutil.ignore_patterns("__pycache__")
            )
            if self.target == "naive":
                self.db_path = self.workdir / "naive.db"
                create_orders_db(self.db_path)
                env["INGEST_NAIVE_DB"] = str(self.db_path)
            cmd = [
                py,
                str(BENCH_DIR / "ingest_server.py"),
                "--apps-folder",
                str(apps),
                "--port",
                str(self.port),
                "--workers",
                str(web_workers),
                "--threads",
                str(web_threads),
                "--service-folder",
                str(self.workdir / "py4web"),
            ]
        elif self.target == "starlette":
            self.db_path = self.workdir / "starlette.db"
            create_orders_db(self.db_path)
            env["INGEST_STARLETTE_DB"] = str(self.db_path)
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")])
            )
            cmd = [
                py,
                "-m",
                "uvicorn",
                "ingest_starlette:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(web_workers),  # as many processes as the py4web servers
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ]
        elif self.target == "hookline":
            from hookline.config import Settings

            data_dir = self.workdir / "data"
            env = hookline_env(data_dir)
            self.db_path = Settings.from_env(env).sqlite_path
            cmd = [str(Path(py).with_name("hookline")), "serve", "--port", str(self.port)]
            if not with_worker:
                cmd.append("--no-worker")
        else:
            raise ValueError(f"unknown target {self.target!r}")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return cmd, env

    def start(self, web_workers: int, web_threads: int, with_worker: bool) -> None:
        """Start the server in a new session (so it has its own process group to kill)."""
        cmd, env = self.command(web_workers, web_threads, with_worker)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll until the server answers: hookline's health check, or the seed's 400 to GET."""
        path, expected = ("/myapp/health", 200) if self.target == "hookline" else (PATH, 400)
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.target} exited during startup:\n{self.log_tail()}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", path)
                status = conn.getresponse().status
                if status == expected:
                    return
                last = f"HTTP {status}"
            except OSError as error:
                last = str(error)
            finally:
                conn.close()
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.target} not ready after {timeout:.0f}s ({last}):\n" + self.log_tail()
        )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server (a graceful stop), then SIGKILL whatever is left of its group."""
        if self.proc is None:
            return
        try:
            with contextlib.suppress(ProcessLookupError):
                if self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        finally:  # even when a second Ctrl-C cuts the graceful stop short
            # Granian workers, hookline's delivery worker: children that may outlive the leader.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output, for error reports."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def count_rows(self, tag: str) -> dict[str, int]:
        """Rows of the run tagged ``tag`` on disk; call after ``stop`` (reads the WAL too)."""
        if self.db_path is None:
            return {}
        like = tag + "-%"  # tags are [a-z0-9]: nothing to escape
        conn = sqlite3.connect(self.db_path)
        try:
            if self.target == "hookline":
                orders = conn.execute(
                    "SELECT COUNT(*) FROM hookline_order WHERE source = 'webhook'"
                    " AND order_id LIKE ?",
                    (like,),
                ).fetchone()[0]
                # The inbox keeps the request headers (JSON); X-Bench-Run carries the tag.
                inbox = conn.execute(
                    "SELECT COUNT(*) FROM hookline_inbox WHERE source = 'orders'"
                    " AND headers LIKE ?",
                    (f'%"{tag}"%',),
                ).fetchone()[0]
                return {"hookline_order": int(orders), "hookline_inbox": int(inbox)}
            rows = conn.execute(
                "SELECT COUNT(*) FROM orders WHERE order_id LIKE ?", (like,)
            ).fetchone()[0]
            return {"orders": int(rows)}
        finally:
            conn.close()


# --------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    """One target in one round."""

    target: str
    wrk: WrkResult | None
    rows: dict[str, int]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.wrk is not None and not self.problems


def one_run(target: str, args: argparse.Namespace, web: tuple[int, int]) -> RunResult:
    """Start ``target`` fresh, warm it up, measure, stop it, check durability; clean up."""
    workdir = Path(tempfile.mkdtemp(prefix=f"hookline-bench-ingest-{target}-"))
    server = Server(target, workdir)
    problems: list[str] = []
    result: WrkResult | None = None
    rows: dict[str, int] = {}
    tag = "m" + secrets.token_hex(5)
    try:
        try:
            server.start(*web, with_worker=not args.no_worker)
            server.wait_ready()
            warm = run_wrk(
                server.port,
                WARMUP_SECONDS,
                args.connections,
                args.wrk_threads,
                "w" + secrets.token_hex(5),
            )
            problems += [f"warm-up: {p}" for p in warm.problems()]
            result = run_wrk(server.port, args.seconds, args.connections, args.wrk_threads, tag)
            problems += result.problems()
        finally:
            server.stop()
        if target in WRITERS and result is not None:
            rows = server.count_rows(tag)
            for table, n in rows.items():
                if n < result.ok_responses:
                    problems.append(
                        f"durability: {table} has {n} rows < {result.ok_responses} 2xx answers"
                    )
        if problems:
            print(f"--- {target} server log (tail) ---\n{server.log_tail()}", flush=True)
            if result is not None:
                print(f"--- wrk output ---\n{result.output}", flush=True)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired, sqlite3.Error) as error:
        problems.append(f"{type(error).__name__}: {error}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return RunResult(target, result, rows, problems)


def describe(run: int, r: RunResult) -> str:
    """One progress line."""
    head = f"run {run} {r.target:9}"
    if r.wrk is None:
        return f"{head} FAILED: {'; '.join(r.problems)}"
    w = r.wrk
    rows = " ".join(f"{k} {v}" for k, v in r.rows.items()) or "-"
    status = "ok" if r.ok else "FAILED: " + "; ".join(r.problems)
    return (
        f"{head} {w.rps:9,.0f} req/s  p50 {w.p50:7.2f} ms  p99 {w.p99:7.2f} ms"
        f"  requests {w.requests}  non-2xx {w.non_2xx}"
        f"  socket errors {sum(w.socket_errors.values())}  rows on disk: {rows}  {status}"
    )


# --------------------------------------------------------------------------- report


def _versions() -> dict[str, str]:
    out = {}
    for name in ("granian", "py4web", "pydal", "starlette", "uvicorn", "uvloop", "httptools"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    first = (wrk.stdout or wrk.stderr).splitlines()
    out["wrk"] = first[0].split(" Copyright")[0].removeprefix("wrk ") if first else "unknown"
    out["SQLite"] = sqlite3.sqlite_version
    return out


def report(targets: list[str], rounds: list[dict[str, RunResult]]) -> tuple[str, bool]:
    """The markdown tables (printed and written to the docs) and whether every run was ok."""
    all_ok = all(r.ok for rnd in rounds for r in rnd.values())
    rows = []
    medians: dict[str, dict[str, float]] = {}
    for t in targets:
        runs = [rnd[t] for rnd in rounds if t in rnd]
        good = [r.wrk for r in runs if r.ok and r.wrk is not None]
        medians[t] = {
            "rps": median([w.rps for w in good]),
            "p50": median([w.p50 for w in good]),
            "p99": median([w.p99 for w in good]),
        }
        durability = (
            "-"
            if t not in WRITERS
            else " / ".join(
                ",".join(str(n) for n in r.rows.values()) + f" >= {r.wrk.ok_responses}"
                if r.wrk is not None and r.rows
                else "n/a"
                for r in runs
            )
        )
        rows.append(
            [
                t,
                medians[t]["rps"],
                medians[t]["p50"],
                medians[t]["p99"],
                " / ".join(f"{r.wrk.rps:,.0f}" if r.wrk else "-" for r in runs),
                f"{len(good)}/{len(runs)}",
                durability,
            ]
        )
    table = md_table(
        ["target", "req/s", "p50 ms", "p99 ms", "req/s per run", "runs ok", "rows >= 2xx per run"],
        rows,
    )

    goal_rows = []
    met_all = True
    if "hookline" in targets:
        for base, goal in RATIO_GOALS.items():
            if base not in targets:
                continue
            ratios = [
                rnd["hookline"].wrk.rps / rnd[base].wrk.rps
                for rnd in rounds
                if rnd["hookline"].ok and rnd[base].ok
            ]
            value = median(ratios)
            met = bool(ratios) and value >= goal
            met_all &= met
            goal_rows.append(
                [
                    f"hookline / {base} req/s",
                    f">= {goal:g}x",
                    f"{value:.2f}x" if ratios else "n/a",
                    " / ".join(f"{x:.2f}" for x in ratios) or "-",
                    "met" if met else "MISSED",
                ]
            )
        p99s = [rnd["hookline"].wrk.p99 for rnd in rounds if rnd["hookline"].ok]
        p99 = median(p99s)
        met = bool(p99s) and p99 <= P99_GOAL_MS
        met_all &= met
        goal_rows.append(
            [
                "hookline p99",
                f"<= {P99_GOAL_MS:g} ms",
                f"{p99:.1f} ms" if p99s else "n/a",
                " / ".join(f"{x:.1f}" for x in p99s) or "-",
                "met" if met else "MISSED",
            ]
        )
    goals = (
        md_table(["goal", "target", "median", "per round", "status"], goal_rows)
        + f"\n\nGoals: {'all met' if met_all else 'not all met'}"
        f" ({sum(row[-1] == 'met' for row in goal_rows)}/{len(goal_rows)})."
        if goal_rows
        else "(hookline not measured: no goals)"
    )
    failures = [
        f"- round {n} {r.target}: {'; '.join(r.problems)}"
        for n, rnd in enumerate(rounds, 1)
        for r in rnd.values()
        if not r.ok
    ]
    text = f"{table}\n\n{goals}"
    if failures:
        text += "\n\nFailed runs (left out of the medians and ratios):\n\n" + "\n".join(failures)
    return text, all_ok


def docs_section(tables: str, args: argparse.Namespace, web: tuple[int, int]) -> str:
    """The ``ingest`` section of docs/benchmarks.md."""
    from hookline.config import Settings

    versions = ", ".join(f"{k} {v}" for k, v in _versions().items())
    worker = "without" if args.no_worker else "with"
    own_web = Settings.from_env(hookline_env(Path(tempfile.gettempdir()))).web_workers
    return f"""
## Durable ingest on the seed webhook (`bench/ingest.py`)

`POST /myapp/webhook` with a new JSON order per request (`bench/ingest_orders.lua`) from
`wrk -t{args.wrk_threads} -c{args.connections} -d{args.seconds}s
--timeout={WRK_TIMEOUT_SECONDS}s --latency` (keep-alive connections), after {WARMUP_SECONDS} s
of warm-up. Every server is started fresh per run; {args.runs} runs, medians of the runs that
passed. Every writer uses SQLite in WAL mode with `synchronous=FULL`.

- **bare** (the ceiling): a py4web action under granian that reads the body and answers the
  seed's JSON, writing nothing (`bench/ingest_apps/bare`).
- **naive**: the blog post's web2py receiver in py4web: `@action.uses(db)`, one
  `db.orders.insert(...)` and the DAL fixture's commit per request (`bench/ingest_apps/naive`).
- **starlette**: Starlette on uvicorn ({web[0]} worker(s), as many as the py4web servers;
  uvloop + httptools); the async route parses the JSON and runs insert + commit on the event
  loop, a sqlite3 connection per process: twice the requests a second of the same work handed
  to Starlette's threadpool (see `bench/ingest_starlette.py`).
- **hookline**: `hookline serve` ({worker} the delivery worker) on a fresh data directory:
  per request the order upsert, `order.created` in the outbox and the raw request in the inbox
  (three rows), committed by group commit before the answer. Its {own_web} web process(es)
  (its default: a CPU is left to the writer) serve the seed webhook from the RSGI front and
  hand it to the ingest writer process (`docs/architecture.md`); py4web serves every other
  route.

bare and naive run on py4web's WSGI app as `hookline serve` did before the RSGI front, and as
it still does with `HOOKLINE_INGEST_WRITER=false` (`bench/ingest_server.py`): granian WSGI over
`py4web.core.wsgi`, {web[0]} worker(s) x {web[1]} threads (hookline's defaults without the
writer: a process per CPU).

Durability: after each run the server is stopped and the measured run's rows are counted (for
hookline both `hookline_order` and `hookline_inbox`); they must be >= the 2xx answers wrk got
(warm-up rows carry another tag and are not counted). A run with a non-2xx answer, a socket
error or a missing row fails and is left out.

```
apt-get install -y wrk
make install && .venv/bin/pip install -r bench/requirements.txt
{argv_command()}
```

{tables}

Versions: {versions}.
"""


# --------------------------------------------------------------------------- main


def _raise_interrupt(signum: int, _frame: Any) -> None:
    # SIGTERM/SIGHUP would end Python without running `finally`; turn them into Ctrl-C so the
    # servers are stopped and the temporary directories removed.
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    """Run the rounds, print per-run lines, the tables and the goals; update the docs."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10, help="measured wrk duration per run")
    p.add_argument("--connections", type=int, default=64, help="wrk keep-alive connections")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--only", default=",".join(TARGETS), help="subset of " + ",".join(TARGETS))
    p.add_argument(
        "--no-worker", action="store_true", help="hookline serve --no-worker (no delivery worker)"
    )
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args()
    wanted = [t for t in args.only.split(",") if t]
    unknown = set(wanted) - set(TARGETS)
    if unknown or not wanted:
        p.error(f"--only takes a subset of {','.join(TARGETS)}")
    targets = [t for t in TARGETS if t in wanted]  # always in the canonical order
    if shutil.which("wrk") is None:
        p.error("wrk not found: apt-get install -y wrk")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)

    web = hookline_web_config()
    print(
        f"targets {','.join(targets)}; {args.runs} run(s) of {args.seconds}s, "
        f"{args.connections} connections; py4web servers: {web[0]} granian worker(s) x "
        f"{web[1]} threads (hookline's defaults without its writer)",
        flush=True,
    )
    rounds: list[dict[str, RunResult]] = []
    for run in range(1, args.runs + 1):
        rnd: dict[str, RunResult] = {}
        for target in targets:
            rnd[target] = one_run(target, args, web)
            print(describe(run, rnd[target]), flush=True)
        if "hookline" in rnd and rnd["hookline"].ok:
            ratios = [
                f"hookline/{b} {rnd['hookline'].wrk.rps / rnd[b].wrk.rps:.2f}x"
                for b in RATIO_GOALS
                if b in rnd and rnd[b].ok
            ]
            if ratios:
                print(f"run {run} ratios: {', '.join(ratios)}", flush=True)
        rounds.append(rnd)

    tables, all_ok = report(targets, rounds)
    print()
    print(tables)
    if not args.no_docs:
        update_docs("ingest", docs_section(tables, args, web))
    return 0 if all_ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers are stopped and temp dirs removed by then
        print("interrupted", file=sys.stderr)
        sys.exit(130)
