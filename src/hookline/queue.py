"""The delivery queue: claim due deliveries with a lease, record outcomes, recover lost leases.

The SQL that matters is written here once per dialect, where it can be read:

- **claim**: due pending deliveries without a lease in time order (partial index on
  ``next_attempt_at``), FIFO endpoints only at their oldest unfinished delivery. Claims on one
  database take turns: SQLite's write lock (``BEGIN IMMEDIATE``), PostgreSQL's advisory lock
  ``CLAIM_LOCK``. So endpoint budgets (``max_in_flight``, ``rate_limit``) hold across every
  worker, and a claim never meets another's leases half made. A lease is a row of
  ``hookline_lease``: a delivery being sent is a pending delivery with a lease ("sending").
- **record**: one transaction per batch of results; a result only lands if its delivery is
  still leased by the worker that sent it (its lease is deleted, then the delivery updated).
- **recover**: a lease that ran out (the worker died) counts as a failed attempt and the delivery
  goes back through the retry policy, so nothing claimed is ever lost.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg2
from psycopg2.extras import execute_values
from pydal import DAL

from hookline import endpoints
from hookline.database import begin_write
from hookline.duefloor import DueFloor
from hookline.fanout import dialect_sql, is_postgres
from hookline.ids import new_id
from hookline.retry import (
    AttemptOutcome,
    RetryDecision,
    RetryPolicy,
    decide,
    should_disable_endpoint,
)
from hookline.sqlconn import marks
from hookline.timeutil import from_epoch, sql_datetime, to_epoch
from hookline.transport import MAX_RESPONSE_BODY

__all__ = [
    "Claimed",
    "EndpointBudget",
    "SendResult",
    "claim",
    "extend_leases",
    "new_worker_id",
    "next_due",
    "plan_claims",
    "record_and_claim",
    "record_results",
    "recover_expired",
    "vacuum_leases",
]

log = logging.getLogger(__name__)

#: How far ahead a rate-limited endpoint's slots may be handed out in one claim.
RATE_HORIZON_S = 1.0

#: Candidates a claim reads per delivery it may take, on SQLite and on PostgreSQL. Full
#: endpoints are left out in SQL, so only an endpoint that fills up during the claim, or whose
#: rate slots run past the horizon, wastes candidates; a claim that comes up short for it is
#: followed at once by another (the worker still has room), which leaves that endpoint out.
#: On SQLite a candidate costs ~2 µs at a million pending, and twice the capacity fills most
#: claims in one. On PostgreSQL each is a delivery row read from the table, wherever it lies: a
#: claim of 100 at a million pending due in random order took 7.3 ms reading 200 candidates,
#: 5.7 ms reading 100 (docs/benchmarks.md).
CLAIM_WINDOW = 2
CLAIM_WINDOW_PG = 1

#: PostgreSQL: the transaction-scoped advisory lock that claims on one database take in turn
#: (the key is arbitrary; "hlcl").
CLAIM_LOCK = 0x686C636C


def new_worker_id() -> str:
    """A name for this worker process, recorded on its leases and attempts."""
    import os
    import socket

    return f"{socket.gethostname()[:30]}:{os.getpid()}:{new_id('wk')[-6:]}"


def _in(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def _rows(db: DAL, statement: str, params: Sequence[Any] = ()) -> list[tuple]:
    """The rows of one query, on the transaction's cursor. The claim runs six queries while
    publishers wait for SQLite's write lock; pydal's ``executesql`` around each cost more than
    some of the queries."""
    cursor = db._adapter.cursor
    cursor.execute(dialect_sql(db, statement), params)
    return cursor.fetchall()


@dataclass(frozen=True)
class EndpointBudget:
    """What an endpoint allows right now: in-flight room and its rate-limit schedule."""

    max_in_flight: int
    in_flight: int
    rate_limit: float | None
    next_send_at: float | None


def plan_claims(
    candidates: Sequence[tuple[int, int]],
    budgets: dict[int, EndpointBudget],
    now: float,
    capacity: int,
) -> tuple[list[tuple[int, float]], dict[int, float]]:
    """Choose which candidate ``(delivery, endpoint)`` pairs to claim (pure).

    Returns ``[(delivery, not_before)]`` in candidate order and the new ``next_send_at`` of each
    rate-limited endpoint that was given slots. An endpoint at ``max_in_flight`` gets nothing; a
    rate-limited one gets slots ``1/rate`` apart, no further than ``RATE_HORIZON_S`` ahead.
    """
    in_flight = {ep: b.in_flight for ep, b in budgets.items()}
    next_slot = {ep: max(now, b.next_send_at or now) for ep, b in budgets.items() if b.rate_limit}
    chosen: list[tuple[int, float]] = []
    for delivery, endpoint in candidates:
        if len(chosen) >= capacity:
            break
        budget = budgets[endpoint]
        if in_flight[endpoint] >= budget.max_in_flight:
            continue
        not_before = now
        if budget.rate_limit:
            slot = next_slot[endpoint]
            if slot > now + RATE_HORIZON_S:
                continue
            not_before = slot
            next_slot[endpoint] = slot + 1.0 / budget.rate_limit
        in_flight[endpoint] += 1
        chosen.append((delivery, not_before))
    changed = {
        ep: slot
        for ep, slot in next_slot.items()
        if slot != max(now, budgets[ep].next_send_at or now)
    }
    return chosen, changed


class Claimed(NamedTuple):
    """A leased delivery with everything the sender needs.

    A named tuple, not a frozen dataclass: a claim builds a hundred of them while holding the
    write lock, and a frozen dataclass took 4 µs each to build, a named tuple 0.7 µs."""

    delivery_row: int
    delivery_id: str
    attempt: int
    not_before: float
    event_id: str
    payload: bytes
    endpoint_row: int
    endpoint_id: str
    url: str
    headers: dict[str, str]
    timeout_s: float
    connect_timeout_s: float
    retry_schedule: tuple[float, ...] | None
    signing_key_enc: str | None
    lease_owner: str
    secrets_version: int = 1


# What makes a due delivery of an endpoint that may take one takeable, in every claim query: no
# lease holds it. Which endpoints may take is decided once per claim, beside the queries
# (``_blocked_endpoints`` on SQLite, the ``blocked`` step of ``_CLAIM_PG``).
_UNLEASED = "NOT EXISTS (SELECT 1 FROM hookline_lease l WHERE l.delivery = d.id)"

# Endpoints with no room (at max_in_flight, or rate slots beyond the horizon) are left out of
# the window, so one stuck endpoint's backlog cannot fill it and starve the others. So are FIFO
# endpoints: each may send only its head (its oldest unfinished delivery), which _FIFO_HEADS
# reads through the endpoint's own index. Tested as the due index is read, the FIFO rule cost
# a lookup per delivery of the endpoint's whole backlog on every claim, and with the wrong index
# (SQLite chose the primary key once a long finished history was analyzed) 89 s a claim.
#
# The due index is read no further than its reach (the inner LIMIT: the window and what is in
# flight). Left-out endpoints' entries are stepped over, and a backlog they held in front of the
# others cost every claim ~0.15 µs per entry, unbounded (200,000: 21-36 ms). When the reach is
# spent before the window fills, the candidates are read endpoint by endpoint instead
# (_DUE_BY_ENDPOINT).
_CANDIDATES = f"""
SELECT d.id, d.endpoint, d.next_attempt_at FROM (
    SELECT id, endpoint, next_attempt_at
    FROM hookline_delivery INDEXED BY hookline_delivery_due_ep_idx
    WHERE status = 'pending' AND next_attempt_at <= %s
    ORDER BY next_attempt_at
    LIMIT %s
) d
JOIN hookline_endpoint e ON e.id = d.endpoint
WHERE e.enabled = 1 AND {_UNLEASED}
  {{skip}}
ORDER BY d.next_attempt_at
LIMIT %s
"""
# How many due entries the index has, counted up to the reach: all of it means _CANDIDATES
# stopped at its reach, so due deliveries may lie beyond.
_DUE_REACHED = """
SELECT COUNT(*) FROM (
    SELECT 1 FROM hookline_delivery INDEXED BY hookline_delivery_due_ep_idx
    WHERE status = 'pending' AND next_attempt_at <= %s
    LIMIT %s)
"""
# The candidates read endpoint by endpoint, when left-out endpoints' entries filled the due
# index's reach: each endpoint the claim may take from gives its first due deliveries without
# a lease (up to ``%s``, the most room any of them has), from its own range of the pending
# index. A lookup per endpoint (~4 µs), however long the backlogs in front.
_DUE_BY_ENDPOINT = f"""
SELECT c.id, c.endpoint, c.next_attempt_at FROM hookline_endpoint e
JOIN hookline_delivery c ON c.id IN (
    SELECT d.id FROM hookline_delivery d INDEXED BY hookline_delivery_pending_ep_idx
    WHERE d.endpoint = e.id AND d.status = 'pending' AND d.next_attempt_at <= %s
      AND {_UNLEASED}
    ORDER BY d.next_attempt_at
    LIMIT %s)
WHERE e.enabled = 1 AND e.fifo = 0
  {{skip}}
ORDER BY c.next_attempt_at
LIMIT %s
"""
# SQLite: the due heads of the given FIFO endpoints, each not already leased. INDEXED BY: for
# ``ORDER BY p.id LIMIT 1`` the primary key is the planner's other choice, and it reads through
# the finished history (as the per-delivery form of the check came to, after ANALYZE).
_FIFO_HEADS = f"""
SELECT d.id, d.endpoint, d.next_attempt_at FROM hookline_endpoint e
JOIN hookline_delivery d ON d.id = (
    SELECT p.id FROM hookline_delivery p INDEXED BY hookline_delivery_by_endpoint_idx
    WHERE p.endpoint = e.id AND p.finished_at IS NULL AND p.status = 'pending'
    ORDER BY p.id LIMIT 1)
WHERE e.id IN ({{ids}}) AND d.next_attempt_at <= %s AND {_UNLEASED}
"""
# Leased deliveries stay at the head of the due index until recorded: the NOT EXISTS steps over
# them, a cost bounded by what is in flight.
_ANY_DUE = """
SELECT 1 FROM hookline_delivery d
WHERE d.status = 'pending' AND d.next_attempt_at <= %s
  AND NOT EXISTS (SELECT 1 FROM hookline_lease l WHERE l.delivery = d.id)
LIMIT 1
"""

# The lease: a row per delivery in hookline_lease; the delivery row is not written until the
# attempt is recorded. SQLite's RETURNING may not join, so there the rows are read after the
# insert.
#
# PostgreSQL: the whole claim is one prepared statement, run right after the claim lock is
# taken (its snapshot then sees every earlier claim's leases, so no row needs a lock and no
# insert can conflict; the unique key on ``delivery`` would refuse one loudly). It is the SQLite
# path's ``_CANDIDATES`` and ``_FIFO_HEADS`` + ``plan_claims`` + lease, in SQL: a candidate is
# the k-th of its endpoint in time order; it may go if k fits the endpoint's room and,
# rate-limited, its slot (``1/rate`` apart from the endpoint's next free one) is within the
# horizon; the first ``capacity`` that may go are leased. At a million pending, the separate
# statements with row locks on the candidates took ~15 ms a claim here, this ~9 ms
# (docs/benchmarks.md).
#   $1 now, $2 now + RATE_HORIZON_S, $3 candidates to read, $4 capacity, $5 owner, $6 lease_s,
#   $7 where the due index is read from (hookline.duefloor)
# The due-index read and the FIFO heads are united, so they give the same columns.
_CANDIDATE_COLUMNS_PG = """d.id, d.endpoint, d.attempts, d.delivery_id, d.event, d.next_attempt_at,
           e.max_in_flight - COALESCE(b.n, 0) AS room, e.rate_limit,
           GREATEST($1, COALESCE(e.next_send_at, $1)) AS first_slot"""
_CLAIM_PG = f"""
WITH busy AS MATERIALIZED (
    SELECT endpoint, COUNT(*) AS n FROM hookline_lease GROUP BY endpoint
),
-- Endpoints that may take nothing now: full, or rate-limited with their next slot beyond the
-- horizon.
blocked AS MATERIALIZED (
    SELECT b.endpoint FROM busy b JOIN hookline_endpoint e ON e.id = b.endpoint
    WHERE b.n >= e.max_in_flight
    UNION SELECT id FROM hookline_endpoint WHERE rate_limit IS NOT NULL AND next_send_at > $2
),
-- Not read from the due index: blocked endpoints, and FIFO ones (their candidate is their head).
skipped AS MATERIALIZED (
    SELECT endpoint FROM blocked UNION SELECT id FROM hookline_endpoint WHERE fifo = 1
),
-- Whether any enabled endpoint is left to take from: if not, the due index is not read at all
-- (with every endpoint skipped it would be read for nothing).
takes_any AS MATERIALIZED (
    SELECT EXISTS (SELECT 1 FROM hookline_endpoint o
                   WHERE o.enabled = 1 AND o.id <> ALL (ARRAY(SELECT endpoint FROM skipped))) AS yes
),
-- How far the due index is read: the window and what is in flight (see _CANDIDATES).
reach AS MATERIALIZED (
    SELECT $3 + COALESCE(SUM(n), 0) AS n FROM busy
),
-- Where the next claim may start reading the due index: the earliest delivery still pending,
-- leased or not, or now if none is due yet.
next_floor AS MATERIALIZED (
    SELECT LEAST($1, COALESCE((
        SELECT d.next_attempt_at FROM hookline_delivery d
        WHERE d.status = 'pending' AND d.next_attempt_at >= $7
        ORDER BY d.next_attempt_at
        LIMIT 1), $1)) AS at
),
scanned AS MATERIALIZED (
    SELECT {_CANDIDATE_COLUMNS_PG}
    FROM (
        SELECT d.id, d.endpoint, d.attempts, d.delivery_id, d.event, d.next_attempt_at
        FROM hookline_delivery d
        WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND d.next_attempt_at >= $7
          AND (SELECT yes FROM takes_any)
        ORDER BY d.next_attempt_at
        LIMIT (SELECT n FROM reach)
    ) d
    JOIN hookline_endpoint e ON e.id = d.endpoint
    LEFT JOIN busy b ON b.endpoint = d.endpoint
    WHERE e.enabled = 1
      -- Tested on the delivery as it is read, before any join.
      AND d.endpoint <> ALL (ARRAY(SELECT endpoint FROM skipped))
      AND {_UNLEASED}
    ORDER BY d.next_attempt_at
    LIMIT $3
),
-- The reach was spent on left-out endpoints' entries before the window filled: the candidates
-- are read endpoint by endpoint instead (_DUE_BY_ENDPOINT).
cut_short AS MATERIALIZED (
    SELECT (SELECT yes FROM takes_any) AND (SELECT COUNT(*) FROM scanned) < $3 AND (
        SELECT COUNT(*) FROM (
            SELECT 1 FROM hookline_delivery d
            WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND d.next_attempt_at >= $7
            ORDER BY d.next_attempt_at
            LIMIT (SELECT n FROM reach)) r) >= (SELECT n FROM reach) AS yes
),
by_endpoint AS MATERIALIZED (
    SELECT {_CANDIDATE_COLUMNS_PG}
    FROM hookline_endpoint e
    LEFT JOIN busy b ON b.endpoint = e.id
    CROSS JOIN LATERAL (
        SELECT d.id, d.endpoint, d.attempts, d.delivery_id, d.event, d.next_attempt_at
        FROM hookline_delivery d
        WHERE d.endpoint = e.id AND d.status = 'pending' AND d.next_attempt_at <= $1
          AND d.next_attempt_at >= $7 AND {_UNLEASED}
        ORDER BY d.endpoint, d.next_attempt_at
        LIMIT GREATEST(e.max_in_flight - COALESCE(b.n, 0), 0)
    ) d
    WHERE (SELECT yes FROM cut_short) AND e.enabled = 1
      AND e.id <> ALL (ARRAY(SELECT endpoint FROM skipped))
),
-- Each FIFO endpoint's head, through the endpoint's index (ordered by its columns, so that no
-- other index can give that order without a sort).
heads AS MATERIALIZED (
    SELECT {_CANDIDATE_COLUMNS_PG}
    FROM hookline_endpoint e
    CROSS JOIN LATERAL (
        SELECT p.id FROM hookline_delivery p
        WHERE p.endpoint = e.id AND p.finished_at IS NULL AND p.status = 'pending'
        ORDER BY p.finished_at, p.id
        LIMIT 1
    ) h
    JOIN hookline_delivery d ON d.id = h.id
    LEFT JOIN busy b ON b.endpoint = e.id
    WHERE e.fifo = 1 AND e.enabled = 1
      AND e.id <> ALL (ARRAY(SELECT endpoint FROM blocked))
      AND d.next_attempt_at <= $1
      AND {_UNLEASED}
),
candidates AS (
    SELECT * FROM scanned WHERE NOT (SELECT yes FROM cut_short)
    UNION ALL SELECT * FROM by_endpoint
    UNION ALL SELECT * FROM heads
),
ranked AS (
    SELECT c.*, CASE WHEN c.rate_limit > 0 THEN c.first_slot + (c.k - 1) / c.rate_limit
                     ELSE $1 END AS not_before
    FROM (SELECT c.*, row_number() OVER (
              PARTITION BY c.endpoint ORDER BY c.next_attempt_at, c.id) AS k
          FROM candidates c) c
),
chosen AS MATERIALIZED (
    SELECT id, endpoint, attempts + 1 AS attempt, delivery_id, event, next_attempt_at,
           rate_limit, not_before
    FROM ranked
    WHERE k <= room AND not_before <= $2
    ORDER BY next_attempt_at, id
    LIMIT $4
),
leased AS (
    INSERT INTO hookline_lease (delivery, endpoint, owner, attempt, until_at)
    SELECT id, endpoint, $5, attempt, (SELECT MAX(not_before) FROM chosen) + $6 FROM chosen
),
paced AS (
    UPDATE hookline_endpoint e SET next_send_at = slots.next_slot
    FROM (SELECT endpoint, MAX(not_before) + 1.0 / MAX(rate_limit) AS next_slot
          FROM chosen WHERE rate_limit > 0 GROUP BY endpoint) slots
    WHERE e.id = slots.endpoint
)
SELECT c.id, c.delivery_id, c.attempt, ev.event_id, ev.payload, e.id, e.endpoint_id, e.url,
       e.custom_headers, e.timeout_s, e.connect_timeout_s, e.retry_schedule, e.signing_key_enc,
       e.secrets_version, c.not_before, (SELECT at FROM next_floor)
FROM chosen c
JOIN hookline_event ev ON ev.id = c.event
JOIN hookline_endpoint e ON e.id = c.endpoint
ORDER BY c.next_attempt_at, c.id
"""
_CLAIM_PG_TYPES = "(float8, float8, int, int, text, float8, float8)"
_LEASE_SQLITE = """
INSERT INTO hookline_lease (delivery, endpoint, owner, attempt, until_at)
SELECT id, endpoint, ?, attempts + 1, ? FROM hookline_delivery WHERE id IN ({ids})
"""
# The payload as a BLOB: the sender wants bytes, and as text it would be decoded only to be
# encoded again.
_CLAIMED_SQLITE = """
SELECT d.id, d.delivery_id, l.attempt, ev.event_id, CAST(ev.payload AS BLOB), e.id,
       e.endpoint_id, e.url, e.custom_headers, e.timeout_s, e.connect_timeout_s,
       e.retry_schedule, e.signing_key_enc, e.secrets_version
FROM hookline_lease l
JOIN hookline_delivery d ON d.id = l.delivery
JOIN hookline_event ev ON ev.id = d.event
JOIN hookline_endpoint e ON e.id = d.endpoint
WHERE l.delivery IN ({ids})
"""


def claim(
    db: DAL,
    worker: str,
    *,
    now: float,
    capacity: int,
    lease_s: float,
    floor: DueFloor | None = None,
) -> list[Claimed]:
    """Lease up to ``capacity`` due deliveries to ``worker``; commits. Returns what it leased.
    A worker passes its ``DueFloor``."""
    if capacity <= 0:
        return []
    db.commit()
    # SQLite: a read first, for the write lock below would make publishers wait, for nothing
    # whenever no delivery is due. (PostgreSQL's claim is one statement that finds nothing due
    # as quickly.)
    if not is_postgres(db) and not _rows(db, _ANY_DUE, [now]):
        db.commit()
        return []
    with _lease_commit(db):
        begin_write(db)
        try:
            claimed = _claim_locked(
                db, worker, now=now, capacity=capacity, lease_s=lease_s, lasting=False, floor=floor
            )
            db.commit()
        except BaseException:
            db.rollback()
            raise
    return claimed


@contextmanager
def _lease_commit(db: DAL) -> Iterator[None]:
    """Commit a lease without waiting for the disk or checkpointing (SQLite: ``synchronous`` at
    NORMAL and no automatic checkpoint for this transaction; PostgreSQL: ``synchronous_commit``
    off, set inside it).

    A lease needs no durability of its own: if a crash loses it, the deliveries are simply
    pending again and are claimed again, which at-least-once delivery allows (the receiver sees
    the same ``webhook-id``). What must survive, the attempt and its outcome, is recorded with
    a full commit, and that commit's sync also covers the lease written before it. The
    checkpoint, which copies the WAL into the database file, is left to that commit (or any
    other writer's): a claim sits between a publish and the first attempt, a record does not.
    """
    if is_postgres(db):
        yield
        return
    # The raw cursor: through pydal these four statements cost a tenth of a claim.
    cursor = db._adapter.cursor
    sync = cursor.execute("PRAGMA synchronous").fetchone()[0]
    pages = cursor.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    cursor.execute("PRAGMA synchronous=NORMAL")  # SQLite allows it only between transactions
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    try:
        yield
    finally:
        cursor.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")
        cursor.execute(f"PRAGMA synchronous={int(sync)}")


def _claim_locked(
    db: DAL,
    worker: str,
    *,
    now: float,
    capacity: int,
    lease_s: float,
    lasting: bool = True,
    floor: DueFloor | None = None,
) -> list[Claimed]:
    """The claim inside the caller's write transaction (which holds SQLite's write lock). With
    ``lasting`` false the transaction is only this claim, committed without waiting for the
    disk (``_lease_commit``)."""
    if is_postgres(db):
        rows = _claim_rows_pg(
            db,
            worker,
            now=now,
            capacity=capacity,
            lease_s=lease_s,
            lasting=lasting,
            floor=floor,
        )
    else:
        rows = _claim_rows_sqlite(db, worker, now=now, capacity=capacity, lease_s=lease_s)
    # Per endpoint, its headers and schedule are parsed once: a claim is mostly a few endpoints.
    settings: dict[int, tuple[dict[str, str], tuple[float, ...] | None]] = {}
    claimed = []
    for row in rows:
        endpoint = int(row[5])
        if endpoint not in settings:
            schedule = json.loads(row[11]) if row[11] else None
            settings[endpoint] = (json.loads(row[8]), tuple(schedule) if schedule else None)
        headers, schedule = settings[endpoint]
        claimed.append(_claimed(row, row[14], worker, headers, schedule))
    return claimed


#: PostgreSQL, for the claim's transaction: the plan the claim is built for, whatever the
#: statistics say, planned once per connection. No sort where an index gives the order: on a
#: table filled since it was last analyzed, the planner expected a handful of rows, read every
#: due delivery and sorted them (10,000 pending: 22-40 ms a claim instead of 3-4, throughput
#: halved). No sequential scans: a plan made while the lease table was empty read it in full
#: for every candidate (750 ms a claim). With both ruled out, one generic plan serves every
#: claim, saving the ~2 ms that planning for each claim's own values cost (of ~9.5 ms, a claim
#: of 100 at a million pending). PostgreSQL plans it again once ANALYZE has updated the
#: statistics. No JIT: it compiled for ~1.4 s whenever a plan's cost estimate was large.
CLAIM_PLANNER_SETTINGS = (
    "SET LOCAL plan_cache_mode TO force_generic_plan; SET LOCAL enable_sort TO off;"
    " SET LOCAL enable_seqscan TO off; SET LOCAL jit TO off;"
)

# The connections on which the claim statement is prepared. Prepared statements belong to the
# session and outlive a rollback; a new connection (pydal reconnecting) prepares it again.
_PREPARED_ON: weakref.WeakSet[Any] = weakref.WeakSet()


# PostgreSQL: wait for this database's claim turn, held until the transaction ends.
_TAKE_CLAIM_LOCK = "SELECT pg_advisory_xact_lock(%s)"


def _take_claim_lock(db: DAL) -> None:
    db._adapter.cursor.execute(_TAKE_CLAIM_LOCK, [CLAIM_LOCK])


def _claim_rows_pg(
    db: DAL,
    worker: str,
    *,
    now: float,
    capacity: int,
    lease_s: float,
    lasting: bool,
    floor: DueFloor | None,
) -> list[tuple]:
    """The claim's one round trip (two on a connection's first claim): its turn, then the
    prepared statement, parsed once per connection rather than per claim."""
    cursor = db._adapter.cursor
    connection = db._adapter.connection
    if connection not in _PREPARED_ON:
        cursor.execute(f"PREPARE hookline_claim {_CLAIM_PG_TYPES} AS {_CLAIM_PG}")
        _PREPARED_ON.add(connection)
    relaxed = "" if lasting else "SET LOCAL synchronous_commit TO OFF; "
    # The lock is its own statement: the claim's snapshot must be taken after it is granted.
    cursor.execute(
        f"{relaxed}{CLAIM_PLANNER_SETTINGS} {_TAKE_CLAIM_LOCK};"
        " EXECUTE hookline_claim(%s, %s, %s, %s, %s, %s, %s)",
        [
            CLAIM_LOCK,
            now,
            now + RATE_HORIZON_S,
            capacity * CLAIM_WINDOW_PG,
            capacity,
            worker,
            lease_s,
            float("-inf") if floor is None else floor.start(),
        ],
    )
    rows = cursor.fetchall()
    if rows and floor is not None:
        floor.seen(rows[0][-1])
    return [row[:-1] for row in rows]


def _claim_rows_sqlite(
    db: DAL, worker: str, *, now: float, capacity: int, lease_s: float
) -> list[tuple]:
    """Lease on SQLite and return the rows ``_claimed`` reads, each with its ``not_before``
    last, in candidate order."""
    # The write lock serialises SQLite's claims already: every enabled endpoint's budget in
    # one query, which also says which endpoints are full and which are FIFO.
    budgets, fifo = _enabled_budgets(db)
    blocked = _blocked_endpoints(budgets, now)
    skipped = sorted(blocked | fifo)
    window = capacity * CLAIM_WINDOW
    rows: list[tuple] = []
    open_endpoints = [ep for ep in budgets if ep not in blocked and ep not in fifo]
    # With every endpoint skipped there is nothing to read the due index for.
    if open_endpoints:
        reach = window + sum(b.in_flight for b in budgets.values())
        rows += _rows(
            db,
            _CANDIDATES.format(skip=_not_in("d.endpoint", skipped)),
            [now, reach, *skipped, window],
        )
        if len(rows) < window and _rows(db, _DUE_REACHED, [now, reach])[0][0] >= reach:
            room = max(budgets[ep].max_in_flight - budgets[ep].in_flight for ep in open_endpoints)
            rows = _rows(
                db,
                _DUE_BY_ENDPOINT.format(skip=_not_in("e.id", skipped)),
                [now, min(room, capacity), *skipped, window],
            )
    open_fifo = sorted(fifo - blocked)
    if open_fifo:
        rows += _rows(
            db,
            _FIFO_HEADS.format(ids=_in(open_fifo)),
            [*open_fifo, now],
        )
    rows.sort(key=lambda row: row[2])
    candidates = [(int(delivery), int(endpoint)) for delivery, endpoint, _ in rows]
    if not candidates:
        return []
    chosen, next_send = plan_claims(candidates, budgets, now, capacity)
    if not chosen:
        return []
    cursor = db._adapter.cursor
    if next_send:
        cursor.executemany(
            "UPDATE hookline_endpoint SET next_send_at = ? WHERE id = ?",
            [(slot, ep) for ep, slot in next_send.items()],
        )
    # One lease end for the batch: the latest start plus the lease. A delivery that may start
    # earlier keeps its lease a little longer, at most RATE_HORIZON_S, and the worker renews
    # leases while it sends anyway.
    until = max(not_before for _, not_before in chosen) + lease_s
    ids = [delivery for delivery, _ in chosen]
    cursor.execute(dialect_sql(db, _LEASE_SQLITE.format(ids=_in(ids))), [worker, until, *ids])
    by_row = {int(row[0]): row for row in _rows(db, _CLAIMED_SQLITE.format(ids=_in(ids)), ids)}
    # Candidate order: `IN (...)` keeps none.
    return [(*by_row[delivery], not_before) for delivery, not_before in chosen]


def _not_in(column: str, ids: Sequence[int]) -> str:
    """``AND column NOT IN (...)`` with a placeholder per id, or nothing for no ids."""
    return f"AND {column} NOT IN ({_in(ids)})" if ids else ""


def _blocked_endpoints(budgets: dict[int, EndpointBudget], now: float) -> set[int]:
    """Endpoints a claim cannot take from now: at ``max_in_flight``, or rate-limited with their
    next slot beyond the horizon."""
    horizon = now + RATE_HORIZON_S
    return {
        ep
        for ep, b in budgets.items()
        if b.in_flight >= b.max_in_flight
        or (b.rate_limit is not None and b.next_send_at is not None and b.next_send_at > horizon)
    }


_ENABLED_BUDGETS = """
SELECT e.id, e.max_in_flight, e.rate_limit, e.next_send_at,
       (SELECT COUNT(*) FROM hookline_lease l WHERE l.endpoint = e.id), e.fifo
FROM hookline_endpoint e WHERE e.enabled = 1
"""


def _enabled_budgets(db: DAL) -> tuple[dict[int, EndpointBudget], set[int]]:
    """Every enabled endpoint's budget, and which of them are FIFO."""
    budgets, fifo = {}, set()
    for ep, limit, rate, next_send, in_flight, is_fifo in _rows(db, _ENABLED_BUDGETS):
        budgets[int(ep)] = EndpointBudget(int(limit), int(in_flight), rate, next_send)
        if is_fifo:
            fifo.add(int(ep))
    return budgets, fifo


def _as_bytes(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _claimed(
    row: Sequence[Any],
    not_before: float,
    worker: str,
    headers: dict[str, str],
    schedule: tuple[float, ...] | None,
) -> Claimed:
    # Positional, in field order: keywords cost as much as the rest of the build.
    return Claimed(
        int(row[0]),  # delivery_row
        row[1],  # delivery_id
        int(row[2]),  # attempt
        not_before,
        row[3],  # event_id
        _as_bytes(row[4]),  # payload
        int(row[5]),  # endpoint_row
        row[6],  # endpoint_id
        row[7],  # url
        headers,
        float(row[9]),  # timeout_s
        float(row[10]),  # connect_timeout_s
        schedule,
        row[12],  # signing_key_enc
        worker,  # lease_owner
        int(row[13]),  # secrets_version
    )


@dataclass(frozen=True)
class SendResult:
    """What one attempt produced, ready to be recorded."""

    delivery_row: int
    endpoint_row: int
    endpoint_id: str
    attempt: int
    lease_owner: str | None
    started_at: float
    duration_ms: float | None
    status_code: int | None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    error: str | None = None
    retry_schedule: tuple[float, ...] | None = None


def _policy(schedule: tuple[float, ...] | None, default: RetryPolicy) -> RetryPolicy:
    return default if schedule is None else RetryPolicy(schedule=schedule, jitter=default.jitter)


_ATTEMPT_COLUMNS = (
    "delivery, endpoint, number, started_at, duration_ms, status_code, response_headers,"
    " response_body, error, outcome, worker"
)
_INSERT_ATTEMPTS_PG = f"INSERT INTO hookline_attempt ({_ATTEMPT_COLUMNS}) VALUES %s"
_INSERT_ATTEMPTS_SQLITE = f"INSERT INTO hookline_attempt ({_ATTEMPT_COLUMNS}) VALUES ({marks(11)})"
# Only the attempt that holds the lease may move the delivery on: same owner AND same attempt
# number, so a late answer to an earlier attempt (whose lease ran out and was claimed again,
# even by this worker) is kept as an attempt row and nothing more. Deleting the lease is the
# test: the delivery is updated only where a lease was deleted.
_SETTLE_PG = """
WITH v(id, status, next_at, code, error, stamp, finished, owner, attempt) AS (VALUES %s),
settled AS (
    DELETE FROM hookline_lease l USING v
    WHERE l.delivery = v.id AND l.owner = v.owner AND l.attempt = v.attempt
    RETURNING l.delivery, l.attempt
)
UPDATE hookline_delivery AS d
SET status = v.status, attempts = v.attempt, next_attempt_at = v.next_at,
    last_status_code = v.code, last_error = v.error, updated_at = v.stamp,
    finished_at = v.finished
FROM v JOIN settled s ON s.delivery = v.id AND s.attempt = v.attempt
WHERE d.id = v.id
RETURNING d.id
"""
_SETTLE_PG_ROW = (
    "(%s::int, %s::text, %s::float8, %s::int, %s::text, %s::timestamp, %s::timestamp,"
    " %s::text, %s::int)"
)
_RELEASE_SQLITE = "DELETE FROM hookline_lease WHERE delivery = ?1 AND owner = ?8 AND attempt = ?9"
_SETTLE_SQLITE = """
UPDATE hookline_delivery SET status = ?2, attempts = ?9, next_attempt_at = ?3,
    last_status_code = ?4, last_error = ?5, updated_at = ?6, finished_at = ?7
WHERE id = ?1
"""


def record_results(
    db: DAL,
    results: Sequence[SendResult],
    *,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
    disable_after: dt.timedelta,
) -> list[RetryDecision]:
    """Record attempts and move each delivery on as the retry policy decides; commits.

    Endpoint bookkeeping happens in the same transaction: a success clears the failure clock, a
    failure starts it, ``410 Gone`` or a clock older than ``disable_after`` disables the endpoint.
    """
    decisions, _ = record_and_claim(
        db,
        results,
        "",
        now=now,
        capacity=0,
        lease_s=0.0,
        policy=policy,
        rng=rng,
        disable_after=disable_after,
    )
    return decisions


def record_and_claim(
    db: DAL,
    results: Sequence[SendResult],
    worker: str,
    *,
    now: float,
    capacity: int,
    lease_s: float,
    policy: RetryPolicy,
    rng: random.Random,
    disable_after: dt.timedelta,
    floor: DueFloor | None = None,
) -> tuple[list[RetryDecision], list[Claimed]]:
    """``record_results`` then ``claim`` in one write transaction (one commit, one fsync on
    SQLite): the claim sees the in-flight slots the recorded attempts freed. A worker passes
    its ``DueFloor``."""
    if not results:
        return [], claim(db, worker, now=now, capacity=capacity, lease_s=lease_s, floor=floor)
    now_dt = from_epoch(now)
    decisions = [
        decide(
            _policy(r.retry_schedule, policy),
            r.attempt,
            AttemptOutcome(r.status_code, r.error, r.response_headers.get("retry-after")),
            now_dt,
            rng,
        )
        for r in results
    ]
    begin_write(db)
    try:
        cursor = db._adapter.cursor
        attempt_rows = [
            (
                r.delivery_row,
                r.endpoint_row,
                r.attempt,
                sql_datetime(from_epoch(r.started_at)),
                r.duration_ms,
                r.status_code,
                json.dumps(r.response_headers) if r.response_headers else None,
                r.response_body[:MAX_RESPONSE_BODY].decode("utf-8", "replace") or None,
                r.error,
                d.action,
                r.lease_owner,
            )
            for r, d in zip(results, decisions, strict=True)
        ]
        stamp = sql_datetime(now_dt)
        outcomes = [
            (
                r.delivery_row,
                "pending" if d.action == "retry" else d.action,
                to_epoch(d.next_attempt_at) if d.next_attempt_at else now,
                r.status_code,
                (r.error or d.reason)[:2000] if d.action != "succeeded" else None,
                stamp,
                None if d.action == "retry" else stamp,
                r.lease_owner,
                r.attempt,
            )
            for r, d in zip(results, decisions, strict=True)
        ]
        if is_postgres(db):
            execute_values(cursor, _INSERT_ATTEMPTS_PG, attempt_rows)
            settled = {
                row[0]
                for row in execute_values(
                    cursor, _SETTLE_PG, outcomes, template=_SETTLE_PG_ROW, fetch=True
                )
            }
        else:
            cursor.executemany(_INSERT_ATTEMPTS_SQLITE, attempt_rows)
            settled = set()
            for outcome in outcomes:
                cursor.execute(_RELEASE_SQLITE, outcome)
                if cursor.rowcount == 1:
                    cursor.execute(_SETTLE_SQLITE, outcome)
                    settled.add(outcome[0])
        applied = [
            (r, d) for r, d in zip(results, decisions, strict=True) if r.delivery_row in settled
        ]
        if capacity > 0 and is_postgres(db):
            # The claim's turn before the endpoint rows below are locked: a claim holding the
            # turn may write an endpoint row (a rate limit's next slot), and waiting for the
            # turn while holding that row could deadlock with it.
            _take_claim_lock(db)
        to_disable = _endpoint_health(
            db, [r for r, _ in applied], [d for _, d in applied], now_dt, disable_after
        )
        claimed = (
            _claim_locked(db, worker, now=now, capacity=capacity, lease_s=lease_s, floor=floor)
            if capacity > 0
            else []
        )
        db.commit()
    except BaseException:
        db.rollback()
        raise
    # Each in a transaction of its own, after the batch: disabling locks the endpoint's pending
    # deliveries, which a concurrent claim may hold while it waits for the endpoint row.
    for endpoint_id, reason in to_disable.items():
        try:
            endpoints.set_enabled(db, endpoint_id, False, reason=reason, now=now_dt)
            db.commit()
        except BaseException:
            db.rollback()
            raise
    return decisions, claimed


def _endpoint_health(
    db: DAL,
    results: Sequence[SendResult],
    decisions: Sequence[RetryDecision],
    now: dt.datetime,
    disable_after: dt.timedelta,
) -> dict[str, str]:
    """Update the failure clocks; return the endpoints to disable, with the reason."""
    succeeded = {
        r.endpoint_row for r, d in zip(results, decisions, strict=True) if d.action == "succeeded"
    }
    failed = {
        r.endpoint_row for r, d in zip(results, decisions, strict=True) if d.action != "succeeded"
    }
    gone = {
        r.endpoint_id: d.reason
        for r, d in zip(results, decisions, strict=True)
        if d.disable_endpoint
    }
    table = db.hookline_endpoint
    if succeeded:
        db(table.id.belongs(succeeded) & (table.failing_since != None)).update(failing_since=None)
    failed -= succeeded
    if failed:
        db(table.id.belongs(failed) & (table.failing_since == None)).update(failing_since=now)
        rows = db(table.id.belongs(failed) & (table.enabled == 1)).select(
            table.endpoint_id, table.failing_since
        )
        for row in rows:
            if should_disable_endpoint(row.failing_since, now, disable_after):
                gone.setdefault(
                    row.endpoint_id,
                    f"failing continuously since {row.failing_since.isoformat()}Z",
                )
    return gone


_EXPIRED = """
SELECT l.delivery, l.endpoint, e.endpoint_id, l.attempt, l.owner, l.until_at, e.retry_schedule
FROM hookline_lease l JOIN hookline_endpoint e ON e.id = l.endpoint
WHERE l.until_at < %s
ORDER BY l.until_at
LIMIT %s
"""

LEASE_EXPIRED = "lease expired: the worker stopped before recording a result"


def recover_expired(
    db: DAL,
    *,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
    disable_after: dt.timedelta,
    limit: int = 500,
) -> int:
    """Deliveries whose lease ran out are recorded as a failed attempt and retried; commits."""
    db.commit()
    rows = db.executesql(dialect_sql(db, _EXPIRED), placeholders=[now, limit])
    results = [
        SendResult(
            delivery_row=int(r[0]),
            endpoint_row=int(r[1]),
            endpoint_id=r[2],
            attempt=int(r[3]),
            lease_owner=r[4],
            started_at=float(r[5]),
            duration_ms=None,
            status_code=None,
            error=LEASE_EXPIRED,
            retry_schedule=tuple(json.loads(r[6])) if r[6] else None,
        )
        for r in rows
    ]
    record_results(db, results, now=now, policy=policy, rng=rng, disable_after=disable_after)
    return len(results)


def extend_leases(db: DAL, worker: str, delivery_rows: Sequence[int], *, until: float) -> int:
    """Renew this worker's leases on deliveries still in flight (a heartbeat); commits.

    A lease only has to outlive the worker, not the slowest attempt: while the worker lives it
    keeps renewing, so a 120 s timeout works with a 60 s lease, and a dead worker's deliveries
    are free again one lease after its last heartbeat.
    """
    if not delivery_rows:
        return 0
    begin_write(db)
    try:
        rows = list(delivery_rows)
        cursor = db._adapter.cursor
        cursor.execute(
            dialect_sql(
                db,
                "UPDATE hookline_lease SET until_at = %s"
                f" WHERE owner = %s AND delivery IN ({_in(rows)})",
            ),
            [until, worker, *rows],
        )
        count = cursor.rowcount
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return count


def vacuum_leases(db: DAL) -> None:
    """PostgreSQL: clear the lease table of deleted leases now (a no-op on SQLite).

    Every delivery sent inserts a lease and deletes it, and PostgreSQL keeps deleted rows until
    a vacuum. In-flight counts then read them all: after 300 claims of 100 without a vacuum,
    counting took 6 ms of a claim. Autovacuum looks at a database once a minute; the worker
    calls this every ``LEASE_VACUUM_EVERY_S``. The table holds only what is in flight, so this
    is quick, and it does not block claims or records: ``SKIP_LOCKED`` (if another worker is
    vacuuming it, this one does not wait) and no ``TRUNCATE`` (giving empty pages back takes an
    exclusive lock, which every other worker's claim would wait for, and VACUUM keeps trying to
    get it for up to 5 s while those workers hold theirs).
    """
    if not is_postgres(db):
        return
    db.commit()
    connection = db._adapter.connection
    connection.autocommit = True  # VACUUM cannot run inside a transaction
    try:
        connection.cursor().execute("VACUUM (SKIP_LOCKED, TRUNCATE FALSE) hookline_lease")
    except psycopg2.Error as error:
        # Housekeeping: autovacuum still comes by, and claims only get slower without it. A
        # worker must not stop sending over it (a server older than PostgreSQL 12, say).
        log.warning("could not vacuum hookline_lease: %s", error)
    finally:
        connection.autocommit = False


#: How often a worker vacuums the lease table (PostgreSQL).
LEASE_VACUUM_EVERY_S = 1.0


def next_due(db: DAL, *, include_inbox: bool = False) -> float | None:
    """When the earliest pending delivery (and, with ``include_inbox``, received webhook awaiting
    its handler) is due, in epoch seconds, or ``None``."""
    db.commit()
    # One statement: an idle worker asks on every wake-up, which under a busy receiver is
    # every few milliseconds.
    inbox = (
        ", (SELECT MIN(next_attempt_at) FROM hookline_inbox WHERE status = 'received')"
        if include_inbox
        else ""
    )
    # Leased deliveries are pending too, at the head of the due index: the first one without a
    # lease (ORDER BY ... LIMIT 1 steps over them; MIN with NOT EXISTS would read them all).
    row = db.executesql(
        "SELECT (SELECT d.next_attempt_at FROM hookline_delivery d WHERE d.status = 'pending'"
        " AND NOT EXISTS (SELECT 1 FROM hookline_lease l WHERE l.delivery = d.id)"
        " ORDER BY d.next_attempt_at LIMIT 1)" + inbox
    )[0]
    db.commit()
    times = [float(value) for value in row if value is not None]
    return min(times) if times else None
