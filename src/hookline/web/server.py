"""Build the WSGI app from the packaged py4web apps folder, and serve it with granian."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hookline.config import Settings
from hookline.errors import BadRequest
from hookline.webio import error_response

__all__ = ["APPS_FOLDER", "create_wsgi_app", "refuse_control_characters", "serve", "serve_wsgi"]

APPS_FOLDER = Path(__file__).resolve().parent / "apps"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def create_wsgi_app(settings: Settings):
    """py4web's WSGI app for ``myapp``, with py4web's service files under the data directory."""
    import py4web.core

    settings.service_dir.mkdir(parents=True, exist_ok=True)
    # py4web puts its service folder (session secret, error tickets) inside the apps folder, which
    # here is the installed package; an absolute path in its defaults moves it to the data dir.
    py4web.core.DEFAULTS["PY4WEB_SERVICE_FOLDER"] = str(settings.service_dir)
    return refuse_control_characters(
        py4web.core.wsgi(apps_folder=str(APPS_FOLDER), yes=True, logging_level=30)
    )


def refuse_control_characters(app: Callable[..., Iterable[bytes]]) -> Callable[..., Any]:
    """``app`` behind a check of the decoded path: one with a control character (``%00``,
    ``%0D``, ``%0A`` ...) is answered a JSON 400 before py4web routes it.

    No id or name has one, and neither py4web's router nor the database drivers take them: a
    segment that is just ``%0D`` (the router's own mark of a parameter) matched a route without
    its argument, and a NUL reached a query; both were 500s.
    """
    refused = error_response(BadRequest("the path contains a control character"))
    headers = [*refused.headers.items(), ("Content-Length", str(len(refused.body)))]

    def checked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _CONTROL.search(environ.get("PATH_INFO", "")):
            start_response("400 Bad Request", headers)
            return [refused.body]
        return app(environ, start_response)

    return checked


def serve(settings: Settings, *, with_writer: bool = False) -> None:
    """Serve the app on ``settings.host:port`` with granian until interrupted: through the RSGI
    front when the ingest writer runs (``with_writer``), else py4web's WSGI app directly."""
    if with_writer:
        target = "hookline.web.rsgi:app"
        # No route of the app speaks websocket; granian refuses the upgrade itself.
        _granian(
            target, "rsgi", settings.host, settings.port, settings.web_workers, websockets=False
        )
        return
    serve_wsgi(
        "hookline.web.wsgi:app",
        host=settings.host,
        port=settings.port,
        workers=settings.web_workers,
        threads=settings.web_threads,
    )


def serve_wsgi(target: str, *, host: str, port: int, workers: int, threads: int) -> None:
    """Serve the WSGI app ``module:attr`` as hookline does (granian, no access log); the
    benchmarks serve their reference apps through here too, so both run the same server."""
    _granian(target, "wsgi", host, port, workers, blocking_threads=threads)


def _granian(target: str, interface: str, host: str, port: int, workers: int, **extra) -> None:
    from granian import Granian
    from granian.constants import Interfaces

    Granian(
        target,
        address=host,
        port=port,
        interface=Interfaces(interface),
        workers=workers,
        log_access=False,
        **extra,
    ).serve()
