"""Handlers of ``/myapp/api/sources`` and ``/myapp/api/inbox``, framework-neutral.

Like the other API modules: ``(db, request, ctx, ...) -> Response``; a handler that writes
commits before a 2xx; client mistakes raise ``ClientError``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydal import DAL

from hookline import handlers, inbox, sources
from hookline.delivery_api import ApiContext
from hookline.errors import NotFound, ValidationFailed
from hookline.webio import (
    Request,
    Response,
    json_object,
    json_response,
    query_int,
    query_one,
    query_time,
)

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


def list_inbox(db: DAL, request: Request, ctx: ApiContext) -> Response:
    """``GET /api/inbox?source=&status=&type=&since=&until=&limit=&cursor=``, newest first."""
    status = query_one(request, "status")
    if status is not None and status not in inbox.INBOX_STATUSES:
        raise ValidationFailed("unknown status", errors={"status": ", ".join(inbox.INBOX_STATUSES)})
    page = inbox.list_items(
        db,
        source=query_one(request, "source"),
        status=status,
        event_type=query_one(request, "type"),
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        limit=query_int(request, "limit", 1, inbox.MAX_PAGE) or 50,
        cursor=query_int(request, "cursor", 1, 2**62),
    )
    return json_response(200, page)


def get_inbox_item(db: DAL, request: Request, ctx: ApiContext, inbox_id: str) -> Response:
    """``GET /api/inbox/<inbox_id>``: with the stored headers and body."""
    row = db(db.hookline_inbox.inbox_id == inbox_id).select(limitby=(0, 1)).first()
    if row is None:
        raise NotFound(f"no inbox item {inbox_id!r}")
    return json_response(200, inbox.item_to_dict(row, full=True))


def replay_inbox_item(db: DAL, request: Request, ctx: ApiContext, inbox_id: str) -> Response:
    """``POST /api/inbox/<inbox_id>/replay``: run its handler again."""
    view = handlers.replay_message(db, inbox_id)
    db.commit()
    return json_response(202, view)
