"""The delivery worker: claim -> sign -> send -> record, in one readable loop.

One asyncio loop sends concurrently through a ``Transport``; every database call runs on one
dedicated thread (pydal connections belong to the thread that opened them), so the loop never
blocks on the database. Results are written in batches: whatever finished while the previous
batch was being written goes into the next one (group commit).

Wake-ups, so nothing waits on a fixed sleep: on PostgreSQL a ``LISTEN`` on the channel that
``publish`` notifies at commit; on SQLite a watch on the write-ahead log, which changes with every
commit of any process; in both a bounded poll and a timer for the next scheduled retry.

Signals: the first SIGTERM/SIGINT stops claiming, lets in-flight attempts finish and records
them; a second one exits at once (leases then expire and other workers take the deliveries).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from hookline import (
    __version__,
    discard,
    handlers,
    integrations,  # noqa: F401 - registers the built-in handlers
    queue,
    signing,
)
from hookline.config import Settings
from hookline.database import connect, driver_errors
from hookline.duefloor import DueFloor
from hookline.fanout import NOTIFY_CHANNEL
from hookline.netguard import NetworkPolicy
from hookline.queue import Claimed, SendResult
from hookline.retry import RetryPolicy
from hookline.secretbox import SecretBox, load_secret_box
from hookline.transport import AiohttpTransport, OutboundRequest, Transport

__all__ = ["Worker", "WorkerStats", "run_worker"]

log = logging.getLogger("hookline.worker")
T = TypeVar("T")

POLL_INTERVAL_S = 1.0
WAL_WATCH_INTERVAL_S = 0.005
WAL_RECHECK_S = (0.02, 0.1, 0.3)
#: While other processes' commits keep bringing nothing due (a receiver whose events have no
#: subscribers), the WAL watcher wakes the worker at most this often; the first commit that
#: brings something due brings it back to every change.
WAL_QUIET_MAX_S = 0.02
SECRETS_TTL_S = 5.0
UNKNOWN = object()  # a turn's next-due time when the turn did not ask for it
RECOVER_EVERY_S = 5.0
PURGE_EVERY_S = 86_400.0
MIN_BACKOFF_S = 0.1
#: First wait after a turn that found deliveries due but could claim none of them; it doubles up
#: to POLL_INTERVAL_S until a claim succeeds.
MIN_BLOCKED_WAIT_S = 0.05
MAX_BACKOFF_S = 5.0
FIRST_PURGE_AFTER_S = 60.0
MAX_BATCH = 500
INBOX_BATCH = 50
#: While deliveries keep the worker busy, how often it looks for due received webhooks (each
#: look is a query; an idle worker looks on every wake-up, through ``queue.next_due``).
INBOX_POLL_S = 0.05


@dataclass
class WorkerStats:
    """What a worker did."""

    claimed: int = 0
    recorded: int = 0
    succeeded: int = 0
    recovered: int = 0
    handled: int = 0


class Worker:
    """Delivers due deliveries until stopped (or, with ``burst``, until none is due)."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport | None = None,
        policy: RetryPolicy | None = None,
        concurrency: int | None = None,
        worker_id: str | None = None,
        burst: bool = False,
        max_deliveries: int | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.concurrency = concurrency or settings.worker_concurrency
        self.transport = transport or AiohttpTransport(
            NetworkPolicy.from_settings(settings.allow_networks, settings.https_only),
            limit=self.concurrency,
            limit_per_host=0,
            user_agent=f"hookline/{__version__}",
        )
        self.policy = policy or RetryPolicy()
        self.worker_id = worker_id or queue.new_worker_id()
        self.burst = burst
        self.max_deliveries = max_deliveries
        self.clock = clock
        self.rng = rng or random.Random()
        self.stats = WorkerStats()
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="hookline-db")
        self._db: Any = None
        self._box: SecretBox | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._inflight_rows: set[int] = set()  # leased and not yet recorded: the heartbeat set
        self._results: list[SendResult] = []
        self._secrets: dict[tuple[int, int], tuple[float, list[str]]] = {}
        self._signing_keys: dict[str, str] = {}
        self._disable_after = dt.timedelta(days=settings.disable_after_days)
        # PostgreSQL: where its claims read the due indexes from.
        self._due_floor, self._inbox_floor = DueFloor(), DueFloor()
        self._transient_errors: tuple[type[BaseException], ...] = ()
        self._backoff = MIN_BACKOFF_S
        self._blocked_wait = MIN_BLOCKED_WAIT_S
        self._wal_gap = 0.0  # the WAL watcher's least time between two wake-ups
        self._next_due: Any = UNKNOWN  # this turn's answer of queue.next_due, if it asked
        self._next_inbox_look = 0.0  # time.monotonic() from which a busy turn looks again
        self._discarder: asyncio.Task[None] | None = None
        self._discarder_stop = threading.Event()

    async def _on_db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_thread, lambda: fn(*args, **kwargs))

    def stop(self) -> None:
        """Stop claiming; in-flight attempts finish and are recorded."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> WorkerStats:
        """The loop: claim, send, record, sleep until woken; returns the stats when done."""
        self._db = await self._on_db(connect, self.settings)
        self._transient_errors = (
            *driver_errors(self._db, "OperationalError"),
            *driver_errors(self._db, "InterfaceError"),
        )
        self._box = load_secret_box(self.settings.secret_key or None, self.settings.data_dir)
        waker = asyncio.create_task(self._wakeups())
        purger = asyncio.create_task(self._purge_daily()) if not self.burst else None
        last_recover = last_heartbeat = last_vacuum = self.clock()
        last_recover -= RECOVER_EVERY_S
        try:
            while True:
                # Cleared before the turn's work, not before the sleep: a wake-up that arrives
                # while this turn claims (a commit it did not see yet) must not be lost.
                self._wake.clear()
                now = self.clock()
                try:
                    if now - last_recover >= RECOVER_EVERY_S:
                        last_recover = now
                        self.stats.recovered += await self._on_db(
                            queue.recover_expired,
                            self._db,
                            now=now,
                            policy=self.policy,
                            rng=self.rng,
                            disable_after=self._disable_after,
                        )
                        await self._on_db(
                            handlers.recover_messages, self._db, now=now, policy=self.policy
                        )
                        await self._start_discarding()
                    if (
                        not self.settings.is_sqlite
                        and now - last_vacuum >= queue.LEASE_VACUUM_EVERY_S
                    ):
                        last_vacuum = now
                        await self._on_db(queue.vacuum_leases, self._db)
                    if now - last_heartbeat >= self.settings.lease_seconds / 3:
                        last_heartbeat = now
                        await self._heartbeat(now)
                    flushed, claimed = await self._turn()
                except self._transient_errors as error:
                    # A lost deadlock, a busy SQLite, a dropped connection: unrecorded results
                    # stay queued, leases protect what was claimed; back off and go again, on
                    # a new connection (a closed one never comes back by itself).
                    if self._stopping and not self._inflight:
                        log.warning("stopping with the database unavailable: %s", error)
                        break  # unrecorded attempts' leases expire and they are sent again
                    log.warning("database error, retrying in %.1fs: %s", self._backoff, error)
                    await asyncio.sleep(self._backoff)
                    self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
                    await self._reconnect()
                    continue
                self._backoff = MIN_BACKOFF_S
                if claimed:
                    self._blocked_wait = MIN_BLOCKED_WAIT_S
                if self._done(claimed + flushed):
                    break
                if (claimed == 0 and flushed == 0) or len(self._inflight) >= self.concurrency:
                    await self._sleep()
            while self._inflight:
                await asyncio.wait(set(self._inflight))
            for _ in range(5):
                try:
                    await self._flush()
                    break
                except self._transient_errors as error:
                    log.warning("could not record the last results yet: %s", error)
                    await asyncio.sleep(1.0)
        finally:
            await self._stop_discarding()
            for task in (waker, purger):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await self.transport.close()
            if self._db is not None:
                await self._on_db(self._db.close)
            self._db_thread.shutdown(wait=True)
        return self.stats

    async def _reconnect(self) -> None:
        def reopen() -> Any:
            try:
                self._db.close()
            except Exception as error:  # it is being replaced: a broken close changes nothing
                log.debug("closing the old connection failed: %s", error)
            return connect(self.settings)

        try:
            self._db = await self._on_db(reopen)
        except Exception as error:  # still down (pydal gives up with a RuntimeError): next turn
            log.warning("could not reconnect yet: %s", error)

    async def _turn(self) -> tuple[int, int]:
        """Record, claim and run due handlers; returns (recorded, claimed)."""
        self._next_due = UNKNOWN
        idle = not self._results and not self._inflight
        if idle:
            # Woken with nothing to record: one query says whether anything is due, so a wake-up
            # for a commit that made no deliveries (most of a busy receiver's) stays cheap.
            self._next_due = await self._on_db(queue.next_due, self._db, include_inbox=True)
            if self._next_due is None or self._next_due > self.clock():
                # Woken for nothing: the next wake-up for a mere commit may wait a little.
                self._wal_gap = min(max(self._wal_gap * 2, WAL_WATCH_INTERVAL_S), WAL_QUIET_MAX_S)
                return 0, 0
        self._wal_gap = 0.0
        # Record first: until finished attempts are recorded their endpoints still count them
        # as in flight, and a claim would find no room.
        flushed, claimed = await self._flush_and_claim()
        now = time.monotonic()
        if not self._stopping and (idle or now >= self._next_inbox_look):
            handled = await self._handle_inbox()
            claimed += handled
            # Drain a backlog at once; otherwise look again after a pause, not on every turn.
            self._next_inbox_look = now if handled else now + INBOX_POLL_S
        return flushed, claimed

    def _room(self) -> int:
        room = self.concurrency - len(self._inflight)
        if self.max_deliveries is not None:
            room = min(room, self.max_deliveries - self.stats.claimed)
        return max(room, 0)

    def _done(self, activity: int) -> bool:
        # ``activity``: deliveries claimed or results recorded in this turn. A recorded retry
        # may be due at once, so a burst run only ends after a turn with neither.
        if self._stopping:
            return not self._inflight
        if self.max_deliveries is not None and self.stats.claimed >= self.max_deliveries:
            return not self._inflight and not self._results
        return self.burst and activity == 0 and not self._inflight and not self._results

    async def _flush_and_claim(self) -> tuple[int, int]:
        """Record finished attempts and claim the next deliveries, the last batch of results
        and the claim sharing one transaction; returns (recorded, claimed)."""
        recorded = 0
        while len(self._results) > MAX_BATCH:
            recorded += await self._record(self._results[:MAX_BATCH], claim=False)
        room = 0 if self._stopping else self._room()
        if not self._results and room <= 0:
            return recorded, 0
        claimed_before = self.stats.claimed
        recorded += await self._record(list(self._results), claim=room > 0)
        return recorded, self.stats.claimed - claimed_before

    async def _record(self, batch: list[SendResult], *, claim: bool) -> int:
        room = self._room() if claim else 0
        decisions, claimed = await self._on_db(
            queue.record_and_claim,
            self._db,
            batch,
            self.worker_id,
            now=self.clock(),
            capacity=min(room, MAX_BATCH),
            lease_s=float(self.settings.lease_seconds),
            policy=self.policy,
            rng=self.rng,
            disable_after=self._disable_after,
            floor=self._due_floor,
        )
        del self._results[: len(batch)]  # only once they are committed
        self.stats.recorded += len(batch)
        self.stats.succeeded += sum(d.action == "succeeded" for d in decisions)
        self.stats.claimed += len(claimed)
        for item in claimed:
            self._inflight_rows.add(item.delivery_row)
            task = asyncio.create_task(self._deliver(item))
            self._inflight.add(task)
            task.add_done_callback(self._finished)
        return len(batch)

    async def _handle_inbox(self) -> int:
        """Run the handlers of due received webhooks (on the database thread)."""
        now = self.clock()
        messages = await self._on_db(
            handlers.claim_messages,
            self._db,
            self.worker_id,
            now=now,
            capacity=INBOX_BATCH,
            lease_s=float(self.settings.lease_seconds),
            floor=self._inbox_floor,
            max_payload_bytes=self.settings.max_payload_bytes,
        )
        if messages:
            counts = await self._on_db(
                handlers.process_messages,
                self._db,
                messages,
                self.worker_id,
                now=now,
                policy=self.policy,
                rng=self.rng,
            )
            self.stats.handled += counts["processed"]
        return len(messages)

    async def _heartbeat(self, now: float) -> None:
        if self._inflight_rows:
            await self._on_db(
                queue.extend_leases,
                self._db,
                self.worker_id,
                sorted(self._inflight_rows),
                until=now + self.settings.lease_seconds,
            )

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())
        self._wake.set()

    async def _flush(self) -> int:
        recorded = 0
        while self._results:
            recorded += await self._record(self._results[:MAX_BATCH], claim=False)
        return recorded

    async def _sleep(self) -> None:
        timeout = POLL_INTERVAL_S
        if self._results:
            return
        if not self._inflight and not self._stopping:
            due = self._next_due
            if due is UNKNOWN:
                due = await self._on_db(queue.next_due, self._db, include_inbox=True)
            if due is not None:
                wait = due - self.clock()
                if wait <= 0:
                    # Due, and yet this turn claimed none of it: its endpoints are full, paced
                    # by their rate limit beyond the claim's horizon, or FIFO behind a delivery
                    # another worker holds. Trying again at once would spin (thousands of
                    # claims a second, each taking the write lock); wait longer each time,
                    # unless a wake-up (a commit, a finished attempt) comes first.
                    wait = self._blocked_wait
                    self._blocked_wait = min(self._blocked_wait * 2, POLL_INTERVAL_S)
                timeout = min(timeout, wait)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _active_secrets(self, item: Claimed) -> list[str]:
        # Keyed on the endpoint's secrets_version, which a rotation bumps: a new secret signs
        # from the next claim on; the TTL bounds how long an expired old one may still sign.
        key = (item.endpoint_row, item.secrets_version)
        cached = self._secrets.get(key)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        from hookline.endpoints import active_secrets

        secrets = await self._on_db(active_secrets, self._db, self._box, item.endpoint_row)
        self._secrets = {k: v for k, v in self._secrets.items() if v[0] > now}
        self._secrets[key] = (now + SECRETS_TTL_S, secrets)
        return secrets

    def _signing_key(self, encrypted: str | None) -> list[str]:
        if encrypted is None:
            return []
        if encrypted not in self._signing_keys:
            assert self._box is not None
            self._signing_keys[encrypted] = self._box.decrypt(encrypted)
        return [self._signing_keys[encrypted]]

    async def _deliver(self, item: Claimed) -> None:
        delay = item.not_before - self.clock()
        if delay > 0:
            await asyncio.sleep(delay)
        started = self.clock()
        try:
            secrets = await self._active_secrets(item)
            headers = {
                **item.headers,
                **signing.outbound_headers(
                    item.event_id,
                    int(started),
                    item.payload,
                    secrets=secrets,
                    signing_keys=self._signing_key(item.signing_key_enc),
                ),
                "Content-Type": "application/json",
            }
            result = await self.transport.send(
                OutboundRequest(
                    item.url,
                    headers,
                    item.payload,
                    connect_timeout=min(item.connect_timeout_s, item.timeout_s),
                    total_timeout=item.timeout_s,
                )
            )
            status, error = result.status_code, result.error
            if status is not None and not 100 <= status <= 599:
                status, error = None, f"invalid HTTP status {status}"
            outcome = _result(
                item,
                started,
                duration_ms=result.duration_ms,
                status_code=status,
                response_headers=result.headers,
                response_body=result.body,
                error=error,
            )
        except Exception as error:  # a signing or decryption failure is an attempt that failed
            log.exception("could not send delivery %s", item.delivery_id)
            outcome = _result(
                item,
                started,
                duration_ms=(self.clock() - started) * 1000,
                status_code=None,
                error=f"not sent: {type(error).__name__}: {error}"[:500],
            )
        self._results.append(outcome)
        self._inflight_rows.discard(item.delivery_row)
        self._wake.set()

    async def _start_discarding(self) -> None:
        """Start discarding what disabled or deleted endpoints left behind, if any and if not
        already at it."""
        if self._discarder is not None and not self._discarder.done():
            return
        if await self._on_db(discard.left_behind, self._db):
            self._discarder = asyncio.create_task(asyncio.to_thread(self._discard_left_behind))

    async def _stop_discarding(self) -> None:
        # A burst run finishes the work it found; otherwise the current batch ends the discard.
        if self._discarder is None:
            return
        if not self.burst:
            self._discarder_stop.set()
        with contextlib.suppress(Exception):
            await self._discarder

    def _discard_left_behind(self) -> None:
        # Its own thread and connection: batches take SQLite's write lock in turn with the
        # claims and results of the worker's own connection, never holding them up for long.
        try:
            db = connect(self.settings)
            try:
                n = discard.discard_left_behind(db, stop=self._discarder_stop.is_set)
            finally:
                db.close()
            log.info("discarded %d deliveries of disabled or deleted endpoints", n)
        except Exception:
            log.exception("discarding the deliveries of disabled endpoints failed; trying later")

    async def _purge_daily(self) -> None:
        # Its own thread and connection: a long purge must not hold up claims and results.
        await asyncio.sleep(FIRST_PURGE_AFTER_S)
        while True:
            try:
                counts = await asyncio.to_thread(self._purge_once)
                log.info("retention purge: %s", counts)
            except Exception:
                log.exception("retention purge failed; trying again tomorrow")
            await asyncio.sleep(PURGE_EVERY_S)

    def _purge_once(self) -> dict[str, int]:
        from hookline.operations import purge

        db = connect(self.settings)
        try:
            return purge(db, dt.timedelta(days=self.settings.retention_days))
        finally:
            db.close()

    async def _wakeups(self) -> None:
        if self.settings.is_sqlite:
            await self._watch_wal()
        else:
            await self._listen()

    async def _watch_wal(self) -> None:
        wal = f"{self.settings.sqlite_path}-wal"
        last = None
        changed = False  # a change not yet woken for
        woke_at = -WAL_QUIET_MAX_S
        rechecks: list[float] = []  # when to look again, counted from the latest change
        while True:
            try:
                info = os.stat(wal)
                state = (info.st_size, info.st_mtime_ns)
            except FileNotFoundError:
                state = None
            now = time.monotonic()
            if state != last:
                last = state
                changed = True
                # A writer appends its frames (and fsyncs them) before its commit becomes
                # visible to readers: a claim woken by the append alone can miss it, so look
                # again a little later. A busy receiver changes the WAL every few
                # milliseconds; the rechecks follow the latest change instead of piling up.
                rechecks = [now + delay for delay in WAL_RECHECK_S]
            # Under a busy receiver whose commits bring nothing due, every wake-up is a query
            # that finds nothing: ~110 a second cost the worker ~12 % of a core (measured on
            # two cores under the ingest bench). ``_wal_gap`` spaces them out until one finds
            # something.
            if changed and now - woke_at >= self._wal_gap:
                changed, woke_at = False, now
                self._wake.set()
            elif rechecks and now >= rechecks[0]:
                del rechecks[0]
                woke_at = now
                self._wake.set()
            await asyncio.sleep(max(WAL_WATCH_INTERVAL_S, self._wal_gap))

    async def _listen(self) -> None:
        import psycopg2

        dsn = self.settings.database_url.replace("postgres://", "postgresql://", 1)
        while True:
            try:
                conn = psycopg2.connect(dsn)
            except psycopg2.Error as error:
                log.warning("LISTEN connection failed (%s); polling instead", error)
                await asyncio.sleep(POLL_INTERVAL_S * 5)
                continue
            conn.autocommit = True
            conn.cursor().execute(f"LISTEN {NOTIFY_CHANNEL}")
            loop = asyncio.get_running_loop()
            broken = asyncio.Event()

            def readable(conn: Any = conn, broken: asyncio.Event = broken) -> None:
                try:
                    conn.poll()
                except psycopg2.Error:
                    broken.set()
                    return
                if conn.notifies:
                    conn.notifies.clear()
                    self._wake.set()

            fd = conn.fileno()  # kept: a connection the server dropped no longer tells it
            loop.add_reader(fd, readable)
            try:
                await broken.wait()
            finally:
                loop.remove_reader(fd)
                conn.close()
            log.warning("LISTEN connection lost; reconnecting")


def _result(item: Claimed, started: float, **outcome: Any) -> SendResult:
    return SendResult(
        delivery_row=item.delivery_row,
        endpoint_row=item.endpoint_row,
        endpoint_id=item.endpoint_id,
        attempt=item.attempt,
        lease_owner=item.lease_owner,
        started_at=started,
        retry_schedule=item.retry_schedule,
        **outcome,
    )


def run_worker(
    settings: Settings,
    *,
    burst: bool = False,
    max_deliveries: int | None = None,
    concurrency: int | None = None,
) -> WorkerStats:
    """Run a worker in this process until it stops; install the SIGTERM/SIGINT handlers."""

    async def main() -> WorkerStats:
        worker = Worker(
            settings, burst=burst, max_deliveries=max_deliveries, concurrency=concurrency
        )
        loop = asyncio.get_running_loop()
        signals_seen = 0

        def on_signal() -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                log.warning("stopping: finishing in-flight deliveries (signal again to exit now)")
                worker.stop()
            else:
                os._exit(1)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        return await worker.run()

    return asyncio.run(main())
