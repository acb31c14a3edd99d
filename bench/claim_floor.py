"""PostgreSQL: ``queue.claim`` against the least a durable claim can do, on the same table.

A fresh database loaded as ``claim_at_scale.py`` loads it (--deliveries pending deliveries, all
due in random order, over --events events and 10 endpoints). Then, in one process, claims of
100 take turns: ``queue.claim`` and a minimal claim, each followed (untimed) by
``queue.record_results`` of what it took, and ``queue.vacuum_leases`` once a second, as in
``claim_at_scale.py``. The minimal claim does only what any claim that survives a crash must:
read the first 100 due deliveries that have no lease from the due index (from the worker's
floor), insert their leases, read their events and endpoints, commit: one prepared statement,
none of the per-endpoint rules (in-flight budgets, FIFO, rate limits, full endpoints).

Variants of the minimal claim (--variant): ``full`` (the above), ``read-only`` (the timed part
stops before the leases, which are then inserted untimed), ``async-commit`` (with
``synchronous_commit = off``), ``no-events`` (no event payloads read).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from claim_at_scale import bulk_load
from common import BenchDB, Sink, median

VARIANTS = ("full", "read-only", "async-commit", "no-events")


def _name(variant: str) -> str:
    """The prepared statement's name (pydal pools connections: one name per variant)."""
    return "minimal_claim_" + variant.replace("-", "_")


def _minimal_statement(variant: str) -> str:
    lease = (
        ""
        if variant == "read-only"
        else """,
        l AS (INSERT INTO hookline_lease (delivery, endpoint, owner, attempt, until_at)
              SELECT id, endpoint, $2, attempts + 1, $3 FROM c)"""
    )
    events = "NULL::text, NULL::text" if variant == "no-events" else "e.event_id, e.payload"
    join = "" if variant == "no-events" else "JOIN hookline_event e ON e.id = c.event"
    return f"""PREPARE {_name(variant)}(float8, text, float8, float8) AS
        WITH c AS (
            SELECT d.id, d.delivery_id, d.attempts, d.event, d.endpoint
            FROM hookline_delivery d
            WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND d.next_attempt_at >= $4
              AND NOT EXISTS (SELECT 1 FROM hookline_lease l WHERE l.delivery = d.id)
            ORDER BY d.next_attempt_at LIMIT 100){lease}
        SELECT c.id, c.endpoint, ep.endpoint_id, c.attempts + 1, {events}, ep.url
        FROM c {join} JOIN hookline_endpoint ep ON ep.id = c.endpoint"""


def run(bdb: BenchDB, claims: int, variant: str) -> dict[str, list[float]]:
    """Alternate the two claims; returns each one's times in ms."""
    from hookline import queue
    from hookline.duefloor import DUE_FLOOR_MARGIN_S, DueFloor
    from hookline.queue import SendResult
    from hookline.retry import RetryPolicy

    db = bdb.connect()
    cursor = db._adapter.cursor
    cursor.execute(_minimal_statement(variant))
    db.commit()
    policy, rng = RetryPolicy(), random.Random(0)
    worker, floor = queue.new_worker_id(), DueFloor()
    times: dict[str, list[float]] = {"queue.claim": [], "minimal": []}
    last_vacuum = time.monotonic()

    def record(rows: list[tuple[int, int, str, int]]) -> None:
        results = [
            SendResult(
                delivery_row=row,
                endpoint_row=endpoint_row,
                endpoint_id=endpoint_id,
                attempt=attempt,
                lease_owner=worker,
                started_at=time.time(),
                duration_ms=1.0,
                status_code=200,
            )
            for row, endpoint_row, endpoint_id, attempt in rows
        ]
        queue.record_results(
            db, results, now=time.time(), policy=policy, rng=rng, disable_after=dt.timedelta(5)
        )

    def minimal() -> list[tuple[int, int, str, int]]:
        start = floor.at - DUE_FLOOR_MARGIN_S if floor.at is not None else float("-inf")
        if variant == "async-commit":
            cursor.execute("SET LOCAL synchronous_commit = off")
        now = time.time()
        cursor.execute(f"EXECUTE {_name(variant)}(%s, %s, %s, %s)", (now, worker, now + 60, start))
        rows = [(int(r[0]), int(r[1]), r[2], int(r[3])) for r in cursor.fetchall()]
        db.commit()
        return rows

    def lease_untimed(rows: list[tuple[int, int, str, int]]) -> None:
        cursor.execute(
            "INSERT INTO hookline_lease (delivery, endpoint, owner, attempt, until_at)"
            " SELECT unnest(%s::int[]), unnest(%s::int[]), %s, unnest(%s::int[]), %s",
            ([r[0] for r in rows], [r[1] for r in rows], worker, [r[3] for r in rows], 1e12),
        )
        db.commit()

    try:
        for i in range(claims * 2 + 10):
            if time.monotonic() - last_vacuum >= queue.LEASE_VACUUM_EVERY_S:
                last_vacuum = time.monotonic()
                queue.vacuum_leases(db)
            kind = "queue.claim" if i % 2 == 0 else "minimal"
            started = time.perf_counter()
            if kind == "queue.claim":
                items = queue.claim(
                    db, worker, now=time.time(), capacity=100, lease_s=60.0, floor=floor
                )
                rows = [(x.delivery_row, x.endpoint_row, x.endpoint_id, x.attempt) for x in items]
            else:
                rows = minimal()
            elapsed = (time.perf_counter() - started) * 1000
            if kind == "minimal" and variant == "read-only":
                lease_untimed(rows)
            record(rows)
            if i >= 10:  # the first claims warm caches and the statements
                times[kind].append(elapsed)
    finally:
        db.rollback()
        db.close()
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--deliveries", type=int, default=1_000_000)
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--claims", type=int, default=100, help="timed claims of each kind")
    p.add_argument("--variant", choices=VARIANTS, action="append")
    args = p.parse_args()
    with Sink() as sink, BenchDB("postgres") as bdb:
        load_s = bulk_load(bdb, 10, args.events, args.deliveries, sink.url)
        print(f"loaded {args.deliveries:,} pending deliveries in {load_s:.0f} s", flush=True)
        for variant in args.variant or ["full"]:
            times = run(bdb, args.claims, variant)
            print(
                f"{variant:13s} queue.claim p50 {median(times['queue.claim']):5.2f} ms,"
                f" minimal claim p50 {median(times['minimal']):5.2f} ms",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
