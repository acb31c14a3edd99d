"""Handlers of the orders management API (``/myapp/api/orders``), framework-neutral.

Each takes ``(db, request, ...)`` and returns a ``Response``; a handler that writes commits before
answering 2xx. Client mistakes raise ``ClientError``; ``webio.run`` turns them into a 4xx after
rolling back.
"""

from __future__ import annotations

from typing import Any

from pydal import DAL

from hookline import order_rules, orders
from hookline.errors import UnsupportedMediaType, ValidationFailed
from hookline.schema import ORDER_STATUSES
from hookline.webio import (
    Request,
    Response,
    check_size,
    json_response,
    parse_content_type,
    parse_json,
)

__all__ = ["create", "list_page", "patch", "show"]

_DEFAULT_LIMIT = 50


def _json_object(request: Request, max_body_bytes: int) -> dict[str, Any]:
    check_size(request.body, max_body_bytes)
    media_type, params = parse_content_type(request.header("content-type"))
    if media_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    value = parse_json(request.body, params.get("charset"))
    if not isinstance(value, dict):
        raise ValidationFailed(
            "the body must be a JSON object", errors={"body": "must be an object"}
        )
    return value


def _one(request: Request, name: str) -> str | None:
    values = request.query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ValidationFailed(
            f"{name} given more than once", errors={name: "given more than once"}
        )
    return values[0]


def _int_param(request: Request, name: str, low: int, high: int) -> int | None:
    raw = _one(request, name)
    if raw is None:
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ValidationFailed(
            f"{name} must be a whole number from {low} to {high}",
            errors={name: f"must be a whole number from {low} to {high}"},
        )
    return int(raw)


def list_page(db: DAL, request: Request) -> Response:
    """``GET /api/orders?status=&limit=&cursor=``: a page of orders, newest first."""
    status = _one(request, "status")
    if status is not None and status not in ORDER_STATUSES:
        raise ValidationFailed(
            "unknown status", errors={"status": f"must be one of {', '.join(ORDER_STATUSES)}"}
        )
    limit = _int_param(request, "limit", 1, orders.MAX_PAGE) or _DEFAULT_LIMIT
    cursor = _int_param(request, "cursor", 1, 2**62)
    return json_response(200, orders.list_orders(db, status=status, limit=limit, cursor=cursor))


def show(db: DAL, request: Request, order_id: str) -> Response:
    """``GET /api/orders/<order_id>``."""
    return json_response(200, orders.get_order(db, order_id))


def create(db: DAL, request: Request, *, max_body_bytes: int) -> Response:
    """``POST /api/orders``: create an order (201) and publish ``order.created``."""
    changes = order_rules.parse_create(_json_object(request, max_body_bytes))
    order = orders.create_order(db, changes, source="api")
    db.commit()
    return json_response(201, order, {"Location": f"/myapp/api/orders/{order['order_id']}"})


def patch(db: DAL, request: Request, order_id: str, *, max_body_bytes: int) -> Response:
    """``PATCH /api/orders/<order_id>``: edit a pending order and/or change its status."""
    changes = order_rules.parse_patch(_json_object(request, max_body_bytes))
    order = orders.apply_patch(db, order_id, changes)
    db.commit()
    return json_response(200, order)
