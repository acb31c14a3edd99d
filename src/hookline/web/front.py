"""The ASGI front ``hookline serve`` runs when the ingest writer is on (``hookline.web.front:app``).

``POST /myapp/webhook`` is read here and handed to the ingest writer on this process's event
loop; every other request (and a webhook the writer sends back for signature verification)
goes to the py4web app, run in a thread pool by ``a2wsgi``.

Why the seed webhook skips py4web here: under load it is nearly all of the traffic, and in a
WSGI server each request waiting for its group commit holds a thread. When a batch commits,
dozens of those threads wake at once and queue for the interpreter lock; measured on two
cores, the web processes then spent ~440 µs of CPU per request just to forward it. Awaiting
the writer's answer on the event loop costs a future, not a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from a2wsgi import WSGIMiddleware

from hookline.errors import BadRequest, PayloadTooLarge
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

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The seed's webhook, the one route answered here.
WEBHOOK_PATH = "/myapp/webhook"


class Front:
    """An ASGI app: the seed webhook through the ingest writer, the rest through py4web."""

    def __init__(self, wsgi_app: Any, link: WriterLink, *, max_body_bytes: int, threads: int):
        """``wsgi_app`` is py4web's app, run on ``threads`` threads; ``link`` reaches the writer."""
        self.link = link
        self.max_body_bytes = max_body_bytes
        self.fallback = WSGIMiddleware(wsgi_app, workers=threads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"] == WEBHOOK_PATH:
            await self._webhook(scope, receive, send)
        else:
            await self.fallback(scope, _as_coroutine(receive), send)

    async def _webhook(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            request = await self._request(scope, receive)
        except (PayloadTooLarge, BadRequest) as error:
            await _answer(send, error_response(error))
            return
        answer = await self.link.receive(request)
        if answer is None:  # a signed orders source: py4web's action verifies it
            await self.fallback(scope, _replay(request.body), send)
            return
        await _answer(send, answer)

    async def _request(self, scope: Scope, receive: Receive) -> Request:
        # The same limits as the WSGI path (web/adapter.py): a declared length over the limit
        # is refused before reading, a chunked body is read to at most limit + 1 bytes.
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise BadRequest("Content-Length is not a number")
            check_length(int(declared), limit)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            body += message.get("body", b"")
            check_partial_length(len(body), limit)
            if not message.get("more_body"):
                break
        return Request(
            method=scope["method"].upper(),
            path=scope["path"],
            headers=headers,
            body=bytes(body),
            query=Request.parse_query(scope.get("query_string", b"").decode("latin-1")),
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.link.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(send: Send, response: Response) -> None:
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers.items()
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def _as_coroutine(receive: Receive) -> Receive:
    """``receive`` as a coroutine function: a2wsgi hands it to ``run_coroutine_threadsafe``,
    which refuses the plain awaitables granian's ``receive`` returns."""

    async def coroutine() -> MutableMapping[str, Any]:
        return await receive()

    return coroutine


def _replay(body: bytes) -> Receive:
    """A ``receive`` that hands over an already-read body once, then reports a disconnect."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> MutableMapping[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    return receive
