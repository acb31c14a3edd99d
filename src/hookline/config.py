"""Settings, read once from ``HOOKLINE_*`` environment variables.

Every setting has a default that runs on a fresh machine: an embedded SQLite database under the
data directory ``./var``. ``HOOKLINE_DATABASE_URL`` switches to PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hookline.digits import read_digits
from hookline.errors import ConfigError

__all__ = ["SETTINGS_HELP", "Settings", "default_web_workers", "normalise_database_url"]

#: Every variable hookline reads, with its default and meaning (the README's table comes from here).
SETTINGS_HELP: dict[str, tuple[str, str]] = {
    "HOOKLINE_DATA_DIR": ("./var", "where the database, migrations and runtime files live"),
    "HOOKLINE_DATABASE_URL": (
        "sqlite in the data dir",
        "postgres://user:password@host:5432/name for PostgreSQL",
    ),
    "HOOKLINE_HOST": ("127.0.0.1", "address `hookline serve` listens on"),
    "HOOKLINE_PORT": ("8000", "port `hookline serve` listens on"),
    "HOOKLINE_WEB_WORKERS": (
        "the number of CPUs less one for the ingest writer (at least 1), at most 8",
        "web server processes",
    ),
    "HOOKLINE_WEB_THREADS": (
        "64",
        "threads per web process running the py4web app (without the ingest writer, many let"
        " the seed webhook's commits batch up)",
    ),
    "HOOKLINE_MAX_BODY_BYTES": ("1048576", "largest request body accepted (413 above it)"),
    "HOOKLINE_MAX_PAYLOAD_BYTES": (
        "262144",
        "largest event body published, 1024 to 16777216 (the change that would publish a larger"
        " one is refused with 422 and writes nothing)",
    ),
    "HOOKLINE_SQLITE_SYNCHRONOUS": ("FULL", "SQLite `synchronous` pragma: FULL or NORMAL"),
    "HOOKLINE_SQLITE_BUSY_TIMEOUT_MS": ("10000", "how long a SQLite writer waits for the lock"),
    "HOOKLINE_DB_POOL_SIZE": ("10", "PostgreSQL connections kept per process"),
    "HOOKLINE_GROUP_COMMIT": (
        "true",
        "commit the seed webhook's writes in shared batches (one commit per batch)",
    ),
    "HOOKLINE_INGEST_WRITER": (
        "true",
        "`hookline serve`: batch the seed webhook's writes in one writer process for all web"
        " processes (with group commit on)",
    ),
    "HOOKLINE_SECRET_KEY": (
        "generated into <data dir>/secret.key",
        "Fernet key(s), comma-separated, that encrypt endpoint secrets at rest (first encrypts)",
    ),
    "HOOKLINE_ALLOW_NETWORKS": (
        "(none)",
        "CIDR list outbound deliveries may reach although private/loopback, e.g. 127.0.0.0/8",
    ),
    "HOOKLINE_HTTPS_ONLY": ("false", "refuse endpoint URLs that are not https://"),
    "HOOKLINE_WORKER": ("true", "whether `hookline serve` also runs the delivery worker"),
    "HOOKLINE_WORKER_CONCURRENCY": ("256", "deliveries one worker sends at once"),
    "HOOKLINE_LEASE_SECONDS": ("60", "how long a claimed delivery stays with its worker"),
    "HOOKLINE_DISABLE_AFTER_DAYS": ("5", "disable an endpoint failing continuously this long"),
    "HOOKLINE_RETENTION_DAYS": ("30", "what the worker's daily purge keeps"),
}

_SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")
# HOOKLINE_MAX_PAYLOAD_BYTES. At 1 KiB a ping (~0.15 KiB) and an order with ordinary fields
# (~0.4 KiB) still fit; the largest order events (~1.7 KiB, 200 four-byte characters of product
# name) do not, which is the operator's call. Above 16 MiB an event is a file transfer, and a
# worker holds the body of every delivery in flight (256 by default: 4 GiB at 16 MiB).
_PAYLOAD_BYTES = (1024, 16 * 1024 * 1024)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit():
        raise ConfigError(f"{name} must be a whole number, got {raw!r}")
    value = read_digits(raw, high)
    if value is None or not low <= value <= high:
        shown = value if value is not None else f"a number of {len(raw)} digits"
        raise ConfigError(f"{name} must be between {low} and {high}, got {shown}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def default_web_workers(*, with_writer: bool = True) -> int:
    """One web process per CPU (at most 8), less one CPU for the ingest writer when it runs.

    Each web process has its own interpreter lock. The writer is one process that every seed
    webhook waits on, so it gets a core of its own: on two cores, one web process and the
    writer took 3,078 / 3,176 req/s of the ingest bench (p99 37 ms) where two web processes
    took 2,710 / 2,794 (p99 38 ms), the writer being pre-empted by them.
    """
    cpus = os.cpu_count() or 1
    return max(1, min(cpus - 1 if with_writer else cpus, 8))


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
    web_threads: int = 64
    max_body_bytes: int = 1024 * 1024
    max_payload_bytes: int = 256 * 1024  # outbox.MAX_PAYLOAD_BYTES
    sqlite_synchronous: str = "FULL"
    sqlite_busy_timeout_ms: int = 10_000
    db_pool_size: int = 10
    group_commit: bool = True
    ingest_writer: bool = True
    secret_key: str = field(default="", repr=False)
    allow_networks: str = ""
    https_only: bool = False
    run_worker: bool = True
    worker_concurrency: int = 256
    lease_seconds: int = 60
    disable_after_days: int = 5
    retention_days: int = 30

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
        group_commit = _bool(env, "HOOKLINE_GROUP_COMMIT", True)
        ingest_writer = _bool(env, "HOOKLINE_INGEST_WRITER", True)
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            host=env.get("HOOKLINE_HOST", "").strip() or "127.0.0.1",
            port=_int(env, "HOOKLINE_PORT", 8000, 1, 65535),
            web_workers=_int(
                env,
                "HOOKLINE_WEB_WORKERS",
                default_web_workers(with_writer=group_commit and ingest_writer),
                1,
                64,
            ),
            web_threads=_int(env, "HOOKLINE_WEB_THREADS", 64, 1, 256),
            max_body_bytes=_int(env, "HOOKLINE_MAX_BODY_BYTES", 1024 * 1024, 1, 1 << 30),
            max_payload_bytes=_int(env, "HOOKLINE_MAX_PAYLOAD_BYTES", 256 * 1024, *_PAYLOAD_BYTES),
            sqlite_synchronous=synchronous,
            sqlite_busy_timeout_ms=_int(env, "HOOKLINE_SQLITE_BUSY_TIMEOUT_MS", 10_000, 0, 600_000),
            db_pool_size=_int(env, "HOOKLINE_DB_POOL_SIZE", 10, 0, 1000),
            group_commit=group_commit,
            ingest_writer=ingest_writer,
            secret_key=env.get("HOOKLINE_SECRET_KEY", "").strip(),
            allow_networks=env.get("HOOKLINE_ALLOW_NETWORKS", "").strip(),
            https_only=_bool(env, "HOOKLINE_HTTPS_ONLY", False),
            run_worker=_bool(env, "HOOKLINE_WORKER", True),
            worker_concurrency=_int(env, "HOOKLINE_WORKER_CONCURRENCY", 256, 1, 10_000),
            lease_seconds=_int(env, "HOOKLINE_LEASE_SECONDS", 60, 5, 86_400),
            disable_after_days=_int(env, "HOOKLINE_DISABLE_AFTER_DAYS", 5, 1, 3650),
            retention_days=_int(env, "HOOKLINE_RETENTION_DAYS", 30, 1, 36_500),
        )
