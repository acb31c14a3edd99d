"""Publish -> first attempt latency at a steady publish rate, with a worker running.

Per run and engine: a fresh database, one endpoint (defaults) on a recording sink, and
``hookline worker`` started as a separate process (not burst). --publishers processes (default
2: one process cannot commit 200 orders/s on the 2-core reference machine) each create one order
per tick with ``orders.create_order`` (which publishes ``order.created`` in the same
transaction) and commit, on staggered fixed schedules adding up to --rate per second for
--seconds; the commit time is taken right after ``commit()`` returns. The sink stamps each
arrival; the ``webhook-id`` header (the event id) maps an arrival back to its commit, so

    latency = sink arrival time - publisher commit time     (same machine clock)

Goal: p50 <= 20 ms, p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
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
    percentile,
    update_docs,
)


def start_worker(bdb: BenchDB, sink: Sink, profile: str | None) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).with_name("hookline")), "worker"]
    proc = subprocess.Popen(
        cmd, env=bdb.subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if profile:  # attach, so that SIGTERM still goes to the worker and py-spy writes on exit
        out = Path(profile) / f"latency-{bdb.engine}.txt"
        subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--threads",
                "--idle",
                "-r",
                "250",
                "-f",
                "raw",
                "-o",
                str(out),
                "--pid",
                str(proc.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    # Warm up: one event through the whole path, so startup is not measured.
    db = bdb.connect()
    from hookline.outbox import publish

    publish(db, "ping", {"warmup": True})
    db.commit()
    db.close()
    if sink.wait_count(1, 60)["count"] < 1:
        proc.kill()
        raise RuntimeError("worker did not deliver the warm-up event: " + proc.stderr.read())
    return proc


def publisher(env: dict, rate: float, total: int, start: float, offset: float, out) -> None:
    """One publisher process: ``total`` orders at ``rate``/s from ``start + offset``."""
    import os

    os.environ.update(env)
    from hookline.config import Settings
    from hookline.database import connect
    from hookline.order_rules import OrderChanges
    from hookline.orders import create_order

    db = connect(Settings.from_env())
    # This transaction's own event: currval is per session on PostgreSQL; on SQLite the
    # publisher holds the write lock from its first insert to its commit.
    last_event = (
        "SELECT event_id FROM hookline_event WHERE id ="
        " currval(pg_get_serial_sequence('hookline_event', 'id'))"
        if "HOOKLINE_DATABASE_URL" in env
        else "SELECT event_id FROM hookline_event ORDER BY id DESC LIMIT 1"
    )
    committed: dict[str, float] = {}
    late = 0
    for i in range(total):
        target = start + offset + i / rate
        pause = target - time.time()
        if pause > 0:
            time.sleep(pause)
        else:
            late += 1
        create_order(
            db,
            OrderChanges(
                product_name="kettle",
                quantity=1,
                unit_price_minor=1999,
                currency="USD",
                customer_email=f"c{i}@example.com",
            ),
        )
        event_id = db.executesql(last_event)[0][0]
        db.commit()
        committed[event_id] = time.time()
    db.close()
    out.put((committed, late, time.time()))


def one_run(engine: str, rate: float, seconds: float, publishers: int, profile: str | None) -> dict:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with BenchDB(engine) as bdb, Sink(record=True) as sink:
        create_endpoint(bdb, sink.url)
        worker = start_worker(bdb, sink, profile)
        try:
            sink.reset()
            each = int(rate * seconds) // publishers
            total = each * publishers
            queue = ctx.Queue()
            start = time.time() + 1.5  # time for the publishers to import and connect
            procs = [
                ctx.Process(
                    target=publisher,
                    args=(bdb.env, rate / publishers, each, start, k / rate, queue),
                )
                for k in range(publishers)
            ]
            for proc in procs:
                proc.start()
            committed: dict[str, float] = {}
            late, ended = 0, start
            for _ in procs:
                c, lt, end = queue.get(timeout=seconds * 10 + 60)
                committed.update(c)
                late += lt
                ended = max(ended, end)
            for proc in procs:
                proc.join()
            achieved = total / (ended - start)
            stats = sink.wait_count(total, 60)
            arrivals = sink.arrivals()
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
    latencies = [(arrivals[k] - t) * 1000 for k, t in committed.items() if k in arrivals]
    return {
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "max": max(latencies) if latencies else float("nan"),
        "published": total,
        "delivered": len(latencies),
        "sink": stats["count"],
        "rate": achieved,
        "late": late,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rate", type=float, default=200.0, help="events per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument(
        "--publishers",
        type=int,
        default=2,
        help="publisher processes sharing the rate (one cannot commit 200/s here)",
    )
    p.add_argument("--engines", default="sqlite,postgres")
    p.add_argument("--profile", metavar="DIR", help="run the worker under py-spy (raw stacks)")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for run in range(1, args.runs + 1):
        for engine in engines:
            r = one_run(engine, args.rate, args.seconds, args.publishers, args.profile)
            results.setdefault(engine, []).append(r)
            print(
                f"run {run} {engine:9} p50 {r['p50']:7.1f} ms  p90 {r['p90']:7.1f}  p99"
                f" {r['p99']:7.1f}  max {r['max']:7.1f}  delivered {r['delivered']}/"
                f"{r['published']}  publish rate {r['rate']:.0f}/s",
                flush=True,
            )
    rows = []
    for engine in engines:
        rs = results[engine]
        p50, p99 = median([r["p50"] for r in rs]), median([r["p99"] for r in rs])
        rows.append(
            [
                "SQLite" if engine == "sqlite" else "PostgreSQL",
                p50,
                median([r["p90"] for r in rs]),
                p99,
                median([r["max"] for r in rs]),
                " / ".join(f"{r['p50']:.1f}" for r in rs),
                " / ".join(f"{r['p99']:.1f}" for r in rs),
                f"{median([r['rate'] for r in rs]):.0f}/s",
                " / ".join(f"{r['delivered']}/{r['published']}" for r in rs),
                f"{'met' if p50 <= 20 else 'MISSED'} / {'met' if p99 <= 100 else 'MISSED'}",
            ]
        )
    table = md_table(
        [
            "engine",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "p50 per run",
            "p99 per run",
            "publish rate",
            "delivered",
            "goal p50 / p99",
        ],
        rows,
    )
    print()
    print(table)
    if not args.no_docs:
        update_docs(
            "latency",
            f"""
## 2. Publish -> first attempt latency (`bench/publish_latency.py`)

{args.rate:.0f} orders/s (`orders.create_order` + commit, spread over {args.publishers} publisher
processes on staggered schedules) for {args.seconds:.0f} s while
`hookline worker` runs as a separate process (default settings: concurrency 256, endpoint
`max_in_flight` 20); latency = sink arrival - commit time, matched by `webhook-id`.
{args.runs} runs, medians of the per-run percentiles. Goal: p50 <= 20 ms, p99 <= 100 ms.

```
{argv_command()}
```

{table}

"publish rate" is the offered load the publishers actually achieved (orders/s). When it is
below {args.rate:.0f}/s, the publishers were CPU-bound on this machine (each `create_order` +
commit costs several ms, see findings F6): latencies are still per event, but at that lower
load.
""",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
