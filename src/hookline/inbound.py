"""Receiving from a named source, ``POST /myapp/webhook/<source>``: verified, deduplicated, and
stored before the answer.

Pipeline: method -> header limits -> source -> size -> verify (raw bytes) -> parse -> dedupe ->
store -> answer. A refused signature stores nothing but the source's failure counter; a
duplicate message id is answered like the first and not stored again; an accepted request is
committed (SQLite ``synchronous=FULL`` or PostgreSQL) before its 2xx.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pydal import DAL

from hookline import inbox, sources
from hookline.database import driver_errors
from hookline.errors import (
    BadRequest,
    ClientError,
    NotFound,
    RequestRefused,
    UnsupportedMediaType,
)
from hookline.fanout import NOTIFY_CHANNEL, is_postgres
from hookline.ids import new_id
from hookline.secretbox import SecretBox
from hookline.signing import SignatureError
from hookline.timeutil import to_epoch, utcnow
from hookline.verifiers import verify_request
from hookline.webio import (
    Request,
    Response,
    check_size,
    error_response,
    json_response,
    parse_content_type,
    parse_fields,
    parse_json,
)

__all__ = ["MAX_HEADERS", "MAX_HEADER_BYTES", "admit", "check_headers", "receive"]

MAX_HEADERS = 100
MAX_HEADER_BYTES = 16 * 1024


class HeadersTooLarge(ClientError):
    """Too many headers, or too many header bytes."""

    status = 431


def check_headers(request: Request) -> None:
    """Refuse requests with more than ``MAX_HEADERS`` headers or ``MAX_HEADER_BYTES`` of them."""
    if len(request.headers) > MAX_HEADERS:
        raise HeadersTooLarge(f"more than {MAX_HEADERS} headers")
    size = sum(len(k) + len(v) for k, v in request.headers.items())
    if size > MAX_HEADER_BYTES:
        raise HeadersTooLarge(f"headers are {size} bytes; the limit is {MAX_HEADER_BYTES}")


def _verify(db: DAL, box: SecretBox, row: Any, request: Request, now: dt.datetime) -> str | None:
    secrets = sources.active_secrets(box, row, now)
    public_keys = list(json.loads(row.public_keys))
    if sources.is_unsigned(
        row.kind, row.name, has_secrets=bool(secrets), has_public_keys=bool(public_keys)
    ):
        return None
    if not secrets and not public_keys:
        raise SignatureError("no_secret", "this source has no secret to verify with")
    if not secrets and row.kind != "standard":
        raise SignatureError("no_secret", f"a {row.kind} source needs a secret to verify with")
    try:
        verified = verify_request(
            row.kind,
            request.headers,
            request.body,
            secrets=secrets,
            public_keys=public_keys,
            scheme=sources.hmac_scheme_of(row),
            now=int(to_epoch(now)),
            tolerance=row.tolerance_s,
        )
    except SignatureError as error:
        db.rollback()
        sources.record_verify_failure(db, row.id, error.reason, now=now)
        raise
    return verified.message_id


def admit(
    db: DAL,
    box: SecretBox,
    request: Request,
    source_name: str,
    *,
    default_max_body_bytes: int,
    now: dt.datetime,
) -> tuple[Any, str | None]:
    """The checks every inbound request passes before its body is read: header limits, an
    enabled source, the size limit, and the signature on the raw bytes.

    Returns the source row and the provider's message id (when its headers name one). A source
    without secrets or keys accepts unsigned requests (only the built-in ``orders`` source can be
    in that state); a refused signature counts against the source (committed) and raises
    ``SignatureError`` (401).
    """
    check_headers(request)
    row = sources.find_source(db, source_name)
    if not row.enabled:
        raise NotFound(f"source {source_name!r} is disabled")
    check_size(request.body, row.max_body_bytes or default_max_body_bytes)
    return row, _verify(db, box, row, request, now)


def _parse(row: Any, request: Request) -> tuple[Any, str | None]:
    """The decoded body (when the kind is JSON-bodied) and its event type."""
    media_type, params = parse_content_type(request.header("content-type"))
    if row.kind == "github" and media_type == "application/x-www-form-urlencoded":
        payload = parse_fields(request.header("content-type"), request.body).get("payload")
        if not isinstance(payload, str):
            raise BadRequest("a form-encoded GitHub delivery needs one payload field")
        return parse_json(payload.encode("utf-8")), request.header("x-github-event") or None
    if media_type == "application/json" or media_type.endswith("+json"):
        body = parse_json(request.body, params.get("charset"))
    elif row.kind in ("standard", "stripe", "github", "shopify"):
        raise UnsupportedMediaType(f"a {row.kind} source takes application/json")
    else:
        return None, None
    event_type = body.get("type") if isinstance(body, dict) else None
    if row.kind == "github":
        event_type = request.header("x-github-event") or None
    elif row.kind == "shopify":
        event_type = request.header("x-shopify-topic") or None
    return body, event_type if isinstance(event_type, str) else None


def _message_id(row: Any, request: Request, verified_id: str | None, body: Any) -> str | None:
    if verified_id:
        return inbox.storable_message_id(verified_id)
    if row.kind == "stripe" and isinstance(body, dict) and isinstance(body.get("id"), str):
        return inbox.storable_message_id(body["id"])
    return inbox.message_id_of(request)


def _store(
    db: DAL, row: Any, request: Request, message_id: str | None, event_type: str | None, now
) -> Response:
    if message_id is not None:
        seen = inbox.find_answer(db, row.name, message_id)
        if seen is not None:
            return seen
    inbox_id = new_id("msg")
    answer: dict[str, Any] = {"status": "received", "source": row.name, "inbox_id": inbox_id}
    if row.kind == "github" and event_type == "ping":
        answer["message"] = "pong"
    response = json_response(200, answer)
    inbox.record(
        db,
        source=row.name,
        message_id=message_id,
        request=request,
        response=response,
        status="received",
        event_type=(event_type or "")[:128] or None,
        inbox_id=inbox_id,
        now=now,
    )
    if is_postgres(db):
        db.executesql(f"NOTIFY {NOTIFY_CHANNEL}")  # sent at commit: wakes a worker to handle it
    db.commit()
    return response


def receive(
    db: DAL,
    request: Request,
    source_name: str,
    *,
    box: SecretBox,
    default_max_body_bytes: int,
    now: dt.datetime | None = None,
) -> Response:
    """Answer one request to ``/myapp/webhook/<source_name>``; commits before a 2xx."""
    if request.method != "POST":
        return Response(
            405,
            b'{"status": "error", "message": "use POST"}',
            {"Content-Type": "application/json", "Allow": "POST"},
        )
    now = now or utcnow()
    try:
        row, verified_id = admit(
            db, box, request, source_name, default_max_body_bytes=default_max_body_bytes, now=now
        )
        body, event_type = _parse(row, request)
        message_id = _message_id(row, request, verified_id, body)
        for _ in range(2):
            try:
                return _store(db, row, request, message_id, event_type, now)
            except driver_errors(db, "IntegrityError"):
                db.rollback()  # the same message won a race: the retry finds and replays it
        return _store(db, row, request, message_id, event_type, now)
    except RequestRefused as error:
        db.rollback()
        return error_response(error)
    except BaseException:
        db.rollback()
        raise
