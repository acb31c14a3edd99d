"""The group committer on both backends: units share a transaction, each caller hears back only
after the commit, a failing unit is rolled back alone, and a failed commit fails the batch."""

from __future__ import annotations

import threading

import pytest

from hookline.errors import ServiceUnavailable
from hookline.groupcommit import GroupCommitter, connect_for
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
