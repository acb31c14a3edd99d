"""Unit tests for ``hookline.config``: ``Settings.from_env`` with a plain dict environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hookline.config import Settings, default_web_workers, normalise_database_url
from hookline.errors import ConfigError
from hookline.outbox import MAX_PAYLOAD_BYTES


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An absolute, already-resolved data directory (no files are written to it)."""
    return tmp_path.resolve()


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    expected_dir = (tmp_path / "var").resolve()
    assert settings.data_dir == expected_dir
    assert settings.database_url == f"sqlite://{expected_dir / 'hookline.sqlite'}"
    assert settings.is_sqlite
    assert settings.sqlite_path == expected_dir / "hookline.sqlite"
    assert settings.migrations_dir == expected_dir / "databases"
    assert settings.service_dir == expected_dir / "py4web"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.web_workers == max(1, min((os.cpu_count() or 1) - 1, 8))  # one for the writer
    assert settings.web_threads == 64
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.max_payload_bytes == MAX_PAYLOAD_BYTES == 256 * 1024
    assert settings.sqlite_synchronous == "FULL"
    assert settings.sqlite_busy_timeout_ms == 10_000
    assert settings.db_pool_size == 10
    assert settings.group_commit is True
    assert settings.https_only is False
    assert settings.disable_after_days == 5
    assert settings.retention_days == 30


@pytest.mark.parametrize(
    ("cpus", "with_writer", "expected"),
    [
        (1, True, 1),
        (2, True, 1),
        (4, True, 3),
        (16, True, 8),
        (None, True, 1),
        (1, False, 1),
        (2, False, 2),
        (16, False, 8),
        (None, False, 1),
    ],
)
def test_web_processes_leave_the_ingest_writer_a_cpu(
    monkeypatch: pytest.MonkeyPatch, cpus: int | None, with_writer: bool, expected: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)

    assert default_web_workers(with_writer=with_writer) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 3),
        ({"HOOKLINE_INGEST_WRITER": "false"}, 4),
        ({"HOOKLINE_GROUP_COMMIT": "false"}, 4),
        ({"HOOKLINE_WEB_WORKERS": "6"}, 6),
    ],
)
def test_the_default_web_processes_follow_the_ingest_writer(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, env: dict[str, str], expected: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)

    assert Settings.from_env({"HOOKLINE_DATA_DIR": str(data_dir), **env}).web_workers == expected


def test_blank_values_mean_default(data_dir: Path) -> None:
    env = {
        "HOOKLINE_DATA_DIR": str(data_dir),
        "HOOKLINE_DATABASE_URL": "   ",
        "HOOKLINE_HOST": " ",
        "HOOKLINE_PORT": "",
        "HOOKLINE_SQLITE_SYNCHRONOUS": " ",
        "HOOKLINE_MAX_PAYLOAD_BYTES": "  ",
    }
    settings = Settings.from_env(env)
    assert settings.database_url == f"sqlite://{data_dir / 'hookline.sqlite'}"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.sqlite_synchronous == "FULL"
    assert settings.max_payload_bytes == MAX_PAYLOAD_BYTES


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgresql://u:p@db:5432/hook", "postgres://u:p@db:5432/hook"),
        ("postgresql+psycopg2://u:p@db/hook", "postgres://u:p@db/hook"),
        ("postgres+psycopg2://u:p@db/hook", "postgres://u:p@db/hook"),
        ("postgres://u:p@db/hook", "postgres://u:p@db/hook"),
        ("postgres:psycopg2://u:p@db/hook", "postgres:psycopg2://u:p@db/hook"),
        ("  postgresql://u@db/hook  ", "postgres://u@db/hook"),
    ],
)
def test_postgres_urls(data_dir: Path, raw: str, expected: str) -> None:
    settings = Settings.from_env({"HOOKLINE_DATA_DIR": str(data_dir), "HOOKLINE_DATABASE_URL": raw})
    assert settings.database_url == expected
    assert not settings.is_sqlite
    assert settings.sqlite_path is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sqlite://hook.db", "sqlite://{data}/hook.db"),
        ("sqlite://sub/hook.db", "sqlite://{data}/sub/hook.db"),
        ("sqlite:///abs/elsewhere.db", "sqlite:///abs/elsewhere.db"),
    ],
)
def test_sqlite_path_is_absolute_under_data_dir(data_dir: Path, raw: str, expected: str) -> None:
    settings = Settings.from_env({"HOOKLINE_DATA_DIR": str(data_dir), "HOOKLINE_DATABASE_URL": raw})
    assert settings.database_url == expected.format(data=data_dir)
    assert settings.sqlite_path is not None
    assert settings.sqlite_path.is_absolute()


def test_relative_data_dir_is_resolved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"HOOKLINE_DATA_DIR": "some/dir"})
    assert settings.data_dir == (tmp_path / "some" / "dir").resolve()
    assert settings.data_dir.is_absolute()


@pytest.mark.parametrize(
    ("name", "raw", "attribute", "expected"),
    [
        ("HOOKLINE_PORT", "8080", "port", 8080),
        ("HOOKLINE_PORT", " 1 ", "port", 1),
        ("HOOKLINE_PORT", "65535", "port", 65535),
        ("HOOKLINE_WEB_WORKERS", "64", "web_workers", 64),
        ("HOOKLINE_WEB_THREADS", "256", "web_threads", 256),
        ("HOOKLINE_MAX_BODY_BYTES", "1", "max_body_bytes", 1),
        ("HOOKLINE_MAX_BODY_BYTES", str(1 << 30), "max_body_bytes", 1 << 30),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "", "max_payload_bytes", 262_144),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "1024", "max_payload_bytes", 1024),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", " 65536 ", "max_payload_bytes", 65_536),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "262144", "max_payload_bytes", 262_144),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "16777216", "max_payload_bytes", 16 * 1024 * 1024),
        ("HOOKLINE_SQLITE_BUSY_TIMEOUT_MS", "0", "sqlite_busy_timeout_ms", 0),
        ("HOOKLINE_DB_POOL_SIZE", "0", "db_pool_size", 0),
        ("HOOKLINE_SQLITE_SYNCHRONOUS", "normal", "sqlite_synchronous", "NORMAL"),
        ("HOOKLINE_SQLITE_SYNCHRONOUS", " extra ", "sqlite_synchronous", "EXTRA"),
        ("HOOKLINE_HOST", " 0.0.0.0 ", "host", "0.0.0.0"),
        ("HOOKLINE_GROUP_COMMIT", "false", "group_commit", False),
        ("HOOKLINE_GROUP_COMMIT", "on", "group_commit", True),
        ("HOOKLINE_RETENTION_DAYS", "7", "retention_days", 7),
        ("HOOKLINE_RETENTION_DAYS", "1", "retention_days", 1),
        ("HOOKLINE_RETENTION_DAYS", "36500", "retention_days", 36_500),
        ("HOOKLINE_DISABLE_AFTER_DAYS", "2", "disable_after_days", 2),
        ("HOOKLINE_DISABLE_AFTER_DAYS", "3650", "disable_after_days", 3650),
        ("HOOKLINE_HTTPS_ONLY", "true", "https_only", True),
        ("HOOKLINE_HTTPS_ONLY", " YES ", "https_only", True),
        ("HOOKLINE_HTTPS_ONLY", "0", "https_only", False),
        ("HOOKLINE_HTTPS_ONLY", "", "https_only", False),
    ],
)
def test_valid_values(
    data_dir: Path, name: str, raw: str, attribute: str, expected: object
) -> None:
    settings = Settings.from_env({"HOOKLINE_DATA_DIR": str(data_dir), name: raw})
    assert getattr(settings, attribute) == expected


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("HOOKLINE_PORT", "abc", "whole number"),
        ("HOOKLINE_PORT", "80.5", "whole number"),
        ("HOOKLINE_PORT", "0", "between 1 and 65535"),
        ("HOOKLINE_PORT", "65536", "between 1 and 65535"),
        ("HOOKLINE_PORT", "-1", "whole number"),
        ("HOOKLINE_PORT", "9" * 5000, "between 1 and 65535, got a number of 5000 digits"),
        ("HOOKLINE_PORT", "0" * 5000 + "8080" + "0", "between 1 and 65535, got 80800"),
        ("HOOKLINE_WEB_WORKERS", "0", "between 1 and 64"),
        ("HOOKLINE_WEB_WORKERS", "65", "between 1 and 64"),
        ("HOOKLINE_WEB_THREADS", "257", "between 1 and 256"),
        ("HOOKLINE_MAX_BODY_BYTES", "0", "between"),
        ("HOOKLINE_MAX_BODY_BYTES", str((1 << 30) + 1), "between"),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "1023", "between 1024 and 16777216"),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "0", "between 1024 and 16777216"),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "16777217", "between 1024 and 16777216"),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "-1", "whole number"),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "256k", "whole number"),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "262144.0", "whole number"),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "1e6", "whole number"),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "٢٥٦", "whole number"),
        ("HOOKLINE_SQLITE_BUSY_TIMEOUT_MS", "600001", "between"),
        ("HOOKLINE_DB_POOL_SIZE", "1001", "between"),
        ("HOOKLINE_DB_POOL_SIZE", "ten", "whole number"),
        ("HOOKLINE_SQLITE_SYNCHRONOUS", "OFF", "FULL, NORMAL, EXTRA"),
        ("HOOKLINE_DATABASE_URL", "mysql://u@h/db", "must start with"),
        ("HOOKLINE_DATABASE_URL", "sqlite:memory:", "must start with"),
        ("HOOKLINE_DATABASE_URL", "hook.db", "must start with"),
        ("HOOKLINE_RETENTION_DAYS", "0", "between 1 and 36500"),
        ("HOOKLINE_RETENTION_DAYS", "36501", "between 1 and 36500"),
        ("HOOKLINE_RETENTION_DAYS", "30d", "whole number"),
        ("HOOKLINE_DISABLE_AFTER_DAYS", "0", "between 1 and 3650"),
        ("HOOKLINE_DISABLE_AFTER_DAYS", "3651", "between 1 and 3650"),
        ("HOOKLINE_DISABLE_AFTER_DAYS", "five", "whole number"),
        ("HOOKLINE_HTTPS_ONLY", "maybe", "true or false"),
        ("HOOKLINE_HTTPS_ONLY", "2", "true or false"),
    ],
)
def test_bad_values(data_dir: Path, name: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Settings.from_env({"HOOKLINE_DATA_DIR": str(data_dir), name: raw})
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgresql://a/b", "postgres://a/b"),
        ("sqlite://x.db", "sqlite://x.db"),
        (" postgres://a/b ", "postgres://a/b"),
    ],
)
def test_normalise_database_url(raw: str, expected: str) -> None:
    assert normalise_database_url(raw) == expected


def test_from_env_does_not_read_os_environ_when_given_a_dict(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    monkeypatch.setenv("HOOKLINE_PORT", "not-a-number")
    settings = Settings.from_env({"HOOKLINE_DATA_DIR": str(data_dir)})
    assert settings.port == 8000
