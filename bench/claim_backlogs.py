"""queue.claim() when an endpoint cannot take its backlog: FIFO, full and rate-limited ones.

Per engine and scenario, a fresh migrated database with deliveries inserted by bulk SQL, then
statistics analysed; --claims claims of up to 100, each timed, each followed by recording what
it claimed as succeeded (untimed), so in-flight budgets do not fill up:

  fifo-history   one FIFO endpoint with 2,000 due deliveries, behind --history finished
                 deliveries of another endpoint (the history a busy system keeps for 30 days)
  fifo-backlog   one FIFO endpoint with --backlog due deliveries, then a plain endpoint with
                 --plain due deliveries, due after all of them
  full-backlog   the same, but the first endpoint is not FIFO: it is at its max_in_flight (5),
                 held by another worker's leases
  rate-backlog   the same, but the first endpoint is rate-limited to one delivery per 5 s, its
                 next slot taken by a first claim
  many-endpoints full-backlog, plus --endpoints more plain endpoints with 2 due deliveries
                 each, due after the backlog (a claim then reads endpoint by endpoint)

A FIFO endpoint may send one delivery at a time, so a claim takes 1 of its deliveries; a plain
endpoint takes its default max_in_flight (20). No goal of its own: the claim goal (<= 5 ms) is
for a queue every endpoint can take from (claim_at_scale.py); this bench shows what a backlog
that cannot be taken costs the claims of everything else.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ALLOW, BenchDB, argv_command, create_endpoint, md_table, median, update_docs

SCENARIOS = ("fifo-history", "fifo-backlog", "full-backlog", "rate-backlog", "many-endpoints")
_BLOCKED = {"fifo": {"fifo": True}, "rate": {"rate_limit": 0.2}}


_COLUMNS = (
    "INSERT INTO hookline_delivery (delivery_id, event, endpoint, status, attempts,"
    " next_attempt_at, created_at, updated_at, finished_at)"
)
_INSERT_PG = (
    _COLUMNS + " SELECT 'dlv_' || %s || '_' || x, %s, %s, %s, 0, %s + x * %s, %s, %s, %s"
    " FROM generate_series(1, %s) AS g(x)"
)
_INSERT_SQLITE = (
    "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ?) "
    + _COLUMNS
    + " SELECT 'dlv_' || ? || '_' || x, ?, ?, ?, 0, ? + x * ?, ?, ?, ? FROM g"
)


def _insert(
    db,
    n: int,
    *,
    event: int,
    endpoint: int,
    due: tuple[float, float],
    finished: bool,
    stamp: str,
) -> None:
    """``n`` deliveries of ``endpoint``, due evenly over ``due`` (epoch seconds)."""
    status, finished_at = ("succeeded", stamp) if finished else ("pending", None)
    values = [endpoint, event, endpoint, status, due[0], (due[1] - due[0]) / n, stamp, stamp]
    if db._adapter.dbengine == "postgres":
        db.executesql(_INSERT_PG, placeholders=[*values, finished_at, n])
    else:
        db.executesql(_INSERT_SQLITE, placeholders=[n, *values, finished_at])


def _add_endpoints(db, bdb: BenchDB, n: int) -> None:
    """``n`` more plain endpoints, on one connection (``create_endpoint`` connects per call)."""
    from hookline import endpoints
    from hookline.endpoint_rules import parse_endpoint
    from hookline.netguard import NetworkPolicy

    network = NetworkPolicy.from_settings(ALLOW)
    for i in range(n):
        data = {"url": f"http://127.0.0.1:9/many/{i}", "event_types": ["order.paid"]}
        endpoints.create_endpoint(db, bdb.box(), parse_endpoint(data, network, creating=True))
    db.commit()


def run(engine: str, scenario: str, args: argparse.Namespace) -> dict:
    """One scenario on a fresh database: the claims' times and what they took."""
    from hookline import outbox, queue
    from hookline.queue import SendResult
    from hookline.retry import RetryPolicy

    with BenchDB(engine) as bdb:
        create_endpoint(bdb, "http://127.0.0.1:9/other", event_types=["order.created"])
        blocked = _BLOCKED.get(scenario.split("-")[0], {"max_in_flight": 5})
        create_endpoint(bdb, "http://127.0.0.1:9/blocked", event_types=["ping"], **blocked)
        if scenario != "fifo-history":
            create_endpoint(bdb, "http://127.0.0.1:9/plain", event_types=["order.paid"])
        db = bdb.connect()
        if scenario == "many-endpoints":
            _add_endpoints(db, bdb, args.endpoints)
        ids = [int(r[0]) for r in db.executesql("SELECT id FROM hookline_endpoint ORDER BY id")]
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
        event_id = outbox.publish(db, "ping", {"bench": scenario})
        db.executesql("DELETE FROM hookline_delivery")  # the deliveries come from _insert
        event = int(db(db.hookline_event.event_id == event_id).select().first().id)
        kw = {"event": event, "stamp": stamp}
        if scenario == "fifo-history":
            _insert(
                db, args.history, endpoint=ids[0], due=(now - 7200, now - 7100), finished=True, **kw
            )
            _insert(db, 2000, endpoint=ids[1], due=(now - 3600, now - 60), finished=False, **kw)
        else:
            _insert(
                db, args.backlog, endpoint=ids[1], due=(now - 3600, now - 600), finished=False, **kw
            )
            _insert(
                db, args.plain, endpoint=ids[2], due=(now - 300, now - 60), finished=False, **kw
            )
            for endpoint in ids[3:]:
                _insert(db, 2, endpoint=endpoint, due=(now - 300, now - 60), finished=False, **kw)
        db.commit()
        db.executesql("ANALYZE")
        db.commit()
        if scenario in ("full-backlog", "many-endpoints", "rate-backlog"):
            held = queue.claim(db, "holder", now=time.time(), capacity=5, lease_s=3600.0)
            assert {c.endpoint_row for c in held} == {ids[1]}, held
        policy, rng = RetryPolicy(), random.Random(0)
        times, taken = [], []
        for _ in range(args.claims):
            started = time.perf_counter()
            claimed = queue.claim(db, "w", now=time.time(), capacity=100, lease_s=60.0)
            times.append((time.perf_counter() - started) * 1000)
            taken.append(len(claimed))
            results = [
                SendResult(
                    c.delivery_row,
                    c.endpoint_row,
                    c.endpoint_id,
                    c.attempt,
                    c.lease_owner,
                    time.time(),
                    1.0,
                    200,
                )
                for c in claimed
            ]
            queue.record_results(
                db,
                results,
                now=time.time(),
                policy=policy,
                rng=rng,
                disable_after=dt.timedelta(days=5),
            )
        db.close()
    return {"p50": median(times), "max": max(times), "taken": median(taken)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engines", default="sqlite,postgres")
    p.add_argument("--history", type=int, default=300_000)
    p.add_argument("--backlog", type=int, default=200_000)
    p.add_argument("--plain", type=int, default=5_000)
    p.add_argument("--endpoints", type=int, default=1000, help="many-endpoints: added endpoints")
    p.add_argument("--claims", type=int, default=20)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="subset of the above")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args()
    rows = []
    for engine in [e for e in args.engines.split(",") if e]:
        for scenario in [s for s in args.scenarios.split(",") if s]:
            r = run(engine, scenario, args)
            print(
                f"{engine:9} {scenario:13} claim p50 {r['p50']:8.2f} ms  max {r['max']:8.2f} ms"
                f"  taken per claim {r['taken']:g}",
                flush=True,
            )
            name = "SQLite" if engine == "sqlite" else "PostgreSQL"
            rows.append([name, scenario, f"{r['p50']:.1f}", f"{r['max']:.1f}", f"{r['taken']:g}"])
    if not args.no_docs:
        update_docs(
            "backlogs",
            f"""## 5. Claims beside a backlog that cannot be taken (`bench/claim_backlogs.py`)

{args.claims} claims of up to 100 per scenario, each recorded before the next. `fifo-history`:
a FIFO endpoint's 2,000 due deliveries behind {args.history:,} finished deliveries of another
endpoint. `fifo-backlog` / `full-backlog`: {args.backlog:,} due deliveries of a FIFO endpoint /
of an endpoint held at its `max_in_flight`, ahead of a plain endpoint's {args.plain:,}.
`rate-backlog`: the same for an endpoint rate-limited to 0.2/s. `many-endpoints`: full-backlog
with {args.endpoints:,} more endpoints, 2 due deliveries each. No goal of its own (see the
script's docstring).

```
{argv_command()}
```

{md_table(["engine", "scenario", "claim p50 ms", "claim max ms", "taken per claim"], rows)}
""",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
