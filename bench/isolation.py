"""Isolation: does one endpoint that never answers slow the others down?

Two scenarios per run and engine, each on a fresh database with N pre-published events:

  baseline   one fast endpoint (local sink answering 200 at once)
  +hanging   the same fast endpoint plus one extra endpoint on a sink that sleeps --hang
             seconds (> the endpoint's default 15 s timeout), all other settings default

Every event fans out to every endpoint (no event filter). One Worker (default concurrency,
in this process) runs until the fast sink has received all N; throughput = N / (fast sink's
last arrival - worker start). The hanging endpoint's deliveries are left unfinished; the worker
is cancelled once the fast endpoint is done (its leases are then simply abandoned). The fast
endpoint's DB rows are checked afterwards (N succeeded). Goal: drop <= 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    publish_events,
    update_docs,
)


async def _run_until(worker, sink: Sink, n: int, limit: float) -> tuple[float, int]:
    import aiohttp

    started = time.time()
    task = asyncio.create_task(worker.run())
    count = 0
    async with aiohttp.ClientSession() as session:
        while time.time() - started < limit and not task.done():
            async with session.get(f"http://127.0.0.1:{sink.port}/_stats") as response:
                stats = await response.json()
            count = stats["count"]
            if count >= n:
                break
            await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    last = stats["last"] or time.time()
    return (last - started if count >= n else time.time() - started), count


def one(
    engine: str, fast: Sink, hang: Sink | None, n: int, fast_in_flight: int, limit: float
) -> dict:
    from hookline.worker import Worker

    with BenchDB(engine) as bdb:
        ep, _ = create_endpoint(bdb, fast.url, max_in_flight=fast_in_flight)
        if hang is not None:
            create_endpoint(bdb, hang.url)
        publish_events(bdb, n)
        fast.reset()
        worker = Worker(bdb.settings)
        elapsed, count = asyncio.run(_run_until(worker, fast, n, limit))
        db = bdb.connect()
        ok = db.executesql(
            "SELECT COUNT(*) FROM hookline_delivery d JOIN hookline_endpoint e"
            " ON e.id = d.endpoint WHERE e.endpoint_id = '{}' AND d.status = 'succeeded'".format(
                ep["endpoint_id"]
            )
        )[0][0]
        db.close()
    return {
        "rate": count / elapsed,
        "elapsed": elapsed,
        "delivered": count,
        "succeeded": int(ok),
        "complete": count >= n,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("-n", "--events", type=int, default=5000)
    p.add_argument(
        "--fast-in-flight",
        type=int,
        default=64,
        help="max_in_flight of the fast endpoint (the hanging one keeps the default)",
    )
    p.add_argument("--hang", type=float, default=20.0, help="seconds the hanging sink sleeps")
    p.add_argument(
        "--limit", type=float, default=120.0, help="give up on a scenario after this many seconds"
    )
    p.add_argument("--engines", default="sqlite,postgres")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    results: dict[tuple[str, str], list[dict]] = {}
    with Sink() as fast, Sink(delay=args.hang) as hang:
        for run in range(1, args.runs + 1):
            for engine in engines:
                for scenario, extra in (("baseline", None), ("+hanging", hang)):
                    r = one(engine, fast, extra, args.events, args.fast_in_flight, args.limit)
                    results.setdefault((engine, scenario), []).append(r)
                    print(
                        f"run {run} {engine:9} {scenario:9} {r['rate']:7.0f}/s"
                        f" ({r['elapsed']:.2f}s, fast delivered {r['delivered']}/{args.events},"
                        f" succeeded in DB {r['succeeded']})",
                        flush=True,
                    )
    rows = []
    for engine in engines:
        base = results[(engine, "baseline")]
        hung = results[(engine, "+hanging")]
        b, h = median([r["rate"] for r in base]), median([r["rate"] for r in hung])
        drop = (1 - h / b) * 100
        rows.append(
            [
                "SQLite" if engine == "sqlite" else "PostgreSQL",
                b,
                h,
                " / ".join(f"{r['rate']:,.0f}" for r in base),
                " / ".join(f"{r['rate']:,.0f}" for r in hung),
                " / ".join(f"{r['delivered']}" for r in hung),
                f"{drop:.0f} %",
                "met" if drop <= 10 else "MISSED",
            ]
        )
    table = md_table(
        [
            "engine",
            "baseline /s",
            "with hanging endpoint /s",
            "baseline runs",
            "hanging runs",
            "fast delivered (hanging runs)",
            "drop",
            "goal <= 10 %",
        ],
        rows,
    )
    print()
    print(table)
    if not args.no_docs:
        update_docs(
            "isolation",
            f"""
## 3. Isolation from a hanging endpoint (`bench/isolation.py`)

{args.events:,} events, each fanned out to every endpoint; fast endpoint `max_in_flight`
{args.fast_in_flight}; the extra endpoint's sink sleeps {args.hang:.0f} s (endpoint defaults:
timeout 15 s, `max_in_flight` 20); one in-process `Worker` with default concurrency (256);
throughput of the fast endpoint only; a scenario is cut off after {args.limit:.0f} s.
{args.runs} runs, medians. Goal: drop <= 10 %.

```
{argv_command()}
```

{table}

The fast endpoint's rows in the database are counted after the worker is cancelled, so in the
baseline a last unflushed batch (a few dozen) can still be `sending`; the sink count is the
measure.
""",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
