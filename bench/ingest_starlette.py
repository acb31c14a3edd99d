"""The Starlette receiver for bench/ingest.py: one SQLite commit per request, on uvicorn.

    INGEST_STARLETTE_DB=/tmp/x/orders.db python -m uvicorn ingest_starlette:app --port P \\
        --workers N --loop uvloop --http httptools --no-access-log

``POST /myapp/webhook`` (the seed's path, so the same wrk script serves every target): parse the
JSON body, insert order_id / product_name / quantity into ``orders``, commit, answer the seed's
JSON (the same bytes as hookline). SQLite in WAL mode with ``synchronous=FULL``, so a 2xx is on
disk. ``bench/ingest.py`` creates the database and its table before the server starts.

Why this shape: the insert and the commit run right in the async route, on the event loop, on
one connection per process. That blocks the loop for the commit's fsync, and it is still the
fastest way to commit per request found here. A request handed to Starlette's threadpool
(``run_in_threadpool``, a connection per pool thread, insert + commit under a lock so the
threads do not meet in SQLite's sleeping busy handler) did half as many requests a second:
on 2026-11-30, with 64 wrk connections on the 2-core machine, 700 / 718 req/s against
1,393-1,489 for this route with one or two processes. The ceiling for a commit per request
is the disk's sync: ~1,700 commits a second in a plain ``sqlite3`` loop on the same machine.
``timeout=10`` (busy_timeout) covers the other uvicorn process holding the write lock.
"""

from __future__ import annotations

import json
import os
import sqlite3

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

_DB_PATH = os.environ["INGEST_STARLETTE_DB"]
# json.dumps' default separators give the same bytes as hookline's json_response.
_SUCCESS = json.dumps({"status": "success", "message": "Webhook processed"}).encode()
_INSERT = "INSERT INTO orders (order_id, product_name, quantity) VALUES (?, ?, ?)"
_connection: sqlite3.Connection | None = None


def _insert(order_id: str, product_name: str, quantity: int) -> None:
    global _connection
    if _connection is None:  # opened in the worker process, not in uvicorn's parent
        _connection = sqlite3.connect(_DB_PATH, timeout=10.0)
        _connection.execute("PRAGMA journal_mode=WAL")
        _connection.execute("PRAGMA synchronous=FULL")
    try:
        _connection.execute(_INSERT, (order_id, product_name, quantity))
        _connection.commit()  # returns once the WAL is fsynced (synchronous=FULL)
    except BaseException:
        _connection.rollback()
        raise


async def webhook(request: Request) -> Response:
    """Insert the posted order and commit before answering; GET gets the seed's 400."""
    if request.method != "POST":
        return PlainTextResponse("Invalid request", status_code=400)
    data = await request.json()
    _insert(data["order_id"], data["product_name"], int(data.get("quantity", 1)))
    return Response(_SUCCESS, media_type="application/json")


app = Starlette(routes=[Route("/myapp/webhook", webhook, methods=["GET", "POST"])])
