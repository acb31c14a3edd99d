"""The ``hookline`` command: serve the app, migrate the database, manage API keys."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from hookline import __version__, apikeys
from hookline.config import Settings, default_web_workers
from hookline.database import connect, migrate
from hookline.errors import ConfigError, HooklineError

if TYPE_CHECKING:
    from hookline.writer_process import WriterProcess

__all__ = ["main"]

console = Console(highlight=False)
PR_SET_PDEATHSIG = 1  # prctl(2)
_MAX_AGE_DAYS = 36_500  # a purge age beyond a century is a typo (and beyond year 1 an error)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def describe_database(settings: Settings) -> str:
    """Where the data lives, with any password hidden."""
    if settings.is_sqlite:
        return f"SQLite {settings.sqlite_path}"
    return "PostgreSQL " + re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", settings.database_url)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hookline")
@click.option(
    "--data-dir", envvar="HOOKLINE_DATA_DIR", help="Data directory [HOOKLINE_DATA_DIR, ./var]."
)
@click.option(
    "--database-url", envvar="HOOKLINE_DATABASE_URL", help="Database URL [HOOKLINE_DATABASE_URL]."
)
def cli(data_dir: str | None, database_url: str | None) -> None:
    """hookline: webhooks done right for the web2py family."""
    # Exported so that the server's worker processes see the same choice.
    if data_dir:
        os.environ["HOOKLINE_DATA_DIR"] = data_dir
    if database_url:
        os.environ["HOOKLINE_DATABASE_URL"] = database_url


@cli.command()
@click.option("--host", envvar="HOOKLINE_HOST", default="127.0.0.1", show_default=True)
@click.option(
    "--port", envvar="HOOKLINE_PORT", default=8000, type=click.IntRange(1, 65535), show_default=True
)
@click.option(
    "--workers",
    envvar="HOOKLINE_WEB_WORKERS",
    default=None,
    type=click.IntRange(1, 64),
    show_default="the number of CPUs less one for the ingest writer (at least 1), at most 8",
)
@click.option(
    "--worker/--no-worker",
    "with_worker",
    default=None,
    help="Also run the delivery worker [HOOKLINE_WORKER, on].",
)
def serve(host: str, port: int, workers: int | None, with_worker: bool | None) -> None:
    """Migrate the database, then serve the py4web app with granian (and the worker)."""
    os.environ.update(HOOKLINE_HOST=host, HOOKLINE_PORT=str(port))
    if workers is not None:
        os.environ["HOOKLINE_WEB_WORKERS"] = str(workers)
    settings = _settings()
    migrate(settings)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}"
    # Plain echo, not rich: the banner must not wrap in a log file or a narrow pipe.
    click.echo(f"hookline {__version__} listening on {url}/myapp/")
    click.echo(f"  database: {describe_database(settings)}")
    click.echo(
        f'  seed webhook: curl -X POST -d "order_id=1234&product_name=example" {url}/myapp/webhook'
    )
    click.echo(
        "  API key: `hookline keys create NAME` (same HOOKLINE_DATA_DIR / HOOKLINE_DATABASE_URL)"
    )
    run_worker = settings.run_worker if with_worker is None else with_worker
    click.echo(f"  delivery worker: {'running' if run_worker else 'off (run `hookline worker`)'}")
    sys.stdout.flush()
    from hookline.web.server import serve as serve_app

    worker = (
        subprocess.Popen(
            [sys.executable, "-m", "hookline", "worker"], preexec_fn=_die_with_parent()
        )
        if run_worker
        else None
    )
    writer = _start_ingest_writer(settings)
    if writer is None and workers is None:
        # No writer after all: its core goes to the web processes, which commit themselves.
        settings = dataclasses.replace(settings, web_workers=default_web_workers(with_writer=False))
    try:
        serve_app(settings, with_writer=writer is not None)
    finally:
        if writer is not None:
            writer.stop()  # after the web processes: nothing forwarded goes unanswered
        if worker is not None:
            from hookline.writer_process import stop_process

            stop_process(worker, timeout=30)  # it finishes its in-flight attempts, then exits


def _start_ingest_writer(settings: Settings) -> WriterProcess | None:
    """Start the seed webhook's writer process and point the web processes at it; None when
    it is off or does not come up (the web processes then commit in groups themselves)."""
    if not (settings.group_commit and settings.ingest_writer):
        return None
    from hookline.writer_process import WriterProcess
    from hookline.writer_wire import SOCKET_ENV

    writer = WriterProcess([sys.executable, "-m", "hookline.writer"], preexec_fn=_die_with_parent())
    if not writer.start():
        click.echo("  ingest writer: did not start; each web process commits its own", err=True)
        return None
    os.environ[SOCKET_ENV] = str(writer.path)
    return writer


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` that makes the child get SIGTERM (and finish its in-flight
    attempts) when `hookline serve` dies without stopping it, e.g. on SIGKILL."""
    try:
        # Looked up before the fork: find_library may run other programs.
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the finally in `serve` still stops it
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@cli.command("worker")
@click.option("--burst", is_flag=True, help="Exit when no delivery is due.")
@click.option("--max-deliveries", type=click.IntRange(1), help="Exit after this many.")
@click.option("--concurrency", type=click.IntRange(1, 10_000), help="Deliveries sent at once.")
def worker_command(burst: bool, max_deliveries: int | None, concurrency: int | None) -> None:
    """Deliver events to endpoints: claim, sign, send, record, retry."""
    from hookline.worker import run_worker

    settings = _settings()
    migrate(settings)
    stats = run_worker(
        settings, burst=burst, max_deliveries=max_deliveries, concurrency=concurrency
    )
    click.echo(
        f"worker done: {stats.claimed} claimed, {stats.succeeded} succeeded,"
        f" {stats.recorded} recorded, {stats.recovered} recovered from expired leases"
    )


@cli.command("purge")
@click.option("--older-than", default="30d", show_default=True, help="Age such as 30d, 12h.")
def purge_command(older_than: str) -> None:
    """Delete old attempts, finished deliveries, events and inbox rows, in batches."""
    from hookline.operations import purge

    match = re.fullmatch(r"\s*(\d{1,6})\s*([smhd])\s*", older_than)
    if match is None:
        raise click.BadParameter("an age such as 30d, 12h or 90m", param_hint="--older-than")
    seconds = int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    if seconds > _MAX_AGE_DAYS * 86400:
        raise click.BadParameter(f"at most {_MAX_AGE_DAYS}d", param_hint="--older-than")
    db = _db()
    try:
        counts = purge(db, dt.timedelta(seconds=seconds))
    finally:
        db.close()
    click.echo("purged " + ", ".join(f"{n} {what}" for what, n in counts.items()))


@cli.command("migrate")
def migrate_command() -> None:
    """Create or upgrade hookline's tables."""
    settings = _settings()
    migrate(settings)
    console.print(f"migrated {describe_database(settings)}")


@cli.group()
def keys() -> None:
    """Manage API keys for the management API."""


def _db():
    settings = _settings()
    migrate(settings)
    return connect(settings)


@keys.command("create")
@click.argument("name")
def keys_create(name: str) -> None:
    """Create a key named NAME and print it (shown only this once)."""
    db = _db()
    try:
        record, key = apikeys.create_key(db, name)
    except HooklineError as error:
        raise click.ClickException(str(getattr(error, "errors", None) or error)) from None
    finally:
        db.close()
    console.print(f"created API key {record['key_id']} ({record['name']})", style="bold")
    console.print("store it now; it is not shown again:", style="dim")
    click.echo(key)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def keys_list(as_json: bool) -> None:
    """List keys (never their secrets)."""
    db = _db()
    try:
        rows = apikeys.list_keys(db)
    finally:
        db.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("key id", "name", "prefix", "created", "last used", "status")
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        status = "active" if row["active"] else f"revoked {row['revoked_at']}"
        table.add_row(
            row["key_id"],
            row["name"],
            row["prefix"] + "…",
            row["created_at"],
            row["last_used_at"] or "never",
            status,
        )
    console.print(table)


@keys.command("revoke")
@click.argument("key_id_or_name")
def keys_revoke(key_id_or_name: str) -> None:
    """Revoke the key with this id, or every active key with this name."""
    db = _db()
    try:
        revoked = apikeys.revoke_key(db, key_id_or_name)
    except HooklineError as error:
        raise click.ClickException(str(error)) from None
    finally:
        db.close()
    for row in revoked:
        console.print(f"revoked {row['key_id']} ({row['name']})")


def main() -> None:
    """Entry point of the ``hookline`` console script."""
    from hookline.cli_delivery import register, register_inbox, register_sources

    register(cli)
    register_sources(cli)
    register_inbox(cli)
    cli(prog_name="hookline")
