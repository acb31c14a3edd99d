"""``hookline sources ...`` and ``hookline inbox replay`` run in-process (click's CliRunner) on
the test database, on SQLite and PostgreSQL.

Each command is checked by what it prints and by what it changed: the rows it wrote and how
``hookline.inbound.receive`` then treats requests (a disabled or deleted source is a 404, a
lowered body limit a 413, an expired secret a 401). Rotation with a grace period is checked
against the real clock the CLI uses, by receiving with ``now=`` inside and past the grace.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import random
import time
import uuid
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hookline import handlers, inbound, signing, sources
from hookline.cli import cli
from hookline.cli_delivery import register_inbox, register_sources
from hookline.handlers import PermanentFailure
from hookline.receiver import receive_order_webhook
from hookline.retry import RetryPolicy
from hookline.secretbox import SecretBox, load_secret_box
from hookline.sources import ORDERS_SOURCE
from hookline.timeutil import to_epoch, utcnow
from hookline.webio import Request, Response

pytestmark = pytest.mark.usefixtures("clean_handler_registry")

JSON_CT = "application/json"
GITHUB_SECRET = "gh-cli-secret-0123456789"
STRIPE_SECRET = "whsec_cli_stripe_secret_0042"


@pytest.fixture
def box(settings) -> SecretBox:
    """The secret box the CLI loads for this data directory (the same key file)."""
    return load_secret_box(settings.secret_key or None, settings.data_dir)


def run(settings, *args: str) -> Result:
    """``hookline ARGS`` in this process against the test database."""
    register_sources(cli)
    register_inbox(cli)
    env = {
        "HOOKLINE_DATA_DIR": str(settings.data_dir),
        "HOOKLINE_DATABASE_URL": settings.database_url,
        "COLUMNS": "200",
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def ok(settings, *args: str) -> Result:
    result = run(settings, *args)
    assert result.exit_code == 0, result.output
    return result


def refused(settings, *args: str) -> Result:
    """A command that must fail as a clean CLI error (exit 1, ``Error: ...``), not a crash."""
    result = run(settings, *args)
    assert result.exit_code == 1, result.output
    assert "Error:" in result.stderr
    assert "Traceback" not in result.output
    return result


def source_row(db, name: str) -> Any:
    db.commit()  # a fresh snapshot: what the CLI committed
    return db(db.hookline_source.name == name).select().first()


def receive(
    db, box: SecretBox, name: str, body: bytes, headers: dict[str, str], *, now: dt.datetime
) -> Response:
    request = Request.build("POST", f"/myapp/webhook/{name}", headers, body)
    return inbound.receive(db, request, name, box=box, default_max_body_bytes=64 * 1024, now=now)


def seed_post(
    db, box: SecretBox, body: bytes, headers: dict[str, str], *, now: dt.datetime | None = None
) -> Response:
    request = Request.build("POST", "/myapp/webhook", headers, body)
    return receive_order_webhook(db, request, max_body_bytes=64 * 1024, box=box, now=now)


def standard_headers(secret: str, body: bytes, when: dt.datetime, msg_id: str) -> dict[str, str]:
    stamp = int(to_epoch(when))
    return {
        "Content-Type": JSON_CT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signing.sign_v1(secret, msg_id, stamp, body),
    }


def inbox_count(db) -> int:
    db.commit()
    return db(db.hookline_inbox).count()


# --- list and show --------------------------------------------------------------------------


def test_sources_list_shows_every_source_with_its_state(settings, db):
    ok(settings, "sources", "add", "gh", "--kind", "github", "--secret", GITHUB_SECRET)
    ok(settings, "sources", "add", "open", "--kind", "none")
    ok(settings, "sources", "update", "open", "--disable")

    rows = json.loads(ok(settings, "sources", "list", "--json").stdout)

    by_name = {row["name"]: row for row in rows}
    assert list(by_name) == [ORDERS_SOURCE, "gh", "open"]  # oldest first
    assert by_name["gh"]["kind"] == "github"
    assert by_name["gh"]["url_path"] == "/myapp/webhook/gh"
    assert by_name["gh"]["active_secrets"] == 1
    assert by_name["gh"]["enabled"] is True
    assert by_name["open"]["active_secrets"] == 0
    assert by_name["open"]["enabled"] is False
    assert by_name[ORDERS_SOURCE]["url_path"] == "/myapp/webhook"
    assert GITHUB_SECRET not in json.dumps(rows)

    table = ok(settings, "sources", "list").stdout
    lines = {line.split()[1]: line for line in table.splitlines() if line.startswith("│ ")}
    assert {"gh", "open", ORDERS_SOURCE} <= set(lines)
    assert "/myapp/webhook/gh" in lines["gh"] and "yes" in lines["gh"]
    assert " no " in lines["open"]
    assert GITHUB_SECRET not in table


def test_sources_list_counts_refused_requests(settings, db, box):
    ok(settings, "sources", "add", "gh", "--kind", "github", "--secret", GITHUB_SECRET)
    bad = {"Content-Type": JSON_CT, "X-Hub-Signature-256": "sha256=" + "00" * 32}
    assert receive(db, box, "gh", b"{}", bad, now=utcnow()).status == 401
    assert receive(db, box, "gh", b"{}", bad, now=utcnow()).status == 401

    [row] = [
        r for r in json.loads(ok(settings, "sources", "list", "--json").stdout) if r["name"] == "gh"
    ]

    assert row["verify_failures"] == 2
    assert row["last_failure_reason"]


def test_sources_show_prints_one_source_without_its_secret(settings):
    added = ok(settings, "sources", "add", "partner", "--kind", "standard").stdout
    generated = added.split("secret ", 1)[1].strip()

    shown = json.loads(ok(settings, "sources", "show", "partner").stdout)

    assert shown["object"] == "source"
    assert (shown["name"], shown["kind"], shown["url_path"]) == (
        "partner",
        "standard",
        "/myapp/webhook/partner",
    )
    assert shown["active_secrets"] == 1 and shown["tolerance_s"] == 300
    assert shown["source_id"].startswith("src_")
    text = json.dumps(shown)
    assert generated not in text and generated.removeprefix("whsec_") not in text


def test_sources_show_of_an_unknown_name_is_a_clear_error(settings):
    result = refused(settings, "sources", "show", "nobody")
    assert "no source 'nobody'" in result.stderr


# --- update ---------------------------------------------------------------------------------


def test_sources_update_tolerance_changes_what_verifies(settings, db, box):
    ok(settings, "sources", "add", "st", "--kind", "stripe", "--secret", STRIPE_SECRET)

    shown = json.loads(ok(settings, "sources", "update", "st", "--tolerance-s", "60").stdout)

    assert shown["tolerance_s"] == 60
    assert source_row(db, "st").tolerance_s == 60
    now = utcnow().replace(microsecond=0)

    def stripe_post(event_id: str, age_s: int) -> int:
        body = json.dumps({"id": event_id, "object": "event", "type": "x.y"}).encode()
        stamp = int(to_epoch(now)) - age_s
        digest = hmac.new(STRIPE_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        headers = {
            "Content-Type": JSON_CT,
            "Stripe-Signature": f"t={stamp},v1={digest.hexdigest()}",
        }
        return receive(db, box, "st", body, headers, now=now).status

    assert stripe_post("evt_fresh", 60) == 200
    assert stripe_post("evt_stale", 61) == 401


def test_sources_update_max_body_bytes_changes_the_limit(settings, db, box):
    ok(settings, "sources", "add", "open", "--kind", "none")
    body = json.dumps({"pad": "x" * 200}).encode()
    assert receive(db, box, "open", body, {"Content-Type": JSON_CT}, now=utcnow()).status == 200

    shown = json.loads(ok(settings, "sources", "update", "open", "--max-body-bytes", "100").stdout)

    assert shown["max_body_bytes"] == 100
    assert receive(db, box, "open", body, {"Content-Type": JSON_CT}, now=utcnow()).status == 413
    assert inbox_count(db) == 1


def test_sources_update_disable_then_enable(settings, db, box):
    ok(settings, "sources", "add", "open", "--kind", "none")

    disabled = json.loads(ok(settings, "sources", "update", "open", "--disable").stdout)

    assert disabled["enabled"] is False
    assert source_row(db, "open").enabled in (0, False)
    headers = {"Content-Type": JSON_CT}
    assert receive(db, box, "open", b"{}", headers, now=utcnow()).status == 404
    assert inbox_count(db) == 0

    enabled = json.loads(ok(settings, "sources", "update", "open", "--enable").stdout)

    assert enabled["enabled"] is True
    assert receive(db, box, "open", b"{}", headers, now=utcnow()).status == 200
    assert inbox_count(db) == 1


def test_sources_update_kind_switches_the_verifier(settings, db, box):
    ok(settings, "sources", "add", "hook", "--kind", "github", "--secret", GITHUB_SECRET)

    shown = json.loads(ok(settings, "sources", "update", "hook", "--kind", "shopify").stdout)

    assert shown["kind"] == "shopify"
    body = b'{"id": 1}'
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256)
    github = {"Content-Type": JSON_CT, "X-Hub-Signature-256": f"sha256={digest.hexdigest()}"}
    assert receive(db, box, "hook", body, github, now=utcnow()).status == 401
    shopify = {
        "Content-Type": JSON_CT,
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest.digest()).decode(),
        "X-Shopify-Webhook-Id": "shop-1",
    }
    assert receive(db, box, "hook", body, shopify, now=utcnow()).status == 200


def test_sources_update_sets_public_keys_and_changes_only_the_hmac_options_given(settings, db, box):
    private, public = signing.generate_ed25519_keypair()
    ok(settings, "sources", "add", "std", "--kind", "standard")
    shown = json.loads(ok(settings, "sources", "update", "std", "--public-key", public).stdout)
    assert shown["public_keys"] == [public]
    body, msg_id, when = b'{"type": "ping"}', "msg_cli_v1a", utcnow()
    signature = signing.sign_v1a(private, msg_id, int(when.timestamp()), body)
    headers = {
        "Content-Type": JSON_CT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }
    assert receive(db, box, "std", body, headers, now=when).status == 200
    result = refused(settings, "sources", "update", "std", "--public-key", "whpk_bad")
    assert "public_keys" in result.stderr

    ok(
        settings,
        "sources",
        "add",
        "mac",
        "--kind",
        "hmac",
        "--secret",
        GITHUB_SECRET,
        "--hmac-header",
        "X-Sig",
        "--hmac-algorithm",
        "sha512",
    )
    shown = json.loads(ok(settings, "sources", "update", "mac", "--hmac-prefix", "v1=").stdout)
    assert shown["hmac"]["header"] == "X-Sig" and shown["hmac"]["algorithm"] == "sha512"
    assert shown["hmac"]["prefix"] == "v1="
    result = refused(settings, "sources", "update", "mac", "--public-key", public)
    assert "standard" in result.stderr


def test_sources_update_to_a_signed_kind_without_a_secret_is_refused(settings, db):
    ok(settings, "sources", "add", "open", "--kind", "none")

    result = refused(settings, "sources", "update", "open", "--kind", "github")

    assert "needs a secret" in result.stderr
    assert source_row(db, "open").kind == "none"


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [
        ("--tolerance-s", "-1", "tolerance_s"),
        ("--tolerance-s", "86401", "tolerance_s"),
        ("--max-body-bytes", "0", "max_body_bytes"),
    ],
)
def test_sources_update_refuses_out_of_range_values(settings, db, option, value, field):
    ok(settings, "sources", "add", "open", "--kind", "none")
    before = source_row(db, "open")

    result = refused(settings, "sources", "update", "open", option, value)

    assert field in result.stderr
    after = source_row(db, "open")
    assert (after.tolerance_s, after.max_body_bytes) == (before.tolerance_s, before.max_body_bytes)


def test_sources_update_of_an_unknown_name_is_a_clear_error(settings):
    result = refused(settings, "sources", "update", "nobody", "--disable")
    assert "no source 'nobody'" in result.stderr


# --- delete ---------------------------------------------------------------------------------


def test_sources_delete_removes_the_source_and_its_url(settings, db, box):
    ok(settings, "sources", "add", "gone", "--kind", "none")
    ok(settings, "sources", "add", "kept", "--kind", "none")

    result = ok(settings, "sources", "delete", "gone")

    assert "deleted gone" in result.stdout
    assert source_row(db, "gone") is None
    assert source_row(db, "kept") is not None
    names = [row["name"] for row in json.loads(ok(settings, "sources", "list", "--json").stdout)]
    assert "gone" not in names and "kept" in names
    assert receive(db, box, "gone", b"{}", {"Content-Type": JSON_CT}, now=utcnow()).status == 404
    again = refused(settings, "sources", "delete", "gone")
    assert "no source 'gone'" in again.stderr


def test_the_built_in_orders_source_cannot_be_deleted(settings, db):
    result = refused(settings, "sources", "delete", ORDERS_SOURCE)

    assert "built in" in result.stderr and "disable it instead" in result.stderr
    assert "deleted" not in result.stdout
    assert source_row(db, ORDERS_SOURCE) is not None


# --- rotate ---------------------------------------------------------------------------------


def test_sources_rotate_without_a_secret_prints_a_generated_one_once(settings, db, box):
    ok(
        settings,
        "sources",
        "add",
        "partner",
        "--kind",
        "standard",
        "--secret",
        signing.generate_secret(),
    )

    result = ok(settings, "sources", "rotate", "partner")

    printed = result.stdout.strip()
    assert printed.startswith("rotated partner: secret whsec_")
    new = printed.rsplit(" ", 1)[1]
    signing.decode_secret(new)
    assert sources.active_secrets(box, source_row(db, "partner"))[0] == new
    now = utcnow().replace(microsecond=0)
    body = b'{"type": "a.b"}'
    headers = standard_headers(new, body, now, "msg_rotated_1")
    assert receive(db, box, "partner", body, headers, now=now).status == 200
    for shown in (
        ok(settings, "sources", "show", "partner").stdout,
        ok(settings, "sources", "list", "--json").stdout,
    ):
        assert new not in shown and new.removeprefix("whsec_") not in shown


def test_sources_rotate_with_a_given_secret_does_not_print_it(settings, db, box):
    ok(settings, "sources", "add", "gh", "--kind", "github", "--secret", GITHUB_SECRET)

    result = ok(settings, "sources", "rotate", "gh", "--secret", "gh-new-secret-987654321")

    assert result.stdout.strip() == "rotated gh"
    assert sources.active_secrets(box, source_row(db, "gh")) == [
        "gh-new-secret-987654321",
        GITHUB_SECRET,
    ]


def test_sources_rotate_grace_hours_keeps_the_old_secret_for_the_grace_only(settings, db, box):
    old = signing.generate_secret()
    new = signing.generate_secret()
    ok(settings, "sources", "add", "partner", "--kind", "standard", "--secret", old)
    before = utcnow().replace(microsecond=0)

    ok(settings, "sources", "rotate", "partner", "--secret", new, "--grace-hours", "2")

    after = utcnow().replace(microsecond=0) + dt.timedelta(seconds=1)
    assert json.loads(ok(settings, "sources", "show", "partner").stdout)["active_secrets"] == 2
    body = b'{"type": "a.b"}'

    def status(secret: str, at: dt.datetime) -> int:
        msg_id = f"msg_{uuid.uuid4().hex}"
        return receive(
            db, box, "partner", body, standard_headers(secret, body, at, msg_id), now=at
        ).status

    during = before + dt.timedelta(hours=1, minutes=59)
    past = after + dt.timedelta(hours=2)
    assert status(old, during) == 200
    assert status(new, during) == 200
    assert status(old, past) == 401
    assert status(new, past) == 200
    assert source_row(db, "partner").verify_failures == 1


def test_sources_rotate_with_zero_grace_retires_the_old_secret_at_once(settings, db, box):
    old = signing.generate_secret()
    ok(settings, "sources", "add", "partner", "--kind", "standard", "--secret", old)

    new = ok(settings, "sources", "rotate", "partner", "--grace-hours", "0").stdout.split()[-1]

    now = utcnow().replace(microsecond=0) + dt.timedelta(seconds=1)
    body = b'{"type": "a.b"}'
    old_headers = standard_headers(old, body, now, "msg_old")
    assert receive(db, box, "partner", body, old_headers, now=now).status == 401
    new_headers = standard_headers(new, body, now, "msg_new")
    assert receive(db, box, "partner", body, new_headers, now=now).status == 200


def test_sources_rotate_refuses_a_grace_over_30_days(settings, db, box):
    old = signing.generate_secret()
    ok(settings, "sources", "add", "partner", "--kind", "standard", "--secret", old)

    result = run(settings, "sources", "rotate", "partner", "--grace-hours", "721")

    assert result.exit_code == 2, result.output
    assert "--grace-hours" in result.stderr
    assert sources.active_secrets(box, source_row(db, "partner")) == [old]


def test_sources_rotate_of_an_unknown_name_is_a_clear_error(settings):
    result = refused(settings, "sources", "rotate", "nobody")
    assert "no source 'nobody'" in result.stderr


def test_rotating_a_secret_into_the_orders_source_makes_the_seed_webhook_verify(settings, db, box):
    body = b"order_id=cli-1&product_name=kettle"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert seed_post(db, box, body, form).status == 200
    secret = signing.generate_secret()

    result = ok(settings, "sources", "rotate", ORDERS_SOURCE, "--secret", secret)

    assert result.stdout.strip() == f"rotated {ORDERS_SOURCE}"
    shown = json.loads(ok(settings, "sources", "show", ORDERS_SOURCE).stdout)
    assert shown["active_secrets"] == 1
    assert seed_post(db, box, body.replace(b"1", b"2"), form).status == 401
    now = utcnow().replace(microsecond=0)
    signed = standard_headers(secret, body, now, "msg_seed_cli") | form
    assert seed_post(db, box, body, signed, now=now).status == 200
    assert inbox_count(db) == 2


# --- inbox replay ---------------------------------------------------------------------------


def _received_message(settings, db, box, name: str) -> str:
    ok(settings, "sources", "add", name, "--kind", "none")
    headers = {"Content-Type": JSON_CT, "webhook-id": f"wh-{name}"}
    answer = receive(db, box, name, b'{"type": "thing.done"}', headers, now=utcnow())
    assert answer.status == 200, answer.body
    return answer.json()["inbox_id"]


def _work(db) -> dict[str, int]:
    """What one worker turn does with the messages due now."""
    now = time.time() + 1
    claimed = handlers.claim_messages(db, "cli-test", now=now, capacity=10, lease_s=30)
    return handlers.process_messages(
        db, claimed, "cli-test", now=now, policy=RetryPolicy(jitter=0), rng=random.Random(1)
    )


def _inbox_row(db, inbox_id: str) -> Any:
    db.commit()
    return db(db.hookline_inbox.inbox_id == inbox_id).select().first()


def test_inbox_replay_runs_a_processed_messages_handler_again(settings, db, box):
    seen: list[str] = []
    handlers.register("replay-ok")(lambda conn, message: seen.append(message.inbox_id))
    inbox_id = _received_message(settings, db, box, "replay-ok")
    assert _work(db)["processed"] == 1
    assert _inbox_row(db, inbox_id).status == "processed"

    result = ok(settings, "inbox", "replay", inbox_id)

    assert inbox_id in result.stdout and "received again" in result.stdout
    row = _inbox_row(db, inbox_id)
    assert (row.status, row.attempts, row.processed_at) == ("received", 0, None)
    assert _work(db)["processed"] == 1
    assert seen == [inbox_id, inbox_id]
    assert _inbox_row(db, inbox_id).status == "processed"
    assert inbox_count(db) == 1


def test_inbox_replay_runs_a_dead_lettered_messages_handler_again(settings, db, box):
    outcomes = iter([PermanentFailure("cannot yet"), None])
    runs: list[int] = []

    def handle(conn, message) -> None:
        runs.append(message.attempt)
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    handlers.register("replay-dead")(handle)
    inbox_id = _received_message(settings, db, box, "replay-dead")
    assert _work(db)["failed"] == 1
    dead = _inbox_row(db, inbox_id)
    assert dead.status == "failed" and "cannot yet" in dead.last_error

    ok(settings, "inbox", "replay", inbox_id)

    row = _inbox_row(db, inbox_id)
    assert (row.status, row.attempts, row.last_error) == ("received", 0, None)
    assert _work(db)["processed"] == 1
    assert runs == [1, 1]
    assert _inbox_row(db, inbox_id).status == "processed"


def test_inbox_replay_of_an_unknown_id_is_a_clear_error(settings, db):
    result = refused(settings, "inbox", "replay", "msg_doesnotexist")

    assert "no inbox item 'msg_doesnotexist'" in result.stderr
    assert "received again" not in result.stdout


def test_inbox_replay_of_a_message_being_handled_is_refused(settings, db, box):
    inbox_id = _received_message(settings, db, box, "replay-busy")
    claimed = handlers.claim_messages(db, "cli-test", now=time.time() + 1, capacity=10, lease_s=30)
    assert [m.inbox_id for m in claimed] == [inbox_id]

    result = refused(settings, "inbox", "replay", inbox_id)

    assert "being handled" in result.stderr
    assert _inbox_row(db, inbox_id).status == "processing"
