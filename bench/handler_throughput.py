"""Received webhooks handled per second: the worker's handler path, without HTTP.

Per engine and run, a fresh migrated database with one source (kind ``none``) and a handler
registered for it that does nothing, so what is measured is hookline's own work: --messages
received webhooks stored with ``inbox.record`` (untimed), then, timed, what the worker does for
them on its database thread: ``handlers.claim_messages`` in claims of --capacity and
``handlers.process_messages`` for each claim (the handler runs in a transaction of its own and
its outcome is committed with it, one commit per message), until none is left. Also timed
apart: the claims alone.

No goal of its own: issue #4 asks that handlers run with the delivery retry machinery, not for
a rate. The handler path had no measurement before; this one shows what the per-message commit
and the claim cost.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchDB, argv_command, md_table, median, update_docs


def run(engine: str, messages: int, capacity: int) -> dict[str, float]:
    """One run on a fresh database: messages/s, and the claims' p50 in ms."""
    from hookline import handlers, inbox, sources
    from hookline.retry import RetryPolicy
    from hookline.timeutil import from_epoch
    from hookline.webio import Request, Response

    with BenchDB(engine) as bdb:
        db = bdb.connect()
        sources.create_source(
            db, bdb.box(), sources.parse_source({"name": "bench", "kind": "none"}, creating=True)
        )
        db.commit()
        handlers.register("bench", "*")(lambda conn, message: None)
        body = json.dumps({"type": "thing.happened", "data": {"n": 1}}).encode()
        request = Request.build(
            "POST", "/myapp/webhook/bench", {"Content-Type": "application/json"}, body
        )
        now = time.time()
        for i in range(messages):
            inbox.record(
                db,
                source="bench",
                message_id=f"msg_{i}",
                request=request,
                response=Response(200, b"{}"),
                status="received",
                event_type="thing.happened",
                now=from_epoch(now - messages + i),
            )
        db.commit()
        policy, rng = RetryPolicy(), random.Random(0)
        claims_ms: list[float] = []
        handled = 0
        started = time.perf_counter()
        while True:
            t = time.perf_counter()
            batch = handlers.claim_messages(db, "w", now=now, capacity=capacity, lease_s=60.0)
            claims_ms.append((time.perf_counter() - t) * 1000)
            if not batch:
                break
            handled += handlers.process_messages(db, batch, "w", now=now, policy=policy, rng=rng)[
                "processed"
            ]
        elapsed = time.perf_counter() - started
        db.close()
    if handled != messages:
        raise SystemExit(f"{engine}: handled {handled} of {messages}")
    return {"rate": handled / elapsed, "claim_ms": median(claims_ms[:-1])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engines", default="sqlite,postgres")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--capacity", type=int, default=100)
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args()
    rows = []
    for engine in [e for e in args.engines.split(",") if e]:
        results = []
        for n in range(1, args.runs + 1):
            r = run(engine, args.messages, args.capacity)
            results.append(r)
            print(
                f"run {n} {engine:9} {r['rate']:7.0f} messages/s"
                f"  claim of {args.capacity} p50 {r['claim_ms']:6.2f} ms",
                flush=True,
            )
        rates = [r["rate"] for r in results]
        rows.append(
            [
                "SQLite" if engine == "sqlite" else "PostgreSQL",
                f"{median(rates):,.0f}",
                " / ".join(f"{x:,.0f}" for x in rates),
                f"{median([r['claim_ms'] for r in results]):.1f}",
            ]
        )
    if not args.no_docs:
        update_docs(
            "handlers",
            f"""## 6. Received webhooks handled (`bench/handler_throughput.py`)

{args.messages:,} stored webhooks of one source whose handler does nothing, claimed
{args.capacity} at a time with `handlers.claim_messages` and run with
`handlers.process_messages` (each handler in its own transaction, committed with its outcome)
in one process, as the worker's database thread does; {args.runs} runs, medians. No goal of
its own (see the script's docstring).

```
{argv_command()}
```

{md_table(["engine", "messages/s (median)", "runs", f"claim of {args.capacity} p50 ms"], rows)}
""",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
