"""The operator CLI for delivery, run in process with click's CliRunner on SQLite and PostgreSQL.

Covers issue #3's "Endpoints, through the CLI" (add, list, show, update, rotate with its 24 h
default grace, ping) and "Operators" (deliveries list/show/retry, events replay, endpoints
recover with its progress output, purge), checking what each command prints against what it
stored. Also pins the 24 h rotation default of the engine and of the API handler.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from click.testing import CliRunner, Result

from delivery_rows import seen_deliveries, send_once
from hookline import delivery_api, endpoints, outbox, queue
from hookline.cli import cli
from hookline.cli_delivery import register
from hookline.config import Settings
from hookline.endpoint_rules import parse_endpoint
from hookline.netguard import NetworkPolicy
from hookline.secretbox import SecretBox, load_secret_box
from hookline.timeutil import to_epoch, utcnow
from hookline.webio import Request

URL = "https://example.com/hooks"
ONE_SECOND = dt.timedelta(seconds=1)


def hookline(settings: Settings, *args: str) -> Result:
    """``hookline ARGS`` in this process on the test database, with a wide terminal."""
    register(cli)
    env = {
        "HOOKLINE_DATA_DIR": str(settings.data_dir),
        "HOOKLINE_DATABASE_URL": settings.database_url,
        "HOOKLINE_SECRET_KEY": None,
        "HOOKLINE_ALLOW_NETWORKS": None,
        "HOOKLINE_HTTPS_ONLY": None,
        "COLUMNS": "300",
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def ok(settings: Settings, *args: str) -> str:
    """Run a command that must succeed; return what it printed."""
    result = hookline(settings, *args)
    assert result.exit_code == 0, result.output
    return result.output


def refused(settings: Settings, *args: str, exit_code: int = 1) -> str:
    """Run a command that must fail cleanly (a message, no traceback); return what it printed."""
    result = hookline(settings, *args)
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    return result.output


def add(settings: Settings, *options: str, url: str = URL) -> tuple[str, str]:
    """``hookline endpoints add``; returns the endpoint id and its secret."""
    lines = ok(settings, "endpoints", "add", url, *options).splitlines()
    endpoint_id = lines[0].split()[1]
    secret = lines[1].removeprefix("secret ")
    return endpoint_id, secret


def as_json(settings: Settings, *args: str) -> Any:
    return json.loads(ok(settings, *args))


@pytest.fixture
def box(settings: Settings) -> SecretBox:
    """The secret box the CLI uses (the key generated into the data directory)."""
    return load_secret_box(None, settings.data_dir)


def stored(db, endpoint_id: str) -> dict[str, Any]:
    """The endpoint as stored, read in a new transaction (the CLI commits on its own)."""
    db.commit()
    return endpoints.get_endpoint(db, endpoint_id)


def secret_rows(db, endpoint_id: str) -> list:
    db.commit()
    table = db.hookline_endpoint_secret
    row = endpoints.find_endpoint(db, endpoint_id)
    return list(db(table.endpoint == row.id).select(orderby=table.id))


def row_of(db, endpoint_id: str) -> int:
    db.commit()
    return endpoints.find_endpoint(db, endpoint_id).id


def event_row(db, event_id: str):
    db.commit()
    return db(db.hookline_event.event_id == event_id).select().first()


def publish(db, event_type: str, now: dt.datetime | None = None, **data: Any) -> str:
    event_id = outbox.publish(db, event_type, data, now=now)
    db.commit()
    return event_id


def due_now() -> float:
    """An epoch time at which everything published so far is due."""
    return time.time() + 1


# --- add, list, show -------------------------------------------------------------------------


def test_add_prints_the_id_and_the_secret_once_and_stores_the_endpoint(settings, db, box):
    output = ok(
        settings,
        "endpoints",
        "add",
        URL,
        "--events",
        "order.created,order.paid",
        "--description",
        "Orders feed",
    )
    first, second = output.splitlines()
    endpoint_id = first.split()[1]
    assert endpoint_id.startswith("ep_")
    assert first == f"endpoint {endpoint_id} -> {URL}"
    assert second.startswith("secret whsec_")
    secret = second.removeprefix("secret ")
    assert output.count(secret) == 1
    assert output.count("whsec_") == 1

    endpoint = stored(db, endpoint_id)
    assert endpoint["url"] == URL
    assert endpoint["description"] == "Orders feed"
    assert endpoint["event_types"] == ["order.created", "order.paid"]
    assert endpoint["enabled"] is True
    assert endpoints.active_secrets(db, box, row_of(db, endpoint_id)) == [secret]


def test_add_with_ed25519_also_prints_the_public_key(settings, db):
    output = ok(settings, "endpoints", "add", URL, "--ed25519")
    endpoint_id = output.split()[1]
    [public] = [line for line in output.splitlines() if line.startswith("public key ")]
    assert public.removeprefix("public key ").startswith("whpk_")
    assert stored(db, endpoint_id)["ed25519"] is True
    assert "whsk_" not in output


def test_add_refuses_a_private_target_and_stores_nothing(settings, db):
    output = refused(settings, "endpoints", "add", "http://10.0.0.1/hooks")
    assert "url" in output
    db.commit()
    assert db(db.hookline_endpoint).count() == 0


def test_list_shows_each_endpoint_in_the_table_and_in_json(settings, db):
    filtered, filtered_secret = add(
        settings, "--events", "order.created,order.paid", "--description", "Orders feed"
    )
    every, every_secret = add(settings, url="https://example.org/all")
    paused, _ = add(settings, url="https://example.net/paused")
    ok(settings, "endpoints", "disable", paused, "--reason", "maintenance window")

    rows = {
        line.split("│")[1].strip(): line
        for line in ok(settings, "endpoints", "list").splitlines()
        if "│" in line
    }
    assert set(rows) == {filtered, every, paused}
    cells = {key: [c.strip() for c in line.split("│")[2:-1]] for key, line in rows.items()}
    assert cells[filtered] == [URL, "order.created,order.paid", "yes", ""]
    assert cells[every] == ["https://example.org/all", "all", "yes", ""]
    assert cells[paused] == [
        "https://example.net/paused",
        "all",
        "no: maintenance window",
        "",
    ]

    listed = as_json(settings, "endpoints", "list", "--json")
    assert [e["endpoint_id"] for e in listed] == [filtered, every, paused]
    assert listed[0]["url"] == URL
    assert listed[0]["event_types"] == ["order.created", "order.paid"]
    assert listed[0]["description"] == "Orders feed"
    assert listed[1]["event_types"] == []
    assert (listed[2]["enabled"], listed[2]["disabled_reason"]) == (False, "maintenance window")
    assert listed == [stored(db, e) for e in (filtered, every, paused)]
    text = json.dumps(listed)
    assert filtered_secret not in text and every_secret not in text
    assert "whsec_" not in text


def test_show_prints_the_endpoint_and_never_its_secrets(settings, db):
    endpoint_id, secret = add(settings, "--events", "ping", "--description", "pinger")
    rotated = ok(settings, "endpoints", "rotate", endpoint_id).split()[1]

    output = ok(settings, "endpoints", "show", endpoint_id)
    shown = json.loads(output)
    assert shown == stored(db, endpoint_id)
    assert (shown["endpoint_id"], shown["url"], shown["description"]) == (
        endpoint_id,
        URL,
        "pinger",
    )
    assert shown["event_types"] == ["ping"]
    assert secret not in output and rotated not in output
    assert "whsec_" not in output
    assert not [key for key in shown if "secret" in key]
    assert "no endpoint 'ep_missing'" in refused(settings, "endpoints", "show", "ep_missing")


# --- update ----------------------------------------------------------------------------------

BASELINE = (
    "--events",
    "order.created,order.paid",
    "--description",
    "Orders feed",
    "--header",
    "X-Tenant:acme",
    "--retry-schedule",
    "0,5s,5m",
    "--timeout-s",
    "10",
    "--connect-timeout-s",
    "3",
    "--max-in-flight",
    "5",
    "--rate-limit",
    "1",
    "--ed25519",
)


UPDATES: list[tuple[list[str], dict[str, Any]]] = [
    (["--url", "https://example.org/new"], {"url": "https://example.org/new"}),
    (["--events", "ping,order.shipped"], {"event_types": ["order.shipped", "ping"]}),
    (["--description", "Renamed"], {"description": "Renamed"}),
    (
        ["--header", "X-Env: prod", "--header", "X-Tenant:globex"],
        {"headers": {"X-Env": "prod", "X-Tenant": "globex"}},
    ),
    (["--retry-schedule", "0,30s,10m"], {"retry_schedule": "0,30s,10m"}),
    (["--timeout-s", "7.5"], {"timeout_s": 7.5}),
    (["--connect-timeout-s", "2"], {"connect_timeout_s": 2.0}),
    (["--max-in-flight", "3"], {"max_in_flight": 3}),
    (["--rate-limit", "2.5"], {"rate_limit": 2.5}),
    (["--no-rate-limit"], {"rate_limit": None}),
    (["--fifo"], {"fifo": True}),
    (["--no-ed25519"], {"ed25519": False}),
]


def test_update_changes_each_option_it_offers_and_nothing_else(settings, db):
    endpoint_id, _ = add(settings, *BASELINE)
    for options, changed in UPDATES:
        before = stored(db, endpoint_id)
        assert all(before[name] != value for name, value in changed.items()), options
        printed = as_json(settings, "endpoints", "update", endpoint_id, *options)
        after = stored(db, endpoint_id)
        assert after == {**before, **changed, "updated_at": after["updated_at"]}, options
        assert printed == after, options


def test_update_refuses_a_rate_limit_and_its_removal_together(settings, db):
    endpoint_id, _ = add(settings, *BASELINE)
    before = stored(db, endpoint_id)
    output = refused(
        settings,
        "endpoints",
        "update",
        endpoint_id,
        "--rate-limit",
        "3",
        "--no-rate-limit",
        exit_code=2,
    )
    assert "contradict" in output
    assert stored(db, endpoint_id) == before


def test_update_switching_ed25519_on_prints_the_new_public_key(settings, db):
    endpoint_id, _ = add(settings)
    printed = as_json(settings, "endpoints", "update", endpoint_id, "--ed25519", "--no-fifo")
    assert printed["public_key"].startswith("whpk_")
    assert stored(db, endpoint_id)["ed25519"] is True
    assert stored(db, endpoint_id)["fifo"] is False


BAD_UPDATES: list[tuple[list[str], str]] = [
    (["--timeout-s", "0"], "timeout_s"),
    (["--connect-timeout-s", "61"], "connect_timeout_s"),
    (["--max-in-flight", "0"], "max_in_flight"),
    (["--rate-limit", "0"], "rate_limit"),
    (["--events", "order.nope"], "event_types"),
    (["--header", "Content-Type:text/plain"], "headers"),
    (["--retry-schedule", "soon"], "retry_schedule"),
    (["--url", "http://169.254.169.254/latest"], "url"),
]


def test_update_with_a_bad_value_names_the_field_and_changes_nothing(settings, db):
    endpoint_id, _ = add(settings, *BASELINE)
    before = stored(db, endpoint_id)
    for options, field in BAD_UPDATES:
        output = refused(
            settings, "endpoints", "update", endpoint_id, "--description", "changed", *options
        )
        assert f"{field}:" in output, (options, output)
        assert stored(db, endpoint_id) == before, options


def test_update_refuses_a_header_without_a_colon_and_an_empty_change(settings, db):
    endpoint_id, _ = add(settings, *BASELINE)
    before = stored(db, endpoint_id)
    output = refused(settings, "endpoints", "update", endpoint_id, "--header", "X-A", exit_code=2)
    assert "NAME:VALUE" in output
    assert "nothing to change" in refused(settings, "endpoints", "update", endpoint_id)
    assert stored(db, endpoint_id) == before


# --- rotate ----------------------------------------------------------------------------------


def test_rotate_prints_a_new_secret_and_keeps_the_old_one_signing_for_24_hours(settings, db, box):
    endpoint_id, old = add(settings)
    started = utcnow()
    output = ok(settings, "endpoints", "rotate", endpoint_id)
    finished = utcnow()
    assert output.startswith("secret whsec_")
    new = output.split()[1]
    assert new != old and old not in output

    first, second = secret_rows(db, endpoint_id)
    assert box.decrypt(first.secret_enc) == old and box.decrypt(second.secret_enc) == new
    assert second.expires_at is None
    day = dt.timedelta(hours=24)
    assert started + day - ONE_SECOND <= first.expires_at <= finished + day

    rid = row_of(db, endpoint_id)
    assert endpoints.active_secrets(db, box, rid) == [new, old]
    almost = first.expires_at - dt.timedelta(minutes=1)
    assert endpoints.active_secrets(db, box, rid, now=almost) == [new, old]
    after = first.expires_at + dt.timedelta(minutes=1)
    assert endpoints.active_secrets(db, box, rid, now=after) == [new]


def test_rotate_with_grace_hours_shortens_the_grace_of_every_current_secret(settings, db, box):
    endpoint_id, old = add(settings)
    middle = ok(settings, "endpoints", "rotate", endpoint_id).split()[1]
    started = utcnow()
    newest = ok(settings, "endpoints", "rotate", endpoint_id, "--grace-hours", "2").split()[1]
    finished = utcnow()

    rows = secret_rows(db, endpoint_id)
    assert [box.decrypt(r.secret_enc) for r in rows] == [old, middle, newest]
    two_hours = dt.timedelta(hours=2)
    for previous in rows[:2]:
        assert started + two_hours - ONE_SECOND <= previous.expires_at <= finished + two_hours
    assert rows[2].expires_at is None
    rid = row_of(db, endpoint_id)
    assert endpoints.active_secrets(db, box, rid) == [newest, middle, old]
    later = finished + dt.timedelta(hours=2, minutes=1)
    assert endpoints.active_secrets(db, box, rid, now=later) == [newest]


def test_rotate_refuses_a_grace_out_of_range_and_keeps_the_secret(settings, db, box):
    endpoint_id, secret = add(settings)
    for hours in ("-1", "721", "soon"):
        output = refused(
            settings, "endpoints", "rotate", endpoint_id, "--grace-hours", hours, exit_code=2
        )
        assert "Invalid value for '--grace-hours'" in output, output
    assert endpoints.active_secrets(db, box, row_of(db, endpoint_id)) == [secret]


def test_rotation_grace_defaults_to_24_hours_in_the_engine_and_the_api(settings, db, box):
    network = NetworkPolicy()
    view, _ = endpoints.create_endpoint(
        db, box, parse_endpoint({"url": URL}, network, creating=True)
    )
    endpoint_id = view["endpoint_id"]
    t0 = utcnow().replace(microsecond=0)
    endpoints.rotate_secret(db, box, endpoint_id, now=t0)
    db.commit()
    first, current = secret_rows(db, endpoint_id)
    assert first.expires_at == t0 + dt.timedelta(hours=24)
    assert current.expires_at is None

    context = delivery_api.ApiContext(box, network, 64 * 1024)
    started = utcnow()
    answer = delivery_api.rotate_secret(db, Request.build("POST"), context, endpoint_id)
    finished = utcnow()
    assert answer.status == 200
    secret = answer.json()["secret"]
    _, previous, newest = secret_rows(db, endpoint_id)
    day = dt.timedelta(hours=24)
    assert started + day - ONE_SECOND <= previous.expires_at <= finished + day
    assert box.decrypt(newest.secret_enc) == secret and newest.expires_at is None

    request = Request.build(
        "POST", headers={"Content-Type": "application/json"}, body=b'{"grace_seconds": 600}'
    )
    started = utcnow()
    delivery_api.rotate_secret(db, request, context, endpoint_id)
    finished = utcnow()
    *_, shortened, _ = secret_rows(db, endpoint_id)
    ten_minutes = dt.timedelta(minutes=10)
    assert started + ten_minutes - ONE_SECOND <= shortened.expires_at <= finished + ten_minutes


# --- ping ------------------------------------------------------------------------------------


def test_ping_creates_a_ping_delivery_for_that_endpoint_only(settings, db):
    target, _ = add(settings)
    add(settings, url="https://example.org/all")
    add(settings, "--events", "ping", url="https://example.net/pings")

    output = ok(settings, "endpoints", "ping", target)
    event_id = output.split()[1]
    assert output.strip() == f"ping {event_id} queued for {target}"
    event = event_row(db, event_id)
    assert event.type == "ping"
    assert json.loads(event.payload)["data"]["endpoint_id"] == target
    [delivery] = seen_deliveries(db, event=event.id)
    assert (delivery.endpoint, delivery.status) == (row_of(db, target), "pending")
    assert len(seen_deliveries(db)) == 1
    assert "no endpoint" in refused(settings, "endpoints", "ping", "ep_missing")


# --- deliveries ------------------------------------------------------------------------------


def test_deliveries_list_filters_by_endpoint_event_status_and_limit(settings, db):
    every, _ = add(settings, "--retry-schedule", "0")
    paid_only, _ = add(settings, "--events", "order.paid", url="https://example.org/paid")
    failed_event = publish(db, "ping", n=1)
    [failed] = send_once(db, due_now(), 500)
    succeeded_event = publish(db, "ping", n=2)
    [succeeded] = send_once(db, due_now(), 200)
    paid_event = publish(db, "order.paid", n=3)

    def listed(*filters: str) -> list[dict[str, Any]]:
        return as_json(settings, "deliveries", "list", "--json", *filters)

    everything = listed()
    assert [d["delivery_id"] for d in everything[2:]] == [succeeded, failed]
    assert {(d["endpoint_id"], d["event_id"]) for d in everything[:2]} == {
        (every, paid_event),
        (paid_only, paid_event),
    }
    [only_paid] = listed("--endpoint", paid_only)
    assert (only_paid["event_id"], only_paid["event_type"]) == (paid_event, "order.paid")
    assert [d["delivery_id"] for d in listed("--event", failed_event)] == [failed]
    [one_failed] = listed("--status", "failed")
    assert (one_failed["delivery_id"], one_failed["last_status_code"]) == (failed, 500)
    assert [d["delivery_id"] for d in listed("--status", "succeeded")] == [succeeded]
    pending = listed("--status", "pending")
    assert {d["endpoint_id"] for d in pending} == {every, paid_only}
    assert [d["event_id"] for d in listed("--status", "pending", "--endpoint", every)] == [
        paid_event
    ]
    assert listed("--event", succeeded_event, "--status", "failed") == []
    assert listed("--limit", "2") == everything[:2]

    table = ok(settings, "deliveries", "list", "--status", "failed")
    [row] = [line for line in table.splitlines() if failed in line]
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells == [failed, f"ping {failed_event}", every, "failed", "1", "500"]
    assert succeeded not in table

    assert "no endpoint" in refused(settings, "deliveries", "list", "--endpoint", "ep_missing")
    typo = refused(settings, "deliveries", "list", "--status", "faild", exit_code=2)
    assert "Invalid value for '--status'" in typo
    assert "no event" in refused(settings, "deliveries", "list", "--event", "evt_missing")


def test_deliveries_show_prints_every_attempt(settings, db):
    endpoint_id, _ = add(settings, "--retry-schedule", "0,0")
    event_id = publish(db, "ping", n=1)
    at = due_now()
    [delivery_id] = send_once(db, at, 503)
    send_once(db, at + 1, 200)

    shown = as_json(settings, "deliveries", "show", delivery_id)
    assert (shown["delivery_id"], shown["event_id"], shown["endpoint_id"]) == (
        delivery_id,
        event_id,
        endpoint_id,
    )
    assert (shown["status"], shown["attempts"], shown["last_status_code"]) == ("succeeded", 2, 200)
    log = shown["attempt_log"]
    assert [a["number"] for a in log] == [1, 2]
    assert [a["status_code"] for a in log] == [503, 200]
    assert [a["outcome"] for a in log] == ["retry", "succeeded"]
    assert [a["response_body"] for a in log] == ["body 503", "body 200"]
    assert "no delivery" in refused(settings, "deliveries", "show", "dlv_missing")


def test_deliveries_retry_makes_a_failed_delivery_pending_again(settings, db):
    endpoint_id, _ = add(settings, "--retry-schedule", "0")
    publish(db, "ping", n=1)
    [delivery_id] = send_once(db, due_now(), 500)
    [before] = seen_deliveries(db)
    assert (before.status, before.finished_at is not None) == ("failed", True)

    started = time.time()
    output = ok(settings, "deliveries", "retry", delivery_id)
    assert output.strip() == f"{delivery_id} is pending again"
    [after] = seen_deliveries(db)
    assert (after.status, after.finished_at, after.attempts) == ("pending", None, 1)
    assert started - 1 <= after.next_attempt_at <= time.time() + 1
    [again] = queue.claim(db, "cli-test", now=due_now(), capacity=5, lease_s=60)
    assert (again.delivery_id, again.attempt) == (delivery_id, 2)

    ok(settings, "endpoints", "disable", endpoint_id)
    assert "disabled" in refused(settings, "deliveries", "retry", delivery_id)
    assert "no delivery" in refused(settings, "deliveries", "retry", "dlv_missing")


# --- replay, recover -------------------------------------------------------------------------


def test_events_replay_to_one_endpoint_and_to_every_subscriber(settings, db):
    every, _ = add(settings)
    pings, _ = add(settings, "--events", "ping", url="https://example.org/pings")
    paid, _ = add(settings, "--events", "order.paid", url="https://example.net/paid")
    event_id = publish(db, "ping", n=1)
    first = set(send_once(db, due_now(), 200))
    assert len(first) == 2

    output = ok(settings, "events", "replay", event_id, "--endpoint", every)
    header, *listed = output.splitlines()
    assert header == f"replaying {event_id}: 1 new deliveries"
    [one] = [line.strip() for line in listed]
    [row] = seen_deliveries(db, delivery_id=one)
    assert (row.endpoint, row.status, row.attempts) == (row_of(db, every), "pending", 0)

    output = ok(settings, "events", "replay", event_id)
    header, *listed = output.splitlines()
    assert header == f"replaying {event_id}: 2 new deliveries"
    replayed = {line.strip() for line in listed}
    assert len(replayed) == 2 and not replayed & (first | {one})
    rows = seen_deliveries(db, event=event_row(db, event_id).id)
    assert len(rows) == 5
    new = [r for r in rows if r.delivery_id in replayed]
    assert {r.endpoint for r in new} == {row_of(db, every), row_of(db, pings)}
    assert {r.status for r in new} == {"pending"}
    assert not seen_deliveries(db, endpoint=row_of(db, paid))

    assert "no event" in refused(settings, "events", "replay", "evt_missing")


def test_recover_retries_failed_deliveries_since_the_time_and_shows_progress(settings, db):
    endpoint_id, _ = add(settings, "--retry-schedule", "0")
    other, _ = add(settings, "--retry-schedule", "0", url="https://example.org/other")
    now = utcnow()
    old = publish(db, "ping", now=now - dt.timedelta(hours=3), when="old")
    recent = [publish(db, "ping", now=now - dt.timedelta(minutes=30), n=n) for n in range(3)]
    assert len(send_once(db, due_now(), 500)) == 8
    since = (now - dt.timedelta(hours=1)).replace(tzinfo=dt.UTC)
    since_elsewhere = since.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()

    started = time.time()
    output = ok(settings, "endpoints", "recover", endpoint_id, "--since", since_elsewhere)
    assert "recovering" in output
    assert "100%" in output
    assert output.splitlines()[-1] == f"recovered 3 deliveries of {endpoint_id}"

    events = {event_row(db, e).id: e for e in (old, *recent)}
    mine = seen_deliveries(db, endpoint=row_of(db, endpoint_id))
    assert {events[r.event]: r.status for r in mine} == {
        old: "failed",
        **{e: "pending" for e in recent},
    }
    assert all(r.next_attempt_at >= started - 1 for r in mine if r.status == "pending")
    assert all(r.finished_at is None for r in mine if r.status == "pending")
    others = seen_deliveries(db, endpoint=row_of(db, other))
    assert [r.status for r in others] == ["failed"] * 4

    again = ok(settings, "endpoints", "recover", endpoint_id, "--since", since_elsewhere)
    assert again.splitlines()[-1] == f"recovered 0 deliveries of {endpoint_id}"


def test_recover_refuses_a_time_that_is_not_iso_8601(settings, db):
    endpoint_id, _ = add(settings)
    output = refused(
        settings, "endpoints", "recover", endpoint_id, "--since", "yesterday", exit_code=2
    )
    assert "--since" in output and "ISO-8601" in output
    output = refused(settings, "endpoints", "recover", endpoint_id, exit_code=2)
    assert "--since" in output


# --- purge -----------------------------------------------------------------------------------


def _history(db) -> dict[str, str]:
    """Events 40 days old (one failed, one succeeded, one never sent), one 10 days old and one
    new, both succeeded; returns {name: event id}."""
    now = utcnow()
    old = now - dt.timedelta(days=40)
    names = {"old failed": publish(db, "ping", now=old, n="failed")}
    send_once(db, to_epoch(old) + 1, 500)
    names["old succeeded"] = publish(db, "ping", now=old, n="succeeded")
    send_once(db, to_epoch(old) + 2, 200)
    ten_days = now - dt.timedelta(days=10)
    names["recent"] = publish(db, "ping", now=ten_days, n="recent")
    send_once(db, to_epoch(ten_days) + 1, 200)
    names["new"] = publish(db, "ping", now=now, n="new")
    send_once(db, due_now(), 200)
    names["old pending"] = publish(db, "ping", now=old, n="pending")
    return names


def _statuses(db, names: dict[str, str]) -> dict[str, str]:
    by_row = {event_row(db, e).id: name for name, e in names.items() if event_row(db, e)}
    return {by_row[r.event]: r.status for r in seen_deliveries(db)}


def test_purge_deletes_old_finished_rows_and_keeps_recent_and_unfinished(settings, db):
    add(settings, "--retry-schedule", "0")
    names = _history(db)
    assert _statuses(db, names) == {
        "old failed": "failed",
        "old succeeded": "succeeded",
        "recent": "succeeded",
        "new": "succeeded",
        "old pending": "pending",
    }
    assert db(db.hookline_attempt).count() == 4

    kept = ok(settings, "purge", "--older-than", "1000h")
    assert kept.strip() == "purged 0 attempts, 0 deliveries, 0 events, 0 inbox"
    assert db(db.hookline_attempt).count() == 4

    output = ok(settings, "purge", "--older-than", "30d")
    assert output.strip() == "purged 2 attempts, 2 deliveries, 2 events, 0 inbox"
    assert _statuses(db, names) == {
        "recent": "succeeded",
        "new": "succeeded",
        "old pending": "pending",
    }
    db.commit()
    assert {r.event_id for r in db(db.hookline_event).select()} == {
        names["recent"],
        names["new"],
        names["old pending"],
    }
    assert db(db.hookline_attempt).count() == 2


def test_purge_refuses_a_bad_duration_as_a_usage_error(settings, db):
    add(settings, "--retry-schedule", "0")
    names = _history(db)
    for age in ("30", "30x", "-5d", "1.5d", "thirty days", ""):
        output = refused(settings, "purge", "--older-than", age, exit_code=2)
        assert "Invalid value for --older-than: an age such as 30d" in output, (age, output)
    assert len(_statuses(db, names)) == 5


def test_purge_refuses_an_age_beyond_the_calendar_as_a_usage_error(settings, db):
    output = refused(settings, "purge", "--older-than", "999999d", exit_code=2)
    assert "--older-than" in output


def test_recover_refuses_a_since_beyond_the_calendar_as_a_usage_error(settings, db):
    endpoint_id, _ = add(settings)
    output = refused(
        settings,
        "endpoints",
        "recover",
        endpoint_id,
        "--since",
        "0001-01-01T00:00:00+01:00",
        exit_code=2,
    )
    assert "--since" in output


def test_add_refuses_a_host_that_is_not_valid_idna_and_stores_nothing(settings, db):
    output = refused(settings, "endpoints", "add", "https://xn--/hooks")
    assert "url" in output
    db.commit()
    assert db(db.hookline_endpoint).count() == 0
