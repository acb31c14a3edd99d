"""Shared fixtures: a database per test on SQLite and on PostgreSQL (the same contract suite).

PostgreSQL comes from ``HOOKLINE_TEST_POSTGRES_URL`` (default: the role and database that
``.ci/run`` creates). Each test session makes a database of its own there and drops it after.
When PostgreSQL is unreachable the PostgreSQL half is skipped locally, and fails under CI.
"""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from hookline.config import Settings
from hookline.database import connect, migrate
from hookline.sources import ensure_orders_source

DEFAULT_POSTGRES_URL = "postgres://hookline:hookline@127.0.0.1:5432/hookline"


def postgres_admin_url() -> str:
    """The PostgreSQL server the tests may create databases on."""
    return os.environ.get("HOOKLINE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def _admin_connection():
    import psycopg2

    conn = psycopg2.connect(
        postgres_admin_url().replace("postgres://", "postgresql://", 1), connect_timeout=5
    )
    conn.autocommit = True
    return conn


def _postgres_unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL is required in CI but unreachable: {reason}")
    pytest.skip(f"PostgreSQL unreachable ({reason}); set HOOKLINE_TEST_POSTGRES_URL")


class PostgresServer:
    """Creates throw-away databases on the test PostgreSQL server and drops them at the end."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"hookline_test_{os.getpid()}_{secrets.token_hex(4)}"
        conn = _admin_connection()
        try:
            conn.cursor().execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        self.created.append(name)
        return _with_database(postgres_admin_url(), name)

    def drop_all(self) -> None:
        """Drop every database this object created."""
        if not self.created:
            return
        conn = _admin_connection()
        try:
            for name in self.created:
                conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The test PostgreSQL server (skipped locally / failed in CI when unreachable)."""
    try:
        _admin_connection().close()
    except Exception as error:  # any driver or network failure means "not reachable"
        _postgres_unavailable(str(error).strip())
    server = PostgresServer()
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def postgres_settings(postgres_server: PostgresServer, tmp_path_factory) -> Settings:
    """Settings for one migrated PostgreSQL database shared by the session's tests."""
    data_dir = tmp_path_factory.mktemp("pg-data")
    settings = Settings.from_env(
        {
            "HOOKLINE_DATA_DIR": str(data_dir),
            "HOOKLINE_DATABASE_URL": postgres_server.create_database(),
        }
    )
    migrate(settings)
    return settings


def sqlite_settings(data_dir: Path) -> Settings:
    """Settings for a fresh SQLite database in ``data_dir``."""
    return Settings.from_env({"HOOKLINE_DATA_DIR": str(data_dir)})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request, tmp_path: Path) -> Iterator[Settings]:
    """Migrated settings for each backend; PostgreSQL tables are emptied after each test."""
    if request.param == "sqlite":
        settings = sqlite_settings(tmp_path / "data")
        migrate(settings)
        yield settings
        return
    settings = request.getfixturevalue("postgres_settings")
    yield settings
    db = connect(settings)
    try:
        tables = [name for name in db.tables if name.startswith("hookline_")]
        db.executesql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        ensure_orders_source(db)  # built in: migrate made it, and the next test expects it
        db.commit()
    finally:
        db.close()


@pytest.fixture
def db(settings: Settings):
    """An open connection with hookline's tables, on each backend."""
    database = connect(settings)
    yield database
    database.rollback()
    database.close()


@pytest.fixture
def other_db(settings: Settings):
    """A second, independent connection to the same database (to see only committed data)."""
    database = connect(settings)
    yield database
    database.rollback()
    database.close()


@pytest.fixture
def clean_handler_registry() -> Iterator[None]:
    """Handlers a test registers are gone after it (the registry is module-global)."""
    from hookline import handlers

    saved = dict(handlers._REGISTRY)
    yield
    handlers._REGISTRY.clear()
    handlers._REGISTRY.update(saved)
