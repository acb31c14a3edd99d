"""Built-in handlers: a Stripe payment marks its order paid.

``checkout.session.completed`` and ``payment_intent.succeeded`` carrying
``data.object.metadata.order_id`` move that order to ``paid`` through the order service, which
publishes ``order.paid`` through the outbox in the same transaction: a payment arriving by
webhook reaches the order service's own subscribers.
"""

from __future__ import annotations

from pydal import DAL

from hookline import orders
from hookline.errors import InvalidEvent, NotFound
from hookline.handlers import InboxMessage, PermanentFailure, register
from hookline.order_rules import OrderChanges

__all__ = ["PAYMENT_EVENTS", "mark_order_paid"]

PAYMENT_EVENTS = ("checkout.session.completed", "payment_intent.succeeded")


def _order_id(message: InboxMessage) -> str:
    body = message.json()
    try:
        order_id = body["data"]["object"]["metadata"]["order_id"]
    except (KeyError, TypeError):
        raise PermanentFailure("no data.object.metadata.order_id in the event") from None
    if not isinstance(order_id, str | int) or isinstance(order_id, bool) or not str(order_id):
        raise PermanentFailure("metadata.order_id is not an order id")
    return str(order_id)


def mark_order_paid(db: DAL, message: InboxMessage) -> None:
    """Move the event's order to ``paid`` (a no-op when it is already paid or shipped).

    An order that does not exist yet is retried (it may be created after the payment); a
    cancelled one cannot be paid, and an ``order.paid`` over the message's payload limit cannot
    be published: both are dead-lettered for a person to look at.
    """
    order_id = _order_id(message)
    try:
        order = orders.get_order(db, order_id)
    except NotFound:
        raise NotFound(f"order {order_id!r} does not exist (yet)") from None
    if order["status"] in ("paid", "shipped"):
        return
    if order["status"] == "cancelled":
        raise PermanentFailure(f"order {order_id} is cancelled; the payment needs a refund")
    try:
        orders.apply_patch(
            db, order_id, OrderChanges(status="paid"), max_payload_bytes=message.max_payload_bytes
        )
    except InvalidEvent as refused:
        # The same order makes the same event: retrying cannot help, raising the limit can
        # (then ``hookline inbox replay``).
        raise PermanentFailure(f"order.paid not published: {refused.message}") from None


for _event in PAYMENT_EVENTS:
    register("stripe", _event, kind=True)(mark_order_paid)
