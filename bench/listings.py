"""The operators' listings (``operations.list_attempts`` / ``list_deliveries``) over a long history.

Per engine, a fresh migrated database with two endpoints: a quiet one whose --old deliveries
(two attempts each) all come first, then a busy one's --recent deliveries (two attempts each),
inserted by bulk SQL, then statistics analysed. Each listing (first page, 50 rows) is timed
--repeat times; the table shows medians. The quiet endpoint is the hard case: an endpoint that
had traffic once (a disabled or retired integration), whose rows are all older than the busy
one's, so that neither reading newest first nor reading the endpoint's rows and sorting them is
cheap without an index in the listing's order. No goal in the issue; an operator's page should
not take seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchDB, argv_command, create_endpoint, md_table, median, update_docs

_DELIVERIES_PG = (
    "INSERT INTO hookline_delivery (delivery_id, event, endpoint, status, attempts,"
    " next_attempt_at, created_at, updated_at, finished_at)"
    " SELECT %s || g, %s + g %% 1000, %s, %s, 2, 0, now(), now(), now()"
    " FROM generate_series(1, %s) AS g"
)
_DELIVERIES_SQLITE = (
    "INSERT INTO hookline_delivery (delivery_id, event, endpoint, status, attempts,"
    " next_attempt_at, created_at, updated_at, finished_at)"
    " WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ?)"
    " SELECT ? || x, ? + x % 1000, ?, ?, 2, 0, datetime('now'), datetime('now'),"
    " datetime('now') FROM g"
)
# Two attempts per delivery, in delivery order: the first a retry, the second the outcome.
_ATTEMPTS = (
    "INSERT INTO hookline_attempt (delivery, endpoint, number, started_at, duration_ms,"
    " status_code, outcome)"
    " SELECT d.id, d.endpoint, n.n, {now}, 1.0, 200,"
    " CASE WHEN n.n = 1 THEN 'retry' ELSE d.status END"
    " FROM hookline_delivery d, (SELECT 1 AS n UNION ALL SELECT 2) n ORDER BY d.id, n.n"
)
_EVENTS = (
    "INSERT INTO hookline_event (event_id, type, payload, created_at)"
    " WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < 1000)"
    " SELECT 'evt_' || x, 'order.created', '{{}}', {now} FROM g"
)


def load(bdb: BenchDB, old: int, recent: int) -> tuple[str, str, float]:
    """The two endpoints' histories; returns (quiet id, busy id, seconds to load)."""
    quiet, _ = create_endpoint(bdb, "http://127.0.0.1:9/quiet")
    busy, _ = create_endpoint(bdb, "http://127.0.0.1:9/busy")
    db = bdb.connect()
    try:
        started = time.perf_counter()
        rows = {
            r[1]: int(r[0]) for r in db.executesql("SELECT id, endpoint_id FROM hookline_endpoint")
        }
        pg = bdb.engine == "postgres"
        now = "now()" if pg else "datetime('now')"
        db.executesql(_EVENTS.format(now=now))
        event = int(db.executesql("SELECT MIN(id) FROM hookline_event")[0][0])
        for endpoint, n, status, prefix in (
            (quiet["endpoint_id"], old, "failed", "dq_"),
            (busy["endpoint_id"], recent, "succeeded", "db_"),
        ):
            if pg:
                values = [prefix, event, rows[endpoint], status, n]
                db.executesql(_DELIVERIES_PG, placeholders=values)
            else:
                values = [n, prefix, event, rows[endpoint], status]
                db.executesql(_DELIVERIES_SQLITE, placeholders=values)
        db.executesql(_ATTEMPTS.format(now=now))
        db.commit()
        db.executesql("ANALYZE")
        db.commit()
        return quiet["endpoint_id"], busy["endpoint_id"], time.perf_counter() - started
    finally:
        db.close()


def listings(quiet: str, busy: str) -> dict[str, tuple[str, dict]]:
    """Each listing timed: name -> (function name, filters)."""
    return {
        "attempts, all": ("list_attempts", {}),
        "attempts, busy endpoint": ("list_attempts", {"endpoint_id": busy}),
        "attempts, quiet endpoint": ("list_attempts", {"endpoint_id": quiet}),
        "attempts, quiet endpoint, failed": (
            "list_attempts",
            {"endpoint_id": quiet, "outcome": "failed"},
        ),
        "attempts, outcome retry": ("list_attempts", {"outcome": "retry"}),
        "deliveries, all": ("list_deliveries", {}),
        "deliveries, busy endpoint": ("list_deliveries", {"endpoint_id": busy}),
        "deliveries, quiet endpoint": ("list_deliveries", {"endpoint_id": quiet}),
        "deliveries, quiet endpoint, failed": (
            "list_deliveries",
            {"endpoint_id": quiet, "status": "failed"},
        ),
    }


def timed(db, call: Callable[[], dict], repeat: int) -> tuple[float, int]:
    """Median milliseconds of ``repeat`` calls, and the rows of the last page."""
    times = []
    page: dict = {}
    for _ in range(repeat):
        started = time.perf_counter()
        page = call()
        times.append((time.perf_counter() - started) * 1000)
        db.commit()
    return median(times), len(page["data"])


def run(engine: str, old: int, recent: int, repeat: int) -> list[list]:
    from hookline import operations

    rows = []
    with BenchDB(engine) as bdb:
        quiet, busy, load_s = load(bdb, old, recent)
        print(f"{engine}: loaded in {load_s:.0f} s", flush=True)
        db = bdb.connect()
        try:
            for name, (function, filters) in listings(quiet, busy).items():
                listing = getattr(operations, function)
                ms, count = timed(db, lambda listing=listing, f=filters: listing(db, **f), repeat)
                print(f"  {name:36s} {ms:8.1f} ms ({count} rows)", flush=True)
                rows.append([engine, name, round(ms, 1), count])
        finally:
            db.close()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engines", default="sqlite,postgres")
    p.add_argument("--old", type=int, default=250_000, help="the quiet endpoint's deliveries")
    p.add_argument("--recent", type=int, default=500_000, help="the busy endpoint's deliveries")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args()
    rows = []
    for engine in [e for e in args.engines.split(",") if e]:
        rows += run(engine, args.old, args.recent, args.repeat)
    if not args.no_docs:
        attempts = 2 * (args.old + args.recent)
        update_docs(
            "listings",
            f"""## 7. Operator listings over a long history (`bench/listings.py`)

{args.old:,} deliveries of a quiet endpoint, then {args.recent:,} of a busy one, two attempts
each ({attempts:,} attempts); the first page (50) of each listing, median of {args.repeat}.

```
{argv_command()}
```

{md_table(["engine", "listing", "ms (median)", "rows"], rows)}""",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
