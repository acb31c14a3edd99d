"""The seed's order webhook, ``POST /myapp/webhook``, as a framework-neutral handler.

Pipeline: method -> size -> parse -> dedupe -> validate -> (order change + outbox event + inbox
row, one transaction, committed) -> answer. Every refusal is a 4xx and rolls back, so nothing is
half-written; a duplicate message id is answered from the inbox and not processed again.
"""

from __future__ import annotations

import datetime as dt

from pydal import DAL

from hookline import inbound, inbox, order_rules, orders
from hookline.database import driver_errors
from hookline.errors import RequestRefused, StaleWrite
from hookline.secretbox import SecretBox
from hookline.sources import ORDERS_SOURCE
from hookline.timeutil import utcnow
from hookline.webio import (
    Request,
    Response,
    check_size,
    error_response,
    json_response,
    parse_fields,
    text_response,
)

__all__ = ["ORDERS_SOURCE", "SUCCESS", "receive_order_webhook"]

SUCCESS = {"status": "success", "message": "Webhook processed"}
_RACE_RETRIES = 10


def _process(db: DAL, request: Request, message_id: str | None, now: dt.datetime) -> Response:
    if message_id is not None:
        seen = inbox.find_answer(db, ORDERS_SOURCE, message_id)
        if seen is not None:
            return seen
    fields = parse_fields(request.header("content-type"), request.body)
    changes = order_rules.parse_webhook(fields)
    orders.upsert_from_webhook(db, changes, now=now)
    response = json_response(200, SUCCESS)
    inbox.record(
        db, source=ORDERS_SOURCE, message_id=message_id, request=request, response=response, now=now
    )
    db.commit()
    return response


def receive_order_webhook(
    db: DAL,
    request: Request,
    *,
    max_body_bytes: int,
    box: SecretBox | None = None,
    now: dt.datetime | None = None,
) -> Response:
    """Answer one request to the seed's order webhook; commits before a 2xx.

    Non-POST -> 400 ``Invalid request`` (the seed's answer); bad input -> a JSON 4xx naming the
    reason, with nothing written. With ``box`` (the secret box), the built-in ``orders`` source
    is consulted: once it has a secret, requests must be signed for its kind (401 otherwise).
    """
    if request.method != "POST":
        return text_response(400, "Invalid request")
    now = now or utcnow()
    # Losing a race to a concurrent request for the same order or message is not the sender's
    # fault: roll back and go again; the retry sees the winner's committed row.
    races = (*driver_errors(db, "IntegrityError"), StaleWrite)
    try:
        if box is None:
            check_size(request.body, max_body_bytes)
        else:
            inbound.admit(
                db, box, request, ORDERS_SOURCE, default_max_body_bytes=max_body_bytes, now=now
            )
        message_id = inbox.message_id_of(request)
        for _ in range(_RACE_RETRIES - 1):
            try:
                return _process(db, request, message_id, now)
            except races:
                db.rollback()
        return _process(db, request, message_id, now)
    except RequestRefused as error:
        db.rollback()
        return error_response(error)
    except BaseException:
        db.rollback()
        raise
