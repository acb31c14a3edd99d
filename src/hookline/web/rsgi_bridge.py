"""One RSGI HTTP exchange served by an ASGI app: how the front hands py4web's routes (through
``a2wsgi``) everything but the seed webhook.

Why RSGI at all: granian's RSGI interface hands the front a request in one call and takes its
answer in one call, where ASGI builds a scope dict, message dicts and awaitables per request.
Measured on the seed webhook under wrk (two cores): ~206-235 µs of CPU per request in each web
process against ~252-291 µs through ASGI. Only the routes that are not the webhook pay for this
translation, and they run py4web in a thread anyway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["STREAM_AFTER_BYTES", "serve_asgi"]

AsgiApp = Callable[..., Awaitable[None]]

#: A response body up to this size is sent in one piece once complete; a larger one streams.
STREAM_AFTER_BYTES = 1 << 16


async def serve_asgi(app: AsgiApp, scope: Any, proto: Any, *, body: bytes | None = None) -> None:
    """Serve the RSGI request ``scope`` on ``proto`` with the ASGI ``app``. ``body``: the request
    body when the caller has already read it (it is then not read from ``proto`` again)."""
    exchange = _Exchange(proto, _once(body) if body is not None else _chunks(proto))
    await app(asgi_scope(scope), exchange.receive, exchange.send)


def asgi_scope(scope: Any) -> dict[str, Any]:
    """The ASGI HTTP scope of an RSGI one (RSGI's path is already percent-decoded, as ASGI's)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": scope.path,
        "root_path": "",
        "query_string": scope.query_string.encode("latin-1"),
        "headers": [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in scope.headers.items()
        ],
        "client": _address(scope.client),
        "server": _address(scope.server),
    }


def _address(text: str | None) -> tuple[str, int] | None:
    """``"host:port"`` (``"[::1]:port"`` for IPv6) as ASGI's ``(host, port)``."""
    if not text:
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return (text, 0)
    return (host.strip("[]"), int(port))


async def _chunks(proto: Any) -> AsyncIterator[bytes]:
    async for chunk in proto:
        yield chunk


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


class _Exchange:
    """The ASGI ``receive`` and ``send`` of one RSGI request."""

    def __init__(self, proto: Any, body: AsyncIterator[bytes]) -> None:
        self.proto = proto
        self.body = body
        self.body_done = False
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.stream: Any = None
        self.finished = False

    async def receive(self) -> MutableMapping[str, Any]:
        """The next ASGI request message (a coroutine function: ``a2wsgi`` needs one)."""
        if self.body_done:
            return {"type": "http.disconnect"}
        try:
            chunk = await self.body.__anext__()
        except StopAsyncIteration:
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        """Take one ASGI response message; the answer leaves in one piece unless it is large."""
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", ())
            ]
        elif kind == "http.response.body" and not self.finished:
            chunk = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if self.stream is not None:
                if chunk:
                    await self.stream.send_bytes(chunk)
                self.finished = not more
                return
            self.pending.append(chunk)
            self.pending_bytes += len(chunk)
            if not more:
                self.finished = True
                self.proto.response_bytes(self.status, self.headers, b"".join(self.pending))
            elif self.pending_bytes >= STREAM_AFTER_BYTES:
                self.stream = self.proto.response_stream(self.status, self.headers)
                pending, self.pending = self.pending, []
                for piece in pending:
                    if piece:
                        await self.stream.send_bytes(piece)
