"""Opening the database: one function for the web app, the worker, the CLI and the tests.

SQLite is opened in WAL mode with the configured ``synchronous`` level on every connection
(pydal opens a new one per request), so an answered write is on disk. PostgreSQL goes through
psycopg2 with a small per-process pool. Migration metadata lives in the database itself
(pydal's ``InDBMigrator``), so several machines sharing one PostgreSQL agree on the schema.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydal import DAL
from pydal.migrator import InDBMigrator

from hookline.config import Settings
from hookline.schema import define_tables, ensure_indexes
from hookline.sources import ensure_orders_source

__all__ = ["connect", "driver_errors", "migrate"]

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
