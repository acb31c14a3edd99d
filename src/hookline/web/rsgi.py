"""The RSGI entry point (``hookline.web.rsgi:app``) that ``hookline serve`` gives granian when the
ingest writer runs: ``HOOKLINE_WRITER_SOCKET`` says where it listens."""

from __future__ import annotations

import os

from hookline.config import Settings
from hookline.web.front import Front
from hookline.web.server import create_wsgi_app
from hookline.writer_link import WriterLink
from hookline.writer_wire import SOCKET_ENV

_settings = Settings.from_env()
app = Front(
    create_wsgi_app(_settings),
    WriterLink(os.environ[SOCKET_ENV]),
    max_body_bytes=_settings.max_body_bytes,
    threads=_settings.web_threads,
)
