"""Group commit: the writes of every request that arrived together share one transaction and
one fsync, and each request is answered only after that commit.

A durable commit costs one fsync (SQLite ``synchronous=FULL``) whatever it holds, so committing
per request caps a receiver at the disk's fsync rate. Here request threads hand a *unit* (a
function of a ``SqlConn``) to one committer thread, which owns its own connection and loops:
take every waiting unit, ``BEGIN``, run each inside its own ``SAVEPOINT`` (a unit that raises is
rolled back alone and its caller gets the exception), ``COMMIT`` once, then wake the callers.
While one batch is being synced the next one gathers, so batches grow with the load and an idle
receiver still commits at once: no timer, no added latency.

A unit's result reaches its caller only after the commit succeeded; if the commit fails, every
caller in the batch gets ``ServiceUnavailable`` (503) and nothing of the batch was written.
On SQLite "succeeded" includes the sync: the committer's connection commits at
``synchronous=NORMAL`` and the committer syncs the WAL itself after handing the write turn to
the next process, before it wakes the callers (``connect_for``, ``_sync``).

Units of one kind can also run *together*: a caller passing ``together=(runner, item)`` lets the
committer hand every such item of the batch to ``runner(sql, items)`` at once, which writes them
with a few multi-row statements instead of a few statements each. That matters under load: every
statement releases the GIL, and the committer then waits for the request threads to hand it
back while it holds the write lock every process needs. The runner answers ``SOLO`` for an item
it will not take (a duplicate, a conflict, anything unusual): that item then runs as its own
unit after the runner's, so the runner only ever handles the plain case. If the runner raises,
its writes are rolled back and every item runs as its own unit.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hookline.config import Settings
from hookline.errors import ServiceUnavailable
from hookline.sqlconn import SqlConn

__all__ = ["SOLO", "BatchRunner", "GroupCommitter", "committer_for", "connect_for"]

T = TypeVar("T")
#: A runner's answer for an item it leaves to the item's own unit.
SOLO: Any = object()
#: Runs several items in the caller's transaction: one result (or ``SOLO``) per item, in order.
BatchRunner = Callable[[SqlConn, list[Any]], list[Any]]
log = logging.getLogger(__name__)

#: How long a caller waits for its batch before answering 503 (the committer should never
#: take this long; it is a guard against a wedged disk, not a timing target).
WAIT_SECONDS = 30.0


class _Job:
    __slots__ = ("_done", "error", "item", "result", "runner", "unit")

    def __init__(
        self, unit: Callable[[SqlConn], Any], together: tuple[BatchRunner, Any] | None
    ) -> None:
        self.unit = unit
        self.runner, self.item = together if together is not None else (None, None)
        self.result: Any = None
        self.error: BaseException | None = None
        # A lock taken now and released by the committer: the cheapest one-shot signal
        # (an Event builds a Condition and a second lock per request).
        self._done = threading.Lock()
        self._done.acquire()

    def finish(self) -> None:
        """Wake the caller."""
        self._done.release()

    def wait(self, timeout: float) -> bool:
        """Wait for ``finish``; False after ``timeout`` seconds."""
        return self._done.acquire(timeout=timeout)


class GroupCommitter:
    """One committer thread per process running units in shared transactions."""

    def __init__(
        self,
        connect: Callable[[], SqlConn],
        *,
        max_batch: int = 256,
        lock_path: Path | None = None,
    ) -> None:
        """``connect`` opens the committer's own connection (see ``connect_for``); with
        ``lock_path``, committers of several processes take turns through that file's lock."""
        self._connect = connect
        self._lock_path = lock_path
        self._lock_file: Any = None
        self._sync_fd: int | None = None
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._sql: SqlConn | None = None
        self.integrity_errors: tuple[type[BaseException], ...] = ()
        self.batches = 0
        self.units = 0
        self.together = 0  # units written by a batch runner

    def _ensure_started(self) -> None:
        # Started on first use, and again after a fork: a thread does not survive into the
        # child, and granian may import the app before forking its workers.
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._queue = queue.SimpleQueue()
            self._sql = None
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, name="hookline-commit", daemon=True)
            self._thread.start()

    def run(
        self,
        unit: Callable[[SqlConn], T],
        *,
        together: tuple[BatchRunner, Any] | None = None,
    ) -> T:
        """Run ``unit(sql)`` in the next batch; return its result once the batch is committed.

        The unit's own exception is re-raised here (its writes rolled back); a failed commit
        raises ``ServiceUnavailable``. With ``together=(runner, item)`` the item may instead be
        written by ``runner`` with the batch's other items of that runner; ``runner(sql,
        [item])`` must mean what ``unit(sql)`` means (or answer ``SOLO``).
        """
        self._ensure_started()
        job = _Job(unit, together)
        self._queue.put(job)
        if not job.wait(WAIT_SECONDS):
            raise ServiceUnavailable("the database did not commit in time; retry")
        if job.error is not None:
            raise job.error
        return job.result

    def run_batch(
        self, work: list[tuple[Callable[[SqlConn], Any], tuple[BatchRunner, Any] | None]]
    ) -> list[tuple[Any, BaseException | None]]:
        """Run ``(unit, together)`` pairs as one batch in the calling thread; return each
        one's ``(result, error)`` once committed (a failed commit: ``ServiceUnavailable``).

        For a caller that is itself the only committer, a loop gathering requests from
        sockets (``hookline.writer``); not to be mixed with ``run`` on the same committer.
        """
        batch = [_Job(unit, together) for unit, together in work]
        if batch:
            self._commit_batch(batch)
        return [(job.result, job.error) for job in batch]

    def close(self) -> None:
        """Stop the committer thread after the units already queued."""
        if self._thread is not None and self._pid == os.getpid():
            self._queue.put(None)
            self._thread.join(timeout=WAIT_SECONDS)
            self._thread = None

    def close_connection(self) -> None:
        """Close the connection ``run_batch`` opened (its owner is done with the committer)."""
        self._reset()

    def _take_waiting(self, batch: list[_Job]) -> bool:
        """Move the queued jobs into ``batch`` (up to ``max_batch``); True if told to stop."""
        while len(batch) < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return False
            if job is None:
                return True
            batch.append(job)
        return False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stop = self._take_waiting(batch)
            stop = self._commit_batch(batch) or stop
        self._reset()

    def _open(self) -> SqlConn:
        if self._sql is None:
            self._sql = self._connect()
            self.integrity_errors = (self._sql.integrity_error,)
        return self._sql

    def _commit_batch(self, batch: list[_Job]) -> bool:
        """Write and commit ``batch``, then wake its callers; True if told to stop meanwhile."""
        stop = False
        try:
            sql = self._open()
            self._take_turn()
            try:
                # Requests that arrived while this committer waited for its turn join now:
                # the turn is the scarce thing, so it should carry as much as it can.
                stop = self._take_waiting(batch)
                sql.execute("BEGIN" if sql.postgres else "BEGIN IMMEDIATE")
                sql.forget()
                for job in self._run_together(sql, batch):
                    self._run_unit(sql, job)
                sql.execute("COMMIT")
            finally:
                self._end_turn()
            self._sync(sql)
        except Exception as error:  # unreachable, locked past the timeout, disk full...
            # A failed sync comes after a COMMIT: the batch may be stored after all, so its
            # callers' retries must be (and are) idempotent; a 503 never claims it was lost.
            log.warning("group commit failed: %s", error)
            self._reset()
            self._fail(batch, "the database could not store the request; retry shortly")
            return stop
        self.batches += 1
        self.units += len(batch)
        for job in batch:
            job.finish()
        return stop

    def _run_together(self, sql: SqlConn, batch: list[_Job]) -> list[_Job]:
        """Hand each runner its jobs' items; return the jobs left to run as their own units."""
        groups: dict[BatchRunner, list[_Job]] = {}
        solo: list[_Job] = []
        for job in batch:
            if job.runner is None:
                solo.append(job)
            else:
                groups.setdefault(job.runner, []).append(job)
        for runner, jobs in groups.items():
            if len(jobs) == 1:
                solo.extend(jobs)
                continue
            sql.execute("SAVEPOINT together")
            try:
                results = runner(sql, [job.item for job in jobs])
                if len(results) != len(jobs):
                    raise RuntimeError(f"{runner!r} answered {len(results)} of {len(jobs)} items")
            except Exception as error:  # its writes are undone; each item runs alone instead
                # A lost uniqueness race (another process wrote the same order) is expected;
                # anything else is a runner bug that the fallback would otherwise hide.
                expected = isinstance(error, self.integrity_errors)
                log.log(
                    logging.DEBUG if expected else logging.WARNING,
                    "batch runner %r failed, running its items one by one: %s",
                    runner,
                    error,
                    exc_info=not expected,
                )
                sql.execute("ROLLBACK TO SAVEPOINT together")
                sql.execute("RELEASE SAVEPOINT together")
                solo.extend(jobs)
                continue
            sql.execute("RELEASE SAVEPOINT together")
            for job, result in zip(jobs, results, strict=True):
                if result is SOLO:
                    solo.append(job)
                else:
                    job.result = result
                    self.together += 1
        return solo

    def _sync(self, sql: SqlConn) -> None:
        # The committer's SQLite connection commits without syncing (``connect_for``); the WAL
        # is synced here, after the turn is handed on: the next process writes its batch while
        # this one waits for the disk, and one sync covers every commit written before it.
        if sql.deferred_sync is None:
            return
        if self._sync_fd is None:
            self._sync_fd = os.open(sql.deferred_sync, os.O_RDWR)
        os.fdatasync(self._sync_fd)

    def _take_turn(self) -> None:
        # SQLite's own wait for its write lock sleeps and polls (naps of up to 100 ms); a
        # blocking file lock hands over the moment the other process commits.
        if self._lock_path is None:
            return
        if self._lock_file is None:
            self._lock_file = open(self._lock_path, "a+b")  # noqa: SIM115 - held for the thread's life
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)

    def _end_turn(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    @staticmethod
    def _run_unit(sql: SqlConn, job: _Job) -> None:
        sql.execute("SAVEPOINT unit")
        try:
            job.result = job.unit(sql)
        except BaseException as error:  # handed to the caller, which decides what it means
            job.error = error
            sql.execute("ROLLBACK TO SAVEPOINT unit")
        sql.execute("RELEASE SAVEPOINT unit")

    def _reset(self) -> None:
        # Closing discards the open transaction; the next batch reconnects.
        if self._sync_fd is not None:
            os.close(self._sync_fd)
            self._sync_fd = None
        if self._sql is not None:
            try:
                self._sql.connection.close()
            except Exception as error:
                log.warning("closing the committer's connection failed: %s", error)
            self._sql = None

    @staticmethod
    def _fail(batch: list[_Job], reason: str) -> None:
        for job in batch:
            job.result = None
            job.error = ServiceUnavailable(reason)
            job.finish()


def connect_for(settings: Settings) -> Callable[[], SqlConn]:
    """A function opening the committer's connection to the configured database."""
    if settings.is_sqlite:

        def connect_sqlite() -> SqlConn:
            # isolation_level=None: the committer issues BEGIN/COMMIT itself.
            connection = sqlite3.connect(
                str(settings.sqlite_path),
                isolation_level=None,
                check_same_thread=False,
                timeout=settings.sqlite_busy_timeout_ms / 1000,
            )
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            durable = settings.sqlite_synchronous.upper() in ("FULL", "EXTRA")
            if mode.lower() != "wal" or not durable:
                # Without a WAL (a filesystem that refuses it) SQLite syncs its own journal.
                connection.execute(f"PRAGMA synchronous={settings.sqlite_synchronous}")
                return SqlConn(connection, postgres=False)
            # In WAL mode a transaction is durable once the WAL holding its commit frame is
            # on disk. NORMAL writes the frames without syncing them; the committer syncs the
            # WAL itself before it answers (``_sync``), outside the write lock. (Checkpoints
            # sync the WAL before they copy it, so nothing committed is overwritten unsynced.)
            connection.execute("PRAGMA synchronous=NORMAL")
            wal = Path(f"{settings.sqlite_path}-wal")
            return SqlConn(connection, postgres=False, deferred_sync=wal)

        return connect_sqlite

    def connect_postgres() -> SqlConn:
        import psycopg2

        url = settings.database_url.replace("postgres://", "postgresql://", 1)
        connection = psycopg2.connect(url)
        connection.autocommit = True  # the committer issues BEGIN/COMMIT itself
        return SqlConn(connection, postgres=True)

    return connect_postgres


def committer_for(settings: Settings) -> GroupCommitter:
    """The configured database's group committer; on SQLite, committers of several processes
    take turns through a lock file beside the database."""
    lock = settings.data_dir / ".commit.lock" if settings.is_sqlite else None
    return GroupCommitter(connect_for(settings), lock_path=lock)
