"""The naive receiver: the blog post's web2py webhook, ported to py4web as a user would write it.

Parse the JSON body, ``db.orders.insert(...)`` one row, let the DAL fixture commit, answer the
seed's JSON. SQLite in WAL mode with ``synchronous=FULL`` (so a 2xx is on disk, as in hookline),
connections opened per request like hookline's (``pool_size=0``, pragmas on every connection).

``INGEST_NAIVE_DB`` names the SQLite file; ``bench/ingest.py`` creates it with the ``orders``
table before the server starts (so several granian workers never race on a migration), hence
``migrate=False`` here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from py4web import DAL, HTTP, Field, action, request, response

_SUCCESS = json.dumps({"status": "success", "message": "Webhook processed"})
_DB_PATH = Path(os.environ["INGEST_NAIVE_DB"]).resolve()


def _pragmas(adapter) -> None:
    # synchronous is per connection, and pool_size=0 opens one per request: set it every time.
    adapter.execute("PRAGMA journal_mode=WAL;")
    adapter.execute("PRAGMA synchronous=FULL;")
    adapter.execute("PRAGMA busy_timeout=10000;")


db = DAL(
    f"sqlite://{_DB_PATH}",
    folder=str(_DB_PATH.parent),
    pool_size=0,
    migrate=False,
    after_connection=_pragmas,
)
db.define_table(
    "orders",
    Field("order_id"),
    Field("product_name"),
    Field("quantity", "integer"),
    migrate=False,
)


@action("webhook", method=["GET", "POST"])
@action.uses(db)
def webhook() -> str:
    """Insert the posted order; the ``db`` fixture commits before the answer goes out."""
    if request.method != "POST":
        raise HTTP(400, "Invalid request")
    data = request.json
    db.orders.insert(
        order_id=data["order_id"],
        product_name=data["product_name"],
        quantity=data.get("quantity", 1),
    )
    response.headers["Content-Type"] = "application/json"
    return _SUCCESS
