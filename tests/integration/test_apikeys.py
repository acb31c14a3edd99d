"""API keys (``hookline.apikeys``) against a real database, on SQLite and PostgreSQL.

Guarantee 5: a key is shown once and only its SHA-256 hash is stored; a request gets in only
with a well-formed ``Bearer`` key that exists and is not revoked, and each refusal says why.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest

from hookline import apikeys
from hookline.errors import NotFound, Unauthorized, ValidationFailed
from hookline.ids import is_id

NOW = dt.datetime(2026, 3, 1, 12, 0, 0)
KEY_SHAPE = re.compile(r"hk_[A-Za-z0-9_-]{43}")


def _all_stored_text(db) -> str:
    """Every value of every column of the key table, as the database returns it."""
    db.commit()
    rows = db.executesql("SELECT * FROM hookline_api_key")
    return "\n".join(repr(value) for row in rows for value in row)


def _committed_row(db, key_id: str):
    db.commit()
    return db(db.hookline_api_key.key_id == key_id).select().first()


# --- create_key -------------------------------------------------------------------------------


def test_create_key_returns_the_key_once_and_stores_only_its_hash(db, other_db):
    record, key = apikeys.create_key(db, "ci deploy", now=NOW)

    assert KEY_SHAPE.fullmatch(key)
    assert len(key) == 3 + 43
    assert is_id(record["key_id"], "key")
    assert record["name"] == "ci deploy"
    assert record["prefix"] == key[:10]
    assert record["active"] is True
    assert record["created_at"] == "2026-03-01T12:00:00.000Z"
    assert record["last_used_at"] is None
    assert record["revoked_at"] is None
    assert key not in repr(record)

    # create_key commits: another connection sees the row.
    row = _committed_row(other_db, record["key_id"])
    assert row is not None
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest() == apikeys.hash_key(key)
    stored = _all_stored_text(other_db)
    assert key not in stored
    assert key[10:] not in stored  # not even the secret part after the display prefix
    assert apikeys.hash_key(key) in stored


def test_keys_are_distinct_and_listed_without_secrets(db):
    made = [apikeys.create_key(db, f"key {n}") for n in range(5)]
    keys = {key for _, key in made}
    assert len(keys) == 5
    assert all(KEY_SHAPE.fullmatch(key) for key in keys)

    listed = apikeys.list_keys(db)
    assert [k["key_id"] for k in listed] == [record["key_id"] for record, _ in made]
    assert [k["name"] for k in listed] == [f"key {n}" for n in range(5)]
    text = repr(listed)
    assert "key_hash" not in text
    for key in keys:
        assert key not in text
        assert apikeys.hash_key(key) not in text
        assert key[10:] not in _all_stored_text(db)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "-leading-dash",
        ".dot",
        "a" * 65,
        "tab\tname",
        "new\nline",
        "semi;colon",
        "slash/name",
        "名前",
        "quote'",
    ],
)
def test_bad_names_are_refused_and_nothing_is_stored(db, other_db, name):
    with pytest.raises(ValidationFailed) as info:
        apikeys.create_key(db, name)
    assert info.value.status == 422
    assert "name" in info.value.errors
    db.commit()
    assert other_db(other_db.hookline_api_key).count() == 0


@pytest.mark.parametrize("name", ["a", "a" * 64, "ci-bot@example.com", "Deploy key 2", "x.y_z"])
def test_good_names_are_accepted(db, name):
    record, _ = apikeys.create_key(db, name)
    assert record["name"] == name


def test_name_is_trimmed(db):
    record, _ = apikeys.create_key(db, "  ops  ")
    assert record["name"] == "ops"


# --- authenticate -----------------------------------------------------------------------------


def test_bearer_key_authenticates_and_sets_last_used_at(db, other_db):
    record, key = apikeys.create_key(db, "ops", now=NOW)
    used = NOW + dt.timedelta(hours=1)

    who = apikeys.authenticate(db, f"Bearer {key}", now=used)
    assert who["key_id"] == record["key_id"]
    assert who["name"] == "ops"
    assert who["active"] is True
    assert who["last_used_at"] == "2026-03-01T13:00:00.000Z"
    assert key not in repr(who)

    db.commit()  # last_used_at is written in the caller's transaction
    assert _committed_row(other_db, record["key_id"]).last_used_at == used


@pytest.mark.parametrize("header", ["bearer {key}", "BEARER {key}", "  Bearer   {key}  "])
def test_scheme_is_case_insensitive_and_spaces_are_tolerated(db, header):
    record, key = apikeys.create_key(db, "ops")
    assert apikeys.authenticate(db, header.format(key=key))["key_id"] == record["key_id"]


def test_last_used_at_is_refreshed_at_most_once_a_minute(db, other_db):
    record, key = apikeys.create_key(db, "ops", now=NOW)
    apikeys.authenticate(db, f"Bearer {key}", now=NOW)
    db.commit()
    apikeys.authenticate(db, f"Bearer {key}", now=NOW + dt.timedelta(seconds=30))
    db.commit()
    assert _committed_row(other_db, record["key_id"]).last_used_at == NOW

    later = NOW + dt.timedelta(minutes=2)
    assert apikeys.authenticate(db, f"Bearer {key}", now=later)["last_used_at"].startswith(
        "2026-03-01T12:02:00"
    )
    db.commit()
    assert _committed_row(other_db, record["key_id"]).last_used_at == later


def test_authenticate_does_not_commit_for_the_caller(db, other_db):
    record, key = apikeys.create_key(db, "ops", now=NOW)
    apikeys.authenticate(db, f"Bearer {key}", now=NOW)
    db.rollback()
    assert _committed_row(other_db, record["key_id"]).last_used_at is None


MISSING = "missing API key"
MALFORMED = "malformed Authorization header"
INVALID = "invalid API key"
REVOKED = "API key revoked"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", MISSING),
        ("   ", MISSING),
        ("Basic dXNlcjpwYXNz", MALFORMED),
        ("Bearer", MALFORMED),
        ("Bearer    ", MALFORMED),
        ("Token {key}", MALFORMED),
        ("{key}", MALFORMED),
        ("Bearer hk_short", INVALID),
        ("Bearer {key}x", INVALID),
        ("Bearer {key} {key}", INVALID),
        ("Bearer hk_" + "A" * 43, INVALID),
        ("Bearer xx_" + "A" * 43, INVALID),
    ],
)
def test_refusals_say_why(db, header, expected):
    _, key = apikeys.create_key(db, "ops")
    with pytest.raises(Unauthorized) as info:
        apikeys.authenticate(db, header.format(key=key))
    assert info.value.status == 401
    assert info.value.message.startswith(expected)


def test_refusal_messages_are_distinct(db):
    _, key = apikeys.create_key(db, "ops")
    apikeys.revoke_key(db, "ops")
    messages = []
    for header in ("", "Basic abc", "Bearer hk_" + "B" * 43, f"Bearer {key}"):
        with pytest.raises(Unauthorized) as info:
            apikeys.authenticate(db, header)
        messages.append(info.value.message)
    assert len(set(messages)) == 4
    for message in messages:
        assert key not in message


def test_wrong_key_is_refused_and_touches_nothing(db, other_db):
    record, _ = apikeys.create_key(db, "ops")
    _, other_key = apikeys.create_key(db, "other")
    apikeys.revoke_key(db, "other")
    tampered = other_key[:-1] + ("A" if other_key[-1] != "A" else "B")
    with pytest.raises(Unauthorized, match=INVALID):
        apikeys.authenticate(db, f"Bearer {tampered}")
    db.commit()
    assert _committed_row(other_db, record["key_id"]).last_used_at is None


# --- revoke_key -------------------------------------------------------------------------------


def test_revoke_by_id(db, other_db):
    record, key = apikeys.create_key(db, "ops", now=NOW)
    _, kept = apikeys.create_key(db, "ops 2", now=NOW)
    revoked_at = NOW + dt.timedelta(days=1)

    result = apikeys.revoke_key(db, record["key_id"], now=revoked_at)

    assert [r["key_id"] for r in result] == [record["key_id"]]
    assert result[0]["active"] is False
    assert result[0]["revoked_at"] == "2026-03-02T12:00:00.000Z"
    assert _committed_row(other_db, record["key_id"]).revoked_at == revoked_at  # committed
    with pytest.raises(Unauthorized, match=REVOKED):
        apikeys.authenticate(db, f"Bearer {key}")
    assert apikeys.authenticate(db, f"Bearer {kept}")["name"] == "ops 2"


def test_revoke_by_name_revokes_every_active_key_with_that_name(db, other_db):
    first, key1 = apikeys.create_key(db, "rotating")
    second, key2 = apikeys.create_key(db, "rotating")
    other, key3 = apikeys.create_key(db, "stays")

    result = apikeys.revoke_key(db, "rotating")

    assert sorted(r["key_id"] for r in result) == sorted([first["key_id"], second["key_id"]])
    assert all(r["active"] is False for r in result)
    for key in (key1, key2):
        with pytest.raises(Unauthorized, match=REVOKED):
            apikeys.authenticate(db, f"Bearer {key}")
    assert apikeys.authenticate(db, f"Bearer {key3}")["key_id"] == other["key_id"]
    other_db.commit()
    active = {k["key_id"]: k["active"] for k in apikeys.list_keys(other_db)}
    assert active == {first["key_id"]: False, second["key_id"]: False, other["key_id"]: True}


def test_revoke_unknown_is_not_found(db):
    apikeys.create_key(db, "ops")
    with pytest.raises(NotFound) as info:
        apikeys.revoke_key(db, "nope")
    assert info.value.status == 404
    assert "nope" in info.value.message
    assert all(k["active"] for k in apikeys.list_keys(db))


def test_revoking_twice_is_not_found_and_keeps_the_first_revocation_time(db):
    record, _ = apikeys.create_key(db, "ops")
    apikeys.revoke_key(db, record["key_id"], now=NOW)
    with pytest.raises(NotFound):
        apikeys.revoke_key(db, record["key_id"], now=NOW + dt.timedelta(days=1))
    with pytest.raises(NotFound):
        apikeys.revoke_key(db, "ops")
    assert apikeys.list_keys(db)[0]["revoked_at"] == "2026-03-01T12:00:00.000Z"
