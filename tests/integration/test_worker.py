"""The worker end to end on SQLite and PostgreSQL, with a recording transport instead of HTTP.

What a receiver gets (Standard Webhooks headers that both ``hookline.signing`` and the official
``standardwebhooks`` package accept, the endpoint's headers, the event payload as the body), and
what the worker records (retries, ``Retry-After``, stats). Every run is ``burst`` and bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time

import pytest
import standardwebhooks

from delivery_rows import seen_deliveries
from hookline import discard, endpoints, outbox, queue, signing
from hookline import worker as worker_module
from hookline.endpoint_rules import parse_endpoint
from hookline.netguard import NetworkPolicy
from hookline.secretbox import load_secret_box
from hookline.timeutil import utcnow
from hookline.transport import OutboundRequest, RecordingTransport, TransportResult
from hookline.worker import WAL_QUIET_MAX_S, Worker, WorkerStats

NETWORK = NetworkPolicy.from_settings("127.0.0.0/8")
RUN_TIMEOUT_S = 8.0

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def box(settings):
    # The key the worker itself loads (HOOKLINE_SECRET_KEY unset: the key file in data_dir).
    return load_secret_box(settings.secret_key or None, settings.data_dir)


def make_endpoint(db, box, **fields) -> tuple[dict, dict]:
    data = {"url": "http://127.0.0.1:9/hook", **fields}
    return endpoints.create_endpoint(db, box, parse_endpoint(data, NETWORK, creating=True))


def run(settings, transport, **options) -> WorkerStats:
    async def main() -> WorkerStats:
        worker = Worker(settings, transport=transport, burst=True, **options)
        return await asyncio.wait_for(worker.run(), RUN_TIMEOUT_S)

    return asyncio.run(main())


def lower(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def deliveries(db) -> list:
    return seen_deliveries(db)


def payload_of(db, event_id: str) -> bytes:
    db.commit()
    event = db(db.hookline_event.event_id == event_id).select().first()
    return event.payload.encode("utf-8")


def test_request_carries_signed_standard_webhooks_headers_and_the_payload(settings, db, box):
    view, credentials = make_endpoint(db, box, headers={"X-Tenant": "acme", "Authorization": "t"})
    secret = credentials["secret"]
    event_id = outbox.publish(db, "order.created", {"order": {"order_id": "ord_1"}})
    db.commit()
    transport = RecordingTransport()
    before = int(time.time())

    stats = run(settings, transport)

    assert stats.claimed == 1 and stats.succeeded == 1
    [request] = transport.requests
    assert isinstance(request, OutboundRequest)
    assert request.url == view["url"]
    headers = lower(request.headers)
    assert headers["webhook-id"] == event_id
    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())
    assert headers["content-type"] == "application/json"
    assert headers["x-tenant"] == "acme"
    assert headers["authorization"] == "t"
    assert request.body == payload_of(db, event_id)
    assert json.loads(request.body)["data"] == {"order": {"order_id": "ord_1"}}
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]  # one secret, one signature

    signing.verify(headers, request.body, secrets=[secret], now=int(time.time()))
    received = standardwebhooks.Webhook(secret).verify(request.body, dict(request.headers))
    assert received["type"] == "order.created"
    with pytest.raises(signing.SignatureError):
        signing.verify(headers, request.body + b" ", secrets=[secret], now=int(time.time()))
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(signing.generate_secret()).verify(request.body, headers)

    [row] = deliveries(db)
    assert row.status == "succeeded" and row.attempts == 1


def run_until_settled(settings, db, responder, runs: int = 4):
    """Burst runs (each with a fresh transport answering from ``responder``) until nothing is
    pending; return the summed stats and every request sent."""
    total, requests = WorkerStats(), []
    for _ in range(runs):
        transport = RecordingTransport(responder)
        stats = run(settings, transport)
        assert transport.closed
        requests += transport.requests
        for name in ("claimed", "recorded", "succeeded", "recovered"):
            setattr(total, name, getattr(total, name) + getattr(stats, name))
        if not any(r.status in ("pending", "sending") for r in deliveries(db)):
            break
    return total, requests


def scripted(*results: TransportResult):
    answers = iter(results)
    return lambda _request: next(answers)


def test_retry_after_a_500_then_success_keeps_the_webhook_id(settings, db, box):
    _, credentials = make_endpoint(db, box, retry_schedule="0,0,0")
    event_id = outbox.publish(db, "ping", {"n": 1})
    db.commit()

    total, requests = run_until_settled(
        settings, db, scripted(TransportResult(500, body=b"oops"), TransportResult(200, body=b"ok"))
    )

    [row] = deliveries(db)
    assert row.status == "succeeded"
    assert row.attempts == 2
    assert total.claimed == 2 and total.recorded == 2 and total.succeeded == 1
    assert len(requests) == 2
    ids = {lower(r.headers)["webhook-id"] for r in requests}
    assert ids == {event_id}  # stable across retries: receivers can deduplicate
    for request in requests:
        signing.verify(
            lower(request.headers),
            request.body,
            secrets=[credentials["secret"]],
            now=int(time.time()),
        )
    db.commit()
    log = db(db.hookline_attempt.delivery == row.id).select(orderby=db.hookline_attempt.id)
    assert [(a.number, a.status_code, a.outcome) for a in log] == [
        (1, 500, "retry"),
        (2, 200, "succeeded"),
    ]
    assert log[0].response_body == "oops"


def test_retry_after_header_is_honoured(settings, db, box):
    make_endpoint(db, box, retry_schedule="0,0,0")
    outbox.publish(db, "ping", {})
    db.commit()
    transport = RecordingTransport([TransportResult(429, headers={"retry-after": "120"})])
    started = time.time()

    stats = run(settings, transport)

    assert stats.claimed == 1 and stats.recorded == 1 and stats.succeeded == 0
    [row] = deliveries(db)
    assert row.status == "pending"
    assert row.last_status_code == 429
    assert started + 115 <= row.next_attempt_at <= time.time() + 121
    assert "Retry-After" in row.last_error
    assert len(transport.requests) == 1  # and the burst did not wait for it


def test_rotation_signs_with_both_secrets(settings, db, box):
    view, credentials = make_endpoint(db, box)
    old = credentials["secret"]
    new = endpoints.rotate_secret(db, box, view["endpoint_id"])
    outbox.publish(db, "ping", {})
    db.commit()
    transport = RecordingTransport()

    run(settings, transport)

    [request] = transport.requests
    headers = lower(request.headers)
    parts = headers["webhook-signature"].split(" ")
    assert len(parts) == 2 and all(p.startswith("v1,") for p in parts)
    now = int(time.time())
    signing.verify(headers, request.body, secrets=[old], now=now)
    signing.verify(headers, request.body, secrets=[new], now=now)
    standardwebhooks.Webhook(old).verify(request.body, headers)
    standardwebhooks.Webhook(new).verify(request.body, headers)


def test_ed25519_endpoint_also_gets_a_v1a_signature(settings, db, box):
    _, credentials = make_endpoint(db, box, ed25519=True)
    public_key = credentials["public_key"]
    outbox.publish(db, "ping", {})
    db.commit()
    transport = RecordingTransport()

    run(settings, transport)

    [request] = transport.requests
    headers = lower(request.headers)
    versions = sorted(p.split(",")[0] for p in headers["webhook-signature"].split(" "))
    assert versions == ["v1", "v1a"]
    now = int(time.time())
    signing.verify(headers, request.body, public_keys=[public_key], now=now)
    signing.verify(headers, request.body, secrets=[credentials["secret"]], now=now)
    standardwebhooks.Webhook(credentials["secret"]).verify(request.body, headers)
    other_public = signing.generate_ed25519_keypair()[1]
    with pytest.raises(signing.SignatureError):
        signing.verify(headers, request.body, public_keys=[other_public], now=now)


def test_max_deliveries_stops_early(settings, db, box):
    make_endpoint(db, box)
    for n in range(5):
        outbox.publish(db, "ping", {"n": n})
    db.commit()
    transport = RecordingTransport()

    stats = run(settings, transport, max_deliveries=2)

    assert stats.claimed == 2 and stats.recorded == 2 and stats.succeeded == 2
    assert len(transport.requests) == 2
    statuses = [r.status for r in deliveries(db)]
    assert statuses.count("succeeded") == 2 and statuses.count("pending") == 3


def test_stats_count_claims_records_successes_and_recoveries(settings, db, box):
    make_endpoint(db, box, retry_schedule="0,0")
    long_ago = utcnow() - dt.timedelta(seconds=200)
    for n in range(4):
        outbox.publish(db, "ping", {"n": n}, now=long_ago + dt.timedelta(seconds=n))
    db.commit()
    # The oldest delivery (n=0) was leased by a worker that died long ago.
    [lost] = queue.claim(db, "dead-worker", now=time.time() - 100, capacity=1, lease_s=5)
    assert json.loads(lost.payload)["data"] == {"n": 0}

    def respond(request: OutboundRequest) -> TransportResult:
        n = json.loads(request.body)["data"]["n"]
        return TransportResult(500 if n == 1 else 200)

    stats, requests = run_until_settled(settings, db, respond)

    assert stats.recovered == 1
    # n=0 (recovered, attempt 2), n=1 twice (fails, retried, fails), n=2, n=3
    assert stats.claimed == 5
    assert stats.recorded == 5
    assert stats.succeeded == 3
    assert len(requests) == 5
    by_n = {}
    db.commit()
    for row in deliveries(db):
        event = db.hookline_event[row.event]
        by_n[json.loads(event.payload)["data"]["n"]] = (row.status, row.attempts)
    assert by_n == {
        0: ("succeeded", 2),
        1: ("failed", 2),
        2: ("succeeded", 1),
        3: ("succeeded", 1),
    }


def test_one_burst_run_also_sends_a_retry_that_became_due(settings, db, box):
    # ``burst``: "delivers due deliveries until none is due". A retry due at once (schedule 0)
    # is due when the run ends, so the same run must send it.
    make_endpoint(db, box, retry_schedule="0,0,0")
    outbox.publish(db, "ping", {})
    db.commit()
    transport = RecordingTransport(scripted(TransportResult(500), TransportResult(200)))

    stats = run(settings, transport)

    [row] = deliveries(db)
    assert (row.status, row.attempts) == ("succeeded", 2), "burst ended with a retry due"
    assert stats.claimed == 2 and stats.succeeded == 1


class CallCounter:
    """Replace ``module.name`` with a wrapper that counts its calls in ``count``."""

    def __init__(self, monkeypatch, module, name: str) -> None:
        self.count = 0
        real = getattr(module, name)

        def counting(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counting)


async def _until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_a_worker_waits_instead_of_spinning_when_due_deliveries_cannot_be_claimed(
    settings, db, box, monkeypatch
):
    # One delivery every 10 s: after the first, the others are due but paced beyond the claim's
    # horizon, so every claim comes back empty until then.
    make_endpoint(db, box, rate_limit=0.1)
    for n in range(3):
        outbox.publish(db, "ping", {"n": n})
    db.commit()
    transport = RecordingTransport()
    claims = CallCounter(monkeypatch, queue, "claim")

    async def main() -> int:
        worker = Worker(settings, transport=transport)
        task = asyncio.create_task(worker.run())
        await _until(lambda: len(transport.requests) == 1, 10)
        before = claims.count
        await asyncio.sleep(1.5)
        worker.stop()
        await asyncio.wait_for(task, 10)
        return claims.count - before

    claims_while_paced = asyncio.run(main())

    assert len(transport.requests) == 1  # the rate limit held
    # Retrying at once made thousands of claims in these 1.5 s (each taking the write lock).
    assert claims_while_paced <= 20


def test_commits_that_bring_nothing_due_wake_the_worker_less_and_the_next_delivery_still_soon(
    settings, db, box, monkeypatch
):
    """SQLite: another process's commits reach the worker through its WAL watcher. A busy
    receiver's commits (events nobody subscribes to) must not cost a query each, and the
    first commit that brings a delivery must still be sent within the watcher's longest gap."""
    if not settings.is_sqlite:
        pytest.skip("PostgreSQL wakes the worker with NOTIFY, sent only with deliveries")
    asks = CallCounter(monkeypatch, queue, "next_due")
    transport = RecordingTransport()

    async def main() -> tuple[int, float, float]:
        worker = Worker(settings, transport=transport)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.3)  # started, and idle
        before, started = asks.count, time.monotonic()
        while time.monotonic() - started < 1.0:  # commits as fast as they go, no delivery
            outbox.publish(db, "ping", {"n": 1})
            db.commit()
            await asyncio.sleep(0)  # the worker runs between commits
        asked, elapsed = asks.count - before, time.monotonic() - started
        make_endpoint(db, box)
        outbox.publish(db, "ping", {"n": "last"})
        db.commit()
        published = time.monotonic()
        await _until(lambda: len(transport.requests) == 1, 5)
        waited = time.monotonic() - published
        worker.stop()
        await asyncio.wait_for(task, 10)
        return asked, elapsed, waited

    asked, elapsed, waited = asyncio.run(main())

    # Woken for every change, the worker asked on every poll (every 5 ms: ~200 in the second).
    assert asked <= 1.5 * elapsed / WAL_QUIET_MAX_S + 5, (asked, elapsed)
    # The longest gap, a poll and the send; generous for a loaded CI machine.
    assert waited < 0.5, waited


def test_a_running_worker_discards_what_disabling_an_endpoint_left_and_goes_on_sending(
    settings, db, box, monkeypatch
):
    """Disabling discards a first batch in its own transaction; a running worker discards the
    rest in the background, a batch per transaction, while it keeps sending to the others."""
    monkeypatch.setattr(discard, "DISCARD_BATCH", 2)
    monkeypatch.setattr(discard, "PAUSE_BETWEEN_BATCHES_S", 0.0)
    paused, _ = make_endpoint(db, box, event_types=["ping"])
    make_endpoint(db, box, event_types=["order.paid"])
    for n in range(7):
        outbox.publish(db, "ping", {"n": n})
    db.commit()
    endpoints.set_enabled(db, paused["endpoint_id"], False, reason="test")
    db.commit()
    paused_row = endpoints.find_endpoint(db, paused["endpoint_id"]).id
    assert sorted(r.status for r in deliveries(db)) == ["discarded"] * 2 + ["pending"] * 5
    transport = RecordingTransport()

    async def main() -> None:
        worker = Worker(settings, transport=transport)
        task = asyncio.create_task(worker.run())
        await _until(lambda: not discard.left_behind_count(db, paused_row), 10)
        outbox.publish(db, "order.paid", {"n": "after"})
        db.commit()
        await _until(lambda: len(transport.requests) == 1, 10)
        worker.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())

    statuses = {}
    for row in deliveries(db):
        statuses.setdefault(row.endpoint, []).append(row.status)
    assert statuses[paused_row] == ["discarded"] * 7
    assert [status for ep, rows in statuses.items() if ep != paused_row for status in rows] == [
        "succeeded"
    ]
    assert len(transport.requests) == 1  # and none of the discarded


def test_the_worker_reconnects_after_the_server_drops_its_connection(settings, db, box):
    if settings.is_sqlite:
        pytest.skip("an embedded database has no server that could drop the connection")
    make_endpoint(db, box)
    db.commit()
    transport = RecordingTransport()

    async def main() -> WorkerStats:
        worker = Worker(settings, transport=transport)
        task = asyncio.create_task(worker.run())
        outbox.publish(db, "ping", {"n": 1})
        db.commit()
        await _until(lambda: len(transport.requests) == 1, 10)

        # What a PostgreSQL restart does to the worker's sessions.
        db.executesql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        db.commit()
        outbox.publish(db, "ping", {"n": 2})
        db.commit()
        await _until(lambda: len(transport.requests) == 2, 20)

        worker.stop()
        return await asyncio.wait_for(task, 10)

    stats = asyncio.run(main())

    assert stats.succeeded == 2
    assert [d.status for d in deliveries(db)] == ["succeeded", "succeeded"]


def test_a_stopping_worker_exits_although_the_database_is_gone(settings, db, box, monkeypatch):
    transport = RecordingTransport()

    async def main() -> WorkerStats:
        worker = Worker(settings, transport=transport)
        task = asyncio.create_task(worker.run())
        await _until(lambda: worker._db is not None, 10)

        def database_gone(*args, **kwargs):
            raise worker._transient_errors[0]("the database is gone")

        monkeypatch.setattr(queue, "record_and_claim", database_gone)
        monkeypatch.setattr(queue, "claim", database_gone)
        # A finished attempt that can no longer be recorded (its lease will run out instead).
        worker._results.append(
            queue.SendResult(
                delivery_row=1,
                endpoint_row=1,
                endpoint_id="ep_gone",
                attempt=1,
                lease_owner=worker.worker_id,
                started_at=time.time(),
                duration_ms=1.0,
                status_code=200,
            )
        )
        worker.stop()
        return await asyncio.wait_for(task, 15)  # not a retry loop forever

    stats = asyncio.run(main())

    assert stats.recorded == 0


def test_a_publish_wakes_an_idle_worker_long_before_its_poll(settings, db, box, monkeypatch):
    """The worker learns of a commit from NOTIFY (PostgreSQL) or its WAL watcher (SQLite), not
    from the fallback poll, here made 30 s long."""
    monkeypatch.setattr(worker_module, "POLL_INTERVAL_S", 30.0)
    make_endpoint(db, box)
    db.commit()
    transport = RecordingTransport()

    async def main() -> float:
        worker = Worker(settings, transport=transport)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)  # listening, and idle
        assert transport.requests == []
        outbox.publish(db, "ping", {"n": 1})
        db.commit()
        published = time.monotonic()
        await _until(lambda: len(transport.requests) == 1, 5)
        waited = time.monotonic() - published
        worker.stop()
        await asyncio.wait_for(task, 10)
        return waited

    assert asyncio.run(main()) < 1.0


def test_a_refused_target_is_recorded_as_a_failed_attempt_with_the_reason(settings, db, box):
    """The worker's own transport (no transport injected) refuses loopback unless
    ``HOOKLINE_ALLOW_NETWORKS`` allows it; the refusal is an attempt like any failure."""
    make_endpoint(db, box, url="http://127.0.0.1:9/hook", retry_schedule="0,1h")
    outbox.publish(db, "ping", {})
    db.commit()
    strict = dataclasses.replace(settings, allow_networks="", https_only=False)

    async def main() -> WorkerStats:
        return await asyncio.wait_for(Worker(strict, burst=True).run(), RUN_TIMEOUT_S)

    stats = asyncio.run(main())

    assert (stats.claimed, stats.recorded, stats.succeeded) == (1, 1, 0)
    db.commit()
    [attempt] = db(db.hookline_attempt).select()
    assert attempt.status_code is None and attempt.outcome == "retry"
    assert attempt.error.startswith("blocked: ") and "loopback" in attempt.error
    [row] = deliveries(db)
    assert row.status == "pending" and row.last_error == attempt.error


def test_each_endpoints_timeouts_reach_its_requests(settings, db, box):
    plain, _ = make_endpoint(db, box, url="http://127.0.0.1:9/plain")
    make_endpoint(db, box, url="http://127.0.0.1:9/tight", timeout_s=3, connect_timeout_s=0.5)
    outbox.publish(db, "ping", {})
    db.commit()
    transport = RecordingTransport()

    run(settings, transport)

    timeouts = {r.url: (r.connect_timeout, r.total_timeout) for r in transport.requests}
    assert timeouts == {
        plain["url"]: (5.0, 15.0),  # the defaults: 5 s to connect, 15 s in all
        "http://127.0.0.1:9/tight": (0.5, 3.0),
    }


def test_a_running_worker_purges_what_is_older_than_the_retention(settings, db, box, monkeypatch):
    monkeypatch.setattr(worker_module, "FIRST_PURGE_AFTER_S", 0.0)
    now = utcnow()
    ages = {"old": 40, "kept": 20}  # days; the retention is 30
    events = {
        name: outbox.publish(db, "ping", {}, now=now - dt.timedelta(days=days))
        for name, days in ages.items()
    }
    for name, days in ages.items():
        db.hookline_inbox.insert(
            inbox_id=f"inb_{name}",
            source="s",
            message_id=name,
            method="POST",
            headers="{}",
            status="processed",
            received_at=now - dt.timedelta(days=days),
        )
    db.commit()
    settings = dataclasses.replace(settings, retention_days=30)

    def left() -> tuple[set[str], set[str]]:
        db.commit()  # a fresh snapshot
        return (
            {r.event_id for r in db(db.hookline_event).select()},
            {r.inbox_id for r in db(db.hookline_inbox).select()},
        )

    async def main() -> None:
        worker = Worker(settings, transport=RecordingTransport())
        task = asyncio.create_task(worker.run())
        await _until(lambda: left() == ({events["kept"]}, {"inb_kept"}), 10)
        worker.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
