"""Handlers of the delivery management API: endpoints, deliveries, event replay.

Framework-neutral like ``orders_api``: ``(db, request, ...) -> Response``; a handler that writes
commits before answering 2xx, and client mistakes raise ``ClientError`` (``webio.run`` turns
them into a 4xx after rolling back).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydal import DAL

from hookline import endpoints, operations
from hookline.endpoint_rules import parse_endpoint
from hookline.errors import ValidationFailed
from hookline.netguard import NetworkPolicy
from hookline.schema import ATTEMPT_OUTCOMES, DELIVERY_STATUSES
from hookline.secretbox import SecretBox
from hookline.timeutil import parse_time
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
    "ApiContext",
    "create_endpoint",
    "delete_endpoint",
    "get_delivery",
    "list_attempts",
    "list_deliveries",
    "list_endpoints",
    "ping",
    "recover",
    "replay_event",
    "retry_delivery",
    "rotate_secret",
    "show_endpoint",
    "update_endpoint",
]


@dataclass(frozen=True)
class ApiContext:
    """What the handlers need besides the database: the secret box, the network policy and
    the body limit."""

    box: SecretBox
    network: NetworkPolicy
    max_body_bytes: int


def _body(request: Request, ctx: ApiContext, *, optional: bool = False) -> dict:
    if optional and not request.body.strip():
        return {}
    return json_object(request, ctx.max_body_bytes)


def list_endpoints(db: DAL, request: Request, ctx: ApiContext) -> Response:
    """``GET /api/endpoints``."""
    return json_response(200, {"object": "list", "data": endpoints.list_endpoints(db)})


def create_endpoint(db: DAL, request: Request, ctx: ApiContext) -> Response:
    """``POST /api/endpoints``: 201 with the endpoint and its secret (shown only now)."""
    changes = parse_endpoint(_body(request, ctx), ctx.network, creating=True)
    endpoint, credentials = endpoints.create_endpoint(db, ctx.box, changes)
    db.commit()
    return json_response(
        201,
        {**endpoint, **credentials},
        {"Location": f"/myapp/api/endpoints/{endpoint['endpoint_id']}"},
    )


def show_endpoint(db: DAL, request: Request, ctx: ApiContext, endpoint_id: str) -> Response:
    """``GET /api/endpoints/<id>``."""
    return json_response(200, endpoints.get_endpoint(db, endpoint_id))


def update_endpoint(db: DAL, request: Request, ctx: ApiContext, endpoint_id: str) -> Response:
    """``PATCH /api/endpoints/<id>``: settings, ``enabled``, ``ed25519``."""
    changes = parse_endpoint(_body(request, ctx), ctx.network, creating=False)
    endpoint, credentials = endpoints.update_endpoint(db, ctx.box, endpoint_id, changes)
    db.commit()
    return json_response(200, {**endpoint, **credentials})


def delete_endpoint(db: DAL, request: Request, ctx: ApiContext, endpoint_id: str) -> Response:
    """``DELETE /api/endpoints/<id>``: unfinished deliveries are discarded."""
    endpoints.delete_endpoint(db, endpoint_id)
    db.commit()
    return json_response(200, {"object": "endpoint", "endpoint_id": endpoint_id, "deleted": True})


def rotate_secret(db: DAL, request: Request, ctx: ApiContext, endpoint_id: str) -> Response:
    """``POST /api/endpoints/<id>/rotate`` (optional ``{"grace_seconds": n}``, default 24 h)."""
    body = _body(request, ctx, optional=True)
    grace = body.get("grace_seconds", endpoints.DEFAULT_ROTATION_GRACE.total_seconds())
    if (
        isinstance(grace, bool)
        or not isinstance(grace, int | float)
        or not 0 <= grace <= 30 * 86400
    ):
        raise ValidationFailed(
            "invalid grace period", errors={"grace_seconds": "0 to 2592000 seconds"}
        )
    secret = endpoints.rotate_secret(db, ctx.box, endpoint_id, grace=dt.timedelta(seconds=grace))
    db.commit()
    return json_response(200, {"endpoint_id": endpoint_id, "secret": secret})


def ping(db: DAL, request: Request, ctx: ApiContext, endpoint_id: str) -> Response:
    """``POST /api/endpoints/<id>/ping``: 202 with the ping event's id."""
    event_id = operations.send_ping(db, endpoint_id)
    db.commit()
    return json_response(202, {"event_id": event_id})


def recover(db: DAL, request: Request, ctx: ApiContext, endpoint_id: str) -> Response:
    """``POST /api/endpoints/<id>/recover`` with ``{"since": ISO-8601}``."""
    since_text = _body(request, ctx).get("since")
    try:
        since = parse_time(since_text) if isinstance(since_text, str) else None
    except ValueError:
        since = None
    if since is None:
        raise ValidationFailed(
            "invalid since", errors={"since": "an ISO-8601 time such as 2026-11-01T00:00:00Z"}
        )
    count = operations.recover_endpoint(db, endpoint_id, since)
    return json_response(200, {"endpoint_id": endpoint_id, "recovered": count})


def list_deliveries(db: DAL, request: Request, ctx: ApiContext) -> Response:
    """``GET /api/deliveries?endpoint_id=&event_id=&status=&limit=&cursor=``."""
    status = query_one(request, "status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise ValidationFailed(
            "unknown status", errors={"status": f"one of {', '.join(DELIVERY_STATUSES)}"}
        )
    page = operations.list_deliveries(
        db,
        endpoint_id=query_one(request, "endpoint_id"),
        event_id=query_one(request, "event_id"),
        status=status,
        limit=query_int(request, "limit", 1, operations.MAX_PAGE) or 50,
        cursor=query_int(request, "cursor", 1, 2**62),
    )
    return json_response(200, page)


def list_attempts(db: DAL, request: Request, ctx: ApiContext) -> Response:
    """``GET /api/attempts?endpoint_id=&delivery_id=&event_id=&outcome=&since=&until=&limit=
    &cursor=``, newest first; ``since``/``until`` bound the attempt's start (ISO-8601)."""
    outcome = query_one(request, "outcome")
    if outcome is not None and outcome not in ATTEMPT_OUTCOMES:
        raise ValidationFailed(
            "unknown outcome", errors={"outcome": f"one of {', '.join(ATTEMPT_OUTCOMES)}"}
        )
    page = operations.list_attempts(
        db,
        endpoint_id=query_one(request, "endpoint_id"),
        delivery_id=query_one(request, "delivery_id"),
        event_id=query_one(request, "event_id"),
        outcome=outcome,
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        limit=query_int(request, "limit", 1, operations.MAX_PAGE) or 50,
        cursor=query_int(request, "cursor", 1, 2**62),
    )
    return json_response(200, page)


def get_delivery(db: DAL, request: Request, ctx: ApiContext, delivery_id: str) -> Response:
    """``GET /api/deliveries/<id>``: the delivery with its attempt log."""
    return json_response(200, operations.get_delivery(db, delivery_id))


def retry_delivery(db: DAL, request: Request, ctx: ApiContext, delivery_id: str) -> Response:
    """``POST /api/deliveries/<id>/retry``."""
    view = operations.retry_delivery(db, delivery_id)
    db.commit()
    return json_response(202, view)


def replay_event(db: DAL, request: Request, ctx: ApiContext, event_id: str) -> Response:
    """``POST /api/events/<id>/replay`` (optional ``{"endpoint_id": ...}``)."""
    endpoint_id = _body(request, ctx, optional=True).get("endpoint_id")
    if endpoint_id is not None and not isinstance(endpoint_id, str):
        raise ValidationFailed("invalid endpoint_id", errors={"endpoint_id": "must be a string"})
    if endpoint_id is not None and "\x00" in endpoint_id:  # no database takes one in a query
        raise ValidationFailed(
            "invalid endpoint_id", errors={"endpoint_id": "must not contain NUL"}
        )
    created = operations.replay_event(db, event_id, endpoint_id=endpoint_id)
    db.commit()
    return json_response(202, {"event_id": event_id, "deliveries": created})
