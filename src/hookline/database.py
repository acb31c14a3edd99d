"""Opening the database: one function for the web app, the worker, the CLI and the tests.

SQLite is opened in WAL mode with the configured ``synchronous`` level on every connection
(pydal opens a new one per request), so an answered write is on disk. PostgreSQL goes through
psycopg2 with a small per-process pool. Migration metadata lives in the database itself
(pydal's ``InDBMigrator``), so several machines sharing one PostgreSQL agree on the schema.
"""

from __future__ import annotations

from typing import Any

from pydal import DAL
from pydal.migrator import InDBMigrator

from hookline.config import Settings
from hookline.schema import define_tables, ensure_indexes

__all__ = ["connect", "driver_errors", "migrate"]


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


def migrate(settings: Settings) -> None:
    """Create or upgrade hookline's tables and indexes; run once before serving."""
    db = connect(settings, migrate_tables=True)
    try:
        ensure_indexes(db)
    finally:
        db.close()


def driver_errors(db: DAL, name: str) -> tuple[type[BaseException], ...]:
    """The DB-API exception class ``name`` (``IntegrityError``, ``OperationalError``) of ``db``'s
    driver, as a tuple usable in ``except`` (empty when the driver has none)."""
    error = getattr(getattr(db._adapter, "driver", None), name, None)
    return (error,) if isinstance(error, type) else ()
