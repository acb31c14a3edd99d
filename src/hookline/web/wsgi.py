"""The WSGI entry point (``hookline.web.wsgi:app``) for granian, gunicorn or any WSGI server."""

from __future__ import annotations

from hookline.config import Settings
from hookline.web.server import create_wsgi_app

app = create_wsgi_app(Settings.from_env())
