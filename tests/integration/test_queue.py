"""The delivery queue on SQLite and PostgreSQL: fan-out, leased claims, outcomes, recovery.

DESIGN §5 (the delivery state machine) and §3.2 (at-least-once: a lease that runs out puts the
delivery back). Every test drives ``hookline.queue`` through real databases; times are passed in
explicitly, so nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import threading
import time
from pathlib import Path

import pytest

from delivery_rows import as_seen, seen_deliveries
from hookline import discard, duefloor, endpoints, outbox, queue, secretbox
from hookline.database import connect
from hookline.endpoint_rules import parse_endpoint
from hookline.fanout import is_postgres
from hookline.netguard import NetworkPolicy
from hookline.queue import Claimed, SendResult
from hookline.retry import RetryPolicy
from hookline.timeutil import to_epoch, utcnow

NETWORK = NetworkPolicy.from_settings("127.0.0.0/8")
DISABLE_AFTER = dt.timedelta(days=5)
POLICY = RetryPolicy(schedule=(0, 100, 1000), jitter=0.2)


@pytest.fixture
def box() -> secretbox.SecretBox:
    return secretbox.SecretBox([secretbox.generate_key()])


@pytest.fixture
def t0() -> dt.datetime:
    # Whole seconds: pydal stores datetimes to the second.
    return utcnow().replace(microsecond=0)


def make_endpoint(db, box, **fields) -> tuple[str, int]:
    """Create an endpoint; return its public id and row id."""
    data = {"url": "http://127.0.0.1:9/hook", **fields}
    view, _ = endpoints.create_endpoint(db, box, parse_endpoint(data, NETWORK, creating=True))
    return view["endpoint_id"], endpoints.find_endpoint(db, view["endpoint_id"]).id


def publish(db, n: int = 1, *, now: dt.datetime, event_type: str = "ping") -> list[str]:
    return [outbox.publish(db, event_type, {"n": i}, now=now) for i in range(n)]


def deliveries(db, **where) -> list:
    return seen_deliveries(db, **where)  # a fresh snapshot: see what the queue committed


def delivery(db, row_id: int):
    db.commit()
    return as_seen(db, [db.hookline_delivery[row_id]])[0]


def attempts(db, row_id: int) -> list:
    db.commit()
    a = db.hookline_attempt
    return list(db(a.delivery == row_id).select(orderby=a.id))


def claim(db, at: float, *, worker: str = "w1", capacity: int = 100, lease_s: float = 60.0):
    return queue.claim(db, worker, now=at, capacity=capacity, lease_s=lease_s)


def result(
    item: Claimed,
    status: int | None,
    *,
    started: float,
    error: str | None = None,
    headers: dict[str, str] | None = None,
    lease_owner: str | None = None,
) -> SendResult:
    return SendResult(
        delivery_row=item.delivery_row,
        endpoint_row=item.endpoint_row,
        endpoint_id=item.endpoint_id,
        attempt=item.attempt,
        lease_owner=item.lease_owner if lease_owner is None else lease_owner,
        started_at=started,
        duration_ms=12.5,
        status_code=status,
        response_headers=headers or {},
        response_body=b"answer" if status is not None else b"",
        error=error,
        retry_schedule=item.retry_schedule,
    )


def record(db, results, at: float, policy: RetryPolicy = POLICY):
    return queue.record_results(
        db, results, now=at, policy=policy, rng=random.Random(7), disable_after=DISABLE_AFTER
    )


def endpoint_row(db, endpoint_id: str):
    db.commit()
    table = db.hookline_endpoint
    return db(table.endpoint_id == endpoint_id).select().first()


# --- fan-out ---------------------------------------------------------------------------------


def test_fan_out_one_pending_delivery_per_enabled_subscribed_endpoint(db, box, t0):
    _, all_row = make_endpoint(db, box)
    _, orders_row = make_endpoint(db, box, event_types=["order.created"])
    _, ping_row = make_endpoint(db, box, event_types=["ping", "order.paid"])
    disabled, disabled_row = make_endpoint(db, box)
    deleted, deleted_row = make_endpoint(db, box)
    endpoints.set_enabled(db, disabled, False, reason="test", now=t0)
    endpoints.delete_endpoint(db, deleted, now=t0)
    db.commit()
    db(db.hookline_delivery).delete()  # the endpoint.disabled event's own deliveries
    db.commit()

    [ping] = publish(db, now=t0)
    [created] = publish(db, now=t0, event_type="order.created")
    db.commit()

    def targets(event_id: str) -> list[int]:
        event = db(db.hookline_event.event_id == event_id).select().first()
        return sorted(r.endpoint for r in deliveries(db, event=event.id))

    assert targets(ping) == sorted([all_row, ping_row])
    assert targets(created) == sorted([all_row, orders_row])
    rows = deliveries(db)
    assert len(rows) == 4
    assert {r.status for r in rows} == {"pending"}
    assert {r.attempts for r in rows} == {0}
    assert {r.next_attempt_at for r in rows} == {to_epoch(t0)}
    assert len({r.delivery_id for r in rows}) == 4
    assert disabled_row not in {r.endpoint for r in rows}
    assert deleted_row not in {r.endpoint for r in rows}


def test_fan_out_rolls_back_with_the_transaction(db, other_db, box, t0):
    make_endpoint(db, box)
    make_endpoint(db, box)
    db.commit()
    publish(db, 3, now=t0)
    assert deliveries(other_db) == []  # not visible before commit
    db.rollback()
    assert deliveries(db) == []
    assert db(db.hookline_event).count() == 0
    publish(db, 2, now=t0)
    db.commit()
    assert len(deliveries(other_db, status="pending")) == 4


def test_no_endpoint_no_delivery(db, t0):
    publish(db, now=t0)
    db.commit()
    assert db(db.hookline_event).count() == 1
    assert deliveries(db) == []


# --- claim -----------------------------------------------------------------------------------


def test_claim_leases_due_deliveries_only(db, box, t0):
    ep, ep_row = make_endpoint(db, box, headers={"X-Tenant": "acme"})
    publish(db, 2, now=t0)
    later = t0 + dt.timedelta(minutes=10)
    publish(db, 1, now=later)
    db.commit()
    now = to_epoch(t0) + 1

    assert claim(db, to_epoch(t0) - 1) == []  # nothing due yet
    claimed = claim(db, now, worker="worker-a", lease_s=30)
    assert len(claimed) == 2
    for item in claimed:
        assert item.attempt == 1
        assert item.lease_owner == "worker-a"
        assert item.endpoint_id == ep and item.endpoint_row == ep_row
        assert item.headers == {"X-Tenant": "acme"}
        assert item.url == "http://127.0.0.1:9/hook"
        assert json.loads(item.payload)["type"] == "ping"
        assert item.not_before == now
    rows = {r.id: r for r in deliveries(db)}
    for item in claimed:
        row = rows[item.delivery_row]
        assert row.status == "sending"
        assert row.attempts == 1
        assert row.lease_owner == "worker-a"
        assert row.lease_until == pytest.approx(now + 30)
        assert row.delivery_id == item.delivery_id
    [future] = [r for r in rows.values() if r.id not in {c.delivery_row for c in claimed}]
    assert future.status == "pending" and future.attempts == 0
    assert claim(db, now) == []  # the leased ones are not handed out twice
    [last] = claim(db, to_epoch(later))
    assert last.delivery_row == future.id


def test_claim_skips_disabled_endpoints(db, box, t0):
    ep, _ = make_endpoint(db, box)
    publish(db, 2, now=t0)
    db.commit()
    db(db.hookline_endpoint.endpoint_id == ep).update(enabled=0)  # without discarding
    db.commit()
    assert claim(db, to_epoch(t0) + 1) == []


def test_claim_respects_capacity_and_time_order(db, box, t0):
    make_endpoint(db, box)
    for minute in (3, 1, 2):
        publish(db, 1, now=t0 + dt.timedelta(minutes=minute))
    db.commit()
    at = to_epoch(t0) + 3600
    first = claim(db, at, capacity=2)
    rows = {r.id: r for r in deliveries(db)}
    assert [rows[c.delivery_row].next_attempt_at for c in first] == sorted(
        rows[c.delivery_row].next_attempt_at for c in first
    )
    assert {rows[c.delivery_row].next_attempt_at for c in first} == {
        to_epoch(t0 + dt.timedelta(minutes=1)),
        to_epoch(t0 + dt.timedelta(minutes=2)),
    }
    assert len(claim(db, at, capacity=2)) == 1
    assert claim(db, at, capacity=0) == []


def _claim_all(settings, worker: str, start: threading.Barrier, at: float, out: dict) -> None:
    db = connect(settings)
    try:
        got: list[int] = []
        start.wait(timeout=30)
        for _ in range(1000):
            batch = queue.claim(db, worker, now=at, capacity=5, lease_s=60)
            if not batch:
                break
            got.extend(item.delivery_row for item in batch)
            # A real worker sends between claims; without this pause one thread can take every
            # SQLite write lock in a row (its busy handler favours whoever holds the GIL).
            time.sleep(0.002)
        out[worker] = got
    except BaseException as error:  # reported by the main thread
        out[worker] = error
    finally:
        db.close()


def test_concurrent_claimers_never_share_a_delivery(settings, db, box, t0):
    make_endpoint(db, box, max_in_flight=1000)
    make_endpoint(db, box, max_in_flight=1000)
    publish(db, 100, now=t0)
    db.commit()
    expected = {r.id for r in deliveries(db)}
    assert len(expected) == 200

    workers = [f"w{n}" for n in range(4)]
    start = threading.Barrier(len(workers))
    out: dict[str, object] = {}
    at = to_epoch(t0) + 1
    threads = [
        threading.Thread(target=_claim_all, args=(settings, w, start, at, out)) for w in workers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    for worker in workers:
        assert not isinstance(out[worker], BaseException), out[worker]

    claimed = [row for worker in workers for row in out[worker]]  # type: ignore[union-attr]
    assert len(claimed) == len(set(claimed))  # disjoint
    assert set(claimed) == expected  # complete
    assert sum(1 for worker in workers if out[worker]) >= 2  # they really competed
    rows = deliveries(db)
    owners = {r.id: r.lease_owner for r in rows}
    for worker in workers:
        assert all(owners[row] == worker for row in out[worker])  # type: ignore[union-attr]
    assert {r.status for r in rows} == {"sending"}
    assert {r.attempts for r in rows} == {1}


def test_fifo_endpoint_sends_only_its_oldest_unfinished_delivery(db, box, t0):
    make_endpoint(db, box, fifo=True, retry_schedule="0,100s,100s")
    make_endpoint(db, box, event_types=["order.paid"])  # not FIFO, not subscribed
    publish(db, 4, now=t0)
    db.commit()
    rows = [r.id for r in deliveries(db)]
    at = to_epoch(t0) + 1

    [first] = claim(db, at)
    assert first.delivery_row == rows[0]
    assert claim(db, at) == []  # the first is still being sent
    record(db, [result(first, 200, started=at)], at)

    [second] = claim(db, at)
    assert second.delivery_row == rows[1]
    record(db, [result(second, 500, started=at)], at)  # a retry: still unfinished
    assert delivery(db, rows[1]).status == "pending"
    assert claim(db, at) == []  # the third waits behind the second, not yet due again
    retry_at = delivery(db, rows[1]).next_attempt_at
    [second_again] = claim(db, retry_at)
    assert second_again.delivery_row == rows[1] and second_again.attempt == 2
    record(db, [result(second_again, 500, started=retry_at)], retry_at)
    third_at = delivery(db, rows[1]).next_attempt_at
    [second_last] = claim(db, third_at)
    assert second_last.attempt == 3
    record(db, [result(second_last, 500, started=third_at)], third_at)
    assert delivery(db, rows[1]).status == "failed"

    [third] = claim(db, third_at)  # a failed one no longer blocks
    assert third.delivery_row == rows[2]


def _bulk_deliveries(
    db, endpoint_row: int, n: int, t0: dt.datetime, *, due: float, finished: bool, tag: str
) -> None:
    """``n`` deliveries of ``endpoint_row`` due at ``due``, finished (succeeded) or pending, by
    bulk SQL: a long history or backlog, quickly."""
    event_id = outbox.publish(db, "order.created", {"bulk": tag}, now=t0)
    event = db(db.hookline_event.event_id == event_id).select().first().id
    db(db.hookline_delivery.event == event).delete()
    stamp = t0.strftime("%Y-%m-%d %H:%M:%S")
    status, finished_at = ("succeeded", stamp) if finished else ("pending", None)
    series = (
        "generate_series(1, %s) AS g(x)"
        if is_postgres(db)
        else "(WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < %s)"
        " SELECT x FROM g)"
    )
    statement = (
        "INSERT INTO hookline_delivery (delivery_id, event, endpoint, status, attempts,"
        " next_attempt_at, created_at, updated_at, finished_at)"
        f" SELECT 'dlv_{tag}' || x, %s, %s, %s, 0, %s, %s, %s, %s FROM " + series
    )
    if not is_postgres(db):
        statement = statement.replace("%s", "?")
    db.executesql(
        statement, placeholders=[event, endpoint_row, status, due, stamp, stamp, finished_at, n]
    )
    db.commit()


def _add_history(db, endpoint_row: int, n: int, t0: dt.datetime) -> None:
    """``n`` finished deliveries of ``endpoint_row``, with ids below everything published later."""
    _bulk_deliveries(db, endpoint_row, n, t0, due=to_epoch(t0), finished=True, tag="history")


def test_fifo_endpoints_are_claimed_by_their_head_whatever_their_history(db, box, t0):
    """A FIFO endpoint's candidate is its head, read through the endpoint's index: neither its
    backlog nor another endpoint's long finished history is read per claim. With the rule tested
    per due delivery, SQLite chose the primary key once the history was analyzed, and a claim
    behind 300,000 finished deliveries took 89 s."""
    _, other = make_endpoint(db, box, event_types=["order.created"])
    _add_history(db, other, 3000, t0)
    make_endpoint(db, box, fifo=True, event_types=["ping"])
    make_endpoint(db, box, fifo=True, event_types=["ping"])
    make_endpoint(db, box, event_types=["ping"])  # not FIFO
    publish(db, 5, now=t0)
    db.commit()
    db.executesql("ANALYZE")
    db.commit()
    pending = deliveries(db, status="pending")
    by_endpoint: dict[int, list[int]] = {}
    for row in pending:
        by_endpoint.setdefault(row.endpoint, []).append(row.id)
    at = to_epoch(t0) + 1

    claimed = claim(db, at, capacity=20)

    got: dict[int, list[int]] = {}
    for item in claimed:
        got.setdefault(item.endpoint_row, []).append(item.delivery_row)
    fifo_rows = [rows for endpoint, rows in sorted(by_endpoint.items())][:2]
    plain_rows = [rows for endpoint, rows in sorted(by_endpoint.items())][2]
    assert [got[endpoint] for endpoint in sorted(got)] == [
        [min(fifo_rows[0])],
        [min(fifo_rows[1])],
        sorted(plain_rows),
    ]
    assert claim(db, at, capacity=20) == []  # each FIFO head is in flight
    if is_postgres(db):
        plan = _claim_plan_pg(db, at, window=40, capacity=20)
        heads = plan.split("CTE heads", 1)[1].split("\n  CTE ", 1)[0]  # up to the next CTE
        assert "Index Scan using hookline_delivery_by_endpoint_idx on hookline_delivery p" in heads
        assert "AND (finished_at IS NULL))" in heads, plan  # the unfinished range, first entry
    else:
        plan = _plan(db, queue._FIFO_HEADS.format(ids="%s, %s"), [2, 3, at])
        assert "hookline_delivery_by_endpoint_idx" in plan, plan


def test_max_in_flight_caps_concurrent_sending_across_claims(db, box, t0):
    make_endpoint(db, box, max_in_flight=2)
    publish(db, 5, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    first = claim(db, at, worker="a")
    assert len(first) == 2
    assert claim(db, at, worker="b") == []
    record(db, [result(first[0], 200, started=at)], at)
    second = claim(db, at, worker="b")
    assert len(second) == 1
    assert claim(db, at, worker="c") == []
    assert len(deliveries(db, status="sending")) == 2


def test_rate_limit_spreads_not_before_and_stores_next_send(db, box, t0):
    ep, _ = make_endpoint(db, box, rate_limit=2)
    publish(db, 6, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    first = claim(db, at, lease_s=30)
    assert [c.not_before - at for c in first] == [0.0, 0.5, 1.0]
    assert endpoint_row(db, ep).next_send_at == pytest.approx(at + 1.5)
    rows = {r.id: r for r in deliveries(db)}
    for item in first:
        assert rows[item.delivery_row].lease_until == pytest.approx(item.not_before + 30)
    assert claim(db, at) == []  # next slot is beyond the horizon
    second = claim(db, at + 1.0)
    assert [round(c.not_before - at, 6) for c in second] == [1.5, 2.0]
    assert endpoint_row(db, ep).next_send_at == pytest.approx(at + 2.5)


# --- record_results --------------------------------------------------------------------------


def test_success_records_attempt_and_finishes(db, box, t0):
    make_endpoint(db, box)
    publish(db, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    [item] = claim(db, at, worker="w-ok")
    [decision] = record(db, [result(item, 204, started=at, headers={"x-answer": "yes"})], at + 0.25)
    assert decision.action == "succeeded"
    row = delivery(db, item.delivery_row)
    assert row.status == "succeeded"
    assert row.last_status_code == 204
    assert row.last_error is None
    assert row.lease_owner is None and row.lease_until is None
    assert row.finished_at is not None
    [attempt] = attempts(db, item.delivery_row)
    assert attempt.number == 1
    assert attempt.status_code == 204
    assert attempt.outcome == "succeeded"
    assert attempt.worker == "w-ok"
    assert attempt.response_body == "answer"
    assert json.loads(attempt.response_headers) == {"x-answer": "yes"}
    assert attempt.duration_ms == 12.5


def test_failure_retries_on_schedule(db, box, t0):
    make_endpoint(db, box)
    publish(db, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    [item] = claim(db, at)
    [decision] = record(db, [result(item, 500, started=at)], at + 2)
    assert decision.action == "retry"
    row = delivery(db, item.delivery_row)
    assert row.status == "pending"
    assert row.attempts == 1
    assert at + 2 + 80 <= row.next_attempt_at <= at + 2 + 120  # schedule[1] = 100s +-20%
    assert row.last_status_code == 500
    assert "HTTP 500" in row.last_error
    assert row.lease_owner is None and row.finished_at is None
    [attempt] = attempts(db, item.delivery_row)
    assert attempt.outcome == "retry" and attempt.status_code == 500

    assert claim(db, at + 3) == []  # not due yet
    [again] = claim(db, row.next_attempt_at)
    assert again.attempt == 2
    record(
        db,
        [result(again, None, started=row.next_attempt_at, error="timeout after 15s")],
        row.next_attempt_at,
    )
    row2 = delivery(db, item.delivery_row)
    assert row2.status == "pending"
    assert row.next_attempt_at + 800 <= row2.next_attempt_at <= row.next_attempt_at + 1200
    assert row2.last_status_code is None
    assert row2.last_error == "timeout after 15s"


def test_exhausted_delivery_fails_using_the_endpoint_schedule(db, box, t0):
    make_endpoint(db, box, retry_schedule="0,1s")
    publish(db, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    [item] = claim(db, at)
    assert item.retry_schedule == (0.0, 1.0)
    record(db, [result(item, 503, started=at)], at)
    row = delivery(db, item.delivery_row)
    assert row.status == "pending"
    assert at + 0.8 <= row.next_attempt_at <= at + 1.2
    [again] = claim(db, at + 2)
    [decision] = record(db, [result(again, 503, started=at + 2)], at + 2)
    assert decision.action == "failed"
    row = delivery(db, item.delivery_row)
    assert row.status == "failed"
    assert row.attempts == 2
    assert row.finished_at is not None
    assert "exhausted after 2 attempts" in row.last_error
    assert [a.outcome for a in attempts(db, item.delivery_row)] == ["retry", "failed"]
    assert claim(db, at + 10_000) == []


def test_gone_disables_endpoint_discards_the_rest_and_publishes(db, box, t0):
    ep, _ = make_endpoint(db, box, event_types=["ping"])
    _, watcher_row = make_endpoint(db, box, event_types=["endpoint.disabled"])
    publish(db, 3, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    [item, *_] = claim(db, at, capacity=1)
    [decision] = record(db, [result(item, 410, started=at)], at)
    assert decision.action == "failed" and decision.disable_endpoint

    row = endpoint_row(db, ep)
    assert row.enabled == 0
    assert "410" in row.disabled_reason
    assert row.disabled_at is not None
    statuses = {r.id: r.status for r in deliveries(db, endpoint=row.id)}
    assert statuses.pop(item.delivery_row) == "failed"
    assert set(statuses.values()) == {"discarded"} and len(statuses) == 2
    events = db(db.hookline_event.type == "endpoint.disabled").select()
    assert len(events) == 1
    payload = json.loads(events[0].payload)
    assert payload["data"]["endpoint"]["endpoint_id"] == ep
    assert payload["data"]["endpoint"]["enabled"] is False
    [notice] = deliveries(db, endpoint=watcher_row)
    assert notice.event == events[0].id and notice.status == "pending"


def test_failing_since_set_on_failure_and_cleared_on_success(db, box, t0):
    ep, _ = make_endpoint(db, box)
    publish(db, 2, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    first, second = claim(db, at)
    record(db, [result(first, 500, started=at)], at)
    failing = endpoint_row(db, ep).failing_since
    assert failing is not None
    assert abs((failing - t0).total_seconds() - 1) <= 1

    record(db, [result(second, 502, started=at + 30)], at + 30)
    assert endpoint_row(db, ep).failing_since == failing  # the clock is not restarted

    retry_at = delivery(db, first.delivery_row).next_attempt_at
    [again] = claim(db, retry_at, capacity=1)
    record(db, [result(again, 200, started=retry_at)], retry_at)
    assert endpoint_row(db, ep).failing_since is None
    assert endpoint_row(db, ep).enabled == 1


def test_endpoint_failing_longer_than_disable_after_is_disabled(db, box, t0):
    ep, _ = make_endpoint(db, box, retry_schedule="0,1m,1m,1m")
    publish(db, 2, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    first, second = claim(db, at, capacity=1) + claim(db, at, capacity=1)
    record(db, [result(first, 500, started=at)], at)
    assert endpoint_row(db, ep).enabled == 1

    almost = at + DISABLE_AFTER.total_seconds() - 120
    record(db, [result(second, 500, started=almost)], almost)
    assert endpoint_row(db, ep).enabled == 1  # failing, but not for long enough yet

    later = at + DISABLE_AFTER.total_seconds() + 60
    [again] = claim(db, later, capacity=1)
    record(db, [result(again, 500, started=later)], later)
    row = endpoint_row(db, ep)
    assert row.enabled == 0
    assert "failing continuously since" in row.disabled_reason
    assert {r.status for r in deliveries(db, endpoint=row.id)} == {"discarded"}
    assert db(db.hookline_event.type == "endpoint.disabled").count() == 1


def test_result_of_a_lease_taken_over_does_not_change_the_delivery(db, box, t0):
    make_endpoint(db, box)
    publish(db, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    [mine] = claim(db, at, worker="slow", lease_s=10)
    assert _recover(db, at + 11) == 1
    [theirs] = claim(db, delivery(db, mine.delivery_row).next_attempt_at, worker="fast")
    assert theirs.delivery_row == mine.delivery_row and theirs.attempt == 2

    record(db, [result(mine, 200, started=at)], at + 30)  # the slow worker finally answers
    row = delivery(db, mine.delivery_row)
    assert row.status == "sending"
    assert row.lease_owner == "fast"
    assert row.attempts == 2
    assert row.finished_at is None

    record(db, [result(theirs, 200, started=at + 31)], at + 31)
    assert delivery(db, mine.delivery_row).status == "succeeded"


def test_late_result_of_an_earlier_attempt_by_the_same_worker_is_ignored(db, box, t0):
    # A worker whose own lease ran out (an endpoint timeout longer than the lease) recovers and
    # re-claims the delivery itself; the first attempt's late answer must not settle attempt 2.
    make_endpoint(db, box)
    publish(db, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    [first] = claim(db, at, worker="same", lease_s=10)
    assert _recover(db, at + 11) == 1
    retry_at = delivery(db, first.delivery_row).next_attempt_at
    [second] = claim(db, retry_at, worker="same", lease_s=10)
    assert second.attempt == 2

    record(db, [result(first, 500, started=at)], retry_at + 1)  # attempt 1's late answer
    row = delivery(db, first.delivery_row)
    assert row.status == "sending", "a stale attempt's result settled the current attempt"
    assert row.attempts == 2
    assert row.lease_owner == "same"


# --- recover_expired -------------------------------------------------------------------------


def _recover(db, at: float, policy: RetryPolicy = POLICY) -> int:
    return queue.recover_expired(
        db, now=at, policy=policy, rng=random.Random(3), disable_after=DISABLE_AFTER
    )


def test_expired_lease_becomes_a_failed_attempt_and_pending_again(db, box, t0):
    make_endpoint(db, box)
    publish(db, 2, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    [lost] = claim(db, at, worker="dead", capacity=1, lease_s=10)
    [alive] = claim(db, at + 5, worker="alive", capacity=1, lease_s=60)

    assert _recover(db, at + 9) == 0  # the lease still runs
    assert delivery(db, lost.delivery_row).status == "sending"
    assert _recover(db, at + 11) == 1
    row = delivery(db, lost.delivery_row)
    assert row.status == "pending"
    assert row.attempts == 1
    assert row.lease_owner is None and row.lease_until is None
    assert "lease expired" in row.last_error
    assert at + 11 + 80 <= row.next_attempt_at <= at + 11 + 120
    [attempt] = attempts(db, lost.delivery_row)
    assert attempt.error == queue.LEASE_EXPIRED
    assert "lease expired" in attempt.error
    assert attempt.status_code is None
    assert attempt.outcome == "retry"
    assert attempt.worker == "dead"
    assert delivery(db, alive.delivery_row).status == "sending"  # untouched
    assert _recover(db, at + 12) == 0  # recovered once only

    [again] = claim(db, row.next_attempt_at, worker="alive")
    assert again.delivery_row == lost.delivery_row and again.attempt == 2


def test_expired_lease_on_the_last_attempt_fails(db, box, t0):
    make_endpoint(db, box, retry_schedule="0")
    publish(db, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    [item] = claim(db, at, lease_s=5)
    assert _recover(db, at + 6) == 1
    row = delivery(db, item.delivery_row)
    assert row.status == "failed"
    assert "lease expired" in row.last_error


def test_next_due_is_the_earliest_pending(db, box, t0):
    assert queue.next_due(db) is None
    make_endpoint(db, box)
    publish(db, now=t0 + dt.timedelta(seconds=30))
    publish(db, now=t0 + dt.timedelta(seconds=10))
    db.commit()
    assert queue.next_due(db) == to_epoch(t0 + dt.timedelta(seconds=10))
    claim(db, to_epoch(t0) + 20)
    assert queue.next_due(db) == to_epoch(t0 + dt.timedelta(seconds=30))


# --- the claim reads the partial index -------------------------------------------------------


def _plan(db, statement: str, placeholders: list) -> str:
    if is_postgres(db):
        db.executesql("SET LOCAL enable_seqscan = off")
        plan = db.executesql("EXPLAIN " + statement, placeholders=placeholders)
    else:
        plan = db.executesql(
            "EXPLAIN QUERY PLAN " + statement.replace("%s", "?"), placeholders=placeholders
        )
    db.rollback()
    return "\n".join(" ".join(str(c) for c in row) for row in plan)


def _claim_plan_pg(db, at: float, *, window: int, capacity: int, analyze: bool = False) -> str:
    """PostgreSQL's plan of the claim statement as a claim runs it (its planner settings), in a
    transaction rolled back after: EXPLAIN ANALYZE runs the statement."""
    db.executesql(f"PREPARE test_claim {queue._CLAIM_PG_TYPES} AS {queue._CLAIM_PG}")
    try:
        db.executesql(queue.CLAIM_PLANNER_SETTINGS)
        rows = db.executesql(
            f"EXPLAIN {'(ANALYZE) ' if analyze else ''}"
            f"EXECUTE test_claim(%s, %s, {window}, {capacity}, 'w', 60, '-Infinity')",
            placeholders=[at, at + 1],
        )
        db.rollback()
    finally:
        db.executesql("DEALLOCATE test_claim")
    return "\n".join(row[0] for row in rows)


def test_a_claim_with_a_floor_takes_a_delivery_that_committed_late_within_the_margin(db, box, t0):
    """A worker's claims start reading the due index a margin below the earliest pending
    delivery the last one saw (PostgreSQL; SQLite ignores the floor). A delivery whose
    transaction chose its due time a little before that, and committed after, is still taken."""
    make_endpoint(db, box)
    publish(db, 3, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    floor = duefloor.DueFloor()
    taken = queue.claim(db, "w1", now=at, capacity=3, lease_s=60.0, floor=floor)
    assert len(taken) == 3
    record(db, [result(item, 200, started=at) for item in taken], at)

    late = publish(db, 1, now=t0 - dt.timedelta(seconds=duefloor.DUE_FLOOR_MARGIN_S / 2))
    db.commit()
    [item] = queue.claim(db, "w1", now=at + 1, capacity=10, lease_s=60.0, floor=floor)
    assert item.event_id == late[0]


def test_a_delivery_due_below_the_margin_waits_at_most_for_the_next_full_read(db, box, t0):
    """One due further below the floor than the margin (a transaction open longer than that
    before it committed, or a clock that far behind) is taken by the next claim that reads the
    due index from its start, at most ``DUE_FULL_READ_EVERY_S`` later."""
    make_endpoint(db, box)
    publish(db, 2, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    clock = [0.0]
    floor = duefloor.DueFloor(clock=lambda: clock[0])
    assert len(queue.claim(db, "w1", now=at, capacity=2, lease_s=60.0, floor=floor)) == 2

    behind = t0 - dt.timedelta(seconds=duefloor.DUE_FLOOR_MARGIN_S + 60)
    [event_id] = publish(db, 1, now=behind)
    db.commit()
    clock[0] = duefloor.DUE_FULL_READ_EVERY_S - 0.5
    taken = queue.claim(db, "w1", now=at + 1, capacity=10, lease_s=60.0, floor=floor)
    if is_postgres(db):
        assert taken == []  # below where this claim started
        clock[0] = duefloor.DUE_FULL_READ_EVERY_S
        taken = queue.claim(db, "w1", now=at + 2, capacity=10, lease_s=60.0, floor=floor)
    assert [item.event_id for item in taken] == [event_id]


def _due_index_blocks(db, at: float, start: float) -> int:
    """Buffers the PostgreSQL claim's read of the due index touches, reading from ``start``
    (the claim runs in a transaction rolled back after)."""
    db.executesql(f"PREPARE test_claim {queue._CLAIM_PG_TYPES} AS {queue._CLAIM_PG}")
    try:
        db.executesql(queue.CLAIM_PLANNER_SETTINGS)
        [[plan]] = db.executesql(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)"
            " EXECUTE test_claim(%s, %s, 20, 10, 'w', 60, %s)",
            placeholders=[at, at + 1, start],
        )
        db.rollback()
    finally:
        db.executesql("DEALLOCATE test_claim")

    def scans(node):
        if node.get("Index Name") == "hookline_delivery_due_ep_idx":
            yield node
        for child in node.get("Plans", ()):
            yield from scans(child)

    plan = plan if isinstance(plan, list) else json.loads(plan)
    return sum(n["Shared Hit Blocks"] + n["Shared Read Blocks"] for n in scans(plan[0]["Plan"]))


def test_a_claim_with_a_floor_does_not_read_the_entries_sent_deliveries_left_behind(db, box, t0):
    """PostgreSQL keeps a sent delivery's entry in the due index until a vacuum: read from the
    start, 20,000 of them cost every claim a walk over their pages. From the floor, a claim
    reads a handful."""
    if not is_postgres(db):
        pytest.skip("SQLite removes an index entry when its row leaves the index")
    _, endpoint = make_endpoint(db, box, max_in_flight=1000)
    publish(db, 1, now=t0)
    db.commit()
    event = db(db.hookline_event.id > 0).select().first().id
    base = to_epoch(t0) - 30_000
    db.executesql("ALTER TABLE hookline_delivery SET (autovacuum_enabled = false)")
    db.commit()
    try:
        db.executesql(
            "INSERT INTO hookline_delivery (delivery_id, event, endpoint, status, attempts,"
            " next_attempt_at, created_at, updated_at)"
            " SELECT 'dlv_floor' || g, %s, %s, 'pending', 0, %s + g, %s, %s"
            " FROM generate_series(1, 20100) AS g",
            placeholders=[event, endpoint, base, t0, t0],
        )
        db.commit()
        db.executesql(
            "UPDATE hookline_delivery SET status = 'succeeded', finished_at = %s"
            " WHERE delivery_id LIKE 'dlv_floor%%' AND next_attempt_at <= %s",
            placeholders=[t0, base + 20_000],
        )
        db.commit()
        at = to_epoch(t0) + 1
        floor = duefloor.DueFloor()
        taken = queue.claim(db, "w1", now=at, capacity=10, lease_s=60.0, floor=floor)
        assert [item.delivery_id for item in taken] == [
            f"dlv_floor{g}" for g in range(20001, 20011)
        ]
        assert floor.at == base + 20_001  # the earliest still pending: the first one taken

        from_start = _due_index_blocks(db, at, float("-inf"))
        from_floor = _due_index_blocks(db, at, floor.start())
        assert from_floor * 5 < from_start, (from_floor, from_start)
    finally:
        db.rollback()
        db.executesql("ALTER TABLE hookline_delivery RESET (autovacuum_enabled)")
        db.commit()


def test_claim_reads_the_partial_indexes(db, box, t0):
    """Due deliveries from the due index (and, endpoint by endpoint, from the pending index),
    in-flight counts from the lease table's endpoint index, FIFO heads from the endpoint index's
    unfinished range, a discard batch from the pending index: none of them reads finished
    history."""
    make_endpoint(db, box, fifo=True)
    publish(db, 50, now=t0)
    db.commit()
    for row in deliveries(db)[:40]:
        row.update_record(status="succeeded", finished_at=t0)
    db.commit()
    if is_postgres(db):
        # PostgreSQL plans by statistics, which autovacuum would have gathered by now. (SQLite's
        # statistics on 50 rows would describe nothing like a real queue.)
        db.executesql("ANALYZE")
        db.commit()
    now = to_epoch(t0) + 1
    if is_postgres(db):
        text = _claim_plan_pg(db, now, window=20, capacity=10)
        assert "hookline_delivery_due_ep_idx" in text, text
        assert "Index Scan using hookline_delivery_by_endpoint_idx" in text, text  # the head
        return
    text = _plan(db, queue._CANDIDATES.format(skip=""), [now, 30, 10])
    assert "hookline_delivery_due_ep_idx" in text, text
    text = _plan(db, queue._DUE_REACHED, [now, 30])
    assert "hookline_delivery_due_ep_idx" in text, text
    text = _plan(db, queue._DUE_BY_ENDPOINT.format(skip=""), [now, 10, 20])
    assert "hookline_delivery_pending_ep_idx" in text, text
    text = _plan(db, queue._FIFO_HEADS.format(ids="%s"), [1, now])
    assert "hookline_delivery_by_endpoint_idx" in text, text
    text = _plan(db, queue._ENABLED_BUDGETS, [])
    assert "hookline_lease_endpoint_idx" in text, text
    batch = discard._DISCARD_BATCH.format(
        indexed="INDEXED BY hookline_delivery_pending_ep_idx", still_disabled=""
    )
    text = _plan(db, batch, ["why", "2026-11-30 00:00:00", "2026-11-30 00:00:00", 1, 10])
    assert "hookline_delivery_pending_ep_idx" in text, text


def test_the_postgresql_claim_plan_made_on_empty_tables_still_reads_by_index(db, box, t0):
    """The claim's plan is made once per connection, typically when a worker starts on tables
    that are still empty, and then serves every claim: planned that way without the claim's
    settings, it read the lease table in full for every candidate (750 ms a claim at a million
    pending)."""
    if not is_postgres(db):
        pytest.skip("SQLite plans each statement as it runs")
    make_endpoint(db, box, max_in_flight=1000)
    at = to_epoch(t0) + 1
    assert claim(db, at) == []  # prepares and plans the claim on empty tables
    publish(db, 300, now=t0)
    db.commit()
    assert len(claim(db, at, capacity=100)) == 100  # the same plan, now with leases to read

    db.executesql(queue.CLAIM_PLANNER_SETTINGS)
    rows = db.executesql(
        "EXPLAIN EXECUTE hookline_claim(%s, %s, 200, 100, 'w', 60, '-Infinity')",
        placeholders=[at, at + 1],
    )
    db.rollback()
    plan = "\n".join(row[0] for row in rows)
    assert "$1" in plan, plan  # the cached generic plan, not one made for these values
    assert "Seq Scan on hookline_lease" not in plan, plan
    assert "Seq Scan on hookline_delivery" not in plan, plan
    assert "Index Scan using hookline_delivery_due_ep_idx on hookline_delivery d" in plan, plan


def test_a_postgresql_claim_reads_the_due_index_in_order_before_any_analyze(db, box, t0):
    """A table filled since PostgreSQL last gathered statistics (a fresh database, a burst), with
    one endpoint, made the planner expect a single due row: the claim read every due delivery
    and sorted them."""
    if not is_postgres(db):
        pytest.skip("SQLite's planner does not plan by row estimates this way")
    make_endpoint(db, box, max_in_flight=1000)
    publish(db, 1, now=t0)
    db.commit()
    db.executesql("ANALYZE hookline_delivery")  # statistics of a table with one row...
    db.commit()
    publish(db, 2000, now=t0)  # ...which then fills
    db.commit()
    plan = _claim_plan_pg(db, to_epoch(t0) + 1, window=20, capacity=10)
    # The index gives the order: read until the window is full, never all of them to sort.
    assert "Index Scan using hookline_delivery_due_ep_idx on hookline_delivery d" in plan, plan
    assert "Sort Key: d.next_attempt_at" not in plan, plan


def test_a_stuck_endpoints_backlog_does_not_starve_the_others(db, box, t0):
    """An endpoint at max_in_flight is left out of the claim window (the isolation guarantee)."""
    _stuck_id, stuck = make_endpoint(db, box, max_in_flight=1, event_types=["order.created"])
    _fast_id, fast = make_endpoint(db, box, event_types=["ping"])
    for i in range(50):  # the stuck endpoint's backlog is older than anything else
        outbox.publish(db, "order.created", {"n": i}, now=t0)
    later = t0 + dt.timedelta(seconds=1)
    publish(db, 5, now=later)
    db.commit()
    at = to_epoch(later) + 1

    first = claim(db, at, capacity=2)  # a window of 8: all the stuck endpoint's
    assert [item.endpoint_row for item in first] == [stuck]
    second = claim(db, at, capacity=2)
    assert {item.endpoint_row for item in second} == {fast}
    assert len(second) == 2


def test_a_claim_with_every_endpoint_full_does_not_read_the_backlog(db, box, t0, monkeypatch):
    """With no room anywhere the candidates would be read through the whole due backlog, every
    row of it left out (a million pending took seconds a claim): the claim does not look."""
    make_endpoint(db, box, max_in_flight=1)
    make_endpoint(db, box, max_in_flight=1)
    publish(db, 20, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    assert len(claim(db, at)) == 2  # one each: both endpoints are full now

    if is_postgres(db):
        plan = _claim_plan_pg(db, at, window=200, capacity=100, analyze=True)
        scans = [line for line in plan.splitlines() if "Scan using hookline_delivery_" in line]
        assert scans, plan
        assert all("never executed" in scan for scan in scans), plan
        assert claim(db, at) == []
    else:
        read = []
        rows = queue._rows
        monkeypatch.setattr(
            queue, "_rows", lambda db_, sql, *a: read.append(sql) or rows(db_, sql, *a)
        )
        assert claim(db, at) == []
        monkeypatch.undo()
        assert not [sql for sql in read if sql.startswith(queue._CANDIDATES[:30])], read
    assert len(deliveries(db, status="sending")) == 2


_BLOCKING = {
    "full": {"max_in_flight": 1},
    "rate-limited": {"rate_limit": 0.2},  # a slot every 5 s: beyond the horizon once one is taken
    "fifo": {"fifo": True},
}


@pytest.mark.parametrize("blocking", sorted(_BLOCKING))
def test_a_backlog_that_cannot_be_taken_does_not_hide_what_is_due_behind_it(db, box, t0, blocking):
    """An endpoint that cannot take its backlog now (full, its next rate slot beyond the horizon,
    FIFO with its head in flight) may fill the front of the due index beyond what a claim reads
    of it: the claim then reads the other endpoints one by one, and takes their due deliveries
    in time order, each endpoint within its room."""
    _, stuck = make_endpoint(db, box, event_types=["order.created"], **_BLOCKING[blocking])
    _, small = make_endpoint(db, box, event_types=["ping"], max_in_flight=3)
    _, plain = make_endpoint(db, box, event_types=["order.paid"])
    _bulk_deliveries(db, stuck, 200, t0, due=to_epoch(t0) - 60, finished=False, tag="stuck")
    later = t0 + dt.timedelta(seconds=1)
    publish(db, 5, now=later)
    publish(db, 2, now=later + dt.timedelta(seconds=1), event_type="order.paid")
    db.commit()
    small_rows = [row.id for row in deliveries(db, endpoint=small)]
    plain_rows = [row.id for row in deliveries(db, endpoint=plain)]
    at = to_epoch(later) + 5

    first = claim(db, at, capacity=1)
    assert [item.endpoint_row for item in first] == [stuck]  # which can take no more now
    # A window of 8 and a reach of 9 entries of the due index: all of them the stuck endpoint's.
    second = claim(db, at, capacity=4)
    assert [item.delivery_row for item in second] == [*small_rows[:3], plain_rows[0]]
    third = claim(db, at, capacity=10)  # small is at its max_in_flight now
    assert [item.delivery_row for item in third] == [plain_rows[1]]
    assert claim(db, at, capacity=10) == []


def test_a_claim_cut_short_by_an_endpoint_that_filled_up_is_made_up_by_the_next(db, box, t0):
    """A claim reads a window of candidates (on PostgreSQL no more than its capacity): when an
    endpoint fills up on the first of them, the claim may come up short, and the next claim,
    which leaves that endpoint out, takes the others' in time order. Between them, no endpoint
    goes past its room and nothing due is skipped."""
    _, tight = make_endpoint(db, box, event_types=["order.created"], max_in_flight=2)
    _, other = make_endpoint(db, box, event_types=["ping"])
    publish(db, 5, now=t0, event_type="order.created")
    publish(db, 5, now=t0 + dt.timedelta(seconds=1))
    db.commit()
    tight_rows = [row.id for row in deliveries(db, endpoint=tight)]
    other_rows = [row.id for row in deliveries(db, endpoint=other)]
    at = to_epoch(t0) + 5

    first = claim(db, at, capacity=4)
    second = claim(db, at, capacity=4 - len(first))
    taken = [item.delivery_row for item in first + second]
    assert sorted(taken) == sorted(tight_rows[:2] + other_rows[:2])
    rest = claim(db, at, capacity=10)  # tight is full: the other's last three
    assert [item.delivery_row for item in rest] == other_rows[2:]


def _vm_steps(db, action) -> int:
    """SQLite virtual-machine instructions (in hundreds) that ``action`` runs on ``db``."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    connection = db._adapter.connection
    connection.set_progress_handler(count, 100)
    try:
        action()
    finally:
        connection.set_progress_handler(None, 100)
    return steps[0]


def _entries_read(plan: str, index: str) -> list[int]:
    """Per scan of ``index`` in an EXPLAIN ANALYZE: the entries it read, those it returned and
    those its filter removed."""
    read: list[int] = []
    scanning = False
    for line in plan.splitlines():
        if "->" in line:
            scanning = f"using {index} " in line
            if scanning:
                read.append(int(re.search(r"\(actual time=\S+ rows=(\d+) loops=1\)", line)[1]))
        elif scanning and "Rows Removed by Filter:" in line:
            read[-1] += int(line.split(":")[1])
    return read


def test_a_claim_reads_no_further_into_a_backlog_it_cannot_take_than_its_reach(db, box, t0):
    """What a claim reads does not grow with a backlog that its left-out endpoints hold in front
    of the others. It stepped over every entry of it: ~0.15 µs each on SQLite (holding the write
    lock), ~0.25 µs on PostgreSQL, so a hanging endpoint's million would cost each claim
    150-250 ms."""
    _, stuck = make_endpoint(db, box, max_in_flight=1, event_types=["order.created"])
    _, other = make_endpoint(db, box, event_types=["ping"])
    _bulk_deliveries(db, stuck, 300, t0, due=to_epoch(t0) - 60, finished=False, tag="first")
    publish(db, 30, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    assert [item.endpoint_row for item in claim(db, at, capacity=1)] == [stuck]

    if is_postgres(db):
        plan = _claim_plan_pg(db, at, window=10, capacity=5, analyze=True)
        read = _entries_read(plan, "hookline_delivery_due_ep_idx")
        assert read, plan
        assert max(read) <= 10 + 1, plan  # the window and the one in flight
        assert [item.endpoint_row for item in claim(db, at, capacity=5)] == [other] * 5
        return

    def claim_and_finish() -> None:
        claimed = claim(db, at, capacity=5)
        assert [item.endpoint_row for item in claimed] == [other] * 5
        record(db, [result(item, 200, started=at) for item in claimed], at)

    before = _vm_steps(db, claim_and_finish)
    _bulk_deliveries(db, stuck, 5000, t0, due=to_epoch(t0) - 120, finished=False, tag="more")
    after = _vm_steps(db, claim_and_finish)
    assert after < before * 1.5, (before, after)


# --- record and claim in one transaction -----------------------------------------------------


def record_and_claim(db, results, at: float):
    return queue.record_and_claim(
        db,
        results,
        "w1",
        now=at,
        capacity=10,
        lease_s=60.0,
        policy=POLICY,
        rng=random.Random(7),
        disable_after=DISABLE_AFTER,
    )


def test_record_and_claim_frees_the_slot_and_claims_into_it_in_one_commit(
    db, other_db, box, t0, monkeypatch
):
    _, endpoint = make_endpoint(db, box, max_in_flight=1)
    publish(db, 2, now=t0)
    db.commit()
    at = to_epoch(t0)
    [first] = claim(db, at)
    assert claim(db, at) == []  # the endpoint's one slot is taken

    writes = []
    begin_write = queue.begin_write
    monkeypatch.setattr(queue, "begin_write", lambda db_: writes.append(1) or begin_write(db_))
    decisions, claimed = record_and_claim(db, [result(first, 200, started=at)], at + 1)
    monkeypatch.undo()

    assert [d.action for d in decisions] == ["succeeded"]
    assert [c.endpoint_row for c in claimed] == [endpoint]
    assert claimed[0].delivery_row != first.delivery_row
    assert len(writes) == 1  # the outcome and the new lease: one write transaction (one fsync)
    statuses = {row.id: row.status for row in deliveries(other_db)}
    assert statuses == {first.delivery_row: "succeeded", claimed[0].delivery_row: "sending"}
    assert [a.outcome for a in attempts(other_db, first.delivery_row)] == ["succeeded"]


def test_record_and_claim_rolls_back_both_when_the_claim_fails(db, other_db, box, t0, monkeypatch):
    make_endpoint(db, box)
    publish(db, 2, now=t0)
    db.commit()
    at = to_epoch(t0)
    [first] = claim(db, at, capacity=1)

    def broken_claim(*args, **kwargs):
        raise RuntimeError("claim failed")

    monkeypatch.setattr(queue, "_claim_locked", broken_claim)
    with pytest.raises(RuntimeError):
        record_and_claim(db, [result(first, 200, started=at)], at + 1)

    assert delivery(other_db, first.delivery_row).status == "sending"  # not recorded either
    assert attempts(other_db, first.delivery_row) == []


def test_a_claim_leaves_the_connections_durability_setting_as_it_found_it(db, other_db, box, t0):
    make_endpoint(db, box)
    publish(db, 2, now=t0)
    db.commit()
    before = None if is_postgres(db) else db.executesql("PRAGMA synchronous")[0][0]

    [first, second] = claim(db, to_epoch(t0))

    # The lease is committed (visible elsewhere) though it was not synced on its own...
    assert {row.status for row in deliveries(other_db)} == {"sending"}
    if is_postgres(db):
        # ...and SET LOCAL ended with the claim's transaction.
        assert db.executesql("SHOW synchronous_commit")[0][0] == "on"
    else:
        assert db.executesql("PRAGMA synchronous")[0][0] == before == 2  # FULL again
    # ...while outcomes are committed with the connection's own (full) durability.
    at = to_epoch(t0)
    record(db, [result(first, 200, started=at), result(second, 200, started=at)], at + 1)
    assert {row.status for row in deliveries(other_db)} == {"succeeded"}


def test_a_claims_commit_leaves_the_checkpoint_to_the_next_full_commit(db, settings, box, t0):
    """SQLite: a lease's commit runs no automatic checkpoint, so the WAL grows across claims
    where a checkpoint after each commit would start it over; the setting is restored."""
    if is_postgres(db):
        pytest.skip("PostgreSQL has no WAL checkpoint per commit")
    make_endpoint(db, box)
    publish(db, 3, now=t0)
    db.commit()
    db.executesql("PRAGMA wal_autocheckpoint=1")  # checkpoint after every commit
    wal = Path(str(settings.sqlite_path) + "-wal")
    at = to_epoch(t0)
    sizes, leased = [], []
    for _ in range(3):
        leased += claim(db, at, capacity=1)
        sizes.append(wal.stat().st_size)
    assert len(leased) == 3
    assert sizes[0] < sizes[1] < sizes[2], sizes
    assert db.executesql("PRAGMA wal_autocheckpoint")[0][0] == 1

    # A full commit checkpoints: the next write starts the WAL over instead of growing it.
    record(db, [result(item, 200, started=at) for item in leased], at + 1)
    after_record = wal.stat().st_size
    publish(db, 1, now=t0)
    db.commit()
    assert wal.stat().st_size == after_record


def _hold_sqlite_write_lock(settings, seconds: float) -> threading.Thread:
    """Hold SQLite's write lock from another connection for ``seconds`` (in a thread)."""
    import sqlite3

    holding = threading.Event()

    def hold() -> None:
        other = sqlite3.connect(str(settings.sqlite_path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        holding.set()
        time.sleep(seconds)
        other.execute("ROLLBACK")
        other.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(5)
    return thread


def _one_due_delivery_on_sqlite(db, box, t0) -> None:
    if is_postgres(db):
        pytest.skip("PostgreSQL has no database-wide write lock")
    make_endpoint(db, box)
    publish(db, 1, now=t0)
    db.commit()


def test_a_claim_waits_for_sqlites_write_lock_and_restores_the_busy_timeout(db, settings, box, t0):
    _one_due_delivery_on_sqlite(db, box, t0)
    timeout_before = db.executesql("PRAGMA busy_timeout")[0][0]

    holder = _hold_sqlite_write_lock(settings, 0.3)
    [claimed] = claim(db, to_epoch(t0))
    holder.join()

    assert claimed.attempt == 1
    assert db.executesql("PRAGMA busy_timeout")[0][0] == timeout_before > 0


def test_a_claim_gives_up_on_sqlites_write_lock_after_the_busy_timeout(db, settings, box, t0):
    import sqlite3

    _one_due_delivery_on_sqlite(db, box, t0)
    db.executesql("PRAGMA busy_timeout=100")

    holder = _hold_sqlite_write_lock(settings, 1.5)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        claim(db, to_epoch(t0))
    waited = time.monotonic() - started
    holder.join()

    assert 0.1 <= waited < 1.0  # it tried for the busy timeout, then reported the busy database
    assert db.executesql("PRAGMA busy_timeout")[0][0] == 100


def test_a_claim_does_not_wait_for_a_publisher_that_has_not_committed(db, other_db, box, t0):
    """A publisher's open transaction (its new delivery locks the endpoint's key) must not hold
    up the claim of deliveries already committed: publish -> first attempt would then wait for
    every publisher's commit."""
    if not is_postgres(db):
        pytest.skip("SQLite has one writer at a time: a claim waits for any open write")
    make_endpoint(db, box)
    publish(db, 1, now=t0)
    db.commit()
    publish(other_db, 1, now=t0)  # left uncommitted while the claim runs
    claimed: list[Claimed] = []
    claimer = threading.Thread(target=lambda: claimed.extend(claim(db, to_epoch(t0))))
    claimer.start()
    claimer.join(5)
    still_waiting = claimer.is_alive()
    other_db.commit()
    claimer.join(10)

    assert not still_waiting
    assert len(claimed) == 1  # the committed delivery; the other was not visible yet


def test_migrating_replaces_the_retired_delivery_indexes(db, box, t0):
    """A database from an earlier version kept leases in the delivery row (status ``sending``)
    and had status-keyed indexes: migrating makes those deliveries pending again (claimable, sent
    at least once more) and drops the old indexes once the new ones exist."""
    from hookline.schema import _existing_indexes, ensure_indexes

    make_endpoint(db, box)
    publish(db, 2, now=t0)
    db.commit()
    [old, _] = deliveries(db)
    db(db.hookline_delivery.id == old.id).update(
        status="sending", lease_owner="old-worker", lease_until=to_epoch(t0) + 60
    )
    db.executesql(
        "CREATE INDEX hookline_delivery_endpoint_idx ON hookline_delivery (endpoint, status, id)"
    )
    db.executesql(
        "CREATE INDEX hookline_delivery_lease_idx ON hookline_delivery (lease_until)"
        " WHERE status = 'sending'"
    )
    db.commit()

    ensure_indexes(db)

    names = _existing_indexes(db)
    db.commit()
    assert "hookline_delivery_endpoint_idx" not in names
    assert "hookline_delivery_lease_idx" not in names
    assert {"hookline_delivery_due_ep_idx", "hookline_lease_endpoint_idx"} <= names
    assert "hookline_delivery_by_endpoint_idx" in names
    row = delivery(db, old.id)
    assert (row.status, row.lease_owner, row.lease_until) == ("pending", None, None)
    assert len(claim(db, to_epoch(t0))) == 2


def test_vacuuming_the_lease_table_leaves_the_connection_transactional(db, box, t0):
    """``vacuum_leases`` runs VACUUM outside a transaction on PostgreSQL (a no-op on SQLite)
    and hands the connection back as it was: writes after it still roll back."""
    make_endpoint(db, box)
    publish(db, 2, now=t0)
    db.commit()
    at = to_epoch(t0)
    record(db, [result(item, 200, started=at) for item in claim(db, at, capacity=1)], at + 1)

    queue.vacuum_leases(db)
    queue.vacuum_leases(db)  # and again: nothing left to do is fine

    publish(db, 1, now=t0)
    db.rollback()
    assert len(deliveries(db)) == 2
    [item] = claim(db, at)  # the queue still works on this connection
    assert item.attempt == 1


def test_a_failing_lease_vacuum_is_logged_and_the_queue_goes_on(db, box, t0, caplog):
    """A VACUUM that fails (here: the table is not there) is housekeeping lost, not a worker
    stopped: a warning, and the connection is still usable and transactional."""
    if not is_postgres(db):
        pytest.skip("SQLite needs no vacuum of the lease table")
    db.executesql("ALTER TABLE hookline_lease RENAME TO hookline_lease_away")
    db.commit()
    try:
        with caplog.at_level("WARNING", logger="hookline.queue"):
            queue.vacuum_leases(db)
    finally:
        db.executesql("ALTER TABLE hookline_lease_away RENAME TO hookline_lease")
        db.commit()
    assert "could not vacuum hookline_lease" in caplog.text
    make_endpoint(db, box)
    publish(db, 1, now=t0)
    db.rollback()
    assert deliveries(db) == []


def test_migrating_fills_the_endpoint_of_attempts_an_earlier_version_recorded(
    db, box, t0, monkeypatch
):
    """Attempts recorded before ``hookline_attempt.endpoint`` existed get their delivery's
    endpoint when the database is migrated, batch by batch, and then list by endpoint."""
    from hookline import operations, schema

    first, _ = make_endpoint(db, box)
    second, _ = make_endpoint(db, box, url="https://example.com/other")
    publish(db, 3, now=t0)
    db.commit()
    at = to_epoch(t0)
    record(db, [result(item, 500, started=at) for item in claim(db, at)], at + 1)
    db.executesql("UPDATE hookline_attempt SET endpoint = NULL")
    db.executesql("DROP INDEX hookline_attempt_endpoint_idx")
    db.commit()
    monkeypatch.setattr(schema, "FILL_BATCH", 2)  # several batches for six rows

    schema.ensure_indexes(db)

    rows = db(db.hookline_attempt).select()
    by_delivery = {r.id: r.endpoint for r in db(db.hookline_delivery).select()}
    assert len(rows) == 6
    assert all(r.endpoint == by_delivery[r.delivery] for r in rows)
    assert "hookline_attempt_endpoint_idx" in schema._existing_indexes(db)
    db.commit()
    for endpoint_id in (first, second):
        listed = operations.list_attempts(db, endpoint_id=endpoint_id)["data"]
        assert len(listed) == 3
        assert {a["endpoint_id"] for a in listed} == {endpoint_id}
