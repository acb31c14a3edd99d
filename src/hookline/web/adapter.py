"""py4web <-> engine: py4web's request becomes a ``Request``; a ``Response`` becomes the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from py4web import request, response

from hookline.errors import PayloadTooLarge
from hookline.webio import (
    Request,
    Response,
    check_length,
    check_partial_length,
    error_response,
    run,
)

__all__ = ["answer", "call", "call_on", "engine_request"]


def _read_body(limit: int) -> bytes:
    # Read the WSGI stream ourselves: refuse by Content-Length before reading so an oversized
    # body is never buffered, and read at most limit + 1 bytes of a chunked one. (ombott's own
    # body parser re-parses chunk framing that granian has already removed.)
    length = request.content_length
    check_length(length, limit)
    stream = request.environ["wsgi.input"]
    data = stream.read(length) if length >= 0 else stream.read(limit + 1)
    check_partial_length(len(data), limit)
    return data


_CGI_HEADERS = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    # One pass over the WSGI environ: ombott's header view re-scans the environ for every
    # key and length, several times per request on the receiving hot path.
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in _CGI_HEADERS:
            name = _CGI_HEADERS[key]
        else:
            continue
        # WSGI hands header bytes over as latin-1 strings (ombott's view does the same).
        headers[name] = value.decode("latin1") if isinstance(value, bytes) else value
    return headers


def engine_request(max_body_bytes: int) -> Request:
    """The current py4web request as an engine ``Request``; raise ``PayloadTooLarge``."""
    environ = request.environ
    return Request(
        method=environ.get("REQUEST_METHOD", "GET").upper(),
        path=request.path,
        headers=_headers(environ),
        body=_read_body(max_body_bytes),
        query=Request.parse_query(environ.get("QUERY_STRING", "")),
    )


def answer(result: Response) -> bytes:
    """Write ``result``'s status and headers onto py4web's response; return the body."""
    response.status = result.status
    for name, value in result.headers.items():
        response.headers[name] = value
    return result.body


def call(
    handler: Callable[..., Response], db: Any, body_limit: int, *args: Any, **kwargs: Any
) -> bytes:
    """Run an engine handler on the current request through ``webio.run`` and answer with it.

    ``body_limit`` bounds how much of the body is read; ``args``/``kwargs`` go to the handler.
    """
    try:
        engine_req = engine_request(body_limit)
    except PayloadTooLarge as error:
        return answer(error_response(error))
    return call_on(handler, db, engine_req, *args, **kwargs)


def call_on(
    handler: Callable[..., Response], db: Any, engine_req: Request, *args: Any, **kwargs: Any
) -> bytes:
    """``call`` for a request that was already read (``engine_request``)."""
    return answer(run(handler, db, engine_req, *args, **kwargs))
