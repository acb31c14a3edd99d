"""The seed's order webhook, ``POST /myapp/webhook``, as a framework-neutral handler.

Pipeline: method -> size -> parse -> dedupe -> validate -> (order change + outbox event + inbox
row, one transaction, committed) -> answer. Every refusal is a 4xx and rolls back, so nothing is
half-written; a duplicate message id is answered from the inbox and not processed again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydal import DAL

from hookline import inbound, inbox, order_rules, orders
from hookline.database import driver_errors
from hookline.errors import (
    ClientError,
    Conflict,
    InvalidEvent,
    NotFound,
    RequestRefused,
    StaleWrite,
)
from hookline.groupcommit import SOLO, BatchRunner, GroupCommitter
from hookline.inbound import check_headers
from hookline.order_rules import OrderChanges
from hookline.outbox import MAX_PAYLOAD_BYTES
from hookline.secretbox import SecretBox
from hookline.sources import ORDERS_SOURCE, is_unsigned
from hookline.sqlconn import SqlConn
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

__all__ = [
    "ORDERS_SOURCE",
    "SUCCESS",
    "GroupedOrder",
    "receive_order_webhook",
    "receive_order_webhook_grouped",
    "start_grouped",
]

SUCCESS = {"status": "success", "message": "Webhook processed"}
# Built once: every accepted request answers these same bytes (a Response is immutable).
_SUCCESS_RESPONSE = json_response(200, SUCCESS)
_RACE_RETRIES = 10


def _parse(request: Request) -> OrderChanges | ClientError:
    # Parsed before the transaction, kept until after the dedupe lookup: a repeated message
    # is answered as the first time even if its body is bad.
    try:
        return order_rules.parse_webhook(parse_fields(request.header("content-type"), request.body))
    except ClientError as error:
        return error


@dataclass(frozen=True)
class _Prepared:
    """What a request will write, computed before the transaction: the committer's turn at the
    write lock then holds only the SQL (other processes' committers wait for it)."""

    response: Response
    item: inbox.PreparedItem
    new_order: orders.PreparedOrder | None


def _prepare(
    request: Request,
    message_id: str | None,
    parsed: OrderChanges | ClientError,
    now: dt.datetime,
    max_payload_bytes: int,
) -> _Prepared:
    response = _SUCCESS_RESPONSE
    item = inbox.prepare_item(
        source=ORDERS_SOURCE, message_id=message_id, request=request, response=response, now=now
    )
    new_order = None
    if isinstance(parsed, OrderChanges) and parsed.order_id and parsed.product_name:
        try:
            new_order = orders.prepare_insert(
                parsed, "webhook", now, max_payload_bytes=max_payload_bytes
            )
        except InvalidEvent:
            # Refused in the transaction instead (``_process``), after the dedupe lookup, as
            # every other refusal: a 422 that writes nothing.
            new_order = None
    return _Prepared(response, item, new_order)


def _process(
    sql: SqlConn,
    message_id: str | None,
    parsed: OrderChanges | ClientError,
    prepared: _Prepared,
    now: dt.datetime,
    max_payload_bytes: int,
) -> Response:
    if message_id is not None:
        seen = inbox.find_answer(sql, ORDERS_SOURCE, message_id)
        if seen is not None:
            return seen
    if isinstance(parsed, ClientError):
        raise parsed
    orders.upsert_from_webhook(
        sql, parsed, now=now, prepared=prepared.new_order, max_payload_bytes=max_payload_bytes
    )
    inbox.insert_item(sql, prepared.item)
    return prepared.response


def receive_order_webhook(
    db: DAL,
    request: Request,
    *,
    max_body_bytes: int,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
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
        parsed = _parse(request)
        for attempt in range(_RACE_RETRIES):
            try:
                prepared = _prepare(request, message_id, parsed, now, max_payload_bytes)
                response = _process(
                    SqlConn.of(db), message_id, parsed, prepared, now, max_payload_bytes
                )
                db.commit()
                return response
            except races:
                db.rollback()
                if attempt == _RACE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")
    except RequestRefused as error:
        db.rollback()
        return error_response(error)
    except BaseException:
        db.rollback()
        raise


def _admit_unsigned(sql: SqlConn, request: Request, max_body_bytes: int) -> bool:
    """Apply the orders source's checks; False when it verifies signatures (not done here)."""
    row = sql.memo(
        "orders_source",
        lambda: sql.one(
            "SELECT kind, secrets_enc, public_keys, enabled, max_body_bytes FROM hookline_source"
            " WHERE name = ?",
            (ORDERS_SOURCE,),
        ),
    )
    if row is None:
        raise NotFound(f"no source {ORDERS_SOURCE!r}")
    kind, secrets_enc, public_keys, enabled, source_max_body = row
    # Any stored secret counts, even one whose rotation grace has ended: this check cannot
    # decrypt, so it sends such a source to the verifying path, which decides exactly.
    if not is_unsigned(
        kind,
        ORDERS_SOURCE,
        has_secrets=secrets_enc is not None,
        has_public_keys=public_keys != "[]",
    ):
        return False
    if not enabled:
        raise NotFound(f"source {ORDERS_SOURCE!r} is disabled")
    check_size(request.body, source_max_body or max_body_bytes)
    return True


@dataclass(frozen=True)
class _Queued:
    """A request handed to the group committer, for ``_process_together``."""

    request: Request
    message_id: str | None
    parsed: OrderChanges | ClientError
    prepared: _Prepared
    max_body_bytes: int


def _process_together(sql: SqlConn, items: list[_Queued]) -> list[Response | None]:
    """Write the batch's new orders at once: each order row, its ``order.created`` event and
    its inbox row go in one multi-row insert per table.

    Only the plain case is taken: an admitted request creating an order that does not exist,
    under a message id not seen before, neither repeated elsewhere in the batch. Every other
    request (a refusal, an update, a duplicate, a second request for one order) is answered
    ``SOLO`` and runs as its own unit after these, so it sees their rows as if they had come
    first, one request at a time.
    """
    results: list[Any] = [SOLO] * len(items)
    candidates: list[tuple[int, orders.PreparedOrder]] = []
    orders_taken: set[str] = set()
    messages_taken: set[str] = set()
    for index, item in enumerate(items):
        new_order = item.prepared.new_order
        if new_order is None or new_order.order_id in orders_taken:
            continue
        if item.message_id is not None and item.message_id in messages_taken:
            continue
        try:
            if not _admit_unsigned(sql, item.request, item.max_body_bytes):
                return results  # the source verifies signatures: every unit says so itself
        except RequestRefused:
            continue
        orders_taken.add(new_order.order_id)
        if item.message_id is not None:
            messages_taken.add(item.message_id)
        candidates.append((index, new_order))
    seen = inbox.seen_message_ids(sql, ORDERS_SOURCE, sorted(messages_taken))
    existing = orders.existing_order_ids(sql, sorted(orders_taken))
    taken = [
        (index, new_order)
        for index, new_order in candidates
        if items[index].message_id not in seen and new_order.order_id not in existing
    ]
    orders.insert_prepared_many(sql, [new_order for _, new_order in taken])
    inbox.insert_items(sql, [items[index].prepared.item for index, _ in taken])
    for index, _ in taken:
        results[index] = items[index].prepared.response
    return results


class GroupedOrder:
    """One request to the seed webhook on its way through a group committer: each ``job()`` is
    a fresh try (new ids), for the committer's next batch; ``answer(result, error, race)`` says
    whether that try is done and what the caller gets, or that a lost race calls for another.

    Shared by ``receive_order_webhook_grouped``, which waits for each try in the request's
    thread, and the ingest writer (``hookline.writer``), which runs many tries per batch in one
    thread and answers each over its socket.
    """

    __slots__ = (
        "_max_body_bytes",
        "_max_payload_bytes",
        "_message_id",
        "_now",
        "_parsed",
        "_request",
        "tries",
    )

    def __init__(
        self,
        request: Request,
        message_id: str | None,
        parsed: OrderChanges | ClientError,
        max_body_bytes: int,
        now: dt.datetime,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self._request = request
        self._message_id = message_id
        self._parsed = parsed
        self._max_body_bytes = max_body_bytes
        self._max_payload_bytes = max_payload_bytes
        self._now = now
        self.tries = 0

    def job(self) -> tuple[Callable[[SqlConn], Response | None], tuple[BatchRunner, _Queued]]:
        """The next try: ``(unit, together)`` for ``GroupCommitter``."""
        self.tries += 1
        request, message_id, parsed, now = self._request, self._message_id, self._parsed, self._now
        max_body_bytes, max_payload_bytes = self._max_body_bytes, self._max_payload_bytes
        # Fresh ids for each try.
        prepared = _prepare(request, message_id, parsed, now, max_payload_bytes)

        def unit(sql: SqlConn) -> Response | None:
            if not _admit_unsigned(sql, request, max_body_bytes):
                return None
            return _process(sql, message_id, parsed, prepared, now, max_payload_bytes)

        return unit, (
            _process_together,
            _Queued(request, message_id, parsed, prepared, max_body_bytes),
        )

    def answer(
        self, result: Response | None, error: BaseException | None, race: tuple[type, ...]
    ) -> tuple[bool, Response | None]:
        """``(done, response)`` for a try that returned ``result`` or raised ``error``;
        ``race`` are the exceptions of a lost uniqueness race. Not done: try again. A done
        ``None``: the orders source verifies signatures, nothing was written."""
        if error is None:
            return True, result
        if isinstance(error, (*race, StaleWrite)):
            if self.tries >= _RACE_RETRIES:
                return True, error_response(
                    Conflict("a concurrent request changed the same order; retry")
                )
            return False, None
        if isinstance(error, RequestRefused):
            return True, error_response(error)
        raise error


def start_grouped(
    request: Request,
    *,
    max_body_bytes: int,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    now: dt.datetime | None = None,
) -> Response | GroupedOrder:
    """The checks that need no database (method, headers, parsing): an answer now, or the
    ``GroupedOrder`` to hand to a group committer."""
    if request.method != "POST":
        return text_response(400, "Invalid request")
    try:
        check_headers(request)
    except RequestRefused as error:
        return error_response(error)
    message_id = inbox.message_id_of(request)
    return GroupedOrder(
        request, message_id, _parse(request), max_body_bytes, now or utcnow(), max_payload_bytes
    )


def receive_order_webhook_grouped(
    committer: GroupCommitter,
    request: Request,
    *,
    max_body_bytes: int,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    now: dt.datetime | None = None,
) -> Response | None:
    """``receive_order_webhook`` through the group committer: the same answers, and a 2xx
    only after the batch holding this request is committed.

    Returns ``None``, having written nothing, when the orders source verifies signatures: the
    caller then answers with ``receive_order_webhook`` and the secret box.
    """
    order = start_grouped(
        request, max_body_bytes=max_body_bytes, max_payload_bytes=max_payload_bytes, now=now
    )
    if isinstance(order, Response):
        return order
    while True:
        unit, together = order.job()
        try:
            result, error = committer.run(unit, together=together), None
        except Exception as raised:  # judged by ``answer``, which re-raises the unexpected
            result, error = None, raised
        done, response = order.answer(result, error, committer.integrity_errors)
        if done:
            return response
