"""queue.claim() with a million pending deliveries, and the worker's memory while claiming.

Per engine: a fresh migrated database; --endpoints endpoints (create_endpoint, defaults);
--events events and --deliveries pending deliveries, all due, inserted with bulk SQL (not
publish: that would take far longer), indexes rebuilt afterwards, statistics analysed.

Then, in a separate process (a worker-like process whose RSS is sampled from /proc):
--claims calls of ``queue.claim(db, worker, capacity=--capacity)`` timed one by one; after each,
the claimed deliveries are recorded as succeeded with ``queue.record_results`` (timed apart), so
in-flight budgets never fill up. Like a worker, the process calls ``queue.vacuum_leases`` once a
second (a no-op on SQLite; not part of the claim's time). Finally a real ``hookline worker``
runs for --worker-seconds against the same database, sending to a local sink, with its RSS
sampled every 0.1 s.

Goals: claim <= 5 ms, RSS <= 150 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BenchDB,
    Sink,
    argv_command,
    create_endpoint,
    md_table,
    median,
    order_data,
    percentile,
    rss_mb,
    update_docs,
)

_DELIVERY_INDEXES = (
    "hookline_delivery_due_ep_idx",
    "hookline_delivery_by_endpoint_idx",
    "hookline_delivery_event_idx",
    "hookline_delivery_created_idx",
)


def bulk_load(bdb: BenchDB, endpoints: int, events: int, deliveries: int, url: str) -> float:
    from hookline.database import connect
    from hookline.outbox import build_payload
    from hookline.schema import ensure_indexes
    from hookline.timeutil import utcnow

    for _ in range(endpoints):
        create_endpoint(bdb, url)
    started = time.perf_counter()
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
    payloads = [build_payload("order.created", order_data(i), utcnow()) for i in range(events)]
    db = connect(bdb.settings)
    ep_ids = [int(r[0]) for r in db.executesql("SELECT id FROM hookline_endpoint ORDER BY id")]
    for name in _DELIVERY_INDEXES:
        db.executesql(f"DROP INDEX IF EXISTS {name}")
    db.commit()
    if bdb.engine == "sqlite":
        db.close()
        import sqlite3

        conn = sqlite3.connect(str(bdb.settings.sqlite_path), isolation_level=None)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO hookline_event (id, event_id, type, payload, created_at)"
            " VALUES (?, ?, 'order.created', ?, ?)",
            ((i + 1, f"evt_bench{i:021d}", p, stamp) for i, p in enumerate(payloads)),
        )
        rng = random.Random(1)
        conn.executemany(
            "INSERT INTO hookline_delivery (delivery_id, event, endpoint, status, attempts,"
            " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)",
            (
                (
                    f"dlv_bench{i:021d}",
                    i % events + 1,
                    ep_ids[i % len(ep_ids)],
                    now - 3600 + rng.random() * 3500,
                    stamp,
                    stamp,
                )
                for i in range(deliveries)
            ),
        )
        conn.execute("COMMIT")
        conn.close()
        db = connect(bdb.settings)
    else:
        cur = db._adapter.cursor
        from psycopg2.extras import execute_values

        execute_values(
            cur,
            "INSERT INTO hookline_event (event_id, type, payload, created_at) VALUES %s",
            [(f"evt_bench{i:021d}", "order.created", p, stamp) for i, p in enumerate(payloads)],
            page_size=1000,
        )
        first_event = int(db.executesql("SELECT MIN(id) FROM hookline_event")[0][0])
        db.executesql(
            "INSERT INTO hookline_delivery (delivery_id, event, endpoint, status, attempts,"
            " next_attempt_at, created_at, updated_at)"
            " SELECT 'dlv_bench' || lpad(g::text, 21, '0'), %s + g %% %s,"
            " (%s::int[])[1 + g %% %s], 'pending', 0, %s - 3600 + random() * 3500, %s, %s"
            " FROM generate_series(0, %s - 1) AS g",
            placeholders=[first_event, events, ep_ids, len(ep_ids), now, stamp, stamp, deliveries],
        )
        db.commit()
    ensure_indexes(db)
    db.executesql("ANALYZE")
    db.commit()
    db.close()
    return time.perf_counter() - started


def _claim_plan(db, postgres: bool, capacity: int) -> list[tuple]:
    """The plan of the claim's candidate read: SQLite's query, or PostgreSQL's claim statement
    as a claim runs it (its planner settings), reduced to the lines that read a table."""
    from hookline import queue
    from hookline.fanout import dialect_sql

    now = time.time()
    window = capacity * (queue.CLAIM_WINDOW_PG if postgres else queue.CLAIM_WINDOW)
    if not postgres:
        return db.executesql(
            "EXPLAIN QUERY PLAN " + dialect_sql(db, queue._CANDIDATES.format(skip="")),
            placeholders=[now, window, window],
        )
    db.executesql(f"PREPARE bench_claim {queue._CLAIM_PG_TYPES} AS {queue._CLAIM_PG}")
    db.executesql(queue.CLAIM_PLANNER_SETTINGS)
    rows = db.executesql(
        f"EXPLAIN EXECUTE bench_claim(%s, %s, {window}, {capacity}, 'w', 60, '-Infinity')",
        placeholders=[now, now + queue.RATE_HORIZON_S],
    )
    db.rollback()
    return [row for row in rows if " Scan " in row[0] or row[0].lstrip().startswith("CTE ")]


def child(engine_env: dict, claims: int, capacity: int) -> None:
    """The timed part, in its own process: prints one JSON line."""
    os.environ.update(engine_env)
    from hookline import queue
    from hookline.config import Settings
    from hookline.database import connect
    from hookline.duefloor import DueFloor
    from hookline.queue import SendResult
    from hookline.retry import RetryPolicy

    settings = Settings.from_env()
    db = connect(settings)
    policy, rng = RetryPolicy(), random.Random(0)
    import datetime as dt

    worker, floor = queue.new_worker_id(), DueFloor()
    rss_start = rss_mb(os.getpid())[0]
    claim_ms, record_ms, got, rss = [], [], [], []
    last_vacuum = time.monotonic()
    for i in range(claims + 5):
        if time.monotonic() - last_vacuum >= queue.LEASE_VACUUM_EVERY_S:
            last_vacuum = time.monotonic()
            queue.vacuum_leases(db)
        t = time.perf_counter()
        items = queue.claim(
            db, worker, now=time.time(), capacity=capacity, lease_s=60.0, floor=floor
        )
        c = (time.perf_counter() - t) * 1000
        results = [
            SendResult(
                delivery_row=x.delivery_row,
                endpoint_row=x.endpoint_row,
                endpoint_id=x.endpoint_id,
                attempt=x.attempt,
                lease_owner=x.lease_owner,
                started_at=time.time(),
                duration_ms=1.0,
                status_code=200,
            )
            for x in items
        ]
        t = time.perf_counter()
        queue.record_results(
            db, results, now=time.time(), policy=policy, rng=rng, disable_after=dt.timedelta(days=5)
        )
        r = (time.perf_counter() - t) * 1000
        if i >= 5:  # the first claims warm caches and pydal
            claim_ms.append(c)
            record_ms.append(r)
            got.append(len(items))
            rss.append(rss_mb(os.getpid())[0])
    plan = _claim_plan(db, engine_env.get("HOOKLINE_DATABASE_URL") is not None, capacity)
    db.commit()
    db.close()
    print(
        json.dumps(
            {
                "claim_ms": claim_ms,
                "record_ms": record_ms,
                "got": got,
                "rss": rss,
                "rss_start": rss_start,
                "peak": rss_mb(os.getpid())[1],
                "plan": [" | ".join(str(c) for c in row) for row in plan],
            }
        )
    )


def real_worker(bdb: BenchDB, seconds: float) -> dict:
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("hookline")), "worker"],
        env=bdb.subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    samples = []
    started = time.time()
    while time.time() - started < seconds and proc.poll() is None:
        try:
            samples.append(rss_mb(proc.pid))
        except (OSError, ValueError):
            break
        time.sleep(0.1)
    peak = max((s[1] for s in samples), default=float("nan"))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    # "worker done: N claimed, N succeeded, N recorded, ..." (printed by `hookline worker`)
    found = re.search(r"(\d+) recorded", out or "")
    done = int(found.group(1)) if found else -1
    return {
        "peak": peak,
        "last": samples[-1][0] if samples else float("nan"),
        "out": out.strip(),
        "attempts": done,
    }


def run_engine(engine: str, args, sink: Sink) -> dict:
    with BenchDB(engine) as bdb:
        load_s = bulk_load(bdb, args.endpoints, args.events, args.deliveries, sink.url)
        print(f"{engine}: loaded {args.deliveries:,} deliveries in {load_s:.0f} s", flush=True)
        runs = []
        for run in range(1, args.runs + 1):
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    json.dumps(bdb.env),
                    "--claims",
                    str(args.claims),
                    "--capacity",
                    str(args.capacity),
                ],
                capture_output=True,
                text=True,
                timeout=args.claims * 5 + 120,
            )
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            runs.append(r)
            print(
                f"run {run} {engine:9} claim p50 {percentile(r['claim_ms'], 50):7.2f} ms"
                f" p99 {percentile(r['claim_ms'], 99):7.2f} ms  record p50"
                f" {percentile(r['record_ms'], 50):6.2f} ms  claimed/claim"
                f" {median(r['got']):.0f}  RSS peak {r['peak']:.0f} MB",
                flush=True,
            )
        worker = real_worker(bdb, args.worker_seconds) if args.worker_seconds > 0 else None
        if worker:
            print(
                f"{engine}: real worker {args.worker_seconds:.0f}s, peak RSS"
                f" {worker['peak']:.0f} MB, {worker['attempts']} attempts",
                flush=True,
            )
        db_size = ""
        if engine == "sqlite":
            size = sum(f.stat().st_size for f in bdb.settings.sqlite_path.parent.glob("*.sqlite*"))
            db_size = f"{size / 2**20:.0f} MiB"
        else:
            db = bdb.connect()
            db_size = db.executesql("SELECT pg_size_pretty(pg_database_size(current_database()))")[
                0
            ][0]
            db.close()
    return {"load_s": load_s, "runs": runs, "worker": worker, "size": db_size}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        p = argparse.ArgumentParser()
        p.add_argument("--child")
        p.add_argument("--claims", type=int)
        p.add_argument("--capacity", type=int)
        a = p.parse_args()
        child(json.loads(a.child), a.claims, a.capacity)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--deliveries", type=int, default=1_000_000)
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--claims", type=int, default=200)
    p.add_argument("--capacity", type=int, default=100)
    p.add_argument("--worker-seconds", type=float, default=10.0)
    p.add_argument("--engines", default="sqlite,postgres")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    res = {}
    with Sink() as sink:
        for engine in engines:
            res[engine] = run_engine(engine, args, sink)
    rows, plans = [], []
    for engine, r in res.items():
        p50s = [percentile(x["claim_ms"], 50) for x in r["runs"]]
        p99s = [percentile(x["claim_ms"], 99) for x in r["runs"]]
        rec = median([percentile(x["record_ms"], 50) for x in r["runs"]])
        peak = max(x["peak"] for x in r["runs"])
        w = r["worker"]
        p50, p99 = median(p50s), median(p99s)
        worst_rss = max(peak, w["peak"] if w else 0)
        rows.append(
            [
                "SQLite" if engine == "sqlite" else "PostgreSQL",
                p50,
                p99,
                " / ".join(f"{x:.2f}" for x in p50s),
                " / ".join(f"{x:.2f}" for x in p99s),
                f"{median([median(x['got']) for x in r['runs']]):.0f}",
                rec,
                f"{peak:.0f}",
                f"{w['peak']:.0f} ({w['attempts']:,} sent)" if w else "-",
                f"{r['load_s']:.0f} s, {r['size']}",
                f"{'met' if p50 <= 5 else 'MISSED'} / {'met' if worst_rss <= 150 else 'MISSED'}",
            ]
        )
        plans.append(f"{engine}:\n" + "\n".join("    " + x for x in r["runs"][0]["plan"]))
    table = md_table(
        [
            "engine",
            "claim p50 ms",
            "claim p99 ms",
            "p50 per run",
            "p99 per run",
            "claimed per call",
            "record p50 ms",
            "claiming process peak RSS MB",
            f"`hookline worker` peak RSS MB ({args.worker_seconds:.0f} s)",
            "bulk load, DB size",
            "goal claim / RSS",
        ],
        rows,
    )
    print()
    print(table)
    for plan in plans:
        print(plan)
    if not args.no_docs:
        update_docs(
            "claim",
            f"""
## 4. Claim at scale (`bench/claim_at_scale.py`)

{args.deliveries:,} pending (all due) deliveries over {args.events:,} events and
{args.endpoints} endpoints (defaults), bulk-inserted with SQL; per run a fresh process makes
{args.claims} timed `queue.claim(capacity={args.capacity})` calls (after 5 warm-up calls), each
followed by `record_results` of what it claimed, and, like a worker, `vacuum_leases` once
a second (PostgreSQL; outside the timed claims); then a real `hookline worker` runs
{args.worker_seconds:.0f} s against the same database. {args.runs} runs, medians of per-run
percentiles. Goal: claim <= 5 ms, RSS <= 150 MB.

```
{argv_command()}
```

{table}

Candidate query plan (first run):

```
{chr(10).join(plans)}
```
""",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
