"""The group committer on both backends: units share a transaction, each caller hears back only
after the commit, a failing unit is rolled back alone, and a failed commit fails the batch."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from hookline import groupcommit
from hookline.errors import ServiceUnavailable
from hookline.groupcommit import SOLO, GroupCommitter, connect_for
from hookline.sqlconn import SqlConn


def _insert_event(name: str):
    def unit(sql: SqlConn) -> int:
        return sql.insert(
            "INSERT INTO hookline_event (event_id, type, payload, created_at)"
            " VALUES (?, 'ping', '{}', '2026-01-01 00:00:00')",
            (name,),
        )

    return unit


def _committed_names(other_db) -> set[str]:
    other_db.commit()  # a fresh snapshot: only what is committed
    return {row[0] for row in other_db.executesql("SELECT event_id FROM hookline_event")}


@pytest.fixture
def committer(settings):
    committer = GroupCommitter(connect_for(settings))
    yield committer
    committer.close()


def test_a_result_comes_back_only_once_it_is_committed(committer, other_db):
    row_id = committer.run(_insert_event("evt_a"))

    assert isinstance(row_id, int)
    assert _committed_names(other_db) == {"evt_a"}


def test_a_failing_unit_is_rolled_back_alone_and_its_error_reaches_its_caller(committer, other_db):
    started, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def slow_first(sql: SqlConn) -> str:
        # Holds the committer so the next three units queue up and run in one batch.
        started.set()
        release.wait(5)
        _insert_event("evt_first")(sql)
        return "first"

    def failing(sql: SqlConn) -> None:
        _insert_event("evt_failing")(sql)
        raise ValueError("refused by the unit")

    def call(name, unit):
        try:
            results[name] = committer.run(unit)
        except BaseException as error:
            results[name] = error

    threads = [threading.Thread(target=call, args=("first", slow_first))]
    threads[0].start()
    assert started.wait(5)
    for name, unit in (
        ("failing", failing),
        ("duplicate", _insert_event("evt_first")),  # violates the unique event_id
        ("last", _insert_event("evt_last")),
    ):
        thread = threading.Thread(target=call, args=(name, unit))
        thread.start()
        threads.append(thread)
        while committer._queue.qsize() < len(threads) - 1:  # keep the queue in this order
            threading.Event().wait(0.002)
    while committer._queue.qsize() < 3:
        threading.Event().wait(0.005)
    release.set()
    for thread in threads:
        thread.join(10)

    assert results["first"] == "first"
    assert isinstance(results["failing"], ValueError)
    assert isinstance(results["duplicate"], committer.integrity_errors)
    assert isinstance(results["last"], int)
    assert _committed_names(other_db) == {"evt_first", "evt_last"}
    assert committer.units == 4
    assert committer.batches == 2  # the first alone, then the three that queued behind it


class _CommitFails(SqlConn):
    def execute(self, statement, params=()):
        if statement == "COMMIT":
            raise OSError("disk full (simulated)")
        return super().execute(statement, params)


def test_a_failed_commit_answers_503_to_every_caller_and_writes_nothing(settings, other_db):
    connect = connect_for(settings)
    opened = []

    def failing_connect() -> SqlConn:
        sql = connect()
        opened.append(sql)
        return _CommitFails(sql.connection, postgres=sql.postgres)

    committer = GroupCommitter(failing_connect)
    try:
        with pytest.raises(ServiceUnavailable):
            committer.run(_insert_event("evt_lost"))
        with pytest.raises(ServiceUnavailable):
            committer.run(_insert_event("evt_lost_too"))
    finally:
        committer.close()

    assert _committed_names(other_db) == set()
    assert len(opened) == 2  # the broken connection was dropped and a new one opened


def test_many_threads_share_few_commits_and_every_row_is_kept(committer, other_db):
    threads, per_thread = 16, 25
    errors: list[BaseException] = []

    def send(n: int) -> None:
        try:
            for i in range(per_thread):
                committer.run(_insert_event(f"evt_{n}_{i}"))
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)

    assert errors == []
    assert len(_committed_names(other_db)) == threads * per_thread
    assert committer.units == threads * per_thread
    assert committer.batches < committer.units  # requests that arrived together shared commits


def test_memo_is_forgotten_at_each_batch(committer, other_db):
    reads = []

    def unit(sql: SqlConn) -> int:
        return sql.memo("count", lambda: reads.append(1) or len(reads))

    assert committer.run(unit) == 1
    assert committer.run(unit) == 2  # a new batch reads again


def _hold_then_queue(committer, calls):
    """Run ``calls`` (name -> zero-argument function calling the committer) so that all of them
    land in one batch: a first unit holds the committer until they are all queued. Returns the
    results (or exceptions) by name."""
    started, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def hold(sql: SqlConn) -> str:
        started.set()
        release.wait(5)
        return "held"

    def call(name, fn):
        try:
            results[name] = fn()
        except BaseException as error:
            results[name] = error

    threads = [threading.Thread(target=call, args=("hold", lambda: committer.run(hold)))]
    threads[0].start()
    assert started.wait(5)
    for name, fn in calls.items():
        thread = threading.Thread(target=call, args=(name, fn))
        thread.start()
        threads.append(thread)
    while committer._queue.qsize() < len(calls):
        threading.Event().wait(0.005)
    release.set()
    for thread in threads:
        thread.join(10)
    return results


def _event_runner(log):
    """A batch runner inserting the events named by its items with one multi-row insert; an
    item starting with ``solo`` is left to its own unit."""

    def runner(sql: SqlConn, items):
        log.append(list(items))
        rows = [(name, "ping", "{}", "2026-01-01 00:00:00") for name in items if name[:4] != "solo"]
        sql.insert_rows("INSERT INTO hookline_event (event_id, type, payload, created_at)", rows)
        return [SOLO if name[:4] == "solo" else f"together:{name}" for name in items]

    return runner


def test_items_of_one_runner_are_written_together_and_solo_ones_by_their_own_unit(
    committer, other_db
):
    log: list[list[str]] = []
    runner = _event_runner(log)

    def via_runner(name):
        return lambda: committer.run(_insert_event(name), together=(runner, name))

    results = _hold_then_queue(
        committer,
        {
            "a": via_runner("evt_a"),
            "solo": via_runner("solo_b"),
            "c": via_runner("evt_c"),
            "plain": lambda: committer.run(_insert_event("evt_plain")),
        },
    )

    assert results["a"] == "together:evt_a"
    assert results["c"] == "together:evt_c"
    assert isinstance(results["solo"], int)  # the unit's answer: the row id it inserted
    assert isinstance(results["plain"], int)
    assert sorted(log[0]) == ["evt_a", "evt_c", "solo_b"]  # one call for the whole batch
    assert _committed_names(other_db) == {"evt_a", "solo_b", "evt_c", "evt_plain"}
    assert committer.together == 2


def test_a_failing_runner_is_rolled_back_and_its_items_run_as_their_own_units(
    committer, other_db, caplog
):
    def runner(sql: SqlConn, items):
        sql.insert_rows(
            "INSERT INTO hookline_event (event_id, type, payload, created_at)",
            [(name, "ping", "{}", "2026-01-01 00:00:00") for name in items],
        )
        raise ValueError("the runner gives up after writing")

    def via_runner(name):
        return lambda: committer.run(_insert_event(name), together=(runner, name))

    results = _hold_then_queue(committer, {n: via_runner(f"evt_{n}") for n in ("x", "y", "z")})

    assert all(isinstance(results[n], int) for n in ("x", "y", "z"))  # each unit's own answer
    assert _committed_names(other_db) == {"evt_x", "evt_y", "evt_z"}  # once each: no leftovers
    assert committer.together == 0
    assert "the runner gives up after writing" in caplog.text  # a runner bug is not hidden


def test_a_lone_item_runs_as_its_unit_without_its_runner(committer, other_db):
    log: list[list[str]] = []
    row_id = committer.run(_insert_event("evt_alone"), together=(_event_runner(log), "evt_alone"))

    assert isinstance(row_id, int)
    assert log == []
    assert _committed_names(other_db) == {"evt_alone"}


@pytest.mark.parametrize("level", ["FULL", "EXTRA"])
def test_sqlite_commits_are_synced_before_the_answer_outside_the_write_lock(
    tmp_path, monkeypatch, level
):
    from hookline.config import Settings
    from hookline.database import migrate

    settings = Settings.from_env(
        {"HOOKLINE_DATA_DIR": str(tmp_path), "HOOKLINE_SQLITE_SYNCHRONOUS": level}
    )
    migrate(settings)
    wal = Path(f"{settings.sqlite_path}-wal")
    lock_path = tmp_path / ".commit.lock"
    synced: list[dict[str, object]] = []
    real_fdatasync = groupcommit.os.fdatasync

    def fdatasync(fd: int) -> None:
        # While the committer syncs, another writer must be able to take both locks.
        other = sqlite3.connect(str(settings.sqlite_path), timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            sqlite_free = True
        except sqlite3.OperationalError:
            sqlite_free = False
        finally:
            other.close()
        with open(lock_path, "a+b") as turn:
            try:
                fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(turn, fcntl.LOCK_UN)
                turn_free = True
            except BlockingIOError:
                turn_free = False
        synced.append(
            {"inode": os.fstat(fd).st_ino, "sqlite_free": sqlite_free, "turn_free": turn_free}
        )
        real_fdatasync(fd)

    monkeypatch.setattr(groupcommit.os, "fdatasync", fdatasync)
    committer = GroupCommitter(connect_for(settings), lock_path=lock_path)
    try:
        committer.run(_insert_event("evt_synced"))
        assert len(synced) == 1  # the first answer came after its sync
        level_seen = committer.run(lambda sql: sql.one("PRAGMA synchronous")[0])
        wal_inode = wal.stat().st_ino  # before the close, which checkpoints and removes it
    finally:
        committer.close()

    assert level_seen == 1  # NORMAL: the COMMIT itself does not wait for the disk...
    assert synced[0] == {"inode": wal_inode, "sqlite_free": True, "turn_free": True}
    assert len(synced) == 2  # ...the WAL is synced once per batch, after the turn


def test_a_failed_sync_answers_503(tmp_path, monkeypatch):
    from hookline.config import Settings
    from hookline.database import migrate

    settings = Settings.from_env({"HOOKLINE_DATA_DIR": str(tmp_path)})
    migrate(settings)

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error (simulated)")

    monkeypatch.setattr(groupcommit.os, "fdatasync", broken)
    committer = GroupCommitter(connect_for(settings))
    try:
        with pytest.raises(ServiceUnavailable):
            committer.run(_insert_event("evt_unsure"))
    finally:
        committer.close()


def test_without_a_wal_the_committer_leaves_syncing_to_sqlite(tmp_path, monkeypatch):
    from hookline.config import Settings

    settings = Settings.from_env({"HOOKLINE_DATA_DIR": str(tmp_path)})
    real_connect = sqlite3.connect

    class RefusesWal:
        """A connection whose filesystem keeps the rollback journal (PRAGMA answers 'delete')."""

        def __init__(self, *args, **kwargs):
            self._connection = real_connect(*args, **kwargs)

        def execute(self, statement, *params):
            if statement == "PRAGMA journal_mode=WAL":
                return self._connection.execute("PRAGMA journal_mode")
            return self._connection.execute(statement, *params)

        def __getattr__(self, name):
            return getattr(self._connection, name)

    monkeypatch.setattr(groupcommit.sqlite3, "connect", RefusesWal)
    sql = connect_for(settings)()
    try:
        assert sql.deferred_sync is None
        assert sql.connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        sql.connection.close()
