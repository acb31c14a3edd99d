"""Serve a py4web apps folder with granian exactly as ``hookline serve`` does (for bench/ingest.py).

    python bench/ingest_server.py --apps-folder DIR --port P [--workers N --threads N]
        [--service-folder DIR]

Same construction as ``hookline.web.server``: ``py4web.core.wsgi(apps_folder=..., yes=True,
logging_level=30)`` with py4web's service folder moved out of the apps folder, served by
``hookline.web.server.serve_wsgi`` (the function ``hookline serve`` uses). Workers and
threads default to hookline's own defaults (``hookline.config.Settings``), so the ceiling and
the naive receiver run on the server config hookline runs on.

Granian imports its target by name in each worker process, so the WSGI app is this module's
``app`` attribute, built on first access from the ``INGEST_APPS_FOLDER`` and
``INGEST_SERVICE_FOLDER`` environment variables that ``main`` exports (as
``hookline.web.wsgi:app`` is built from ``HOOKLINE_*`` variables).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
TARGET = "ingest_server:app"

_app: Any = None


def build_wsgi_app(apps_folder: str, service_folder: str) -> Any:
    """py4web's WSGI app for ``apps_folder``, with its service files in ``service_folder``."""
    import py4web.core

    Path(service_folder).mkdir(parents=True, exist_ok=True)
    # py4web would put its service folder (session secret, error tickets) inside the apps
    # folder; an absolute path in its defaults moves it, as hookline.web.server does.
    py4web.core.DEFAULTS["PY4WEB_SERVICE_FOLDER"] = service_folder
    return py4web.core.wsgi(apps_folder=apps_folder, yes=True, logging_level=30)


def __getattr__(name: str) -> Any:
    # PEP 562: granian's getattr(module, "app") builds the app in the worker process only; the
    # launcher process (which runs this file as __main__) never loads the apps.
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = build_wsgi_app(os.environ["INGEST_APPS_FOLDER"], os.environ["INGEST_SERVICE_FOLDER"])
    return _app


def hookline_web_defaults() -> tuple[int, int]:
    """(web workers, threads per worker) that ``hookline serve`` gives py4web's WSGI app with no
    HOOKLINE_* set (and so no ingest writer to leave a CPU for)."""
    from hookline.config import Settings

    settings = Settings.from_env({"HOOKLINE_INGEST_WRITER": "false"})
    return settings.web_workers, settings.web_threads


def main() -> int:
    """Parse the arguments, export them for the workers, serve until SIGINT/SIGTERM."""
    workers, threads = hookline_web_defaults()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--apps-folder", required=True, help="py4web apps folder to serve")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--workers", type=int, default=workers, help="default: hookline's")
    p.add_argument("--threads", type=int, default=threads, help="default: hookline's")
    p.add_argument(
        "--service-folder",
        help="py4web's service folder (default: a new temporary directory)",
    )
    args = p.parse_args()
    made = None if args.service_folder else tempfile.mkdtemp(prefix="hookline-bench-py4web-")
    service = args.service_folder or made
    os.environ["INGEST_APPS_FOLDER"] = str(Path(args.apps_folder).resolve())
    os.environ["INGEST_SERVICE_FOLDER"] = str(Path(service).resolve())
    # The workers import this module by name ("ingest_server"); make sure they can.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))

    from hookline.web.server import serve_wsgi

    try:
        serve_wsgi(
            TARGET, host=args.host, port=args.port, workers=args.workers, threads=args.threads
        )
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
