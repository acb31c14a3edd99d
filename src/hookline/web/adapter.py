"""py4web <-> engine: py4web's request becomes a ``Request``; a ``Response`` becomes the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from py4web import request, response

from hookline.errors import PayloadTooLarge
from hookline.webio import Request, Response, error_response, run

__all__ = ["answer", "call", "engine_request"]


def _read_body(limit: int) -> bytes:
    # Read the WSGI stream ourselves: refuse by Content-Length before reading so an oversized
    # body is never buffered, and read at most limit + 1 bytes of a chunked one. (ombott's own
    # body parser re-parses chunk framing that granian has already removed.)
    length = request.content_length
    if length > limit:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {limit}")
    stream = request.environ["wsgi.input"]
    data = stream.read(length) if length >= 0 else stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
    return data


def engine_request(max_body_bytes: int) -> Request:
    """The current py4web request as an engine ``Request``; raise ``PayloadTooLarge``."""
    return Request.build(
        method=request.method,
        path=request.path,
        headers=list(request.headers.items()),
        body=_read_body(max_body_bytes),
        query_string=request.query_string,
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
    return answer(run(handler, db, engine_req, *args, **kwargs))
