"""Handlers of the orders management API (``/myapp/api/orders``), framework-neutral.

Each takes ``(db, request, ...)`` and returns a ``Response``; a handler that writes commits before
answering 2xx. Client mistakes raise ``ClientError``; ``webio.run`` turns them into a 4xx after
rolling back.
"""

from __future__ import annotations

from pydal import DAL

from hookline import order_rules, orders
from hookline.errors import ValidationFailed
from hookline.schema import ORDER_STATUSES
from hookline.webio import Request, Response, json_object, json_response, query_int, query_one

__all__ = ["create", "list_page", "patch", "show"]

_DEFAULT_LIMIT = 50


def list_page(db: DAL, request: Request) -> Response:
    """``GET /api/orders?status=&limit=&cursor=``: a page of orders, newest first."""
    status = query_one(request, "status")
    if status is not None and status not in ORDER_STATUSES:
        raise ValidationFailed(
            "unknown status", errors={"status": f"must be one of {', '.join(ORDER_STATUSES)}"}
        )
    limit = query_int(request, "limit", 1, orders.MAX_PAGE) or _DEFAULT_LIMIT
    cursor = query_int(request, "cursor", 1, 2**62)
    return json_response(200, orders.list_orders(db, status=status, limit=limit, cursor=cursor))


def show(db: DAL, request: Request, order_id: str) -> Response:
    """``GET /api/orders/<order_id>``."""
    return json_response(200, orders.get_order(db, order_id))


def create(db: DAL, request: Request, *, max_body_bytes: int, max_payload_bytes: int) -> Response:
    """``POST /api/orders``: create an order (201) and publish ``order.created`` (422, nothing
    written, when the event would be over ``max_payload_bytes``)."""
    changes = order_rules.parse_create(json_object(request, max_body_bytes))
    order = orders.create_order(db, changes, source="api", max_payload_bytes=max_payload_bytes)
    db.commit()
    return json_response(201, order, {"Location": f"/myapp/api/orders/{order['order_id']}"})


def patch(
    db: DAL, request: Request, order_id: str, *, max_body_bytes: int, max_payload_bytes: int
) -> Response:
    """``PATCH /api/orders/<order_id>``: edit a pending order and/or change its status (422,
    nothing written, when an event would be over ``max_payload_bytes``)."""
    changes = order_rules.parse_patch(json_object(request, max_body_bytes))
    order = orders.apply_patch(db, order_id, changes, max_payload_bytes=max_payload_bytes)
    db.commit()
    return json_response(200, order)
