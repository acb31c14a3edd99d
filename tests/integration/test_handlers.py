"""Handlers for received webhooks (``hookline.handlers``) on SQLite and on PostgreSQL.

The registry's precedence, the lease on ``received`` inbox rows (never shared by two claimers),
the outcome of a handler run (processed, retried on the policy, dead-lettered when exhausted or
on ``PermanentFailure``, rolled back when it raises), lease recovery and replay.

Every test registers its handlers under source names of its own and the registry is restored
after each test, so the built-in handlers and other tests are untouched.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid

import pytest

from hookline import endpoints, handlers, inbox, orders, outbox, sources
from hookline.database import connect
from hookline.duefloor import DUE_FLOOR_MARGIN_S, DUE_FULL_READ_EVERY_S, DueFloor
from hookline.endpoint_rules import parse_endpoint
from hookline.errors import Conflict, NotFound
from hookline.fanout import is_postgres
from hookline.handlers import (
    InboxMessage,
    PermanentFailure,
    claim_messages,
    handler_for,
    process_messages,
    recover_messages,
    register,
    replay_message,
)
from hookline.netguard import NetworkPolicy
from hookline.order_rules import parse_create, parse_patch
from hookline.retry import RetryPolicy
from hookline.secretbox import load_secret_box
from hookline.sqlconn import SqlConn
from hookline.timeutil import from_epoch
from hookline.transport import OutboundRequest, RecordingTransport, TransportResult
from hookline.webio import Request, Response
from hookline.worker import Worker

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("clean_handler_registry")]

NOW = 1_800_000_000.0  # a whole second: datetimes round-trip exactly on both engines
LEASE_S = 30.0
WORKER = "worker-a"


def unique(prefix: str = "src") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def add_source(db, settings, name: str, kind: str = "none") -> None:
    box = load_secret_box(settings.secret_key or None, settings.data_dir)
    fields = {"name": name, "kind": kind}
    if kind not in ("none", "standard"):
        fields["secret"] = "whsec_" + "x" * 32
    sources.create_source(db, box, sources.parse_source(fields, creating=True))
    db.commit()


def add_message(
    db,
    source: str,
    event_type: str | None = "thing.happened",
    body: dict | None = None,
    *,
    at: float = NOW,
    status: str = "received",
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
) -> int:
    """Store a received inbox row due at ``at`` (then set to ``status``); its row id. Its body
    is ``body`` as JSON, or the bytes ``raw``."""
    if raw is None:
        raw = json.dumps(body if body is not None else {"type": event_type}).encode()
    request = Request.build(
        "POST",
        f"/myapp/webhook/{source}",
        headers or {"Content-Type": "application/json"},
        raw,
    )
    inbox_id = inbox.record(
        db,
        source=source,
        message_id=message_id,
        request=request,
        response=Response(200, b"{}"),
        status="received",
        event_type=event_type,
        now=from_epoch(at),
    )
    row = db(db.hookline_inbox.inbox_id == inbox_id).select().first()
    if status != "received":
        row.update_record(status=status)
    db.commit()
    return row.id


def new_order(product: str):
    return parse_create({"product_name": product, "unit_price": "9.50", "currency": "USD"})


def row(db, row_id: int):
    db.commit()  # a fresh snapshot: only committed data
    return db.hookline_inbox[row_id]


def process(db, messages, *, now: float = NOW, policy: RetryPolicy | None = None, worker=WORKER):
    return process_messages(
        db,
        messages,
        worker,
        now=now,
        policy=policy or RetryPolicy(jitter=0),
        rng=random.Random(1),
    )


def claim(db, *, now: float = NOW, capacity: int = 10, worker: str = WORKER):
    return claim_messages(db, worker, now=now, capacity=capacity, lease_s=LEASE_S)


# --- the registry ----------------------------------------------------------------------------


def _handler(name: str):
    def handle(db, message) -> None:
        return None

    handle.__name__ = name
    return handle


def test_registry_source_before_kind_and_exact_type_before_any():
    source, kind = unique(), unique("kind")
    by_kind_any = register(kind, kind=True)(_handler("by_kind_any"))
    by_kind_exact = register(kind, "a.b", kind=True)(_handler("by_kind_exact"))

    assert handler_for(unique(), kind, "a.b") is by_kind_exact
    assert handler_for(unique(), kind, "c.d") is by_kind_any
    assert handler_for(unique(), kind, None) is by_kind_any

    by_source_any = register(source)(_handler("by_source_any"))
    # A handler for the source name wins over the kind's, even the kind's exact-type one.
    assert handler_for(source, kind, "a.b") is by_source_any
    by_source_exact = register(source, "a.b")(_handler("by_source_exact"))
    assert handler_for(source, kind, "a.b") is by_source_exact
    assert handler_for(source, kind, "c.d") is by_source_any
    # Other sources of the kind are unaffected.
    assert handler_for(unique(), kind, "a.b") is by_kind_exact


def test_registry_source_names_and_kinds_do_not_collide_and_none_is_none():
    name = unique()
    as_kind = register(name, "x", kind=True)(_handler("as_kind"))
    assert handler_for(name, unique("other"), "x") is None  # a source *named* like the kind
    assert handler_for(unique(), name, "x") is as_kind
    assert handler_for(unique(), unique("kind"), "x") is None
    assert handler_for(unique(), name, "y") is None  # exact type only, no "*" registered


# --- claiming --------------------------------------------------------------------------------


def test_claim_leases_only_due_received_rows(settings, db, other_db):
    source = unique()
    add_source(db, settings, source, kind="hmac")
    due = add_message(db, source, "a.due", {"type": "a.due", "n": 1}, at=NOW - 5)
    future = add_message(db, source, at=NOW + 60)
    processed = add_message(db, source, status="processed", at=NOW - 10)
    failed = add_message(db, source, status="failed", at=NOW - 10)
    busy = add_message(db, source, status="processing", at=NOW - 10)

    [message] = claim(db)

    assert isinstance(message, InboxMessage)
    assert message.row_id == due
    assert (message.source, message.kind, message.event_type) == (source, "hmac", "a.due")
    assert json.loads(message.body) == {"type": "a.due", "n": 1}
    assert message.json() == {"type": "a.due", "n": 1}
    assert message.headers.get("content-type") == "application/json"
    leased = row(other_db, due)  # committed: another connection sees the lease
    assert (leased.status, leased.attempts, leased.lease_owner) == ("processing", 1, WORKER)
    assert leased.lease_until == pytest.approx(NOW + LEASE_S)
    for row_id, status in (
        (future, "received"),
        (processed, "processed"),
        (failed, "failed"),
        (busy, "processing"),
    ):
        untouched = row(other_db, row_id)
        assert (untouched.status, untouched.attempts, untouched.lease_owner) == (status, 0, None)
    assert claim(db) == []  # the leased one is not claimed twice
    assert [m.row_id for m in claim(db, now=NOW + 61)] == [future]


def test_a_claimed_message_carries_its_exact_bytes_id_and_headers(settings, db):
    """What the handler gets is what was received: a body that is not UTF-8, the provider's
    message id, every stored header; a source deleted since counts as kind ``none``."""
    source, gone = unique(), unique()
    add_source(db, settings, source, kind="github")
    add_source(db, settings, gone, kind="stripe")
    body = b"\xff\x00\xfe binary \xe2\x82"
    headers = {"Content-Type": "application/octet-stream", "X-GitHub-Delivery": "d-1"}
    headers["X-Extra"] = "ö"
    for name, message_id in ((source, "d-1"), (gone, None)):
        add_message(db, name, "push", raw=body, headers=headers, message_id=message_id, at=NOW - 1)
    db(db.hookline_source.name == gone).delete()
    db.commit()

    first, second = claim(db)
    assert (first.source, first.kind, first.message_id) == (source, "github", "d-1")
    assert (second.source, second.kind, second.message_id) == (gone, "none", None)
    for message in (first, second):
        assert message.body == body
        assert message.event_type == "push"
        assert message.headers.get("x-github-delivery") == "d-1"
        assert message.headers.get("x-extra") == "ö"


def test_claim_takes_at_most_capacity_oldest_due_first(settings, db):
    source = unique()
    add_source(db, settings, source)
    later = add_message(db, source, at=NOW - 1)
    first = add_message(db, source, at=NOW - 30)
    second = add_message(db, source, at=NOW - 20)

    assert [m.row_id for m in claim(db, capacity=2)] == [first, second]
    assert [m.row_id for m in claim(db, capacity=2)] == [later]


def test_two_concurrent_claimers_never_share_a_message(settings, db):
    source = unique()
    add_source(db, settings, source)
    expected = {add_message(db, source, at=NOW - i) for i in range(60)}
    start = threading.Barrier(2)
    got: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        conn = connect(settings)
        mine: list[int] = []
        try:
            start.wait(timeout=10)
            while True:
                batch = claim_messages(conn, name, now=NOW, capacity=3, lease_s=LEASE_S)
                if not batch:
                    break
                mine += [m.row_id for m in batch]
        except BaseException as error:  # reported below, not swallowed
            errors.append(error)
        finally:
            got[name] = mine
            conn.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=45)
    assert not any(t.is_alive() for t in threads), "a claimer hung"
    assert errors == []
    assert set(got["w1"]).isdisjoint(got["w2"])
    assert len(got["w1"]) + len(got["w2"]) == len(expected)
    assert set(got["w1"]) | set(got["w2"]) == expected
    db.commit()
    for name, ids in got.items():
        for row_id in ids:
            leased = db.hookline_inbox[row_id]
            assert (leased.status, leased.lease_owner, leased.attempts) == ("processing", name, 1)


def floored_claim(db, floor: DueFloor, *, now: float, capacity: int = 10):
    return claim_messages(db, WORKER, now=now, capacity=capacity, lease_s=LEASE_S, floor=floor)


def test_a_claim_with_a_floor_takes_a_message_received_late_within_the_margin(settings, db):
    """A worker's handler claims start reading the due index a margin below the earliest
    received message the last one saw (PostgreSQL; SQLite ignores the floor): a message whose
    transaction chose its time a little before that, and committed after, is still taken."""
    source = unique()
    add_source(db, settings, source)
    first = [add_message(db, source, at=NOW) for _ in range(2)]
    floor = DueFloor()
    assert sorted(m.row_id for m in floored_claim(db, floor, now=NOW + 1)) == sorted(first)

    late = add_message(db, source, at=NOW - DUE_FLOOR_MARGIN_S / 2)
    assert [m.row_id for m in floored_claim(db, floor, now=NOW + 2)] == [late]


def test_a_message_due_below_the_margin_waits_at_most_for_the_next_full_read(settings, db):
    """One further below than the margin is taken by the next claim that reads the index from
    its start, at most ``DUE_FULL_READ_EVERY_S`` later."""
    source = unique()
    add_source(db, settings, source)
    add_message(db, source, at=NOW)
    clock = [0.0]
    floor = DueFloor(clock=lambda: clock[0])
    assert len(floored_claim(db, floor, now=NOW + 1)) == 1

    behind = add_message(db, source, at=NOW - DUE_FLOOR_MARGIN_S - 60)
    clock[0] = DUE_FULL_READ_EVERY_S - 0.5
    taken = floored_claim(db, floor, now=NOW + 2)
    if is_postgres(db):
        assert taken == []  # below where this claim started
        clock[0] = DUE_FULL_READ_EVERY_S
        taken = floored_claim(db, floor, now=NOW + 3)
    assert [m.row_id for m in taken] == [behind]


def test_a_claim_with_a_floor_does_not_read_the_entries_handled_messages_left_behind(settings, db):
    """PostgreSQL keeps a handled message's entry in the due index until a vacuum: read from
    the start, 20,000 of them cost every look for due messages a walk over their pages."""
    if not is_postgres(db):
        pytest.skip("SQLite removes an index entry when its row leaves the index")
    source = unique()
    add_source(db, settings, source)
    template = add_message(db, source, at=NOW - 30_000)
    db.executesql("ALTER TABLE hookline_inbox SET (autovacuum_enabled = false)")
    db.commit()
    try:
        db.executesql(
            "INSERT INTO hookline_inbox (inbox_id, source, method, content_type, headers, body,"
            " status, received_at, event_type, attempts, next_attempt_at)"
            " SELECT 'inb_floor' || g, source, method, content_type, headers, body, 'received',"
            " received_at, event_type, 0, next_attempt_at + g FROM hookline_inbox, "
            " generate_series(1, 20100) AS g WHERE id = %s",
            placeholders=[template],
        )
        db.executesql(
            "UPDATE hookline_inbox SET status = 'processed' WHERE next_attempt_at <= %s",
            placeholders=[NOW - 30_000 + 20_000],
        )
        db.commit()
        floor = DueFloor()
        taken = floored_claim(db, floor, now=NOW, capacity=5)
        assert [m.inbox_id for m in taken] == [f"inb_floor{g}" for g in range(20001, 20006)]
        assert floor.at == NOW - 30_000 + 20_001

        def blocks(start: float) -> int:
            [[plan]] = SqlConn.of(db).all(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + handlers._ANY_DUE, [NOW, start]
            )
            db.rollback()
            plan = plan if isinstance(plan, list) else json.loads(plan)
            node = plan[0]["Plan"]
            return node["Shared Hit Blocks"] + node["Shared Read Blocks"]

        from_start, from_floor = blocks(float("-inf")), blocks(floor.start())
        assert from_floor * 5 < from_start, (from_floor, from_start)
    finally:
        db.rollback()
        db.executesql("ALTER TABLE hookline_inbox RESET (autovacuum_enabled)")
        db.commit()


# --- processing ------------------------------------------------------------------------------


def test_success_marks_processed_and_commits_the_handlers_writes(settings, db, other_db):
    source = unique()
    add_source(db, settings, source)
    seen: list[InboxMessage] = []

    @register(source, "order.wanted")
    def handle(conn, message: InboxMessage) -> None:
        seen.append(message)
        orders.create_order(conn, new_order(message.json()["product"]))

    row_id = add_message(db, source, "order.wanted", {"type": "order.wanted", "product": "mug"})

    counts = process(db, claim(db))

    assert counts == {"processed": 1, "retry": 0, "failed": 0}
    assert [m.row_id for m in seen] == [row_id]
    done = row(other_db, row_id)
    assert done.status == "processed"
    assert done.processed_at == from_epoch(NOW)
    assert (done.last_error, done.lease_owner, done.lease_until) == (None, None, None)
    assert done.attempts == 1
    other_db.commit()
    assert [r.product_name for r in other_db(other_db.hookline_order).select()] == ["mug"]
    assert claim(db, now=NOW + 3600) == []


def test_a_raising_handler_is_retried_on_the_policy_schedule(settings, db, other_db):
    source = unique()
    add_source(db, settings, source)

    @register(source)
    def handle(conn, message) -> None:
        raise RuntimeError("downstream is down")

    row_id = add_message(db, source)
    policy = RetryPolicy(schedule=(0, 30, 600), jitter=0)

    counts = process(db, claim(db), policy=policy)

    assert counts == {"processed": 0, "retry": 1, "failed": 0}
    again = row(other_db, row_id)
    assert again.status == "received"
    assert again.next_attempt_at == pytest.approx(NOW + 30)
    assert again.last_error == "RuntimeError: downstream is down"
    assert (again.attempts, again.lease_owner, again.lease_until) == (1, None, None)
    assert again.processed_at is None
    assert claim(db, now=NOW + 29) == []  # not due before the schedule says
    [message] = claim(db, now=NOW + 30)
    assert message.attempt == 2  # what the handler sees, and what the schedule counts
    assert process(db, [message], now=NOW + 30, policy=policy)["retry"] == 1
    assert row(other_db, row_id).next_attempt_at == pytest.approx(NOW + 30 + 600)
    assert row(other_db, row_id).attempts == 2


def test_exhausted_schedule_dead_letters_the_message(settings, db, other_db):
    source = unique()
    add_source(db, settings, source)
    calls: list[int] = []

    @register(source)
    def handle(conn, message) -> None:
        calls.append(message.row_id)
        raise ValueError("still broken")

    row_id = add_message(db, source)
    policy = RetryPolicy(schedule=(0, 0), jitter=0)

    first = process(db, claim(db), policy=policy)
    assert first == {"processed": 0, "retry": 1, "failed": 0}
    assert row(other_db, row_id).status == "received"
    second = process(db, claim(db), policy=policy)  # due again at once (delay 0)

    assert second == {"processed": 0, "retry": 0, "failed": 1}
    dead = row(other_db, row_id)
    assert (dead.status, dead.attempts) == ("failed", 2)
    assert "still broken" in dead.last_error
    assert dead.processed_at == from_epoch(NOW)
    assert dead.lease_owner is None
    assert calls == [row_id, row_id]
    assert claim(db, now=NOW + 86_400 * 60) == []  # never claimed again


def test_permanent_failure_dead_letters_at_once(settings, db, other_db):
    source = unique()
    add_source(db, settings, source)

    @register(source)
    def handle(conn, message) -> None:
        raise PermanentFailure("this can never work")

    row_id = add_message(db, source)

    counts = process(db, claim(db))  # the default schedule has 8 attempts; none is used

    assert counts == {"processed": 0, "retry": 0, "failed": 1}
    dead = row(other_db, row_id)
    assert (dead.status, dead.attempts) == ("failed", 1)
    assert dead.last_error == "permanent: this can never work"
    assert dead.processed_at == from_epoch(NOW)
    assert claim(db, now=NOW + 86_400) == []


@pytest.mark.parametrize("error", [RuntimeError("after the write"), PermanentFailure("nope")])
def test_a_raising_handlers_writes_are_rolled_back(settings, db, other_db, error):
    source = unique()
    add_source(db, settings, source)
    order = orders.create_order(db, new_order("lamp"))
    db.commit()
    events_before = other_db(other_db.hookline_event).count()

    @register(source)
    def handle(conn, message) -> None:
        orders.create_order(conn, new_order("half-written"))
        orders.apply_patch(conn, order["order_id"], parse_patch({"product_name": "lamp2"}))
        raise error

    row_id = add_message(db, source)
    process(db, claim(db))

    other_db.commit()
    names = [r.product_name for r in other_db(other_db.hookline_order).select()]
    assert names == ["lamp"]
    assert other_db(other_db.hookline_event).count() == events_before
    assert orders.get_order(other_db, order["order_id"])["version"] == 1
    assert row(other_db, row_id).status in ("received", "failed")


def test_a_message_with_no_handler_is_processed_and_kept(settings, db, other_db):
    source = unique()
    add_source(db, settings, source)
    row_id = add_message(db, source, "nobody.listens")

    counts = process(db, claim(db))

    assert counts == {"processed": 1, "retry": 0, "failed": 0}
    kept = row(other_db, row_id)
    assert (kept.status, kept.last_error) == ("processed", "no handler registered")
    assert kept.processed_at == from_epoch(NOW)


def test_one_failing_message_does_not_stop_the_batch(settings, db, other_db):
    source_bad, source_good = unique(), unique()
    add_source(db, settings, source_bad)
    add_source(db, settings, source_good)
    register(source_bad)(lambda conn, message: 1 / 0)
    register(source_good)(lambda conn, message: None)
    bad = add_message(db, source_bad, at=NOW - 2)
    good = add_message(db, source_good, at=NOW - 1)

    counts = process(db, claim(db))

    assert counts == {"processed": 1, "retry": 1, "failed": 0}
    assert row(other_db, bad).last_error.startswith("ZeroDivisionError")
    assert row(other_db, good).status == "processed"


def test_a_worker_that_lost_its_lease_does_not_commit_its_handlers_writes(settings, db, other_db):
    """Worker A's lease ran out and worker B has the message now: A's late outcome is not
    recorded, and A's handler effects must not commit either (or B's run makes them twice)."""
    source = unique()
    add_source(db, settings, source)

    @register(source)
    def handle(conn, message) -> None:
        orders.create_order(conn, new_order("once"))

    row_id = add_message(db, source)
    [late] = claim(db, worker="worker-a")
    assert recover_messages(db, now=NOW + LEASE_S + 1, policy=RetryPolicy()) == 1
    [current] = claim(other_db, now=NOW + LEASE_S + 1, worker="worker-b")

    process(db, [late], now=NOW + LEASE_S + 2, worker="worker-a")
    process(other_db, [current], now=NOW + LEASE_S + 2, worker="worker-b")

    done = row(db, row_id)
    assert done.status == "processed"
    db.commit()
    names = [r.product_name for r in db(db.hookline_order).select()]
    assert names == ["once"], "the handler's effects were committed by both workers"


# --- recovery and replay ---------------------------------------------------------------------


def test_recover_returns_expired_processing_rows_to_received(settings, db, other_db):
    source = unique()
    add_source(db, settings, source)
    expired = add_message(db, source, at=NOW - 100)
    claim(db, now=NOW - 100)  # lease until NOW - 70
    fresh = add_message(db, source, at=NOW - 10)
    claim(db, now=NOW - 10)  # lease until NOW + 20

    assert recover_messages(db, now=NOW, policy=RetryPolicy()) == 1

    back = row(other_db, expired)
    assert (back.status, back.lease_owner, back.lease_until) == ("received", None, None)
    assert back.next_attempt_at == pytest.approx(NOW)
    assert "lease expired" in back.last_error
    still = row(other_db, fresh)
    assert (still.status, still.lease_owner) == ("processing", WORKER)
    [again] = claim(db, now=NOW, worker="worker-b")
    assert again.row_id == expired
    assert row(other_db, expired).attempts == 2
    assert recover_messages(db, now=NOW, policy=RetryPolicy()) == 0


def test_recover_dead_letters_a_message_that_used_up_its_attempts(settings, db, other_db):
    """A message whose handler kills every worker must not be retried forever."""
    source = unique()
    add_source(db, settings, source)
    doomed = add_message(db, source, at=NOW - 100)
    claim(db, now=NOW - 100)  # attempt 1, lease until NOW - 70

    assert recover_messages(db, now=NOW, policy=RetryPolicy(schedule=(0,))) == 1

    dead = row(other_db, doomed)
    assert (dead.status, dead.lease_owner) == ("failed", None)
    assert "attempts exhausted" in dead.last_error
    assert claim(db, now=NOW + 1000) == []


def test_replay_puts_a_failed_message_back(settings, db, other_db):
    source = unique()
    add_source(db, settings, source)
    outcomes = iter([PermanentFailure("bad data"), None])

    @register(source)
    def handle(conn, message) -> None:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    row_id = add_message(db, source)
    process(db, claim(db))
    dead = row(other_db, row_id)
    assert dead.status == "failed"

    answer = replay_message(db, dead.inbox_id, now=from_epoch(NOW + 60))
    db.commit()

    assert answer == {"inbox_id": dead.inbox_id, "status": "received"}
    back = row(other_db, row_id)
    assert (back.status, back.attempts, back.last_error) == ("received", 0, None)
    assert back.next_attempt_at == pytest.approx(NOW + 60)
    [message] = claim(db, now=NOW + 60)
    assert process(db, [message], now=NOW + 60)["processed"] == 1
    done = row(other_db, row_id)
    assert (done.status, done.attempts, done.processed_at) == (
        "processed",
        1,
        from_epoch(NOW + 60),
    )


def test_replay_refuses_a_message_being_handled_and_an_unknown_one(settings, db, other_db):
    source = unique()
    add_source(db, settings, source)
    row_id = add_message(db, source)
    claim(db)
    inbox_id = row(db, row_id).inbox_id

    with pytest.raises(Conflict):
        replay_message(db, inbox_id)
    db.rollback()
    still = row(other_db, row_id)
    assert (still.status, still.lease_owner, still.attempts) == ("processing", WORKER, 1)

    with pytest.raises(NotFound):
        replay_message(db, "msg_does_not_exist")


def test_replay_of_a_processed_message_runs_its_handler_again(settings, db, other_db):
    source = unique()
    add_source(db, settings, source)
    calls: list[int] = []
    register(source)(lambda conn, message: calls.append(message.row_id))
    row_id = add_message(db, source)
    process(db, claim(db))
    replay_message(db, row(db, row_id).inbox_id, now=from_epoch(NOW + 5))
    db.commit()

    process(db, claim(db, now=NOW + 5), now=NOW + 5)

    assert calls == [row_id, row_id]
    assert row(other_db, row_id).status == "processed"


def test_a_message_whose_source_was_deleted_still_gets_a_kind(settings, db, other_db):
    source = unique()
    add_source(db, settings, source, kind="hmac")
    row_id = add_message(db, source)
    sources.delete_source(db, source)
    db.commit()

    [message] = claim(db)

    assert (message.row_id, message.kind) == (row_id, "none")
    assert process(db, [message])["processed"] == 1
    assert row(other_db, row_id).last_error == "no handler registered"


def test_a_worker_busy_with_deliveries_still_runs_due_handlers(settings, db):
    """The worker looks for received webhooks less often while deliveries keep it busy, but it
    does look: a handler runs while a slow delivery is still in flight."""
    source = unique()
    add_source(db, settings, source)
    handled_at: list[float] = []
    register(source)(lambda conn, message: handled_at.append(time.monotonic()))
    box = load_secret_box(settings.secret_key or None, settings.data_dir)
    network = NetworkPolicy.from_settings("127.0.0.0/8")
    endpoints.create_endpoint(
        db, box, parse_endpoint({"url": "http://127.0.0.1:9/slow"}, network, creating=True)
    )
    outbox.publish(db, "ping", {"n": 1})
    db.commit()
    # Due only once the delivery is in flight: the worker is busy, not idle, when it comes due.
    add_message(db, source, at=time.time() + 0.3)
    sent_at: list[float] = []

    async def slow(request: OutboundRequest) -> TransportResult:
        await asyncio.sleep(2.5)
        sent_at.append(time.monotonic())
        return TransportResult(200)

    async def main() -> None:
        worker = Worker(settings, transport=RecordingTransport(slow), max_deliveries=1)
        await worker.run()

    asyncio.run(main())

    assert len(sent_at) == 1
    assert len(handled_at) == 1 and handled_at[0] < sent_at[0]


def test_a_claim_waits_for_sqlites_write_lock_and_then_takes_the_message(settings, db):
    if not settings.is_sqlite:
        pytest.skip("PostgreSQL has no database-wide write lock")
    import sqlite3

    source = unique()
    add_source(db, settings, source)
    add_message(db, source)
    timeout_before = db.executesql("PRAGMA busy_timeout")[0][0]
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        other = sqlite3.connect(str(settings.sqlite_path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        holding.set()
        release.wait(5)
        other.execute("ROLLBACK")
        other.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    threading.Timer(0.3, release.set).start()
    claimed = claim(db, now=NOW)
    holder.join()

    assert len(claimed) == 1
    assert db.executesql("PRAGMA busy_timeout")[0][0] == timeout_before > 0
