"""Build the WSGI app from the packaged py4web apps folder, and serve it with granian."""

from __future__ import annotations

from pathlib import Path

from hookline.config import Settings

__all__ = ["APPS_FOLDER", "create_wsgi_app", "serve"]

APPS_FOLDER = Path(__file__).resolve().parent / "apps"


def create_wsgi_app(settings: Settings):
    """py4web's WSGI app for ``myapp``, with py4web's service files under the data directory."""
    import py4web.core

    settings.service_dir.mkdir(parents=True, exist_ok=True)
    # py4web puts its service folder (session secret, error tickets) inside the apps folder, which
    # here is the installed package; an absolute path in its defaults moves it to the data dir.
    py4web.core.DEFAULTS["PY4WEB_SERVICE_FOLDER"] = str(settings.service_dir)
    return py4web.core.wsgi(apps_folder=str(APPS_FOLDER), yes=True, logging_level=30)


def serve(settings: Settings) -> None:
    """Serve the app on ``settings.host:port`` with granian until interrupted."""
    from granian import Granian
    from granian.constants import Interfaces

    Granian(
        "hookline.web.wsgi:app",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.WSGI,
        workers=settings.web_workers,
        blocking_threads=settings.web_threads,
        log_access=False,
    ).serve()
