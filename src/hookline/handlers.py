"""Handlers for received webhooks, and the queue that runs them with retries.

A handler is a function ``(db, message) -> None`` registered for a source name or a source kind
and an event type (``"*"`` for any). The worker claims received inbox items with a lease, runs
each item's handler in a transaction of its own, and records the outcome: processed, retried on
the delivery retry schedule, or dead-lettered (``failed``) when the schedule is exhausted or the
handler raises ``PermanentFailure``. Items with no handler are marked processed (kept for the
record). A replay puts an item back to ``received``.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydal import DAL

from hookline.database import begin_write
from hookline.duefloor import DueFloor
from hookline.errors import Conflict, HooklineError, NotFound
from hookline.fanout import NOTIFY_CHANNEL, is_postgres
from hookline.outbox import MAX_PAYLOAD_BYTES
from hookline.retry import AttemptOutcome, RetryPolicy, decide
from hookline.sqlconn import SqlConn, marks
from hookline.timeutil import from_epoch, to_epoch, utcnow

__all__ = [
    "InboxMessage",
    "PermanentFailure",
    "claim_messages",
    "handler_for",
    "process_messages",
    "recover_messages",
    "register",
    "replay_message",
]

Handler = Callable[[DAL, "InboxMessage"], None]
_REGISTRY: dict[tuple[str, str], Handler] = {}


class PermanentFailure(HooklineError):
    """Raised by a handler for a message that can never succeed: dead-letter it at once."""


@dataclass(frozen=True)
class InboxMessage:
    """A received webhook as a handler sees it."""

    row_id: int
    inbox_id: str
    source: str
    kind: str
    event_type: str | None
    message_id: str | None
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    attempt: int = 1  # this run's number: 1, then one more per retry
    #: The limit on the events the handler publishes (``HOOKLINE_MAX_PAYLOAD_BYTES``): pass it
    #: on as ``max_bytes`` / ``max_payload_bytes``.
    max_payload_bytes: int = MAX_PAYLOAD_BYTES

    def json(self) -> Any:
        """The body decoded as JSON (``PermanentFailure`` when it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise PermanentFailure("the body is not JSON") from None


def register(
    source: str, event_type: str = "*", *, kind: bool = False
) -> Callable[[Handler], Handler]:
    """Decorator: run the function for messages from source ``source`` (or, with ``kind=True``,
    from every source of that kind) whose event type is ``event_type`` (``"*"``: any)."""

    def add(handler: Handler) -> Handler:
        _REGISTRY[(("kind:" if kind else "") + source, event_type)] = handler
        return handler

    return add


def handler_for(source: str, kind: str, event_type: str | None) -> Handler | None:
    """The handler for a message: by source name first, then by kind; exact type before ``*``."""
    for owner in (source, f"kind:{kind}"):
        for wanted in (event_type or "", "*"):
            handler = _REGISTRY.get((owner, wanted))
            if handler is not None:
                return handler
    return None


# Hand-written SQL (``SqlConn``, ``?`` placeholders): through pydal, updating and reading back a
# claim of 100 cost ~20 ms on PostgreSQL, most of it pydal building the statements and parsing
# the rows. Each reads the due index from a floor (``hookline.duefloor``; ``-inf`` on SQLite).
_ANY_DUE = (
    "SELECT 1 FROM hookline_inbox WHERE status = 'received' AND next_attempt_at <= ?"
    " AND next_attempt_at >= ? LIMIT 1"
)
_DUE = """
SELECT i.id FROM hookline_inbox i
WHERE i.status = 'received' AND i.next_attempt_at <= ? AND i.next_attempt_at >= ?
ORDER BY i.next_attempt_at
LIMIT ?
"""
_LEASE = """
UPDATE hookline_inbox
SET status = 'processing', attempts = attempts + 1, lease_owner = ?, lease_until = ?
"""
_LEASED_COLUMNS = "id, inbox_id, source, event_type, message_id, body, headers, attempts"
# SQLite: the write lock is held, so the due rows are simply updated.
_CLAIM_SQLITE = f"{_LEASE} WHERE id IN ({_DUE}) RETURNING {_LEASED_COLUMNS}"
# PostgreSQL: the due rows no other worker has locked, and the earliest message still received,
# taken or not (locked by another worker's claim, or due later): where the next claim may start.
_CLAIM_PG = f"""
{_LEASE}
FROM (
    SELECT c.id, LEAST(?, (
        SELECT next_attempt_at FROM hookline_inbox
        WHERE status = 'received' AND next_attempt_at >= ?
        ORDER BY next_attempt_at LIMIT 1)) AS next_floor
    FROM ({_DUE} FOR UPDATE SKIP LOCKED) c
) c
WHERE hookline_inbox.id = c.id
RETURNING {", ".join("hookline_inbox." + column for column in _LEASED_COLUMNS.split(", "))},
    c.next_floor
"""
_KINDS = "SELECT name, kind FROM hookline_source WHERE name IN ({names})"


def claim_messages(
    db: DAL,
    worker: str,
    *,
    now: float,
    capacity: int,
    lease_s: float,
    floor: DueFloor | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> list[InboxMessage]:
    """Lease the (up to ``capacity``) earliest due received messages to ``worker``; commits.
    Returns them in the order they were stored, each carrying ``max_payload_bytes`` for its
    handler. A worker passes its ``DueFloor`` for the inbox."""
    db.commit()
    sql = SqlConn.of(db)
    start = floor.start() if floor is not None and sql.postgres else float("-inf")
    # A read first: the worker asks on every turn, and on SQLite the write lock below would
    # make receivers wait for nothing whenever no message is due.
    if sql.one(_ANY_DUE, [now, start]) is None:
        db.commit()
        return []
    begin_write(db)
    try:
        lease = [worker, now + lease_s]
        if sql.postgres:
            rows = sql.all(_CLAIM_PG, [*lease, now, start, now, start, capacity])
            if rows and floor is not None:
                floor.seen(rows[0][-1])
        else:
            rows = sql.all(_CLAIM_SQLITE, [*lease, now, start, capacity])
        names = sorted({row[2] for row in rows})
        kinds = dict(sql.all(_KINDS.format(names=marks(len(names))), names)) if rows else {}
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return [
        InboxMessage(
            row_id=int(row[0]),
            inbox_id=row[1],
            source=row[2],
            kind=kinds.get(row[2], "none"),
            event_type=row[3],
            message_id=row[4],
            body=SqlConn.read_blob(row[5]),
            headers=dict(json.loads(row[6])),
            attempt=int(row[7]),
            max_payload_bytes=max_payload_bytes,
        )
        for row in sorted(rows)
    ]


_SETTLE = """
UPDATE hookline_inbox
SET status = ?, processed_at = ?, next_attempt_at = COALESCE(?, next_attempt_at),
    last_error = ?, lease_owner = NULL, lease_until = NULL
WHERE id = ? AND status = 'processing' AND lease_owner = ?
"""


def _settle(
    db: DAL,
    message: InboxMessage,
    worker: str,
    *,
    status: str,
    processed_at: dt.datetime | None = None,
    next_attempt_at: float | None = None,
    last_error: str | None = None,
) -> bool:
    """Record the outcome if the message is still leased to ``worker``, then commit; else roll
    back: a worker whose lease ran out (another owns the message now) must not commit what its
    handler wrote, or the work would happen twice."""
    sql = SqlConn.of(db)
    params = [status, sql.when(processed_at), next_attempt_at, last_error]
    if sql.execute(_SETTLE, [*params, message.row_id, worker]).rowcount:
        db.commit()
        return True
    db.rollback()
    return False


def process_messages(
    db: DAL,
    messages: list[InboxMessage],
    worker: str,
    *,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
) -> dict[str, int]:
    """Run each message's handler in its own transaction and record the outcome; commits."""
    counts = {"processed": 0, "retry": 0, "failed": 0}
    for message in messages:
        handler = handler_for(message.source, message.kind, message.event_type)
        try:
            if handler is not None:
                handler(db, message)
            settled = _settle(
                db,
                message,
                worker,
                status="processed",
                processed_at=from_epoch(now),
                last_error=None if handler else "no handler registered",
            )
            counts["processed"] += settled
            continue
        except PermanentFailure as error:
            db.rollback()
            decision_action, next_at, reason = "failed", None, f"permanent: {error}"
        except Exception as error:  # a handler's failure is recorded, never fatal to the worker
            db.rollback()
            reason = f"{type(error).__name__}: {error}"[:2000]
            outcome = AttemptOutcome(None, reason)
            decision = decide(policy, message.attempt, outcome, from_epoch(now), rng)
            decision_action, next_at = decision.action, decision.next_attempt_at
        if decision_action == "retry" and next_at is not None:
            _settle(
                db,
                message,
                worker,
                status="received",
                next_attempt_at=to_epoch(next_at),
                last_error=reason,
            )
            counts["retry"] += 1
        else:
            failed_at = from_epoch(now)
            _settle(db, message, worker, status="failed", processed_at=failed_at, last_error=reason)
            counts["failed"] += 1
    return counts


def recover_messages(db: DAL, *, now: float, policy: RetryPolicy) -> int:
    """Messages whose lease ran out (the worker died mid-handler) are received again, or
    dead-lettered once they used up the policy's attempts (a message that kills every worker
    must not be retried forever); commits."""
    table = db.hookline_inbox
    expired = (table.status == "processing") & (table.lease_until < now)
    reason = "lease expired: the worker stopped while handling it"
    exhausted = db(expired & (table.attempts >= policy.max_attempts)).update(
        status="failed",
        lease_owner=None,
        lease_until=None,
        processed_at=from_epoch(now),
        last_error=reason + "; attempts exhausted",
    )
    retried = db(expired).update(
        status="received",
        lease_owner=None,
        lease_until=None,
        next_attempt_at=now,
        last_error=reason,
    )
    db.commit()
    return exhausted + retried


def replay_message(db: DAL, inbox_id: str, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Run an inbox item's handler again (whatever it ended as), unless it is running now."""
    now = now or utcnow()
    table = db.hookline_inbox
    row = db(table.inbox_id == inbox_id).select(limitby=(0, 1)).first()
    if row is None:
        raise NotFound(f"no inbox item {inbox_id!r}")
    if row.status == "processing":
        raise Conflict(f"{inbox_id} is being handled right now", errors={"status": "processing"})
    row.update_record(
        status="received",
        attempts=0,
        next_attempt_at=to_epoch(now),
        last_error=None,
        processed_at=None,
    )
    if is_postgres(db):
        db.executesql(f"NOTIFY {NOTIFY_CHANNEL}")
    return {"inbox_id": inbox_id, "status": "received"}
