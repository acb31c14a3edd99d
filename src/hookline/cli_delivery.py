"""CLI commands for delivery: ``hookline endpoints ...``, ``deliveries ...``, ``attempts list``,
``events replay``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from hookline import discard, endpoints, operations
from hookline.config import Settings
from hookline.database import connect, migrate
from hookline.endpoint_rules import parse_endpoint
from hookline.errors import ConfigError, HooklineError, RequestRefused
from hookline.netguard import NetworkPolicy
from hookline.schema import ATTEMPT_OUTCOMES, DELIVERY_STATUSES
from hookline.secretbox import SecretBox, load_secret_box
from hookline.timeutil import parse_time
from hookline.verifiers import SOURCE_KINDS

__all__ = ["register", "register_inbox", "register_sources"]

console = Console(highlight=False)


@contextmanager
def _session() -> Iterator[tuple[Any, SecretBox, NetworkPolicy]]:
    """A migrated database, the secret box and the network policy; commits on success."""
    try:
        settings = Settings.from_env()
        box = load_secret_box(settings.secret_key or None, settings.data_dir)
        network = NetworkPolicy.from_settings(settings.allow_networks, settings.https_only)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    migrate(settings)
    db = connect(settings)
    try:
        yield db, box, network
        db.commit()
    except RequestRefused as error:
        db.rollback()
        details = "; ".join(f"{k}: {v}" for k, v in error.errors.items())
        raise click.ClickException(
            f"{error.message}{' (' + details + ')' if details else ''}"
        ) from None
    except HooklineError as error:
        db.rollback()
        raise click.ClickException(str(error)) from None
    finally:
        db.close()


def _time_option(text: str, name: str) -> dt.datetime:
    """An ISO-8601 option value as naive UTC; a usage error otherwise."""
    try:
        return parse_time(text)
    except ValueError:
        raise click.BadParameter("an ISO-8601 time", param_hint=name) from None


def _discard_left_behind(db: Any, endpoint_row: int) -> None:
    """Commit, then discard what disabling or deleting the endpoint left behind, a batch per
    transaction, with a progress bar."""
    db.commit()
    total = discard.left_behind_count(db, endpoint_row)
    if total == 0:
        return
    with Progress(console=console) as progress:
        task = progress.add_task("discarding deliveries", total=total)
        discard.discard_left_behind(
            db, endpoint_row=endpoint_row, progress=lambda n: progress.advance(task, n)
        )


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _endpoint_fields(**options: Any) -> dict[str, Any]:
    fields = {k: v for k, v in options.items() if v is not None}
    if "header" in fields:
        pairs = fields.pop("header")
        if pairs:
            headers: dict[str, str] = {}
            for pair in pairs:
                name, sep, value = pair.partition(":")
                if not sep:
                    raise click.BadParameter("use NAME:VALUE", param_hint="--header")
                headers[name.strip()] = value.strip()
            fields["headers"] = headers
    if "events" in fields:
        fields["event_types"] = fields.pop("events")
    return fields


_POLICY_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("--events", help="Comma-separated event types (default: all)."),
    click.option("--description"),
    click.option("--header", multiple=True, help="Custom header NAME:VALUE (repeatable)."),
    click.option("--retry-schedule", help="Delays such as 0,5s,5m,30m,2h."),
    click.option("--timeout-s", type=float, help="Total timeout per attempt (seconds)."),
    click.option("--connect-timeout-s", type=float, help="Connect timeout (seconds)."),
    click.option("--max-in-flight", type=int, help="Concurrent deliveries to this endpoint."),
    click.option("--rate-limit", type=float, help="Deliveries per second at most."),
    click.option("--fifo/--no-fifo", default=None, help="Deliver strictly in order."),
    click.option("--ed25519/--no-ed25519", default=None, help="Also sign with ed25519 (v1a)."),
]


def _with_policy_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_POLICY_OPTIONS):
        command = option(command)
    return command


def _endpoint_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("endpoint id", "url", "events", "enabled", "failing since")
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        table.add_row(
            row["endpoint_id"],
            row["url"],
            ",".join(row["event_types"]) or "all",
            "yes" if row["enabled"] else f"no: {row['disabled_reason']}",
            row["failing_since"] or "",
        )
    return table


def register(cli: click.Group) -> None:
    """Add the delivery command groups to the ``hookline`` CLI."""

    @cli.group("endpoints")
    def endpoints_group() -> None:
        """Manage the endpoints events are delivered to."""

    @endpoints_group.command("add")
    @click.argument("url")
    @_with_policy_options
    def add(url: str, **options: Any) -> None:
        """Add an endpoint; prints its id and signing secret (shown only now)."""
        with _session() as (db, box, network):
            changes = parse_endpoint(
                {"url": url, **_endpoint_fields(**options)}, network, creating=True
            )
            endpoint, credentials = endpoints.create_endpoint(db, box, changes)
        click.echo(f"endpoint {endpoint['endpoint_id']} -> {endpoint['url']}")
        click.echo(f"secret {credentials['secret']}")
        if "public_key" in credentials:
            click.echo(f"public key {credentials['public_key']}")

    @endpoints_group.command("list")
    @click.option("--json", "as_json", is_flag=True)
    def list_(as_json: bool) -> None:
        """List endpoints."""
        with _session() as (db, _box, _network):
            rows = endpoints.list_endpoints(db)
        if as_json:
            _print_json(rows)
        else:
            console.print(_endpoint_table(rows))

    @endpoints_group.command("show")
    @click.argument("endpoint_id")
    def show(endpoint_id: str) -> None:
        """Show one endpoint as JSON."""
        with _session() as (db, _box, _network):
            _print_json(endpoints.get_endpoint(db, endpoint_id))

    @endpoints_group.command("update")
    @click.argument("endpoint_id")
    @click.option("--url")
    @_with_policy_options
    @click.option("--no-rate-limit", is_flag=True, help="Remove the rate limit.")
    def update(endpoint_id: str, no_rate_limit: bool, **options: Any) -> None:
        """Change an endpoint's settings."""
        fields = _endpoint_fields(**options)
        if no_rate_limit:
            if "rate_limit" in fields:
                raise click.UsageError("--rate-limit and --no-rate-limit contradict each other")
            fields["rate_limit"] = None
        with _session() as (db, box, network):
            changes = parse_endpoint(fields, network, creating=False)
            endpoint, credentials = endpoints.update_endpoint(db, box, endpoint_id, changes)
        _print_json({**endpoint, **credentials})

    @endpoints_group.command("enable")
    @click.argument("endpoint_id")
    def enable(endpoint_id: str) -> None:
        """Enable an endpoint (clears its failure clock). What its disabling left to discard is
        discarded first."""
        with _session() as (db, _box, _network):
            _discard_left_behind(db, endpoints.find_endpoint(db, endpoint_id).id)
            endpoints.set_enabled(db, endpoint_id, True, reason="enabled from the CLI")
        click.echo(f"enabled {endpoint_id}")

    @endpoints_group.command("disable")
    @click.argument("endpoint_id")
    @click.option("--reason", default="disabled from the CLI", show_default=True)
    def disable(endpoint_id: str, reason: str) -> None:
        """Disable an endpoint; its unfinished deliveries are discarded (the command waits)."""
        with _session() as (db, _box, _network):
            endpoints.set_enabled(db, endpoint_id, False, reason=reason)
            _discard_left_behind(db, endpoints.find_endpoint(db, endpoint_id).id)
        click.echo(f"disabled {endpoint_id}")

    @endpoints_group.command("delete")
    @click.argument("endpoint_id")
    def delete(endpoint_id: str) -> None:
        """Delete an endpoint; its unfinished deliveries are discarded (the command waits)."""
        with _session() as (db, _box, _network):
            row_id = endpoints.find_endpoint(db, endpoint_id).id
            endpoints.delete_endpoint(db, endpoint_id)
            _discard_left_behind(db, row_id)
        click.echo(f"deleted {endpoint_id}")

    @endpoints_group.command("rotate")
    @click.argument("endpoint_id")
    @click.option("--grace-hours", type=click.FloatRange(0, 720), default=24.0, show_default=True)
    def rotate(endpoint_id: str, grace_hours: float) -> None:
        """Rotate the signing secret; the old one keeps signing for the grace period."""
        with _session() as (db, box, _network):
            secret = endpoints.rotate_secret(
                db, box, endpoint_id, grace=dt.timedelta(hours=grace_hours)
            )
        click.echo(f"secret {secret}")

    @endpoints_group.command("ping")
    @click.argument("endpoint_id")
    def ping(endpoint_id: str) -> None:
        """Send a ping test event to one endpoint."""
        with _session() as (db, _box, _network):
            event_id = operations.send_ping(db, endpoint_id)
        click.echo(f"ping {event_id} queued for {endpoint_id}")

    @endpoints_group.command("recover")
    @click.argument("endpoint_id")
    @click.option("--since", required=True, help="ISO-8601 time, e.g. 2026-11-01T00:00:00")
    def recover(endpoint_id: str, since: str) -> None:
        """Retry every failed delivery of an endpoint since a time."""
        start = _time_option(since, "--since")
        with _session() as (db, _box, _network), Progress(console=console) as progress:
            task = progress.add_task("recovering", total=None)
            count = operations.recover_endpoint(
                db,
                endpoint_id,
                start,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        click.echo(f"recovered {count} deliveries of {endpoint_id}")

    @cli.group("deliveries")
    def deliveries_group() -> None:
        """Inspect and retry deliveries."""

    @deliveries_group.command("list")
    @click.option("--endpoint", "endpoint_id")
    @click.option("--event", "event_id")
    @click.option("--status", type=click.Choice(list(DELIVERY_STATUSES)))
    @click.option("--limit", type=click.IntRange(1, operations.MAX_PAGE), default=50)
    @click.option("--json", "as_json", is_flag=True)
    def list_deliveries(
        endpoint_id: str | None, event_id: str | None, status: str | None, limit: int, as_json: bool
    ) -> None:
        """List deliveries, newest first."""
        with _session() as (db, _box, _network):
            page = operations.list_deliveries(
                db, endpoint_id=endpoint_id, event_id=event_id, status=status, limit=limit
            )
        if as_json:
            _print_json(page["data"])
            return
        table = Table("delivery id", "event", "endpoint", "status", "attempts", "last")
        for column in table.columns:
            column.overflow = "fold"
        for row in page["data"]:
            last = str(row["last_status_code"] or row["last_error"] or "")
            table.add_row(
                row["delivery_id"],
                f"{row['event_type']} {row['event_id']}",
                row["endpoint_id"],
                row["status"],
                str(row["attempts"]),
                last[:60],
            )
        console.print(table)

    @deliveries_group.command("show")
    @click.argument("delivery_id")
    def show_delivery(delivery_id: str) -> None:
        """Show a delivery with every attempt, as JSON."""
        with _session() as (db, _box, _network):
            _print_json(operations.get_delivery(db, delivery_id))

    @deliveries_group.command("retry")
    @click.argument("delivery_id")
    def retry(delivery_id: str) -> None:
        """Send a delivery again now."""
        with _session() as (db, _box, _network):
            view = operations.retry_delivery(db, delivery_id)
        click.echo(f"{view['delivery_id']} is pending again")

    @cli.group("attempts")
    def attempts_group() -> None:
        """Inspect delivery attempts."""

    @attempts_group.command("list")
    @click.option("--endpoint", "endpoint_id")
    @click.option("--delivery", "delivery_id")
    @click.option("--event", "event_id")
    @click.option("--outcome", type=click.Choice(list(ATTEMPT_OUTCOMES)))
    @click.option("--since", help="Attempts started at or after this ISO-8601 time.")
    @click.option("--until", help="Attempts started before this ISO-8601 time.")
    @click.option("--limit", type=click.IntRange(1, operations.MAX_PAGE), default=50)
    @click.option("--json", "as_json", is_flag=True)
    def list_attempts(
        endpoint_id: str | None,
        delivery_id: str | None,
        event_id: str | None,
        outcome: str | None,
        since: str | None,
        until: str | None,
        limit: int,
        as_json: bool,
    ) -> None:
        """List delivery attempts, newest first."""
        start = _time_option(since, "--since") if since is not None else None
        end = _time_option(until, "--until") if until is not None else None
        with _session() as (db, _box, _network):
            page = operations.list_attempts(
                db,
                endpoint_id=endpoint_id,
                delivery_id=delivery_id,
                event_id=event_id,
                outcome=outcome,
                since=start,
                until=end,
                limit=limit,
            )
        if as_json:
            _print_json(page["data"])
            return
        table = Table("started", "delivery id", "endpoint", "#", "outcome", "status", "ms", "error")
        for column in table.columns:
            column.overflow = "fold"
        for row in page["data"]:
            table.add_row(
                row["started_at"],
                row["delivery_id"],
                row["endpoint_id"],
                str(row["number"]),
                row["outcome"],
                str(row["status_code"] or ""),
                f"{row['duration_ms']:.0f}" if row["duration_ms"] is not None else "",
                (row["error"] or "")[:60],
            )
        console.print(table)

    @cli.group("events")
    def events_group() -> None:
        """Replay events."""

    @events_group.command("replay")
    @click.argument("event_id")
    @click.option("--endpoint", "endpoint_id", help="Only to this endpoint (default: all).")
    def replay(event_id: str, endpoint_id: str | None) -> None:
        """Deliver an event again."""
        with _session() as (db, _box, _network):
            created = operations.replay_event(db, event_id, endpoint_id=endpoint_id)
        click.echo(f"replaying {event_id}: {len(created)} new deliveries")
        for delivery_id in created:
            click.echo(f"  {delivery_id}")


_SOURCE_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("--tolerance-s", type=int, help="Timestamp tolerance in seconds (default 300)."),
    click.option("--max-body-bytes", type=int),
    click.option(
        "--public-key",
        "public_keys",
        multiple=True,
        help="standard: a whpk_ ed25519 key that verifies v1a signatures (repeatable; replaces"
        " the source's keys).",
    ),
    click.option("--hmac-header"),
    click.option("--hmac-algorithm", type=click.Choice(["sha256", "sha512"])),
    click.option("--hmac-encoding", type=click.Choice(["hex", "base64"])),
    click.option("--hmac-prefix"),
    click.option("--hmac-id-header"),
]


def _with_source_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_SOURCE_OPTIONS):
        command = option(command)
    return command


def _source_fields(**options: Any) -> dict[str, Any]:
    fields = {k: v for k, v in options.items() if v is not None}
    if fields.get("public_keys") == ():  # the option not given
        del fields["public_keys"]
    elif "public_keys" in fields:
        fields["public_keys"] = list(fields["public_keys"])
    return fields


def register_sources(cli: click.Group) -> None:
    """Add ``hookline sources ...`` to the CLI."""
    from hookline import sources

    @cli.group("sources")
    def sources_group() -> None:
        """Manage the sources webhooks are received from (/myapp/webhook/<name>)."""

    @sources_group.command("add")
    @click.argument("name")
    @click.option("--kind", required=True, type=click.Choice(list(SOURCE_KINDS)))
    @click.option("--secret", help="The provider's signing secret (standard: generated if none).")
    @_with_source_options
    def add(name: str, **options: Any) -> None:
        """Add a source; its URL is /myapp/webhook/NAME."""
        fields = _source_fields(**options)
        with _session() as (db, box, _network):
            view, generated = sources.create_source(
                db, box, sources.parse_source({"name": name, **fields}, creating=True)
            )
        click.echo(f"source {view['name']} ({view['kind']}) at {view['url_path']}")
        if generated:
            click.echo(f"secret {generated}")

    @sources_group.command("list")
    @click.option("--json", "as_json", is_flag=True)
    def list_(as_json: bool) -> None:
        """List sources."""
        with _session() as (db, box, _network):
            rows = sources.list_sources(db, box)
        if as_json:
            _print_json(rows)
            return
        table = Table("name", "kind", "path", "secrets", "enabled", "refused")
        for row in rows:
            table.add_row(
                row["name"],
                row["kind"],
                row["url_path"],
                str(row["active_secrets"]),
                "yes" if row["enabled"] else "no",
                str(row["verify_failures"]),
            )
        console.print(table)

    @sources_group.command("show")
    @click.argument("name")
    def show(name: str) -> None:
        """Show a source as JSON (never its secrets)."""
        with _session() as (db, box, _network):
            _print_json(sources.get_source(db, box, name))

    @sources_group.command("update")
    @click.argument("name")
    @click.option("--kind", type=click.Choice(list(SOURCE_KINDS)))
    @click.option("--enable/--disable", "enabled", default=None)
    @_with_source_options
    def update(name: str, **options: Any) -> None:
        """Change a source's kind, limits, public keys, HMAC scheme or enabled flag."""
        fields = _source_fields(**options)
        with _session() as (db, box, _network):
            _print_json(
                sources.update_source(db, box, name, sources.parse_source(fields, creating=False))
            )

    @sources_group.command("rotate")
    @click.argument("name")
    @click.option("--secret", help="The new secret (generated if omitted).")
    @click.option("--grace-hours", type=click.FloatRange(0, 720), default=24.0, show_default=True)
    def rotate(name: str, secret: str | None, grace_hours: float) -> None:
        """Add a secret; the current ones keep verifying for the grace period."""
        with _session() as (db, box, _network):
            new = sources.rotate_secret(
                db, box, name, secret=secret, grace=dt.timedelta(hours=grace_hours)
            )
        click.echo(f"rotated {name}" + ("" if secret else f": secret {new}"))

    @sources_group.command("delete")
    @click.argument("name")
    def delete(name: str) -> None:
        """Delete a source."""
        with _session() as (db, _box, _network):
            sources.delete_source(db, name)
        click.echo(f"deleted {name}")


def register_inbox(cli: click.Group) -> None:
    """Add ``hookline inbox ...`` to the CLI."""
    from hookline import handlers, inbox

    @cli.group("inbox")
    def inbox_group() -> None:
        """Inspect and replay received webhooks."""

    @inbox_group.command("list")
    @click.option("--source")
    @click.option("--status", type=click.Choice(list(inbox.INBOX_STATUSES)))
    @click.option("--type", "event_type")
    @click.option("--limit", type=click.IntRange(1, inbox.MAX_PAGE), default=50)
    @click.option("--json", "as_json", is_flag=True)
    def list_(
        source: str | None, status: str | None, event_type: str | None, limit: int, as_json: bool
    ) -> None:
        """List received webhooks, newest first."""
        with _session() as (db, _box, _network):
            rows = inbox.list_items(
                db, source=source, status=status, event_type=event_type, limit=limit
            )["data"]
        if as_json:
            _print_json(rows)
            return
        table_view = Table("inbox id", "source", "type", "status", "attempts", "last error")
        for column in table_view.columns:
            column.overflow = "fold"
        for row in rows:
            table_view.add_row(
                row["inbox_id"],
                row["source"],
                row["event_type"] or "",
                row["status"],
                str(row["attempts"]),
                (row["last_error"] or "")[:60],
            )
        console.print(table_view)

    @inbox_group.command("replay")
    @click.argument("inbox_id")
    def replay(inbox_id: str) -> None:
        """Run a received webhook's handler again."""
        with _session() as (db, _box, _network):
            handlers.replay_message(db, inbox_id)
        click.echo(f"{inbox_id} is received again; the worker will handle it")
