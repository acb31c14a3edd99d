"""The ingest writer: one process that writes the seed webhook's requests for every web process.

``hookline serve`` starts it (``hookline.writer_process``) beside granian's web processes. A
web process reads the request on its event loop and hands it over a Unix socket
(``hookline.writer_link``, framed as ``hookline.writer_wire`` says); the writer parses and
checks it, writes the requests that arrived together in one transaction with one sync
(``GroupCommitter.run_batch``), and only then sends each answer back. Nothing is answered 2xx
before its batch is on disk.

Why a process of its own: in a web process the same work ran in one of 64 request threads, and
every step competed with the others for the interpreter lock; measured on two cores, the
request path alone then capped the server near 2,900 requests/s whatever the database did. Here
the parsing and the SQL run in one thread that nothing competes with, the web processes only
move bytes, awaiting each answer as a future (a thread each waiting on a socket was tried: the
threads woken by each batch then queued for the lock instead), and there is one writer, so no
two processes take turns at SQLite's write lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hookline import receiver
from hookline.config import Settings
from hookline.groupcommit import GroupCommitter, committer_for
from hookline.outbox import MAX_PAYLOAD_BYTES
from hookline.timeutil import utcnow
from hookline.webio import Response
from hookline.writer_wire import (
    SOCKET_ENV,
    UNAVAILABLE,
    FrameReader,
    decode_request,
    encode_answer,
)

__all__ = ["IngestWriter", "main", "writer_for"]

log = logging.getLogger(__name__)


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
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        clock: Callable[[], Any] | None = None,
    ) -> None:
        """Listen on the Unix socket ``path``; ``clock`` (tests) gives each request's time."""
        self.committer = committer
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.max_payload_bytes = max_payload_bytes
        self.clock = clock
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._pending: list[tuple[_Peer, int, receiver.GroupedOrder]] = []
        self._unflushed: dict[_Peer, None] = {}  # peers with answers queued, in order
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
                self._flush_all()  # refusals go out before the next batch is written
                if self._pending:
                    self._write_batch()
                    self._flush_all()
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
                    request,
                    max_body_bytes=self.max_body_bytes,
                    max_payload_bytes=self.max_payload_bytes,
                    now=now,
                )
            except Exception:  # a bug: this request fails alone, the writer carries on
                log.exception("the ingest writer could not read a request")
                started = UNAVAILABLE
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
                self._send(entry[0], entry[1], UNAVAILABLE)
                continue
            batch.append(entry)
        outcomes = self.committer.run_batch(work)
        races = self.committer.integrity_errors
        for (peer, request_id, order), (result, error) in zip(batch, outcomes, strict=True):
            try:
                done, response = order.answer(result, error, races)
            except Exception:  # a bug, or the database failing a statement: nothing was kept
                log.exception("the ingest writer could not handle a request")
                done, response = True, UNAVAILABLE
            if done:
                self._send(peer, request_id, response)
            else:
                self._pending.append((peer, request_id, order))  # a lost race: next batch

    def _send(self, peer: _Peer, request_id: int, response: Response | None) -> None:
        # Queued, not sent: a web process's answers leave together (``_flush_all``), one
        # system call and one wake-up of its loop for a whole batch.
        peer.outgoing += encode_answer(request_id, response)
        self._unflushed[peer] = None

    def _flush_all(self) -> None:
        unflushed, self._unflushed = self._unflushed, {}
        for peer in unflushed:
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


def writer_for(settings: Settings, path: Path) -> IngestWriter:
    """An ``IngestWriter`` for ``settings``, listening on ``path``."""
    return IngestWriter(
        committer_for(settings),
        path,
        max_body_bytes=settings.max_body_bytes,
        max_payload_bytes=settings.max_payload_bytes,
    )


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
