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
from hookline.fanout import NOTIFY_CHANNEL, dialect_sql, is_postgres
from hookline.retry import AttemptOutcome, RetryPolicy, decide
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


# Both read the due index from a floor (``hookline.duefloor``; ``-inf`` on SQLite).
_ANY_DUE = (
    "SELECT 1 FROM hookline_inbox WHERE status = 'received' AND next_attempt_at <= %s"
    " AND next_attempt_at >= %s LIMIT 1"
)
_CLAIM = """
SELECT i.id FROM hookline_inbox i
WHERE i.status = 'received' AND i.next_attempt_at <= %s AND i.next_attempt_at >= %s
ORDER BY i.next_attempt_at
LIMIT %s
"""
# PostgreSQL: the claim, locking what it takes, and the earliest message still received, taken
# or not (locked by another worker's claim, or due later): where the next claim may start.
_CLAIM_PG = f"""
SELECT c.id, (SELECT LEAST(%s, MIN(w.next_attempt_at)) FROM (
    SELECT next_attempt_at FROM hookline_inbox
    WHERE status = 'received' AND next_attempt_at >= %s
    ORDER BY next_attempt_at LIMIT 1) w)
FROM ({_CLAIM} FOR UPDATE SKIP LOCKED) c
"""


def claim_messages(
    db: DAL,
    worker: str,
    *,
    now: float,
    capacity: int,
    lease_s: float,
    floor: DueFloor | None = None,
) -> list[InboxMessage]:
    """Lease up to ``capacity`` due received messages to ``worker``; commits. A worker passes
    its ``DueFloor`` for the inbox."""
    db.commit()
    postgres = is_postgres(db)
    start = floor.start() if floor is not None and postgres else float("-inf")
    # A read first: the worker asks on every turn, and on SQLite the write lock below would
    # make receivers wait for nothing whenever no message is due.
    if not db.executesql(dialect_sql(db, _ANY_DUE), placeholders=[now, start]):
        db.commit()
        return []
    begin_write(db)
    try:
        if postgres:
            found = db.executesql(_CLAIM_PG, placeholders=[now, start, now, start, capacity])
            if found and floor is not None:
                floor.seen(found[0][1])
        else:
            found = db.executesql(dialect_sql(db, _CLAIM), placeholders=[now, start, capacity])
        ids = [int(r[0]) for r in found]
        if not ids:
            db.commit()
            return []
        table = db.hookline_inbox
        db(table.id.belongs(ids)).update(
            status="processing",
            attempts=table.attempts + 1,
            lease_owner=worker,
            lease_until=now + lease_s,
        )
        rows = db(table.id.belongs(ids)).select(orderby=table.id)
        kinds = {
            r.name: r.kind
            for r in db(db.hookline_source.name.belongs({row.source for row in rows})).select(
                db.hookline_source.name, db.hookline_source.kind
            )
        }
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return [
        InboxMessage(
            row_id=row.id,
            inbox_id=row.inbox_id,
            source=row.source,
            kind=kinds.get(row.source, "none"),
            event_type=row.event_type,
            message_id=row.message_id,
            body=row.body.encode("utf-8") if isinstance(row.body, str) else bytes(row.body or b""),
            headers={k: v for k, v in json.loads(row.headers)},
        )
        for row in rows
    ]


def _settle(db: DAL, message: InboxMessage, worker: str, values: dict[str, Any]) -> bool:
    """Record the outcome if the message is still leased to ``worker``, then commit; else roll
    back: a worker whose lease ran out (another owns the message now) must not commit what its
    handler wrote, or the work would happen twice."""
    table = db.hookline_inbox
    query = (
        (table.id == message.row_id)
        & (table.status == "processing")
        & (table.lease_owner == worker)
    )
    if db(query).update(lease_owner=None, lease_until=None, **values):
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
        attempts = db.hookline_inbox[message.row_id].attempts
        try:
            if handler is not None:
                handler(db, message)
            settled = _settle(
                db,
                message,
                worker,
                {
                    "status": "processed",
                    "processed_at": from_epoch(now),
                    "last_error": None if handler else "no handler registered",
                },
            )
            counts["processed"] += settled
            continue
        except PermanentFailure as error:
            db.rollback()
            decision_action, next_at, reason = "failed", None, f"permanent: {error}"
        except Exception as error:  # a handler's failure is recorded, never fatal to the worker
            db.rollback()
            reason = f"{type(error).__name__}: {error}"[:2000]
            decision = decide(policy, attempts, AttemptOutcome(None, reason), from_epoch(now), rng)
            decision_action, next_at = decision.action, decision.next_attempt_at
        values: dict[str, Any] = {"last_error": reason}
        if decision_action == "retry" and next_at is not None:
            values.update(status="received", next_attempt_at=to_epoch(next_at))
            counts["retry"] += 1
        else:
            values.update(status="failed", processed_at=from_epoch(now))
            counts["failed"] += 1
        _settle(db, message, worker, values)
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
