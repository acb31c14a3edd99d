"""The ingest writer: one process that writes the seed webhook's requests for every web process.

``hookline serve`` starts it beside granian's web processes. A web process reads the request
and hands it over a Unix socket; the writer parses and checks it, writes the
requests that arrived together in one transaction with one sync (``GroupCommitter.run_batch``),
and only then sends each answer back. Nothing is answered 2xx before its batch is on disk.

Why a process of its own: in a web process the same work ran in one of 64 request threads, and
every step competed with the others for the interpreter lock; measured on two cores, the
request path alone then capped the server near 2,900 requests/s whatever the database did. Here
the parsing and the SQL run in one thread that nothing competes with, the web processes only
move bytes, and there is one writer, so no two processes take turns at SQLite's write lock.

A web process talks to it through ``WriterLink`` on its event loop (``hookline.web.front``, the
ASGI front that granian serves): one connection per web process, every request in flight on it.

The wire is a private, trusted-peer protocol on a socket in a directory only this user can
enter. Each frame is ``!III`` (request id, meta length, body length), then JSON meta, then the
raw body: requests carry ``[method, path, headers, query]``, answers ``[status, headers]``, or
``[0, {}]`` for "the orders source verifies signatures, answer on the verifying path".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hookline import receiver
from hookline.config import Settings
from hookline.errors import ServiceUnavailable
from hookline.groupcommit import WAIT_SECONDS, GroupCommitter, connect_for
from hookline.timeutil import utcnow
from hookline.webio import Request, Response, error_response

__all__ = [
    "SOCKET_ENV",
    "FrameReader",
    "IngestWriter",
    "WriterLink",
    "WriterProcess",
    "decode_answer",
    "decode_request",
    "encode_answer",
    "encode_request",
    "writer_for",
]

log = logging.getLogger(__name__)

#: Tells the web processes where the writer listens (set by ``hookline serve``).
SOCKET_ENV = "HOOKLINE_WRITER_SOCKET"
_HEAD = struct.Struct("!III")
#: Meta is a method, a path and headers: far below this. A body is bounded by the web layer.
MAX_META_BYTES = 1 << 20
MAX_BODY_BYTES = 1 << 30
#: A web process logs an unreachable writer at most this often (seconds).
WARN_EVERY_S = 5.0
_VERIFY = 0  # the answer "status" meaning: verify on the web process's own path
_UNAVAILABLE = error_response(ServiceUnavailable("the request could not be stored; retry"))


def _frame(request_id: int, meta: Any, body: bytes) -> bytes:
    encoded = json.dumps(meta, separators=(",", ":")).encode("utf-8")
    return _HEAD.pack(request_id, len(encoded), len(body)) + encoded + body


def encode_request(request_id: int, request: Request) -> bytes:
    """One request frame."""
    meta = [request.method, request.path, dict(request.headers), dict(request.query)]
    return _frame(request_id, meta, request.body)


def decode_request(meta: bytes, body: bytes) -> Request:
    """The ``Request`` of a request frame's meta and body; ``ValueError`` if malformed."""
    method, path, headers, query = json.loads(meta)
    if not (isinstance(method, str) and isinstance(path, str)):
        raise ValueError("method and path must be strings")
    if not isinstance(headers, dict) or not isinstance(query, dict):
        raise ValueError("headers and query must be objects")
    return Request(method=method, path=path, headers=headers, body=body, query=query)


_answer_metas: dict[tuple[int, tuple[tuple[str, str], ...]], bytes] = {}


def encode_answer(request_id: int, response: Response | None) -> bytes:
    """One answer frame: the response, or ``None`` (verify on the web process's path)."""
    if response is None:
        return _frame(request_id, [_VERIFY, {}], b"")
    # Answers come in few shapes (the seed's success above all): their meta is encoded once.
    key = (response.status, tuple(response.headers.items()))
    meta = _answer_metas.get(key)
    if meta is None:
        meta = json.dumps([response.status, dict(response.headers)]).encode("utf-8")
        if len(_answer_metas) < 1024:
            _answer_metas[key] = meta
    body = response.body
    return _HEAD.pack(request_id, len(meta), len(body)) + meta + body


def decode_answer(meta: bytes, body: bytes) -> Response | None:
    """The inverse of ``encode_answer``."""
    status, headers = json.loads(meta)
    return None if status == _VERIFY else Response(status, body, headers)


class FrameReader:
    """Splits a byte stream into ``(request id, meta, body)`` frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes, bytes]]:
        """Add ``data``; return the frames it completed. ``ValueError`` for an oversized one."""
        self._buffer += data
        frames = []
        start = 0
        buffer = self._buffer
        while len(buffer) - start >= _HEAD.size:
            request_id, meta_len, body_len = _HEAD.unpack_from(buffer, start)
            if meta_len > MAX_META_BYTES or body_len > MAX_BODY_BYTES:
                raise ValueError(f"frame of {meta_len} + {body_len} bytes is over the limit")
            end = start + _HEAD.size + meta_len + body_len
            if len(buffer) < end:
                break
            meta_at = start + _HEAD.size
            body_at = meta_at + meta_len
            frames.append((request_id, bytes(buffer[meta_at:body_at]), bytes(buffer[body_at:end])))
            start = end
        if start:
            del buffer[:start]
        return frames


class _Peer:
    """A web process's connection: what it sent so far, and answers not yet written."""

    __slots__ = ("backlog", "outgoing", "reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader()
        self.outgoing = bytearray()
        self.backlog = False  # watched for writing: answers wait for room in the socket


class IngestWriter:
    """The writer's loop: gather the requests that arrived, write them as one batch, answer."""

    def __init__(
        self,
        committer: GroupCommitter,
        path: Path,
        *,
        max_body_bytes: int,
        clock: Callable[[], Any] | None = None,
    ) -> None:
        """Listen on the Unix socket ``path``; ``clock`` (tests) gives each request's time."""
        self.committer = committer
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._pending: list[tuple[_Peer, int, receiver.GroupedOrder]] = []
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a previous writer's socket
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        os.chmod(path, 0o600)
        self._listener.listen(1024)
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)

    def stop(self) -> None:
        """Ask the loop to return after the batch in hand (any thread, or a signal handler)."""
        self._stop.set()

    def serve(self) -> None:
        """Run until ``stop``; every request read is answered (or its peer is gone) first."""
        try:
            while not self._stop.is_set() or self._pending:
                # Block only when no request waits: the next batch gathers while one commits.
                timeout = 0 if self._pending else 0.5
                for key, events in self._selector.select(timeout):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif events & selectors.EVENT_READ:
                        self._read(key.data)
                    if events & selectors.EVENT_WRITE and key.data is not None:
                        self._flush(key.data)
                if self._pending:
                    self._write_batch()
        finally:
            self.close()

    def close(self) -> None:
        """Close every connection and the socket, and stop the committer's connection."""
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.committer.close_connection()

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            sock, _ = self._listener.accept()
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, _Peer(sock))

    def _drop(self, peer: _Peer) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(peer.sock)
        peer.sock.close()
        self._pending = [entry for entry in self._pending if entry[0] is not peer]

    def _read(self, peer: _Peer) -> None:
        try:
            data = peer.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(peer)
            return
        try:
            frames = peer.reader.feed(data)
        except ValueError as error:
            log.warning("dropping a writer connection: %s", error)
            self._drop(peer)
            return
        # One time for the requests read together: they arrived together, and rows stamped
        # with one time share its conversions.
        now = self.clock() if self.clock is not None else utcnow()
        for request_id, meta, body in frames:
            try:
                request = decode_request(meta, body)
            except (ValueError, TypeError) as error:  # a peer that is not our web process
                log.warning("dropping a writer connection: bad frame: %s", error)
                self._drop(peer)
                return
            try:
                started = receiver.start_grouped(
                    request, max_body_bytes=self.max_body_bytes, now=now
                )
            except Exception:  # a bug: this request fails alone, the writer carries on
                log.exception("the ingest writer could not read a request")
                started = _UNAVAILABLE
            if isinstance(started, Response):
                self._send(peer, request_id, started)
            else:
                self._pending.append((peer, request_id, started))

    def _write_batch(self) -> None:
        taken = self._pending[: self.committer.max_batch]
        del self._pending[: len(taken)]
        batch, work = [], []
        for entry in taken:
            try:
                work.append(entry[2].job())
            except Exception:  # a bug: this request fails alone, the batch goes on
                log.exception("the ingest writer could not prepare a request")
                self._send(entry[0], entry[1], _UNAVAILABLE)
                continue
            batch.append(entry)
        outcomes = self.committer.run_batch(work)
        races = self.committer.integrity_errors
        for (peer, request_id, order), (result, error) in zip(batch, outcomes, strict=True):
            try:
                done, response = order.answer(result, error, races)
            except Exception:  # a bug, or the database failing a statement: nothing was kept
                log.exception("the ingest writer could not handle a request")
                done, response = True, _UNAVAILABLE
            if done:
                self._send(peer, request_id, response)
            else:
                self._pending.append((peer, request_id, order))  # a lost race: next batch

    def _send(self, peer: _Peer, request_id: int, response: Response | None) -> None:
        peer.outgoing += encode_answer(request_id, response)
        self._flush(peer)

    def _flush(self, peer: _Peer) -> None:
        try:
            sent = peer.sock.send(peer.outgoing)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the web process is gone; its requests were answered or never taken
            self._drop(peer)
            return
        del peer.outgoing[:sent]
        # Watch for room to write only while answers wait: changing it costs a system call.
        backlog = bool(peer.outgoing)
        if backlog != peer.backlog:
            peer.backlog = backlog
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if backlog else 0)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.modify(peer.sock, events, peer)


class WriterLink:
    """A web process's side, for its event loop: one connection to the writer carrying every
    request in flight, each answer matched to its request by id."""

    def __init__(self, path: str | Path, *, timeout: float = WAIT_SECONDS) -> None:
        """Talk to the writer listening on ``path``; give up (503) after ``timeout`` s."""
        self.path = str(path)
        self.timeout = timeout
        self._connecting: asyncio.Lock | None = None
        self._stream: asyncio.StreamWriter | None = None
        self._waiting: dict[int, asyncio.Future[tuple[bytes, bytes]]] = {}
        self._next_id = 0
        self._warned_at = -WARN_EVERY_S
        self._unanswered = 0

    async def receive(self, request: Request) -> Response | None:
        """The writer's answer to ``request``, or ``None``: the orders source verifies
        signatures, so the caller answers on its verifying path. A writer that cannot be
        reached, or does not answer in time, gives a 503 with ``Retry-After``."""
        self._next_id = request_id = (self._next_id + 1) & 0xFFFFFFFF
        answer = asyncio.get_running_loop().create_future()
        try:
            stream = await self._connected()
            self._waiting[request_id] = answer
            stream.write(encode_request(request_id, request))
            await stream.drain()  # a large body waits here for the socket, not in memory
            meta, body = await asyncio.wait_for(answer, self.timeout)
        except (OSError, TimeoutError) as error:
            self._waiting.pop(request_id, None)
            self._warn(f"the ingest writer did not answer: {error or type(error).__name__}")
            return _UNAVAILABLE
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

    async def close(self) -> None:
        """Close the connection (requests in flight on it get 503s)."""
        if self._stream is not None:
            self._stream.close()

    async def _connected(self) -> asyncio.StreamWriter:
        if self._stream is not None and not self._stream.is_closing():
            return self._stream
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._stream is None or self._stream.is_closing():
                reader, self._stream = await asyncio.open_unix_connection(self.path)
                asyncio.get_running_loop().create_task(self._read_answers(reader, self._stream))
            return self._stream

    async def _read_answers(
        self, reader: asyncio.StreamReader, stream: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                answer_id, meta_len, body_len = _HEAD.unpack(await reader.readexactly(_HEAD.size))
                payload = await reader.readexactly(meta_len + body_len)
                waiting = self._waiting.pop(answer_id, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result((payload[:meta_len], payload[meta_len:]))
        except (OSError, asyncio.IncompleteReadError) as error:
            lost = ConnectionError(f"the ingest writer went away: {error}")
        except BaseException as error:  # cancelled with the loop: wake the waiters anyway
            lost = ConnectionError(f"the ingest writer's connection stopped: {error!r}")
        stream.close()
        if self._stream is stream:
            self._stream = None
        # Requests in flight on this connection: sent, and maybe stored, but unanswered.
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(lost)
        self._waiting.clear()


class WriterProcess:
    """``hookline serve``'s writer: started before the web processes, restarted if it dies,
    stopped (after its batch in hand) when the server stops."""

    def __init__(self, command: list[str], *, preexec_fn: Callable[[], None] | None = None):
        """``command`` runs ``python -m hookline.writer`` (the socket path comes from here)."""
        self._directory = Path(tempfile.mkdtemp(prefix="hookline-writer-"))  # 0700: ours only
        self.path = self._directory / "ingest.sock"
        self._command = command
        self._preexec_fn = preexec_fn
        self._process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The running writer's process id."""
        return self._process.pid if self._process is not None else None

    def start(self, ready_timeout: float = 30.0) -> bool:
        """Start the writer and wait until it listens; False (and stopped) if it does not."""
        self._spawn()
        if not self._wait_ready(ready_timeout):
            self.stop()
            return False
        self._watcher = threading.Thread(target=self._watch, name="hookline-writer", daemon=True)
        self._watcher.start()
        return True

    def stop(self, timeout: float = WAIT_SECONDS) -> None:
        """Stop the writer (SIGTERM: it answers what it holds, then exits) and clean up."""
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self._directory, ignore_errors=True)

    def _spawn(self) -> None:
        env = {**os.environ, SOCKET_ENV: str(self.path)}
        self._process = subprocess.Popen(self._command, env=env, preexec_fn=self._preexec_fn)

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(self.path))
                return True
            time.sleep(0.05)
        return False

    def _watch(self) -> None:
        # While it is down the web processes answer 503 (nothing is accepted, so nothing is
        # lost); a writer that keeps failing is retried at most once a second.
        while not self._stopping.is_set():
            process = self._process
            assert process is not None
            code = process.wait()
            if self._stopping.is_set():
                return
            log.warning("the ingest writer exited (%s); starting it again", code)
            print(f"hookline: the ingest writer exited ({code}); restarting", file=sys.stderr)
            self.restarts += 1
            time.sleep(1.0)
            if not self._stopping.is_set():
                self._spawn()


def writer_for(settings: Settings, path: Path) -> IngestWriter:
    """An ``IngestWriter`` for ``settings``, listening on ``path``."""
    lock = settings.data_dir / ".commit.lock" if settings.is_sqlite else None
    committer = GroupCommitter(connect_for(settings), lock_path=lock)
    return IngestWriter(committer, path, max_body_bytes=settings.max_body_bytes)


def main() -> None:
    """``python -m hookline.writer``: serve on ``$HOOKLINE_WRITER_SOCKET`` until SIGTERM."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    writer = writer_for(settings, Path(os.environ[SOCKET_ENV]))
    signal.signal(signal.SIGTERM, lambda *_: writer.stop())
    # Ctrl-C reaches the whole process group; `hookline serve` stops the writer itself, after
    # the web processes, so that nothing they still forward goes unanswered.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    writer.serve()


if __name__ == "__main__":
    main()
