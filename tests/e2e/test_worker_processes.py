"""Separate `hookline worker` processes against a real database, on SQLite and PostgreSQL.

The server runs without its own worker (``HOOKLINE_WORKER=false``) and only takes orders; the
tests start, kill and stop workers themselves and watch a real HTTP sink: a killed worker loses
nothing (its leases expire and another worker delivers, at least once), a SIGTERM lets in-flight
attempts finish, concurrent workers never send one delivery twice, ``--burst`` exits when idle.
"""

from __future__ import annotations

import collections
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sinks import Sink, Workers, server_env, wait_until

pytestmark = pytest.mark.e2e

HOOKLINE = str(Path(sys.executable).with_name("hookline"))
LEASE_SECONDS = 5
SLOW_S = 3.0
STATS = re.compile(
    r"worker done: (\d+) claimed, (\d+) succeeded, (\d+) recorded,"
    r" (\d+) recovered from expired leases"
)


@pytest.fixture(scope="module")
def _worker_env():
    with server_env(
        HOOKLINE_WORKER="false",
        HOOKLINE_LEASE_SECONDS=str(LEASE_SECONDS),
        HOOKLINE_ALLOW_NETWORKS="127.0.0.0/8",
    ):
        yield


@pytest.fixture(scope="module")
def hook(_worker_env, server):
    """conftest's ``server`` (one per backend) started without a worker, short leases and
    loopback allowed; ``hook.env`` is what the workers run with."""
    assert server.env["HOOKLINE_WORKER"] == "false"
    return server


@pytest.fixture
def sink():
    """A recording HTTP receiver of the test's own."""
    with Sink() as running:
        yield running


@pytest.fixture
def workers(hook, tmp_path):
    """Starts `hookline worker` processes; kills what is left at the end."""
    started = Workers(HOOKLINE, hook.env, tmp_path)
    yield started
    started.kill_leftovers()


def _stats(output: str) -> tuple[int, int, int, int]:
    match = STATS.search(output)
    assert match, output
    return tuple(int(n) for n in match.groups())  # type: ignore[return-value]


def _settled(api, endpoint_id: str, count: int) -> list[dict] | None:
    """The endpoint's deliveries once ``count`` exist and none is pending or sending."""
    rows = api.deliveries(endpoint_id=endpoint_id)
    if len(rows) == count and all(r["status"] not in ("pending", "sending") for r in rows):
        return rows
    return None


def _story(api, endpoint_id: str, sink: Sink, workers: Workers) -> str:
    """What happened, for a failure message: deliveries, attempts, sink, worker output."""
    lines = []
    for row in api.deliveries(endpoint_id=endpoint_id):
        shown = api.delivery(row["delivery_id"])
        attempts = [
            (a["number"], a["status_code"], a["outcome"], a["error"], a["worker"])
            for a in shown["attempt_log"]
        ]
        lines.append(f"{row['status']} next={row['next_attempt_at']} attempts={attempts}")
    lines += [f"sink: {r.path} {r.webhook_id} {r.arrived:.2f} {r.completed}" for r in sink.requests]
    lines += [f"worker {p.pid} rc={p.poll()}: {workers.output(p)[-2000:]}" for p in workers.started]
    return "\n".join(lines)


def test_a_killed_worker_loses_nothing(api, sink, workers):
    sink.behave("slow", delay=SLOW_S)
    endpoint = api.create(sink.url("slow"), retry_schedule="0,1s,1s")
    orders = [api.create_order(product_name=f"item {n}") for n in range(3)]
    assert len(api.deliveries(endpoint_id=endpoint["endpoint_id"], status="pending")) == 3

    doomed = workers.start()
    in_flight = sink.wait_for("slow", 3, timeout=15)
    assert all(r.completed is None for r in in_flight)  # the sink still sleeps on them
    leased = api.deliveries(endpoint_id=endpoint["endpoint_id"], status="sending")
    assert len(leased) == 3
    killed_at = time.monotonic()
    doomed.send_signal(signal.SIGKILL)
    assert doomed.wait(timeout=10) == -signal.SIGKILL

    rescuer = workers.start()
    rows = wait_until(
        lambda: _settled(api, endpoint["endpoint_id"], 3),
        LEASE_SECONDS + 25,
        "every delivery to settle after the kill",
        interval=0.2,
        detail=lambda: _story(api, endpoint["endpoint_id"], sink, workers),
    )
    assert [r["status"] for r in rows] == ["succeeded"] * 3
    # at least once: every event reached the sink again, answered in full, after the kill
    events = {r["event_id"] for r in rows}
    assert {r.webhook_id for r in in_flight} == events
    for event_id in events:
        resent = [r for r in sink.received("slow", event_id) if r.arrived > killed_at]
        assert resent and resent[-1].completed is not None, event_id
    for row in rows:
        log = api.delivery(row["delivery_id"])["attempt_log"]
        assert [a["number"] for a in log] == [1, 2], log
        assert log[0]["status_code"] is None
        assert "lease expired" in log[0]["error"]
        assert log[0]["outcome"] == "retry"
        assert f":{doomed.pid}:" in log[0]["worker"]
        assert (log[1]["status_code"], log[1]["outcome"]) == (200, "succeeded")
        assert f":{rescuer.pid}:" in log[1]["worker"]
    assert {o["order_id"] for o in orders} == {
        r.json()["data"]["order"]["order_id"] for r in sink.received("slow")
    }

    assert workers.stop(rescuer) == 0, workers.output(rescuer)
    _claimed, succeeded, _recorded, recovered = _stats(workers.output(rescuer))
    assert (succeeded, recovered) == (3, 3)


def test_sigterm_lets_in_flight_attempts_finish(api, sink, workers):
    sink.behave("slow", delay=SLOW_S)
    endpoint = api.create(sink.url("slow"))
    for n in range(3):
        api.create_order(product_name=f"item {n}")
    worker = workers.start()
    in_flight = sink.wait_for("slow", 3, timeout=15)

    asked_at = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    late = api.create_order(product_name="after the signal")  # must not be claimed any more
    assert worker.wait(timeout=SLOW_S + 15) == 0, workers.output(worker)
    exited_at = time.monotonic()

    assert exited_at - asked_at >= SLOW_S - 1.0, "exited without waiting for the sink"
    assert all(r.completed is not None and r.completed <= exited_at for r in in_flight)
    assert len(sink.received("slow")) == 3
    rows = api.deliveries(endpoint_id=endpoint["endpoint_id"])
    by_status = collections.Counter(r["status"] for r in rows)
    assert by_status == {"succeeded": 3, "pending": 1}, rows
    [pending] = [r for r in rows if r["status"] == "pending"]
    assert pending["attempts"] == 0
    assert late["order_id"] not in {
        r.json()["data"]["order"]["order_id"] for r in sink.received("slow")
    }
    for row in rows:
        if row["status"] == "succeeded":
            [attempt] = api.delivery(row["delivery_id"])["attempt_log"]
            assert (attempt["status_code"], attempt["outcome"]) == (200, "succeeded")
    assert _stats(workers.output(worker)) == (3, 3, 3, 0)


def test_a_second_sigterm_exits_at_once_and_the_leases_bring_the_attempts_back(api, sink, workers):
    sink.behave("stuck", delay=4 * SLOW_S)
    endpoint = api.create(sink.url("stuck"), retry_schedule="0,1s")
    api.create_order(product_name="stuck")
    worker = workers.start()
    [in_flight] = sink.wait_for("stuck", 1, timeout=15)

    worker.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert worker.poll() is None, "the first SIGTERM must wait for the attempt in flight"
    asked_at = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=5) == 1, workers.output(worker)
    assert time.monotonic() - asked_at < 2.0
    assert in_flight.completed is None  # it did not wait for the sink

    [row] = api.deliveries(endpoint_id=endpoint["endpoint_id"])
    assert (row["status"], row["attempts"]) == ("sending", 0)  # still leased: nothing lost


def test_concurrent_workers_send_each_delivery_exactly_once(hook, api, auth, sink, workers):
    """Three workers compete for a backlog and for events arriving while they run
    (claims take turns: an advisory lock on PostgreSQL, the write lock on SQLite)."""
    orders_total, endpoints_total = 150, 2  # 300 events (created + paid), 600 deliveries
    made = [api.create(sink.url(f"fast-{n}"), max_in_flight=50) for n in range(endpoints_total)]

    def place(n: int) -> None:
        order = api.create_order(product_name=f"item {n}")
        answer = hook.request(
            "PATCH", f"/myapp/api/orders/{order['order_id']}", '{"status": "paid"}', auth
        )
        assert answer.status == 200, answer.body

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(place, range(orders_total // 2)))  # a backlog before the workers start
        fleet = [workers.start("--concurrency", "16") for _ in range(3)]
        list(pool.map(place, range(orders_total // 2, orders_total)))  # and more while they run

    expected = orders_total * 2 * endpoints_total
    wait_until(lambda: len(sink.requests) >= expected, 45, f"{expected} deliveries at the sink")
    time.sleep(0.5)
    for endpoint in made:
        name = endpoint["url"].rsplit("/", 1)[1]
        seen = collections.Counter(r.webhook_id for r in sink.received(name))
        assert len(seen) == orders_total * 2
        assert [k for k, n in seen.items() if n != 1] == [], "sent more than once"
        rows = wait_until(
            lambda eid=endpoint["endpoint_id"]: _settled(api, eid, orders_total * 2),
            15,
            "every delivery recorded",
        )
        assert {r["event_id"] for r in rows} == set(seen)
        assert {(r["status"], r["attempts"]) for r in rows} == {("succeeded", 1)}

    claimed = []
    for worker in fleet:
        assert workers.stop(worker) == 0, workers.output(worker)
        stats = _stats(workers.output(worker))
        assert stats[0] == stats[1] == stats[2], stats
        claimed.append(stats[0])
    assert sum(claimed) == expected
    assert sum(1 for n in claimed if n) >= 2, f"one worker did everything: {claimed}"


def test_burst_worker_exits_when_nothing_is_due(hook, api, sink):
    sink.behave("broken", status=500)
    api.create(sink.url("fine"), event_types=["order.created"])
    api.create(sink.url("broken"), retry_schedule="0,1h", event_types=["order.created"])
    for n in range(2):
        api.create_order(product_name=f"item {n}")

    started = time.monotonic()
    done = hook.cli("worker", "--burst")
    assert time.monotonic() - started < 20
    assert _stats(done.stdout) == (4, 2, 4, 0)
    assert len(sink.received("fine")) == 2
    assert len(sink.received("broken")) == 2
    retrying = api.deliveries(status="pending")
    assert len(retrying) == 2
    assert {r["attempts"] for r in retrying} == {1}

    # the retries are an hour away: nothing is due, a second burst exits at once
    again = hook.cli("worker", "--burst")
    assert _stats(again.stdout) == (0, 0, 0, 0)
    assert len(sink.requests) == 4


def test_burst_worker_with_max_deliveries_stops_early(hook, api, sink):
    api.create(sink.url("fine"), event_types=["order.created"])
    for n in range(3):
        api.create_order(product_name=f"item {n}")
    done = hook.cli("worker", "--burst", "--max-deliveries", "2")
    assert _stats(done.stdout) == (2, 2, 2, 0)
    assert len(sink.received("fine")) == 2
    rest = hook.cli("worker", "--burst")
    assert _stats(rest.stdout) == (1, 1, 1, 0)
    assert len(sink.received("fine")) == 3


def test_a_disabled_endpoints_backlog_is_discarded_by_the_worker_before_it_can_be_enabled(
    hook, api, auth, sink
):
    """Disabling through the API discards a first batch of 1,000 in its own transaction; the
    rest waits for a worker, and enabling the endpoint again is refused with a reason until
    then (the left-over deliveries would be sent)."""
    endpoint = api.create(sink.url("paused"), event_types=["order.created"])
    backlog = 1_010
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: api.create_order(product_name=f"item {n}"), range(backlog)))
    path = f"/myapp/api/endpoints/{endpoint['endpoint_id']}"

    answer = hook.request("PATCH", path, '{"enabled": false}', auth)
    assert answer.status == 200, answer.body
    assert len(api.deliveries(endpoint_id=endpoint["endpoint_id"], status="pending")) == 10
    refused = hook.request("PATCH", path, '{"enabled": true, "description": "back"}', auth)
    assert refused.status == 409, refused.body
    assert "10 deliveries" in refused.json()["message"]
    shown = api.get(path)
    assert shown["enabled"] is False
    assert shown["description"] != "back"  # nothing of the refused change was kept

    done = hook.cli("worker", "--burst")
    assert _stats(done.stdout) == (0, 0, 0, 0)
    rows = api.deliveries(endpoint_id=endpoint["endpoint_id"])
    assert len(rows) == backlog
    assert {r["status"] for r in rows} == {"discarded"}
    answer = hook.request("PATCH", path, '{"enabled": true}', auth)
    assert answer.status == 200, answer.body
    assert answer.json()["enabled"] is True
    assert sink.requests == []
