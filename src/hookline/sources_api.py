"""Handlers of ``/myapp/api/sources`` and ``/myapp/api/inbox``, framework-neutral.

Like the other API modules: ``(db, request, ctx, ...) -> Response``; a handler that writes
commits before a 2xx; client mistakes raise ``ClientError``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pydal import DAL

from hookline import handlers, sources
from hookline.delivery_api import ApiContext
from hookline.errors import NotFound, ValidationFailed
from hookline.timeutil import isoformat
from hookline.webio import Request, Response, json_object, json_response, query_int, query_one

__all__ = [
    "create_source",
    "delete_source",
    "get_inbox_item",
    "list_inbox",
    "list_sources",
    "replay_inbox_item",
    "rotate_source",
    "show_source",
    "update_source",
]

INBOX_STATUSES = ("received", "processing", "processed", "failed")
MAX_PAGE = 200


def list_sources(db: DAL, request: Request, ctx: ApiContext) -> Response:
    """``GET /api/sources``."""
    return json_response(200, {"object": "list", "data": sources.list_sources(db, ctx.box)})


def create_source(db: DAL, request: Request, ctx: ApiContext) -> Response:
    """``POST /api/sources``: 201; a ``standard`` source given no secret gets one, shown once."""
    settings = sources.parse_source(json_object(request, ctx.max_body_bytes), creating=True)
    view, generated = sources.create_source(db, ctx.box, settings)
    db.commit()
    body = {**view, "secret": generated} if generated else view
    return json_response(201, body, {"Location": f"/myapp/api/sources/{view['name']}"})


def show_source(db: DAL, request: Request, ctx: ApiContext, name: str) -> Response:
    """``GET /api/sources/<name>``."""
    return json_response(200, sources.get_source(db, ctx.box, name))


def update_source(db: DAL, request: Request, ctx: ApiContext, name: str) -> Response:
    """``PATCH /api/sources/<name>``."""
    settings = sources.parse_source(json_object(request, ctx.max_body_bytes), creating=False)
    view = sources.update_source(db, ctx.box, name, settings)
    db.commit()
    return json_response(200, view)


def rotate_source(db: DAL, request: Request, ctx: ApiContext, name: str) -> Response:
    """``POST /api/sources/<name>/rotate`` with ``{"secret"?, "grace_seconds"?}``."""
    body = json_object(request, ctx.max_body_bytes) if request.body.strip() else {}
    secret = body.get("secret")
    if secret is not None and (not isinstance(secret, str) or not 8 <= len(secret) <= 512):
        raise ValidationFailed("invalid secret", errors={"secret": "8 to 512 characters"})
    grace = body.get("grace_seconds", 86_400)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= 2592000:
        raise ValidationFailed("invalid grace", errors={"grace_seconds": "0 to 2592000"})
    new = sources.rotate_secret(db, ctx.box, name, secret=secret, grace=dt.timedelta(seconds=grace))
    db.commit()
    answer: dict[str, Any] = {"name": name, "rotated": True}
    if secret is None:
        answer["secret"] = new  # generated here: shown only now
    return json_response(200, answer)


def delete_source(db: DAL, request: Request, ctx: ApiContext, name: str) -> Response:
    """``DELETE /api/sources/<name>``."""
    sources.delete_source(db, name)
    db.commit()
    return json_response(200, {"object": "source", "name": name, "deleted": True})


def _inbox_to_dict(row: Any, *, full: bool = False) -> dict[str, Any]:
    view = {
        "object": "inbox_item",
        "inbox_id": row.inbox_id,
        "source": row.source,
        "message_id": row.message_id,
        "event_type": row.event_type,
        "status": row.status,
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


def list_inbox(db: DAL, request: Request, ctx: ApiContext) -> Response:
    """``GET /api/inbox?source=&status=&type=&since=&until=&limit=&cursor=``, newest first."""
    table = db.hookline_inbox
    query = table.id > 0
    for name, column in (("source", table.source), ("type", table.event_type)):
        value = query_one(request, name)
        if value is not None:
            query &= column == value
    status = query_one(request, "status")
    if status is not None:
        if status not in INBOX_STATUSES:
            raise ValidationFailed("unknown status", errors={"status": ", ".join(INBOX_STATUSES)})
        query &= table.status == status
    for name, op in (("since", "ge"), ("until", "lt")):
        raw = query_one(request, name)
        if raw is not None:
            try:
                when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                raise ValidationFailed("bad time", errors={name: "an ISO-8601 time"}) from None
            if when.tzinfo is not None:
                when = when.astimezone(dt.UTC).replace(tzinfo=None)
            query &= (table.received_at >= when) if op == "ge" else (table.received_at < when)
    cursor = query_int(request, "cursor", 1, 2**62)
    if cursor is not None:
        query &= table.id < cursor
    limit = query_int(request, "limit", 1, MAX_PAGE) or 50
    rows = db(query).select(orderby=~table.id, limitby=(0, limit + 1))
    page = list(rows)[:limit]
    return json_response(
        200,
        {
            "object": "list",
            "data": [_inbox_to_dict(row) for row in page],
            "has_more": len(rows) > limit,
            "next_cursor": str(page[-1].id) if len(rows) > limit else None,
        },
    )


def get_inbox_item(db: DAL, request: Request, ctx: ApiContext, inbox_id: str) -> Response:
    """``GET /api/inbox/<inbox_id>``: with the stored headers and body."""
    row = db(db.hookline_inbox.inbox_id == inbox_id).select(limitby=(0, 1)).first()
    if row is None:
        raise NotFound(f"no inbox item {inbox_id!r}")
    return json_response(200, _inbox_to_dict(row, full=True))


def replay_inbox_item(db: DAL, request: Request, ctx: ApiContext, inbox_id: str) -> Response:
    """``POST /api/inbox/<inbox_id>/replay``: run its handler again."""
    view = handlers.replay_message(db, inbox_id)
    db.commit()
    return json_response(202, view)
