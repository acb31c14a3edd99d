"""A web process's side of the ingest writer (``hookline.writer``), for its event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from hookline.groupcommit import WAIT_SECONDS
from hookline.webio import Request, Response
from hookline.writer_wire import HEAD, UNAVAILABLE, decode_answer, encode_request

__all__ = ["WARN_EVERY_S", "WriterLink"]

log = logging.getLogger("hookline.writer")

#: A web process logs an unreachable writer at most this often (seconds).
WARN_EVERY_S = 5.0


class _Connection:
    """One connection to the writer and the requests in flight on it."""

    __slots__ = ("reading", "stream", "waiting")

    def __init__(self, stream: asyncio.StreamWriter) -> None:
        self.stream = stream
        self.waiting: dict[int, asyncio.Future[tuple[bytes, bytes]]] = {}
        self.reading: asyncio.Task[None] | None = None  # kept: the loop holds tasks weakly


def _expire(answer: asyncio.Future[tuple[bytes, bytes]]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError("no answer in time"))


class WriterLink:
    """A web process's side, for its event loop: one connection to the writer carrying every
    request in flight, each answer matched to its request by id."""

    def __init__(self, path: str | Path, *, timeout: float = WAIT_SECONDS) -> None:
        """Talk to the writer listening on ``path``; give up (503) after ``timeout`` s."""
        self.path = str(path)
        self.timeout = timeout
        self._connecting: asyncio.Lock | None = None
        self._connection: _Connection | None = None
        self._next_id = 0
        self._warned_at = -WARN_EVERY_S
        self._unanswered = 0

    async def receive(self, request: Request) -> Response | None:
        """The writer's answer to ``request``, or ``None``: the orders source verifies
        signatures, so the caller answers on its verifying path. A writer that cannot be
        reached, or does not answer in time, gives a 503 with ``Retry-After``."""
        self._next_id = request_id = (self._next_id + 1) & 0xFFFFFFFF
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        # One timer that fails the future, not ``asyncio.wait_for`` (a second future and a
        # callback per request: ~4 µs against ~1 µs, measured on this loop).
        expiry = loop.call_later(self.timeout, _expire, answer)
        connection = None
        try:
            connection = await self._connected()
            connection.waiting[request_id] = answer
            connection.stream.write(encode_request(request_id, request))
            await connection.stream.drain()  # a large body waits for the socket, not in memory
            meta, body = await answer
        except (OSError, TimeoutError) as error:
            if connection is not None:
                connection.waiting.pop(request_id, None)
            self._warn(f"the ingest writer did not answer: {error or type(error).__name__}")
            return UNAVAILABLE
        finally:
            expiry.cancel()
        return decode_answer(meta, body)

    def _warn(self, message: str) -> None:
        # While the writer restarts every request fails the same way: one line in a while,
        # with how many were refused since the last one.
        self._unanswered += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            log.warning(
                "%s (%d requests answered 503 since the last warning)", message, self._unanswered
            )
            self._warned_at, self._unanswered = now, 0

    def close(self) -> None:
        """Close the connection (requests in flight on it get 503s)."""
        if self._connection is not None:
            self._connection.stream.close()

    async def _connected(self) -> _Connection:
        connection = self._connection
        if connection is not None and not connection.stream.is_closing():
            return connection
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            connection = self._connection
            if connection is None or connection.stream.is_closing():
                reader, stream = await asyncio.open_unix_connection(self.path)
                connection = self._connection = _Connection(stream)
                connection.reading = asyncio.get_running_loop().create_task(
                    self._read_answers(reader, connection)
                )
            return connection

    async def _read_answers(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        waiting = connection.waiting
        try:
            while True:
                answer_id, meta_len, body_len = HEAD.unpack(await reader.readexactly(HEAD.size))
                payload = await reader.readexactly(meta_len + body_len)
                answer = waiting.pop(answer_id, None)
                if answer is not None and not answer.done():
                    answer.set_result((payload[:meta_len], payload[meta_len:]))
        except (OSError, asyncio.IncompleteReadError) as error:
            lost = ConnectionError(f"the ingest writer went away: {error}")
        except BaseException as error:  # cancelled with the loop: wake the waiters anyway
            lost = ConnectionError(f"the ingest writer's connection stopped: {error!r}")
        connection.stream.close()
        if self._connection is connection:
            self._connection = None
        # Requests in flight on this connection (only: a new one may already carry others) were
        # sent, and maybe stored, but will not be answered.
        for answer in waiting.values():
            if not answer.done():
                answer.set_exception(lost)
        waiting.clear()
