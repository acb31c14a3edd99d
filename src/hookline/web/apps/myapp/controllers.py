"""myapp's actions: each adapts the request and calls one engine handler; no logic lives here."""

from __future__ import annotations

from collections.abc import Callable

from py4web import action

from hookline import __version__, delivery_api, inbound, orders_api, receiver, sources_api
from hookline.errors import PayloadTooLarge
from hookline.web.adapter import answer, call, call_on, engine_request
from hookline.webio import Request, error_response, json_response

from .common import api_context, api_key, committer, db
from .settings import SETTINGS

_LIMIT = SETTINGS.max_body_bytes
_PAYLOAD_LIMIT = SETTINGS.max_payload_bytes  # the events an order change publishes
# A source may allow larger bodies than the default; its own limit is checked after lookup.
_BODY_CEILING = 64 * 1024 * 1024
_ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
#: Each management route's methods; the others are answered by ``_not_allowed`` (below).
_API_METHODS: dict[str, list[str]] = {}


def api_route(path: str, method: str) -> Callable[[Callable[..., bytes]], Callable[..., bytes]]:
    """A management route: ``method`` on ``path``, behind the API key."""
    _API_METHODS.setdefault(path, []).append(method)

    def declare(handler: Callable[..., bytes]) -> Callable[..., bytes]:
        return action(path, method=[method])(action.uses(db, api_key)(handler))

    return declare


@action("webhook", method=_ANY_METHOD)
def webhook() -> bytes:
    """The seed's order webhook: POST form or JSON order fields; anything else is a 400."""
    try:
        request = engine_request(_LIMIT)
    except PayloadTooLarge as error:
        return answer(error_response(error))
    if committer is not None:
        result = receiver.receive_order_webhook_grouped(
            committer, request, max_body_bytes=_LIMIT, max_payload_bytes=_PAYLOAD_LIMIT
        )
        if result is not None:
            return answer(result)
    return _verified_webhook(request)


@action.uses(db)
def _verified_webhook(request: Request) -> bytes:
    # Per-request transaction through pydal: the orders source verifies signatures (or group
    # commit is off).
    return call_on(
        receiver.receive_order_webhook,
        db,
        request,
        max_body_bytes=_LIMIT,
        max_payload_bytes=_PAYLOAD_LIMIT,
        box=api_context.box,
    )


@action("webhook/<source>", method=_ANY_METHOD)
@action.uses(db)
def webhook_source(source: str) -> bytes:
    """A named source (Stripe, GitHub, Shopify, Standard Webhooks, HMAC): verified, deduped,
    stored before the answer."""
    return call(
        inbound.receive,
        db,
        _BODY_CEILING,
        source,
        box=api_context.box,
        default_max_body_bytes=_LIMIT,
    )


@action("index")
@action.uses("index.html")
def index() -> dict:
    """A page that says what runs here and how to use it."""
    return {"version": __version__, "database": "SQLite" if SETTINGS.is_sqlite else "PostgreSQL"}


@action("health")
@action.uses(db)
def health() -> bytes:
    """Liveness and database reachability, for load balancers and tests."""
    db.executesql("SELECT 1")
    return answer(json_response(200, {"status": "ok", "version": __version__}))


@api_route("api/orders", "GET")
def get_api_orders() -> bytes:
    """List orders: ``?status=&limit=&cursor=``."""
    return call(orders_api.list_page, db, _LIMIT)


@api_route("api/orders", "POST")
def post_api_orders() -> bytes:
    """Create an order."""
    return call(
        orders_api.create, db, _LIMIT, max_body_bytes=_LIMIT, max_payload_bytes=_PAYLOAD_LIMIT
    )


@api_route("api/orders/<order_id>", "GET")
def get_api_order(order_id: str) -> bytes:
    """Show one order."""
    return call(orders_api.show, db, _LIMIT, order_id)


@api_route("api/orders/<order_id>", "PATCH")
def patch_api_order(order_id: str) -> bytes:
    """Edit a pending order or change its status."""
    return call(
        orders_api.patch,
        db,
        _LIMIT,
        order_id,
        max_body_bytes=_LIMIT,
        max_payload_bytes=_PAYLOAD_LIMIT,
    )


@api_route("api/endpoints", "GET")
def get_api_endpoints() -> bytes:
    """List endpoints."""
    return call(delivery_api.list_endpoints, db, _LIMIT, api_context)


@api_route("api/endpoints", "POST")
def post_api_endpoints() -> bytes:
    """Create an endpoint; the answer carries its secret once."""
    return call(delivery_api.create_endpoint, db, _LIMIT, api_context)


@api_route("api/endpoints/<endpoint_id>", "GET")
def get_api_endpoint(endpoint_id: str) -> bytes:
    """Show an endpoint."""
    return call(delivery_api.show_endpoint, db, _LIMIT, api_context, endpoint_id)


@api_route("api/endpoints/<endpoint_id>", "PATCH")
def patch_api_endpoint(endpoint_id: str) -> bytes:
    """Change an endpoint (settings, enabled, ed25519)."""
    return call(delivery_api.update_endpoint, db, _LIMIT, api_context, endpoint_id)


@api_route("api/endpoints/<endpoint_id>", "DELETE")
def delete_api_endpoint(endpoint_id: str) -> bytes:
    """Delete an endpoint."""
    return call(delivery_api.delete_endpoint, db, _LIMIT, api_context, endpoint_id)


@api_route("api/endpoints/<endpoint_id>/rotate", "POST")
def post_api_endpoint_rotate(endpoint_id: str) -> bytes:
    """Rotate an endpoint's signing secret."""
    return call(delivery_api.rotate_secret, db, _LIMIT, api_context, endpoint_id)


@api_route("api/endpoints/<endpoint_id>/ping", "POST")
def post_api_endpoint_ping(endpoint_id: str) -> bytes:
    """Send a ping event to one endpoint."""
    return call(delivery_api.ping, db, _LIMIT, api_context, endpoint_id)


@api_route("api/endpoints/<endpoint_id>/recover", "POST")
def post_api_endpoint_recover(endpoint_id: str) -> bytes:
    """Retry an endpoint's failed deliveries since a time."""
    return call(delivery_api.recover, db, _LIMIT, api_context, endpoint_id)


@api_route("api/deliveries", "GET")
def get_api_deliveries() -> bytes:
    """List deliveries."""
    return call(delivery_api.list_deliveries, db, _LIMIT, api_context)


@api_route("api/deliveries/<delivery_id>", "GET")
def get_api_delivery(delivery_id: str) -> bytes:
    """Show a delivery with its attempts."""
    return call(delivery_api.get_delivery, db, _LIMIT, api_context, delivery_id)


@api_route("api/deliveries/<delivery_id>/retry", "POST")
def post_api_delivery_retry(delivery_id: str) -> bytes:
    """Send a delivery again."""
    return call(delivery_api.retry_delivery, db, _LIMIT, api_context, delivery_id)


@api_route("api/attempts", "GET")
def get_api_attempts() -> bytes:
    """List delivery attempts."""
    return call(delivery_api.list_attempts, db, _LIMIT, api_context)


@api_route("api/events/<event_id>/replay", "POST")
def post_api_event_replay(event_id: str) -> bytes:
    """Deliver an event again."""
    return call(delivery_api.replay_event, db, _LIMIT, api_context, event_id)


@api_route("api/sources", "GET")
def get_api_sources() -> bytes:
    """List sources."""
    return call(sources_api.list_sources, db, _LIMIT, api_context)


@api_route("api/sources", "POST")
def post_api_sources() -> bytes:
    """Create a source."""
    return call(sources_api.create_source, db, _LIMIT, api_context)


@api_route("api/sources/<name>", "GET")
def get_api_source(name: str) -> bytes:
    """Show a source."""
    return call(sources_api.show_source, db, _LIMIT, api_context, name)


@api_route("api/sources/<name>", "PATCH")
def patch_api_source(name: str) -> bytes:
    """Change a source."""
    return call(sources_api.update_source, db, _LIMIT, api_context, name)


@api_route("api/sources/<name>", "DELETE")
def delete_api_source(name: str) -> bytes:
    """Delete a source."""
    return call(sources_api.delete_source, db, _LIMIT, api_context, name)


@api_route("api/sources/<name>/rotate", "POST")
def post_api_source_rotate(name: str) -> bytes:
    """Add a secret to a source; the old ones verify for a grace period."""
    return call(sources_api.rotate_source, db, _LIMIT, api_context, name)


@api_route("api/inbox", "GET")
def get_api_inbox() -> bytes:
    """List received webhooks."""
    return call(sources_api.list_inbox, db, _LIMIT, api_context)


@api_route("api/inbox/<inbox_id>", "GET")
def get_api_inbox_item(inbox_id: str) -> bytes:
    """Show one received webhook with its headers and body."""
    return call(sources_api.get_inbox_item, db, _LIMIT, api_context, inbox_id)


@api_route("api/inbox/<inbox_id>/replay", "POST")
def post_api_inbox_replay(inbox_id: str) -> bytes:
    """Run a received webhook's handler again."""
    return call(sources_api.replay_inbox_item, db, _LIMIT, api_context, inbox_id)


def _not_found(db_: object, request: Request) -> object:
    return json_response(404, {"status": "error", "message": f"no API route {request.path}"})


@action("api", method=_ANY_METHOD)
@action("api/<path:path>", method=_ANY_METHOD)
@action.uses(db, api_key)
def api_not_found(path: str = "") -> bytes:
    """Any other ``/api/...`` path: 401 without a key, a JSON 404 with one."""
    return call(_not_found, db, _LIMIT)


def _not_allowed(allowed: list[str]) -> Callable[..., bytes]:
    """The answer to a method ``path`` does not take: 401 without a key (as on every management
    route: py4web's own 405 came first and named the route's methods to anyone), a JSON 405
    with ``Allow`` with one."""

    def refuse(db_: object, request: Request) -> object:
        message = f"{request.method} is not allowed on {request.path}"
        headers = {"Allow": ", ".join(allowed)}
        return json_response(405, {"status": "error", "message": message}, headers)

    @action.uses(db, api_key)
    def not_allowed(**_ids: str) -> bytes:
        return call(refuse, db, _LIMIT)

    return not_allowed


for _path, _allowed in _API_METHODS.items():
    # HEAD goes with GET wherever GET is declared.
    _taken = {*_allowed, "HEAD"} if "GET" in _allowed else set(_allowed)
    action(_path, method=[m for m in _ANY_METHOD if m not in _taken])(_not_allowed(_allowed))
