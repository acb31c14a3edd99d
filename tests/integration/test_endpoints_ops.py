"""Endpoints (secrets, rotation, lifecycle), their validation, and operator actions.

Runs on SQLite and PostgreSQL. Covers DESIGN §5's manual transitions (retry, recover, replay,
endpoint disabled/deleted -> discarded) and §3.5's "outbound requests never reach loopback
unless allow-listed" at the point where an endpoint URL is accepted.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from delivery_rows import seen_deliveries, send_once
from hookline import discard, endpoints, operations, outbox, queue, secretbox, signing
from hookline.cli import cli
from hookline.cli_delivery import register
from hookline.endpoint_rules import parse_endpoint
from hookline.errors import Conflict, NotFound, ValidationFailed
from hookline.netguard import NetworkPolicy
from hookline.timeutil import from_epoch, isoformat, to_epoch, utcnow

NETWORK = NetworkPolicy.from_settings("127.0.0.0/8")
STRICT = NetworkPolicy()  # the default: no private or loopback targets


@pytest.fixture
def box() -> secretbox.SecretBox:
    return secretbox.SecretBox([secretbox.generate_key()])


@pytest.fixture
def t0() -> dt.datetime:
    return utcnow().replace(microsecond=0)


def create(db, box, now: dt.datetime | None = None, **fields):
    data = {"url": "http://127.0.0.1:9/hook", **fields}
    return endpoints.create_endpoint(db, box, parse_endpoint(data, NETWORK, creating=True), now=now)


def update(db, box, endpoint_id: str, **fields):
    return endpoints.update_endpoint(
        db, box, endpoint_id, parse_endpoint(fields, NETWORK, creating=False)
    )


def row_id(db, endpoint_id: str) -> int:
    return endpoints.find_endpoint(db, endpoint_id).id


def deliveries(db, **where) -> list:
    return seen_deliveries(db, **where)  # a fresh snapshot: see what the queue committed


def event_row(db, event_id: str):
    return db(db.hookline_event.event_id == event_id).select().first()


# --- secrets ---------------------------------------------------------------------------------


def test_secrets_are_stored_encrypted_and_shown_once(db, box):
    view, credentials = create(db, box)
    db.commit()
    secret = credentials["secret"]
    assert secret.startswith("whsec_")
    assert set(credentials) == {"secret"}
    assert "secret" not in json.dumps(view).lower().replace("secret_", "")
    [stored] = db(db.hookline_endpoint_secret).select()
    assert secret not in stored.secret_enc
    assert secret.removeprefix("whsec_") not in stored.secret_enc
    assert box.decrypt(stored.secret_enc) == secret
    # Nothing in the endpoint row either.
    row = endpoints.find_endpoint(db, view["endpoint_id"])
    assert all(secret.removeprefix("whsec_") not in str(value) for value in row.as_dict().values())
    # A different key cannot read it.
    other = secretbox.SecretBox([secretbox.generate_key()])
    with pytest.raises(secretbox.SecretDecryptError):
        other.decrypt(stored.secret_enc)
    assert endpoints.active_secrets(db, box, row.id) == [secret]


def test_rotation_keeps_the_old_secret_during_grace_only(db, box, t0):
    view, credentials = create(db, box, now=t0)
    old = credentials["secret"]
    ep = view["endpoint_id"]
    new = endpoints.rotate_secret(db, box, ep, grace=dt.timedelta(hours=1), now=t0)
    db.commit()
    assert new.startswith("whsec_") and new != old
    rid = row_id(db, ep)
    assert endpoints.active_secrets(db, box, rid, now=t0) == [new, old]
    assert endpoints.active_secrets(db, box, rid, now=t0 + dt.timedelta(minutes=59)) == [new, old]
    assert endpoints.active_secrets(db, box, rid, now=t0 + dt.timedelta(hours=2)) == [new]
    assert endpoints.active_secrets(db, box, rid, now=t0 + dt.timedelta(days=400)) == [new]
    for stored in db(db.hookline_endpoint_secret).select():
        assert new not in stored.secret_enc and old not in stored.secret_enc


def test_rotating_again_does_not_extend_an_older_secrets_grace(db, box, t0):
    view, credentials = create(db, box, now=t0)
    first = credentials["secret"]
    ep = view["endpoint_id"]
    second = endpoints.rotate_secret(db, box, ep, grace=dt.timedelta(hours=1), now=t0)
    later = t0 + dt.timedelta(minutes=30)
    third = endpoints.rotate_secret(db, box, ep, grace=dt.timedelta(hours=1), now=later)
    rid = row_id(db, ep)
    assert endpoints.active_secrets(db, box, rid, now=later) == [third, second, first]
    at = t0 + dt.timedelta(minutes=70)  # the first's grace is over, the second's is not
    assert endpoints.active_secrets(db, box, rid, now=at) == [third, second]
    assert endpoints.active_secrets(db, box, rid, now=t0 + dt.timedelta(hours=2)) == [third]


def test_ed25519_endpoint_gets_an_encrypted_signing_key_and_a_public_key(db, box):
    view, credentials = create(db, box, ed25519=True)
    assert view["ed25519"] is True
    public = credentials["public_key"]
    assert public.startswith("whpk_")
    row = endpoints.find_endpoint(db, view["endpoint_id"])
    assert row.signing_key_enc is not None
    assert "whsk_" not in row.signing_key_enc
    private = box.decrypt(row.signing_key_enc)
    assert private.startswith("whsk_")
    assert signing.public_key_of(private) == public
    # The pair works: what the stored key signs, the returned public key verifies.
    body = b'{"a":1}'
    header = signing.sign_v1a(private, "msg_1", 1_700_000_000, body)
    signing.verify(
        {"webhook-id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": header},
        body,
        public_keys=[public],
        now=1_700_000_000,
    )


def test_ed25519_switched_on_and_off_by_update(db, box):
    view, credentials = create(db, box)
    ep = view["endpoint_id"]
    assert "public_key" not in credentials and view["ed25519"] is False
    changed, new_credentials = update(db, box, ep, ed25519=True)
    assert changed["ed25519"] is True
    assert new_credentials["public_key"].startswith("whpk_")
    again, none = update(db, box, ep, ed25519=True)  # already on: the same key is kept
    assert none == {} and again["ed25519"] is True
    off, _ = update(db, box, ep, ed25519=False)
    assert off["ed25519"] is False
    assert endpoints.find_endpoint(db, ep).signing_key_enc is None


# --- lifecycle -------------------------------------------------------------------------------


def test_update_changes_only_what_is_given(db, box):
    view, _ = create(
        db,
        box,
        description="first",
        event_types=["order.created"],
        headers={"X-Tenant": "acme"},
        rate_limit=5,
        retry_schedule="0,5s,5m",
        max_in_flight=7,
    )
    ep = view["endpoint_id"]
    changed, credentials = update(
        db, box, ep, description="second", rate_limit=None, event_types="order.paid,ping"
    )
    assert credentials == {}
    assert changed["description"] == "second"
    assert changed["rate_limit"] is None
    assert changed["event_types"] == ["order.paid", "ping"]
    assert changed["headers"] == {"X-Tenant": "acme"}
    assert changed["retry_schedule"] == "0,5s,5m"
    assert changed["max_in_flight"] == 7
    assert changed["url"] == view["url"]
    db.commit()
    assert endpoints.get_endpoint(db, ep) == changed
    with pytest.raises(ValidationFailed) as refused:
        update(db, box, ep)
    assert "body" in refused.value.errors
    with pytest.raises(NotFound):
        update(db, box, "ep_missing", description="x")


def test_disable_discards_pending_and_enable_restores(db, box, t0):
    view, _ = create(db, box, event_types=["ping"])
    ep = view["endpoint_id"]
    outbox.publish(db, "ping", {"n": 1}, now=t0)
    outbox.publish(db, "ping", {"n": 2}, now=t0)
    db.commit()
    db(db.hookline_endpoint.endpoint_id == ep).update(failing_since=t0)
    disabled, _ = update(db, box, ep, enabled=False)
    db.commit()
    assert disabled["enabled"] is False
    assert disabled["disabled_reason"] == "changed by an operator"
    assert disabled["disabled_at"] is not None
    rows = deliveries(db, endpoint=row_id(db, ep))
    assert [r.status for r in rows] == ["discarded", "discarded"]
    assert all(r.finished_at is not None and "disabled" in r.last_error for r in rows)
    assert db(db.hookline_event.type == "endpoint.disabled").count() == 1
    # A new event does not reach it.
    outbox.publish(db, "ping", {"n": 3}, now=t0)
    assert len(deliveries(db, endpoint=row_id(db, ep))) == 2
    # Disabling again changes nothing and publishes nothing.
    endpoints.set_enabled(db, ep, False, reason="again")
    assert db(db.hookline_event.type == "endpoint.disabled").count() == 1

    enabled = endpoints.set_enabled(db, ep, True, reason="back")
    assert enabled["enabled"] is True
    assert enabled["disabled_reason"] is None and enabled["disabled_at"] is None
    assert enabled["failing_since"] is None
    assert [r.status for r in deliveries(db, endpoint=row_id(db, ep))] == ["discarded"] * 2
    outbox.publish(db, "ping", {"n": 4}, now=t0)
    assert len(deliveries(db, endpoint=row_id(db, ep), status="pending")) == 1


def test_delete_hides_the_endpoint_and_discards_its_work(db, box, t0):
    kept, _ = create(db, box)
    gone, _ = create(db, box)
    outbox.publish(db, "ping", {}, now=t0)
    db.commit()
    gone_row = row_id(db, gone["endpoint_id"])
    endpoints.delete_endpoint(db, gone["endpoint_id"], now=t0)
    db.commit()
    assert [e["endpoint_id"] for e in endpoints.list_endpoints(db)] == [kept["endpoint_id"]]
    with pytest.raises(NotFound):
        endpoints.get_endpoint(db, gone["endpoint_id"])
    with pytest.raises(NotFound):
        endpoints.delete_endpoint(db, gone["endpoint_id"])
    assert [r.status for r in deliveries(db, endpoint=gone_row)] == ["discarded"]
    outbox.publish(db, "ping", {}, now=t0)
    assert len(deliveries(db, endpoint=gone_row)) == 1
    assert len(deliveries(db, endpoint=row_id(db, kept["endpoint_id"]))) == 2
    # Its history is kept (until the retention purge).
    assert db(db.hookline_endpoint.id == gone_row).count() == 1


def _backlog(db, box, n: int, t0: dt.datetime) -> tuple[str, int]:
    """An endpoint with ``n`` pending deliveries."""
    view, _ = create(db, box, event_types=["ping"])
    for i in range(n):
        outbox.publish(db, "ping", {"n": i}, now=t0)
    db.commit()
    return view["endpoint_id"], row_id(db, view["endpoint_id"])


def _statuses(db, endpoint_row: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in deliveries(db, endpoint=endpoint_row):
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts


def test_a_large_backlog_is_discarded_a_batch_per_transaction(db, box, t0, monkeypatch):
    """Disabling or deleting discards a first batch; the rest waits for
    ``discard.discard_left_behind``, a batch per committed transaction, and no claim takes it
    meanwhile. (200,000 in one transaction held SQLite's write lock for 1.2-1.5 s.)"""
    monkeypatch.setattr(discard, "DISCARD_BATCH", 3)
    disabled, disabled_row = _backlog(db, box, 0, t0)
    deleted, deleted_row = _backlog(db, box, 8, t0)  # both subscribe to ping: 8 each
    endpoints.set_enabled(db, disabled, False, reason="gone quiet")
    endpoints.delete_endpoint(db, deleted, now=t0)
    db.commit()
    for endpoint_row in (disabled_row, deleted_row):
        assert _statuses(db, endpoint_row) == {"discarded": 3, "pending": 5}
    assert [ep.endpoint_id for ep in discard.left_behind(db)] == [disabled, deleted]
    assert queue.claim(db, "w", now=to_epoch(t0) + 1, capacity=100, lease_s=60) == []

    batches: list[int] = []
    assert discard.discard_left_behind(db, batches=1, progress=batches.append) == 3
    assert discard.discard_left_behind(db, progress=batches.append) == 7
    assert batches == [3, 2, 3, 2]
    assert discard.discard_left_behind(db) == 0
    assert discard.left_behind(db) == []
    for endpoint_row, why in (
        (disabled_row, "endpoint disabled: gone quiet"),
        (deleted_row, "endpoint deleted"),
    ):
        left = deliveries(db, endpoint=endpoint_row)
        assert {r.status for r in left} == {"discarded"}
        assert {r.last_error for r in left} == {why}
        assert all(r.finished_at is not None for r in left)


def test_an_endpoint_is_enabled_again_only_once_nothing_is_left_to_discard(
    db, box, t0, monkeypatch
):
    """Enabled with deliveries left from its disabling, the endpoint would send them: refused
    with a reason until they are discarded. And a batch that lost the race discards nothing of
    what reaches the endpoint once it is enabled."""
    monkeypatch.setattr(discard, "DISCARD_BATCH", 2)
    ep, endpoint_row = _backlog(db, box, 5, t0)
    endpoints.set_enabled(db, ep, False, reason="paused")
    db.commit()

    with pytest.raises(Conflict) as refused:
        endpoints.set_enabled(db, ep, True, reason="back")
    assert "3 deliveries" in refused.value.message
    assert refused.value.status == 409
    db.rollback()
    assert endpoints.get_endpoint(db, ep)["enabled"] is False

    assert discard.discard_left_behind(db, endpoint_row=endpoint_row) == 3
    assert endpoints.set_enabled(db, ep, True, reason="back")["enabled"] is True
    outbox.publish(db, "ping", {"n": "new"}, now=t0)
    db.commit()
    late = discard.discard_batch(db, endpoint_row, t0, "endpoint disabled: paused", 100)
    db.commit()
    assert late == 0
    assert _statuses(db, endpoint_row) == {"discarded": 5, "pending": 1}


def _registered():
    register(cli)  # what the console script's main() adds: the endpoint commands
    return cli


def _cli(settings, *args: str):
    """Run ``hookline ARGS`` in this process (so that monkeypatches hold) on the test database."""
    _registered()
    env = {
        "HOOKLINE_DATA_DIR": str(settings.data_dir),
        "HOOKLINE_DATABASE_URL": settings.database_url,
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_the_cli_waits_for_the_discard_and_discards_before_enabling(
    settings, db, box, t0, monkeypatch
):
    """``hookline endpoints disable`` and ``delete`` return once every unfinished delivery is
    discarded (a batch per transaction); ``enable`` first discards what a disabling through the
    API left for the worker."""
    monkeypatch.setattr(discard, "DISCARD_BATCH", 2)
    monkeypatch.setattr(discard, "PAUSE_BETWEEN_BATCHES_S", 0.0)
    by_cli, by_cli_row = _backlog(db, box, 0, t0)
    by_api, by_api_row = _backlog(db, box, 0, t0)
    deleted, deleted_row = _backlog(db, box, 5, t0)  # 5 pings for each of the three

    answer = _cli(settings, "endpoints", "disable", by_cli, "--reason", "maintenance")
    assert answer.exit_code == 0, answer.output
    assert _statuses(db, by_cli_row) == {"discarded": 5}
    assert _cli(settings, "endpoints", "delete", deleted).exit_code == 0
    assert _statuses(db, deleted_row) == {"discarded": 5}

    endpoints.set_enabled(db, by_api, False, reason="through the API")
    db.commit()
    assert _statuses(db, by_api_row) == {"discarded": 2, "pending": 3}
    answer = _cli(settings, "endpoints", "enable", by_api)
    assert answer.exit_code == 0, answer.output
    assert _statuses(db, by_api_row) == {"discarded": 5}
    assert endpoints.get_endpoint(db, by_api)["enabled"] is True


def test_list_endpoints_oldest_first_without_secrets(db, box):
    created = [create(db, box, description=f"n{i}")[0]["endpoint_id"] for i in range(3)]
    listed = endpoints.list_endpoints(db)
    assert [e["endpoint_id"] for e in listed] == created
    for item in listed:
        assert "secret" not in item and "signing_key_enc" not in item


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "network", "field"),
    [
        ({"url": "http://127.0.0.1:8080/hook"}, STRICT, "url"),
        ({"url": "http://localhost/hook"}, STRICT, "url"),
        ({"url": "http://10.1.2.3/hook"}, NETWORK, "url"),
        ({"url": "http://169.254.169.254/latest"}, NETWORK, "url"),
        ({"url": "ftp://example.com/x"}, NETWORK, "url"),
        ({"url": "http://user:pw@example.com/x"}, NETWORK, "url"),
        ({}, NETWORK, "url"),
        ({"url": "https://example.com", "event_types": ["order.exploded"]}, NETWORK, "event_types"),
        ({"url": "https://example.com", "event_types": "ping,nope"}, NETWORK, "event_types"),
        ({"url": "https://example.com", "headers": {"Webhook-Id": "x"}}, NETWORK, "headers"),
        ({"url": "https://example.com", "headers": {"content-type": "x"}}, NETWORK, "headers"),
        ({"url": "https://example.com", "headers": {"X-A": "a\r\nB: c"}}, NETWORK, "headers"),
        ({"url": "https://example.com", "headers": {"X-A": "a\x7fb"}}, NETWORK, "headers"),
        ({"url": "https://example.com", "headers": {"X-A": "a\x01b"}}, NETWORK, "headers"),
        ({"url": "https://example.com", "description": "a\x00b"}, NETWORK, "description"),
        ({"url": "https://example.com", "description": "a\x1bb"}, NETWORK, "description"),
        ({"url": "https://xn--/hooks"}, NETWORK, "url"),
        ({"url": "https://example.com", "retry_schedule": "0,5x"}, NETWORK, "retry_schedule"),
        ({"url": "https://example.com", "retry_schedule": "0,-5s"}, NETWORK, "retry_schedule"),
        ({"url": "https://example.com", "retry_schedule": ""}, NETWORK, "retry_schedule"),
        ({"url": "https://example.com", "timeout_s": 0}, NETWORK, "timeout_s"),
        ({"url": "https://example.com", "timeout_s": 10**400}, NETWORK, "timeout_s"),  # no float
        ({"url": "https://example.com", "max_in_flight": -(10**400)}, NETWORK, "max_in_flight"),
        ({"url": "https://example.com", "rate_limit": 10**400}, NETWORK, "rate_limit"),
        ({"url": "https://example.com", "max_in_flight": 1.5}, NETWORK, "max_in_flight"),
        ({"url": "https://example.com", "rate_limit": "fast"}, NETWORK, "rate_limit"),
        ({"url": "https://example.com", "fifo": "yes"}, NETWORK, "fifo"),
        ({"url": "https://example.com", "enabled": True}, NETWORK, "enabled"),
        ({"url": "https://example.com", "colour": "red"}, NETWORK, "colour"),
    ],
)
def test_refused_endpoint_names_the_field_and_writes_nothing(db, box, data, network, field):
    with pytest.raises(ValidationFailed) as refused:
        endpoints.create_endpoint(db, box, parse_endpoint(data, network, creating=True))
    assert field in refused.value.errors, refused.value.errors
    assert 400 <= refused.value.status < 500
    db.commit()
    assert db(db.hookline_endpoint).count() == 0
    assert db(db.hookline_endpoint_secret).count() == 0


def test_loopback_url_is_accepted_when_allow_listed(db, box):
    view, _ = endpoints.create_endpoint(
        db, box, parse_endpoint({"url": "http://127.0.0.1:8080/hook"}, NETWORK, creating=True)
    )
    assert view["url"] == "http://127.0.0.1:8080/hook"


def test_a_description_may_break_lines_and_a_header_value_may_hold_a_tab(db, box):
    view, _ = create(db, box, description="line one\nline two\r\n", headers={"X-A": "a\tb"})
    assert view["description"] == "line one\nline two"
    assert view["headers"] == {"X-A": "a\tb"}


def test_every_bad_field_is_named_at_once(db):
    with pytest.raises(ValidationFailed) as refused:
        parse_endpoint(
            {"url": "http://127.0.0.1/", "event_types": ["x"], "retry_schedule": "soon"},
            STRICT,
            creating=True,
        )
    assert {"url", "event_types", "retry_schedule"} <= set(refused.value.errors)


# --- operations: retry, recover, replay, ping ------------------------------------------------


def test_retry_delivery_makes_a_finished_delivery_pending_again(db, box, t0):
    create(db, box, retry_schedule="0")
    outbox.publish(db, "ping", {}, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    [delivery_id] = send_once(db, at, 500)
    assert operations.get_delivery(db, delivery_id)["status"] == "failed"

    later = t0 + dt.timedelta(minutes=5)
    retried = operations.retry_delivery(db, delivery_id, now=later)
    db.commit()
    assert retried["status"] == "pending"
    assert retried["finished_at"] is None
    assert retried["attempts"] == 1
    assert retried["next_attempt_at"] is not None
    [row] = deliveries(db)
    assert row.next_attempt_at == to_epoch(later)
    # It really is claimable again, as attempt 2.
    [again] = queue.claim(db, "w", now=to_epoch(later), capacity=5, lease_s=60)
    assert again.delivery_id == delivery_id and again.attempt == 2


def test_retry_delivery_refuses_while_sending(db, box, t0):
    create(db, box)
    outbox.publish(db, "ping", {}, now=t0)
    db.commit()
    [item] = queue.claim(db, "w", now=to_epoch(t0) + 1, capacity=5, lease_s=60)
    with pytest.raises(Conflict) as refused:
        operations.retry_delivery(db, item.delivery_id)
    assert refused.value.status == 409
    assert deliveries(db)[0].status == "sending"


def test_retry_delivery_refuses_when_the_endpoint_is_disabled(db, box, t0):
    view, _ = create(db, box)
    outbox.publish(db, "ping", {}, now=t0)
    db.commit()
    [row] = deliveries(db)
    endpoints.set_enabled(db, view["endpoint_id"], False, reason="test")
    db.commit()
    with pytest.raises(Conflict) as refused:
        operations.retry_delivery(db, row.delivery_id)
    assert refused.value.status == 409
    assert "endpoint" in refused.value.errors
    assert deliveries(db, id=row.id)[0].status == "discarded"
    with pytest.raises(NotFound):
        operations.retry_delivery(db, "dlv_missing")


def test_recover_endpoint_retries_only_failed_deliveries_since(db, box, t0):
    view, _ = create(db, box, retry_schedule="0")
    other, _ = create(db, box, retry_schedule="0")
    ep = view["endpoint_id"]
    old = t0 - dt.timedelta(hours=3)
    recent = t0 - dt.timedelta(minutes=30)
    outbox.publish(db, "ping", {"when": "old"}, now=old)
    for n in range(3):
        outbox.publish(db, "ping", {"when": "recent", "n": n}, now=recent)
    db.commit()
    failed = send_once(db, to_epoch(t0), 500)  # every delivery of both endpoints fails
    assert len(failed) == 8
    ok_event = outbox.publish(db, "ping", {"when": "ok"}, now=recent)
    db.commit()
    succeeded = send_once(db, to_epoch(t0), 200)
    assert len(succeeded) == 2

    calls: list[tuple[int, int]] = []
    since = t0 - dt.timedelta(hours=1)
    count = operations.recover_endpoint(
        db, ep, since, now=t0, progress=lambda done, total: calls.append((done, total))
    )
    assert count == 3
    assert calls and calls[-1] == (3, 3)
    rid = row_id(db, ep)
    by_status: dict[str, list] = {}
    for r in deliveries(db, endpoint=rid):
        by_status.setdefault(r.status, []).append(r)
    assert len(by_status["pending"]) == 3
    assert all(r.created_at >= since for r in by_status["pending"])
    assert all(r.next_attempt_at == to_epoch(t0) for r in by_status["pending"])
    assert all(r.finished_at is None for r in by_status["pending"])
    [still_failed] = by_status["failed"]
    assert still_failed.created_at == old
    [done] = by_status["succeeded"]
    assert done.event == event_row(db, ok_event).id
    # The other endpoint's failures are left alone.
    other_rows = deliveries(db, endpoint=row_id(db, other["endpoint_id"]))
    assert sorted(r.status for r in other_rows) == ["failed"] * 4 + ["succeeded"]
    # Nothing more to recover.
    assert operations.recover_endpoint(db, ep, since, now=t0) == 0


def test_recover_endpoint_refuses_a_disabled_endpoint(db, box):
    view, _ = create(db, box)
    endpoints.set_enabled(db, view["endpoint_id"], False, reason="test")
    with pytest.raises(Conflict):
        operations.recover_endpoint(db, view["endpoint_id"], utcnow() - dt.timedelta(days=1))


def test_replay_event_creates_new_deliveries_of_the_same_event(db, box, t0):
    a, _ = create(db, box)
    b, _ = create(db, box, event_types=["ping"])
    create(db, box, event_types=["order.paid"])  # not subscribed
    event_id = outbox.publish(db, "ping", {"x": 1}, now=t0)
    db.commit()
    first = send_once(db, to_epoch(t0) + 1, 200)
    assert len(first) == 2

    replayed = operations.replay_event(db, event_id, now=t0 + dt.timedelta(minutes=1))
    db.commit()
    assert len(replayed) == 2
    assert not set(replayed) & set(first)
    event = event_row(db, event_id)
    rows = deliveries(db, event=event.id)
    assert len(rows) == 4
    new = [r for r in rows if r.delivery_id in replayed]
    assert {r.status for r in new} == {"pending"}
    assert {r.attempts for r in new} == {0}
    assert {r.endpoint for r in new} == {row_id(db, a["endpoint_id"]), row_id(db, b["endpoint_id"])}
    # The receiver sees the same webhook-id: the claimed delivery carries the same event id.
    claimed = queue.claim(db, "w", now=to_epoch(t0) + 120, capacity=10, lease_s=60)
    assert {c.event_id for c in claimed} == {event_id}
    assert db(db.hookline_event).count() == 1

    [one] = operations.replay_event(db, event_id, endpoint_id=a["endpoint_id"])
    assert deliveries(db, delivery_id=one)[0].endpoint == row_id(db, a["endpoint_id"])
    with pytest.raises(NotFound):
        operations.replay_event(db, "evt_missing")


def test_send_ping_reaches_only_that_endpoint(db, box, t0):
    target, _ = create(db, box)
    create(db, box)
    create(db, box, event_types=["ping"])
    event_id = operations.send_ping(db, target["endpoint_id"], now=t0)
    db.commit()
    event = event_row(db, event_id)
    assert event.type == "ping"
    assert json.loads(event.payload)["data"]["endpoint_id"] == target["endpoint_id"]
    [only] = deliveries(db, event=event.id)
    assert only.endpoint == row_id(db, target["endpoint_id"])
    endpoints.set_enabled(db, target["endpoint_id"], False, reason="test")
    with pytest.raises(Conflict):
        operations.send_ping(db, target["endpoint_id"])


# --- operations: inspect, list, purge --------------------------------------------------------


def test_list_deliveries_filters_and_pages(db, box, t0):
    a, _ = create(db, box)
    b, _ = create(db, box, event_types=["order.paid"])
    events = [outbox.publish(db, "ping", {"n": n}, now=t0) for n in range(5)]
    paid = outbox.publish(db, "order.paid", {"n": 9}, now=t0 + dt.timedelta(minutes=1))
    db.commit()
    send_once(db, to_epoch(t0) + 1, 200, capacity=2)

    everything = operations.list_deliveries(db, limit=100)
    assert len(everything["data"]) == 7
    assert everything["has_more"] is False and everything["next_cursor"] is None
    ids = [d["delivery_id"] for d in everything["data"]]
    expected = [r.delivery_id for r in reversed(deliveries(db))]
    assert ids == expected  # newest first

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = operations.list_deliveries(db, limit=3, cursor=cursor)
        assert len(page["data"]) <= 3
        seen += [d["delivery_id"] for d in page["data"]]
        if not page["has_more"]:
            break
        cursor = int(page["next_cursor"])
    assert seen == expected

    only_b = operations.list_deliveries(db, endpoint_id=b["endpoint_id"])["data"]
    assert [d["event_id"] for d in only_b] == [paid]
    assert only_b[0]["event_type"] == "order.paid"
    one_event = operations.list_deliveries(db, event_id=events[0])["data"]
    assert [d["endpoint_id"] for d in one_event] == [a["endpoint_id"]]
    done = operations.list_deliveries(db, status="succeeded")["data"]
    assert len(done) == 2 and {d["status"] for d in done} == {"succeeded"}
    assert all(d["next_attempt_at"] is None for d in done)
    pending = operations.list_deliveries(db, status="pending", endpoint_id=a["endpoint_id"])
    assert len(pending["data"]) == 4  # 3 pings and the order.paid (a takes every type)
    assert operations.list_deliveries(db, status="failed")["data"] == []
    with pytest.raises(NotFound):
        operations.list_deliveries(db, endpoint_id="ep_missing")
    with pytest.raises(NotFound):
        operations.list_deliveries(db, event_id="evt_missing")


def test_list_attempts_filters_by_endpoint_delivery_event_outcome_and_time(db, box, t0):
    a, _ = create(db, box, retry_schedule="0,0")
    b, _ = create(db, box, retry_schedule="0,0", event_types=["order.paid"])
    ping = outbox.publish(db, "ping", {}, now=t0)
    paid = outbox.publish(db, "order.paid", {}, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    first = send_once(db, at, 503)  # a: ping, a: order.paid, b: order.paid
    send_once(db, at + 60, 200)
    assert len(first) == 3

    everything = operations.list_attempts(db, limit=100)["data"]
    assert len(everything) == 6
    assert [x["number"] for x in everything] == [2, 2, 2, 1, 1, 1]  # newest first
    assert {x["outcome"] for x in everything[:3]} == {"succeeded"}
    assert {(x["outcome"], x["status_code"]) for x in everything[3:]} == {("retry", 503)}
    assert everything[-1]["response_body"] == "body 503"
    assert everything[-1]["started_at"] == isoformat(from_epoch(at))

    only_b = operations.list_attempts(db, endpoint_id=b["endpoint_id"])["data"]
    assert [(x["endpoint_id"], x["event_id"], x["number"]) for x in only_b] == [
        (b["endpoint_id"], paid, 2),
        (b["endpoint_id"], paid, 1),
    ]
    of_ping = operations.list_attempts(db, event_id=ping)["data"]
    assert {(x["endpoint_id"], x["event_type"]) for x in of_ping} == {(a["endpoint_id"], "ping")}
    one = operations.list_attempts(db, delivery_id=first[0])["data"]
    assert [x["delivery_id"] for x in one] == [first[0], first[0]]
    retried = operations.list_attempts(db, outcome="retry", endpoint_id=a["endpoint_id"])["data"]
    assert len(retried) == 2 and {x["number"] for x in retried} == {1}
    assert operations.list_attempts(db, outcome="failed")["data"] == []

    later = from_epoch(at + 30)
    assert {x["number"] for x in operations.list_attempts(db, since=later)["data"]} == {2}
    assert {x["number"] for x in operations.list_attempts(db, until=later)["data"]} == {1}
    exact = operations.list_attempts(db, since=from_epoch(at), until=from_epoch(at + 1))
    assert len(exact["data"]) == 3  # since is inclusive, until exclusive

    seen: list[tuple[str, int]] = []
    cursor = None
    for _ in range(10):
        page = operations.list_attempts(db, limit=4, cursor=cursor)
        seen += [(x["delivery_id"], x["number"]) for x in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = int(page["next_cursor"])
    assert seen == [(x["delivery_id"], x["number"]) for x in everything]
    for missing in ({"endpoint_id": "ep_x"}, {"delivery_id": "dlv_x"}, {"event_id": "evt_x"}):
        with pytest.raises(NotFound):
            operations.list_attempts(db, **missing)


def test_the_cli_lists_attempts_with_filters_and_refuses_bad_values(settings, db, box, t0):
    create(db, box, retry_schedule="0,0")
    outbox.publish(db, "ping", {}, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    [delivery_id] = send_once(db, at, 503)
    send_once(db, at + 60, 200)

    answer = _cli(settings, "attempts", "list", "--delivery", delivery_id, "--json")
    assert answer.exit_code == 0, answer.output
    listed = json.loads(answer.output)
    assert [(x["number"], x["outcome"], x["status_code"]) for x in listed] == [
        (2, "succeeded", 200),
        (1, "retry", 503),
    ]
    since = isoformat(from_epoch(at + 30))
    answer = _cli(settings, "attempts", "list", "--since", since, "--json")
    assert [x["number"] for x in json.loads(answer.output)] == [2]
    answer = _cli(settings, "attempts", "list", "--outcome", "retry")  # the table
    assert answer.exit_code == 0, answer.output
    assert "503" in answer.output and "succeeded" not in answer.output

    for bad in (
        ["--outcome", "maybe"],
        ["--since", "yesterday"],
        ["--until", "0001-01-01T00:00:00+01:00"],
        ["--limit", "0"],
    ):
        answer = CliRunner().invoke(_registered(), ["attempts", "list", *bad])
        assert answer.exit_code == 2, (bad, answer.output)
        assert "Traceback" not in answer.output
    answer = _cli(settings, "attempts", "list", "--endpoint", "ep_missing")
    assert answer.exit_code == 1 and "ep_missing" in answer.output


def test_get_delivery_has_its_attempt_log(db, box, t0):
    create(db, box, retry_schedule="0,0")
    event_id = outbox.publish(db, "ping", {}, now=t0)
    db.commit()
    at = to_epoch(t0) + 1
    [delivery_id] = send_once(db, at, 503)
    send_once(db, at + 1, 200)
    view = operations.get_delivery(db, delivery_id)
    assert view["delivery_id"] == delivery_id
    assert view["event_id"] == event_id
    assert view["event_type"] == "ping"
    assert view["status"] == "succeeded"
    assert view["attempts"] == 2
    log = view["attempt_log"]
    assert [a["number"] for a in log] == [1, 2]
    assert [a["status_code"] for a in log] == [503, 200]
    assert [a["outcome"] for a in log] == ["retry", "succeeded"]
    assert log[0]["response_body"] == "body 503"
    assert log[1]["worker"] == "ops-test"
    with pytest.raises(NotFound):
        operations.get_delivery(db, "dlv_missing")


def test_purge_deletes_old_finished_rows_and_keeps_unfinished(db, box, t0):
    create(db, box)
    old = t0 - dt.timedelta(days=40)
    old_done = outbox.publish(db, "ping", {"n": "done"}, now=old)
    db.commit()
    assert len(send_once(db, to_epoch(old) + 1, 200)) == 1
    recent = outbox.publish(db, "ping", {"n": "recent"}, now=t0)
    db.commit()
    assert len(send_once(db, to_epoch(t0) + 1, 200)) == 1
    old_open = outbox.publish(db, "ping", {"n": "open"}, now=old)  # never sent: pending
    db.commit()
    rows = {event_row(db, e).id: e for e in (old_done, old_open, recent)}
    statuses = {rows[r.event]: r.status for r in deliveries(db)}
    assert statuses == {old_done: "succeeded", recent: "succeeded", old_open: "pending"}
    db.hookline_inbox.insert(
        inbox_id="inb_old",
        source="s",
        message_id="m1",
        method="POST",
        headers="{}",
        status="processed",
        received_at=old,
    )
    db.hookline_inbox.insert(
        inbox_id="inb_new",
        source="s",
        message_id="m2",
        method="POST",
        headers="{}",
        status="processed",
        received_at=t0,
    )
    db.commit()

    assert operations.purge(db, dt.timedelta(days=999_999), now=t0) == dict.fromkeys(
        ("attempts", "deliveries", "events", "inbox"), 0
    )  # older than the calendar: nothing
    counts = operations.purge(db, dt.timedelta(days=30), now=t0)
    assert counts == {"attempts": 1, "deliveries": 1, "events": 1, "inbox": 1}
    db.commit()
    remaining_events = {r.event_id for r in db(db.hookline_event).select()}
    assert remaining_events == {old_open, recent}
    remaining = {rows[r.event]: r.status for r in deliveries(db)}
    assert remaining == {old_open: "pending", recent: "succeeded"}
    assert db(db.hookline_attempt).count() == 1  # the recent delivery's attempt
    assert [r.inbox_id for r in db(db.hookline_inbox).select()] == ["inb_new"]
    assert operations.purge(db, dt.timedelta(days=30), now=t0) == {
        "attempts": 0,
        "deliveries": 0,
        "events": 0,
        "inbox": 0,
    }


def test_purge_keeps_an_old_event_while_a_recent_replay_of_it_is_kept(db, box, t0):
    # Retention is per row age: a delivery made yesterday by replaying a 40-day-old event stays
    # for the retention, so the event it points to must stay too (not vanish, nor cascade).
    create(db, box)
    old = t0 - dt.timedelta(days=40)
    event_id = outbox.publish(db, "ping", {"n": "old"}, now=old)
    db.commit()
    send_once(db, to_epoch(old) + 1, 200)
    yesterday = t0 - dt.timedelta(days=1)
    [replayed] = operations.replay_event(db, event_id, now=yesterday)
    db.commit()
    send_once(db, to_epoch(yesterday) + 1, 200)

    assert operations.purge(db, dt.timedelta(days=999_999), now=t0) == dict.fromkeys(
        ("attempts", "deliveries", "events", "inbox"), 0
    )  # older than the calendar: nothing
    counts = operations.purge(db, dt.timedelta(days=30), now=t0)
    db.commit()
    assert counts["deliveries"] == 1  # the 40-day-old delivery
    assert [r.delivery_id for r in deliveries(db)] == [replayed]
    assert event_row(db, event_id) is not None
    assert operations.get_delivery(db, replayed)["event_id"] == event_id


def test_a_leased_delivery_is_shown_and_listed_as_sending(db, box, t0):
    """A delivery being sent is stored as pending with a lease: operators see ``sending`` (no
    next attempt time), the ``sending`` filter finds it and the ``pending`` filter does not."""
    view, _ = create(db, box)
    outbox.publish(db, "ping", {"n": 1}, now=t0)
    outbox.publish(db, "ping", {"n": 2}, now=t0 + dt.timedelta(hours=1))
    db.commit()
    [item] = queue.claim(db, "w", now=to_epoch(t0) + 1, capacity=5, lease_s=60)

    shown = operations.get_delivery(db, item.delivery_id)
    assert (shown["status"], shown["next_attempt_at"], shown["attempts"]) == ("sending", None, 0)
    ep = view["endpoint_id"]
    sending = operations.list_deliveries(db, status="sending", endpoint_id=ep)["data"]
    pending = operations.list_deliveries(db, status="pending", endpoint_id=ep)["data"]
    assert [d["delivery_id"] for d in sending] == [item.delivery_id]
    assert len(pending) == 1 and pending[0]["delivery_id"] != item.delivery_id
    assert pending[0]["status"] == "pending"
