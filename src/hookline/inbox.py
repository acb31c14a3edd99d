"""The inbox: every accepted inbound request, stored raw with the answer it got.

A row is written in the same transaction as the work the request caused, so "stored" and
"processed" commit together, before the answer is sent. ``(source, message_id)`` is unique: a
request whose id was seen before is answered from its row and never processed again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydal import DAL

from hookline.ids import new_id
from hookline.sqlconn import SqlConn, as_sql, marks
from hookline.timeutil import isoformat, to_epoch, utcnow
from hookline.webio import Request, Response, redacted_headers

__all__ = [
    "IDEMPOTENCY_HEADERS",
    "INBOX_STATUSES",
    "PreparedItem",
    "find_answer",
    "insert_item",
    "item_to_dict",
    "list_items",
    "message_id_of",
    "prepare_item",
    "record",
    "storable_message_id",
]

#: Headers that name a message for deduplication, in order of preference.
IDEMPOTENCY_HEADERS = ("webhook-id", "idempotency-key")
MAX_MESSAGE_ID = 255
#: received -> processing -> processed | failed (dead-lettered); see ``handlers``.
INBOX_STATUSES = ("received", "processing", "processed", "failed")
MAX_PAGE = 200


def storable_message_id(value: str) -> str:
    """``value`` as it is stored and looked up: itself when it fits the column, else a prefix
    and the SHA-256 of the whole, so that two long ids never share a key (cutting them short
    would make a second, different message look like a replay of the first)."""
    if len(value) <= MAX_MESSAGE_ID:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{value[: MAX_MESSAGE_ID - len(digest) - 1]}~{digest}"


def message_id_of(request: Request) -> str | None:
    """The idempotency key a request carries, if any, in its stored form."""
    for name in IDEMPOTENCY_HEADERS:
        value = request.header(name).strip()
        if value:
            return storable_message_id(value)
    return None


def find_answer(db: DAL | SqlConn, source: str, message_id: str) -> Response | None:
    """The answer stored for ``(source, message_id)``, marked as a replay; ``None`` if unseen."""
    row = as_sql(db).one(
        "SELECT response_status, response_body FROM hookline_inbox"
        " WHERE source = ? AND message_id = ?",
        (source, message_id),
    )
    if row is None:
        return None
    status, body = row
    return Response(
        status,
        (body or "").encode("utf-8"),
        {"Content-Type": "application/json", "Idempotent-Replayed": "true"},
    )


_INSERT_HEAD = (
    "INSERT INTO hookline_inbox (inbox_id, source, message_id, method, content_type, headers,"
    " body, status, response_status, response_body, received_at, processed_at, event_type,"
    " next_attempt_at, attempts)"
)
_INSERT = f"{_INSERT_HEAD} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"


@dataclass(frozen=True)
class PreparedItem:
    """An inbox row ready to insert (``prepare_item``): its values in ``_INSERT``'s order, with
    plain datetimes that the insert converts for the database."""

    inbox_id: str
    values: tuple[Any, ...]


def prepare_item(
    *,
    source: str,
    message_id: str | None,
    request: Request,
    response: Response,
    status: str = "processed",
    event_type: str | None = None,
    inbox_id: str | None = None,
    now: dt.datetime | None = None,
) -> PreparedItem:
    """The inbox row for ``request`` and its ``response``, without touching the database."""
    now = now or utcnow()
    inbox_id = inbox_id or new_id("msg")
    values = (
        inbox_id,
        source,
        message_id,
        request.method,
        request.header("content-type")[:255] or None,
        json.dumps(redacted_headers(request.headers)),
        SqlConn.blob(request.body),
        status,
        response.status,
        response.body.decode("utf-8"),
        now,
        now if status == "processed" else None,
        event_type,
        to_epoch(now) if status == "received" else None,
    )
    return PreparedItem(inbox_id, values)


def insert_item(db: DAL | SqlConn, item: PreparedItem) -> str:
    """Insert a prepared inbox row in the caller's transaction; return its id."""
    sql = as_sql(db)
    sql.execute(_INSERT, sql.params(item.values))
    return item.inbox_id


def insert_items(sql: SqlConn, items: list[PreparedItem]) -> None:
    """``insert_item`` for several rows at once (multi-row inserts)."""
    sql.insert_rows(_INSERT_HEAD, [(*sql.params(item.values), 0) for item in items])


def seen_message_ids(sql: SqlConn, source: str, message_ids: list[str]) -> set[str]:
    """Which of ``message_ids`` the inbox already holds for ``source`` (one query)."""
    if not message_ids:
        return set()
    rows = sql.all(
        "SELECT message_id FROM hookline_inbox WHERE source = ?"
        f" AND message_id IN ({marks(len(message_ids))})",
        (source, *message_ids),
    )
    return {row[0] for row in rows}


def record(db: DAL | SqlConn, **fields: Any) -> str:
    """Store a request and its answer in the caller's transaction; return the row's id.

    Takes ``prepare_item``'s keyword arguments.
    """
    return insert_item(db, prepare_item(**fields))


def item_to_dict(row: Any, *, full: bool = False) -> dict[str, Any]:
    """The public view of an inbox row; ``full`` adds the stored headers and body."""
    view = {
        "object": "inbox_item",
        "inbox_id": row.inbox_id,
        "source": row.source,
        "message_id": row.message_id,
        "event_type": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "response_status": row.response_status,
        "received_at": isoformat(row.received_at),
        "processed_at": isoformat(row.processed_at),
    }
    if full:
        body = row.body or b""
        body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        view["headers"] = json.loads(row.headers)
        view["content_type"] = row.content_type
        view["body"] = body.decode("utf-8", "replace")
    return view


def list_items(
    db: DAL,
    *,
    source: str | None = None,
    status: str | None = None,
    event_type: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    cursor: int | None = None,
) -> dict[str, Any]:
    """A page of inbox items, newest first: ``{"data", "has_more", "next_cursor"}``."""
    table = db.hookline_inbox
    query = table.id > 0
    for column, value in (
        (table.source, source),
        (table.status, status),
        (table.event_type, event_type),
    ):
        if value is not None:
            query &= column == value
    if since is not None:
        query &= table.received_at >= since
    if until is not None:
        query &= table.received_at < until
    if cursor is not None:
        query &= table.id < cursor
    limit = max(1, min(limit, MAX_PAGE))
    rows = list(db(query).select(orderby=~table.id, limitby=(0, limit + 1)))
    page = rows[:limit]
    return {
        "object": "list",
        "data": [item_to_dict(row) for row in page],
        "has_more": len(rows) > limit,
        "next_cursor": str(page[-1].id) if len(rows) > limit else None,
    }
