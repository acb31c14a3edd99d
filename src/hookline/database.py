"""Opening the database: one function for the web app, the worker, the CLI and the tests.

SQLite is opened in WAL mode with the configured ``synchronous`` level on every connection
(pydal opens a new one per request), so an answered write is on disk. PostgreSQL goes through
psycopg2 with a small per-process pool. Migration metadata lives in the database itself
(pydal's ``InDBMigrator``), so several machines sharing one PostgreSQL agree on the schema.
"""

from __future__ import annotations

import fcntl
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydal import DAL
from pydal.migrator import InDBMigrator

from hookline.config import Settings
from hookline.schema import define_tables, ensure_indexes
from hookline.sources import ensure_orders_source

__all__ = ["begin_write", "connect", "driver_errors", "migrate"]

_MIGRATION_LOCK_KEY = 0x686F6F6B6C696E65  # "hookline"


def _sqlite_pragmas(settings: Settings):
    statements = (
        "PRAGMA journal_mode=WAL;",
        f"PRAGMA synchronous={settings.sqlite_synchronous};",
        f"PRAGMA busy_timeout={settings.sqlite_busy_timeout_ms};",
    )

    def after_connection(adapter: Any) -> None:
        for statement in statements:
            adapter.execute(statement)

    return after_connection


def connect(
    settings: Settings,
    *,
    migrate_tables: bool = False,
    dal_class: type[DAL] = DAL,
    **dal_kwargs: Any,
) -> DAL:
    """Open the configured database with hookline's tables defined.

    ``dal_class`` lets a framework pass its own DAL subclass (py4web's is a request fixture);
    extra keyword arguments go to it unchanged.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.migrations_dir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "folder": str(settings.migrations_dir),
        "adapter_args": {"migrator": InDBMigrator},
        "migrate": migrate_tables,
        "fake_migrate_all": False,
    }
    if settings.is_sqlite:
        # Each request gets a fresh connection; the pragmas must be set on every one.
        options["after_connection"] = _sqlite_pragmas(settings)
        options["pool_size"] = 0
    else:
        options["pool_size"] = settings.db_pool_size
    options.update(dal_kwargs)
    db = dal_class(settings.database_url, **options)
    define_tables(db, migrate=migrate_tables)
    return db


@contextmanager
def _migration_lock(settings: Settings) -> Iterator[None]:
    # Web servers and workers start together and each migrates: one at a time, or they race on
    # pydal's migration records and on table locks.
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with open(settings.data_dir / ".migrate.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    import psycopg2

    conn = psycopg2.connect(settings.database_url.replace("postgres://", "postgresql://", 1))
    try:
        conn.autocommit = True
        conn.cursor().execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        yield
    finally:
        conn.close()  # ends the session, which releases the advisory lock


def migrate(settings: Settings) -> None:
    """Create or upgrade hookline's tables and indexes; safe to run from many processes at once."""
    with _migration_lock(settings):
        db = connect(settings, migrate_tables=True)
        try:
            ensure_indexes(db)
            ensure_orders_source(db)
            db.commit()
        finally:
            db.close()


def driver_errors(db: DAL, name: str) -> tuple[type[BaseException], ...]:
    """The DB-API exception class ``name`` (``IntegrityError``, ``OperationalError``) of ``db``'s
    driver, as a tuple usable in ``except`` (empty when the driver has none)."""
    error = getattr(getattr(db._adapter, "driver", None), name, None)
    return (error,) if isinstance(error, type) else ()


#: Naps between tries for SQLite's write lock; the last one repeats until the busy timeout.
WRITE_LOCK_NAPS_S = (0.0002, 0.0005, 0.001, 0.002)


def begin_write(db: DAL) -> None:
    """Start a write transaction: on SQLite take the write lock now (``BEGIN IMMEDIATE``),
    waiting up to the connection's busy timeout; on PostgreSQL the next statement begins one."""
    db.commit()  # close any read snapshot: the writer must see the newest committed state
    if db._adapter.dbengine == "postgres":
        return
    # SQLite's own busy handler naps 1, 2, 5, 10 ... up to 100 ms between tries, so a worker's
    # claim that found a publisher committing often went on waiting long after the lock was
    # free: publish -> first attempt p99 was hundreds of milliseconds. Short naps of our own.
    # The raw cursor: pydal's executesql around each of these four statements cost more than
    # the statement, on every claim.
    cursor = db._adapter.cursor
    timeout_ms = int(cursor.execute("PRAGMA busy_timeout").fetchone()[0])
    cursor.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + timeout_ms / 1000
        tries = 0
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(WRITE_LOCK_NAPS_S[min(tries, len(WRITE_LOCK_NAPS_S) - 1)])
            tries += 1
    finally:
        cursor.execute(f"PRAGMA busy_timeout={timeout_ms}")
