"""Settings, read once from ``HOOKLINE_*`` environment variables.

Every setting has a default that runs on a fresh machine: an embedded SQLite database under the
data directory ``./var``. ``HOOKLINE_DATABASE_URL`` switches to PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hookline.errors import ConfigError

__all__ = ["SETTINGS_HELP", "Settings", "normalise_database_url"]

#: Every variable hookline reads, with its default and meaning (the README's table comes from here).
SETTINGS_HELP: dict[str, tuple[str, str]] = {
    "HOOKLINE_DATA_DIR": ("./var", "where the database, migrations and runtime files live"),
    "HOOKLINE_DATABASE_URL": (
        "sqlite in the data dir",
        "postgres://user:password@host:5432/name for PostgreSQL",
    ),
    "HOOKLINE_HOST": ("127.0.0.1", "address `hookline serve` listens on"),
    "HOOKLINE_PORT": ("8000", "port `hookline serve` listens on"),
    "HOOKLINE_WEB_WORKERS": ("1", "web server processes"),
    "HOOKLINE_WEB_THREADS": ("8", "request threads per web process"),
    "HOOKLINE_MAX_BODY_BYTES": ("1048576", "largest request body accepted (413 above it)"),
    "HOOKLINE_SQLITE_SYNCHRONOUS": ("FULL", "SQLite `synchronous` pragma: FULL or NORMAL"),
    "HOOKLINE_SQLITE_BUSY_TIMEOUT_MS": ("10000", "how long a SQLite writer waits for the lock"),
    "HOOKLINE_DB_POOL_SIZE": ("10", "PostgreSQL connections kept per process"),
}

_SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit():
        raise ConfigError(f"{name} must be a whole number, got {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def normalise_database_url(url: str) -> str:
    """The pydal URI for ``url``: ``postgresql://`` becomes pydal's ``postgres://``."""
    url = url.strip()
    for prefix in ("postgresql+psycopg2://", "postgresql://", "postgres+psycopg2://"):
        if url.startswith(prefix):
            return "postgres://" + url[len(prefix) :]
    if url.startswith(("postgres://", "postgres:psycopg2://", "sqlite://")):
        return url
    raise ConfigError(
        "HOOKLINE_DATABASE_URL must start with postgres://, postgresql:// or sqlite://"
    )


@dataclass(frozen=True)
class Settings:
    """Resolved settings; build with ``Settings.from_env()``."""

    data_dir: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    web_workers: int = 1
    web_threads: int = 8
    max_body_bytes: int = 1024 * 1024
    sqlite_synchronous: str = "FULL"
    sqlite_busy_timeout_ms: int = 10_000
    db_pool_size: int = 10

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite:")

    @property
    def migrations_dir(self) -> Path:
        """pydal's working folder (its migration metadata itself is kept in the database)."""
        return self.data_dir / "databases"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or ``None`` on PostgreSQL."""
        return Path(self.database_url.removeprefix("sqlite://")) if self.is_sqlite else None

    @property
    def service_dir(self) -> Path:
        """Where py4web keeps its service files (session secret, error log)."""
        return self.data_dir / "py4web"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every ``HOOKLINE_*`` variable, apply defaults, validate; raise ``ConfigError``."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("HOOKLINE_DATA_DIR", "").strip() or "var").expanduser().resolve()
        raw_url = env.get("HOOKLINE_DATABASE_URL", "").strip()
        database_url = normalise_database_url(raw_url) if raw_url else "sqlite://hookline.sqlite"
        if database_url.startswith("sqlite://"):
            # Absolute, so every process (and pydal's per-URI caches) name the same file.
            path = Path(database_url.removeprefix("sqlite://"))
            database_url = "sqlite://" + str(path if path.is_absolute() else data_dir / path)
        synchronous = env.get("HOOKLINE_SQLITE_SYNCHRONOUS", "FULL").strip().upper() or "FULL"
        if synchronous not in _SYNCHRONOUS:
            raise ConfigError(
                f"HOOKLINE_SQLITE_SYNCHRONOUS must be one of {', '.join(_SYNCHRONOUS)}"
            )
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            host=env.get("HOOKLINE_HOST", "").strip() or "127.0.0.1",
            port=_int(env, "HOOKLINE_PORT", 8000, 1, 65535),
            web_workers=_int(env, "HOOKLINE_WEB_WORKERS", 1, 1, 64),
            web_threads=_int(env, "HOOKLINE_WEB_THREADS", 8, 1, 256),
            max_body_bytes=_int(env, "HOOKLINE_MAX_BODY_BYTES", 1024 * 1024, 1, 1 << 30),
            sqlite_synchronous=synchronous,
            sqlite_busy_timeout_ms=_int(env, "HOOKLINE_SQLITE_BUSY_TIMEOUT_MS", 10_000, 0, 600_000),
            db_pool_size=_int(env, "HOOKLINE_DB_POOL_SIZE", 10, 0, 1000),
        )
