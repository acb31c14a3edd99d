"""The front ``hookline serve`` runs when the ingest writer is on (``hookline.web.rsgi:app``):
an RSGI app for granian.

``POST /myapp/webhook`` is read here and handed to the ingest writer on this process's event
loop; every other request (and a webhook the writer sends back for signature verification)
goes to the py4web app, run in a thread pool by ``a2wsgi`` (``hookline.web.rsgi_bridge``).

Why the seed webhook skips py4web here: under load it is nearly all of the traffic, and in a
WSGI server each request waiting for its group commit holds a thread. When a batch commits,
dozens of those threads wake at once and queue for the interpreter lock; measured on two
cores, the web processes then spent ~440 µs of CPU per request just to forward it. Awaiting
the writer's answer on the event loop costs a future, not a thread.
"""

from __future__ import annotations

import logging
from typing import Any

from a2wsgi import WSGIMiddleware
from granian.rsgi import ProtocolClosed, ProtocolError

from hookline.errors import BadRequest, PayloadTooLarge
from hookline.web.rsgi_bridge import serve_asgi
from hookline.webio import (
    Request,
    Response,
    check_length,
    check_partial_length,
    error_response,
)
from hookline.writer_link import WriterLink

__all__ = ["WEBHOOK_PATH", "Front"]

log = logging.getLogger(__name__)

#: The seed's webhook, the one route answered here.
WEBHOOK_PATH = "/myapp/webhook"


class Front:
    """An RSGI app: the seed webhook through the ingest writer, the rest through py4web."""

    def __init__(self, wsgi_app: Any, link: WriterLink, *, max_body_bytes: int, threads: int):
        """``wsgi_app`` is py4web's app, run on ``threads`` threads; ``link`` reaches the writer."""
        self.link = link
        self.max_body_bytes = max_body_bytes
        self.fallback = WSGIMiddleware(wsgi_app, workers=threads)

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        """Serve one HTTP request (``hookline serve`` turns granian's websockets off)."""
        if scope.path == WEBHOOK_PATH:
            await self._webhook(scope, proto)
        else:
            await serve_asgi(self.fallback, scope, proto)

    def __rsgi_del__(self, loop: Any) -> None:
        """The worker stops: close the writer connection (requests on it get 503s)."""
        self.link.close()

    async def _webhook(self, scope: Any, proto: Any) -> None:
        try:
            request = await self._request(scope, proto)
        except (PayloadTooLarge, BadRequest) as error:
            _answer(proto, error_response(error))
            return
        except (ProtocolClosed, ProtocolError):  # the client left before sending its body
            return
        answer = await self.link.receive(request)
        if answer is None:  # a signed orders source: py4web's action verifies it
            await serve_asgi(self.fallback, scope, proto, body=request.body)
            return
        _answer(proto, answer)

    async def _request(self, scope: Any, proto: Any) -> Request:
        # The same limits as the WSGI path (web/adapter.py): a declared length over the limit
        # is refused before reading, a chunked body is read to at most limit + 1 bytes.
        headers: dict[str, str] = {}
        for name, value in scope.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise BadRequest("Content-Length is not a number")
            check_length(int(declared), limit)
            body = await proto()  # the server reads no more than the declared length
        else:
            read = bytearray()
            async for chunk in proto:
                read += chunk
                check_partial_length(len(read), limit)
            body = bytes(read)
        return Request(
            method=scope.method.upper(),
            path=scope.path,
            headers=headers,
            body=body,
            query=Request.parse_query(scope.query_string),
        )


def _answer(proto: Any, response: Response) -> None:
    proto.response_bytes(response.status, list(response.headers.items()), response.body)
