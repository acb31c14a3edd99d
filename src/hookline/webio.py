"""Framework-neutral HTTP values and body decoding.

The web layer turns its framework's request into a ``Request`` and writes back the ``Response``
an engine handler returns, so every rule about bodies (size, content type, encoding, JSON
strictness) lives here once and is tested without a server.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from hookline.digits import read_digits
from hookline.errors import (
    BadRequest,
    ClientError,
    Conflict,
    PayloadTooLarge,
    RequestRefused,
    ServiceUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from hookline.timeutil import parse_time

__all__ = [
    "FORM_TYPES",
    "JSON_TYPES",
    "Request",
    "Response",
    "check_length",
    "check_partial_length",
    "check_size",
    "error_response",
    "json_object",
    "json_response",
    "parse_content_type",
    "parse_fields",
    "parse_json",
    "query_int",
    "query_one",
    "query_time",
    "redacted_headers",
    "run",
    "text_response",
]

JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
_MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class Request:
    """An HTTP request as the engine sees it: header names are lower-case."""

    method: str
    path: str = "/"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    query: Mapping[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        method: str,
        path: str = "/",
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        body: bytes = b"",
        query_string: str = "",
    ) -> Request:
        """Make a ``Request`` from raw parts, lower-casing header names and parsing the query."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        return cls(
            method=method.upper(),
            path=path,
            headers={name.lower(): value for name, value in pairs},
            body=body,
            query=cls.parse_query(query_string),
        )

    @staticmethod
    def parse_query(query_string: str) -> dict[str, list[str]]:
        """A query string as ``{name: [values...]}`` (blank values kept)."""
        query: dict[str, list[str]] = {}
        if query_string:
            for key, value in urllib.parse.parse_qsl(query_string, keep_blank_values=True):
                query.setdefault(key, []).append(value)
        return query

    def header(self, name: str, default: str = "") -> str:
        """The value of header ``name`` (any case), or ``default``."""
        return self.headers.get(name.lower(), default)


@dataclass(frozen=True)
class Response:
    """What a handler answers: a status, headers and the body bytes."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body decoded as JSON (for tests and callers that chain handlers)."""
        return json.loads(self.body)


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response with ``Content-Type: application/json``."""
    body = json.dumps(payload, separators=(", ", ": "), ensure_ascii=False).encode("utf-8")
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


def text_response(status: int, text: str) -> Response:
    """A plain-text response."""
    return Response(status, text.encode("utf-8"), {"Content-Type": "text/plain; charset=utf-8"})


def error_response(error: RequestRefused) -> Response:
    """The JSON answer to ``error`` (a 4xx, or 503 with ``Retry-After`` for a transient one)."""
    headers = None
    if error.status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="hookline"'}
    elif error.status == 503:
        headers = {"Retry-After": "1"}
    return json_response(error.status, error.as_dict(), headers)


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type header into its lower-case media type and its parameters."""
    if not value.strip():
        return "", {}
    if '"' not in value and "\\" not in value:
        # The common shapes ("application/json", "...; charset=utf-8") without quoting: split
        # them directly; the email parser below handles quoted parameters.
        media_type, *parts = value.split(";")
        params = {}
        for part in parts:
            name, sep, param = part.partition("=")
            if sep and name.strip():
                params[name.strip().lower()] = param.strip()
        media_type = media_type.strip().lower()
        if media_type.count("/") == 1 and " " not in media_type:
            return media_type, params
    message = Message()
    message["content-type"] = value
    params = {k.lower(): str(v) for k, v in (message.get_params() or [])[1:]}
    return message.get_content_type(), params


def redacted_headers(headers: Mapping[str, str]) -> list[list[str]]:
    """Headers as ``[name, value]`` pairs with credentials replaced, for storing in the inbox."""
    return [
        [name, "[redacted]" if name.lower() in _SECRET_HEADERS else value]
        for name, value in sorted(headers.items())
    ]


def check_size(body: bytes, limit: int) -> None:
    """Raise ``PayloadTooLarge`` when ``body`` is over ``limit`` bytes."""
    check_length(len(body), limit)


def check_length(length: int, limit: int) -> None:
    """Raise ``PayloadTooLarge`` when a body of ``length`` bytes (declared or read) is over
    ``limit``: a server refuses a declared length before reading the body."""
    if length > limit:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {limit}")


def check_partial_length(length: int, limit: int) -> None:
    """Raise ``PayloadTooLarge`` when ``length`` bytes of a body of unknown length (chunked),
    read so far, are over ``limit``; the reader stops there."""
    if length > limit:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")


def _decode_text(body: bytes, charset: str | None) -> str:
    encoding = (charset or "utf-8").strip().lower()
    if encoding not in ("utf-8", "utf8", "us-ascii", "ascii"):
        raise UnsupportedMediaType(f"charset {charset!r} is not supported; send UTF-8")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid UTF-8 (byte {exc.start})") from None


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"malformed JSON: {name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequest(f"malformed JSON: key {key!r} appears more than once")
        result[key] = value
    return result


def _refuse_non_finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"malformed JSON: number {text[:20]} is out of range")
    return value


def _check_decoded(value: Any) -> None:
    # Iterative, so a hostile document cannot exhaust the interpreter's stack.
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("malformed JSON: a string has an unpaired surrogate") from None
        elif isinstance(item, dict | list):
            if level > _MAX_JSON_DEPTH:
                raise BadRequest(f"malformed JSON: nested deeper than {_MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((key, level) for key in item)
                stack.extend((child, level + 1) for child in item.values())
            else:
                stack.extend((child, level + 1) for child in item)


# One decoder for every body: ``json.loads`` with hooks builds a new one per call.
_STRICT_JSON = json.JSONDecoder(
    parse_constant=_reject_constant,
    parse_float=_refuse_non_finite,
    object_pairs_hook=_unique_keys,
)


def parse_json(body: bytes, charset: str | None = None) -> Any:
    """Decode a JSON body strictly: UTF-8, no NaN/Infinity, no duplicate keys, bounded depth."""
    text = _decode_text(body, charset).lstrip("\ufeff")
    if not text.strip():
        raise BadRequest("malformed JSON: the body is empty")
    try:
        value = _STRICT_JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BadRequest(f"malformed JSON: nested deeper than {_MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        raise BadRequest(f"malformed JSON: {str(exc)[:100]}") from None
    # Unpaired surrogates can only come from \u escapes (the text is valid UTF-8), and nesting
    # deeper than the limit needs more brackets than that: without either, nothing to find.
    if "\\u" in text or text.count("{") + text.count("[") > _MAX_JSON_DEPTH:
        _check_decoded(value)
    return value


def _add(fields: dict[str, Any], key: str, value: str) -> None:
    # A repeated key becomes a list, so validation can refuse it instead of guessing a winner.
    if key in fields:
        previous = fields[key]
        fields[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
    else:
        fields[key] = value


def _parse_urlencoded(body: bytes, charset: str | None) -> dict[str, Any]:
    text = _decode_text(body, charset)
    fields: dict[str, Any] = {}
    try:
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise BadRequest("form body has a percent-encoded value that is not UTF-8") from None
    for key, value in pairs:
        _add(fields, key, value)
    return fields


def _parse_multipart(body: bytes, content_type: str) -> dict[str, Any]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise BadRequest("multipart body has no boundary or no parts")
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise BadRequest("multipart part without a field name")
        if part.get_filename() is not None:
            raise UnsupportedMediaType(f"file uploads are not accepted (field {name!r})")
        payload = part.get_payload(decode=True) or b""
        _add(fields, str(name), _decode_text(payload, part.get_content_charset()))
    return fields


def parse_fields(content_type: str, body: bytes) -> dict[str, Any]:
    """Decode a form (urlencoded or multipart) or JSON body into a field mapping.

    Form values are strings (a list when the key repeats) decoded as UTF-8; a JSON body must be an
    object. An empty body without a content type is an empty form. Raises ``BadRequest`` or
    ``UnsupportedMediaType``.
    """
    media_type, params = parse_content_type(content_type)
    if not media_type:
        if body:
            raise UnsupportedMediaType(
                "missing Content-Type; send application/x-www-form-urlencoded or application/json"
            )
        return {}
    charset = params.get("charset")
    if media_type in JSON_TYPES or media_type.endswith("+json"):
        value = parse_json(body, charset)
        if not isinstance(value, dict):
            raise BadRequest("the JSON body must be an object")
        return value
    if media_type == "application/x-www-form-urlencoded":
        return _parse_urlencoded(body, charset)
    if media_type == "multipart/form-data":
        return _parse_multipart(body, content_type)
    raise UnsupportedMediaType(
        f"content type {media_type!r} is not supported; "
        "send application/x-www-form-urlencoded, multipart/form-data or application/json"
    )


def json_object(request: Request, max_body_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object: 413, 415, 400 or 422 when it is not one."""
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


def query_one(request: Request, name: str) -> str | None:
    """The single value of query parameter ``name``; 422 when it is repeated."""
    values = request.query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ValidationFailed(
            f"{name} given more than once", errors={name: "given more than once"}
        )
    if "\x00" in values[0]:  # nothing stored has one, and no database takes one in a query
        raise ValidationFailed(
            f"{name} contains a NUL character", errors={name: "must not contain NUL (%00)"}
        )
    return values[0]


def query_int(request: Request, name: str, low: int, high: int) -> int | None:
    """Query parameter ``name`` as a whole number in ``[low, high]``; 422 otherwise."""
    raw = query_one(request, name)
    if raw is None:
        return None
    value = read_digits(raw, high) if raw.isascii() and raw.isdigit() else None
    if value is None or not low <= value <= high:
        raise ValidationFailed(
            f"{name} must be a whole number from {low} to {high}",
            errors={name: f"must be a whole number from {low} to {high}"},
        )
    return value


def query_time(request: Request, name: str) -> dt.datetime | None:
    """Query parameter ``name`` as an ISO-8601 time (naive UTC); 422 otherwise."""
    raw = query_one(request, name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        raise ValidationFailed(
            f"{name} must be an ISO-8601 time", errors={name: "an ISO-8601 time"}
        ) from None


def run(
    handler: Callable[..., Response], db: Any, request: Request, *args: Any, **kwargs: Any
) -> Response:
    """Call ``handler(db, request, ...)`` so that a failure never leaves a partial write.

    A ``ClientError`` rolls back and becomes its 4xx; a uniqueness race lost to a concurrent
    request becomes 409; a busy or unreachable database becomes 503 with ``Retry-After``.
    """
    from hookline.database import driver_errors  # here: webio stays importable without pydal

    try:
        return handler(db, request, *args, **kwargs)
    except ClientError as error:
        db.rollback()
        return error_response(error)
    except driver_errors(db, "IntegrityError"):
        db.rollback()
        return error_response(Conflict("a concurrent request changed the same record; retry"))
    except driver_errors(db, "OperationalError"):
        db.rollback()
        return error_response(ServiceUnavailable("the database is busy; retry shortly"))
    except BaseException:
        db.rollback()
        raise
