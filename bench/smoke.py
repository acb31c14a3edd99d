"""CI smoke bench: a tiny throughput run on SQLite (no Celery, no PostgreSQL), well under 30 s.

    .venv/bin/python bench/smoke.py [-n 300]

Publishes N events to one endpoint on a local sink, runs one in-process Worker until it has
recorded N, verifies the first request's Standard Webhooks signature, prints deliveries/s.
Exit status: 0 when all N arrived and were recorded, 1 when nothing was delivered, 2 when
something was delivered but not everything (or a signature did not verify), 3 on timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchDB, Sink, create_endpoint, db_counts, publish_events


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-n", "--deliveries", type=int, default=300)
    p.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args()
    from hookline import signing
    from hookline.worker import Worker

    n = args.deliveries
    status = 0
    with Sink() as sink, BenchDB("sqlite") as bdb:
        _, secret = create_endpoint(bdb, sink.url)
        publish_events(bdb, n)
        worker = Worker(bdb.settings, max_deliveries=n)
        started = time.perf_counter()
        try:
            asyncio.run(asyncio.wait_for(worker.run(), args.timeout))
        except TimeoutError:
            print(f"smoke: worker did not finish within {args.timeout:.0f} s", file=sys.stderr)
            status = 3
        elapsed = time.perf_counter() - started
        arrived = sink.stats()["count"]
        counts = db_counts(bdb)
        first = sink.first_request()
    print(
        f"smoke: {arrived}/{n} delivered in {elapsed:.2f} s ({arrived / elapsed:,.0f}/s);"
        f" DB: {counts}"
    )
    if arrived == 0:
        print("smoke: FAIL, nothing was delivered", file=sys.stderr)
        return 1
    try:
        signing.verify(
            first["headers"], first["body"].encode(), secrets=[secret], now=int(time.time())
        )
    except Exception as error:
        print(f"smoke: FAIL, signature did not verify: {error}", file=sys.stderr)
        return 2
    if status:
        return status
    if arrived < n or counts.get("succeeded") != n or counts["attempts"] != n:
        print("smoke: FAIL, not every delivery arrived and was recorded", file=sys.stderr)
        return 2
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
