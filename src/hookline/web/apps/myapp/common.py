"""myapp's fixtures: the database and the API-key guard of the management API."""

from __future__ import annotations

import json

from py4web import DAL, HTTP, request
from py4web.core import Fixture

from hookline import apikeys, database
from hookline.errors import Unauthorized

from .settings import SETTINGS

db = database.connect(SETTINGS, dal_class=DAL)


class ApiKeyRequired(Fixture):
    """Refuses the request with a JSON 401 unless it carries a valid, active API key."""

    __prerequisites__ = (db,)

    def on_request(self, context: dict) -> None:
        """Check ``Authorization: Bearer <key>``."""
        try:
            apikeys.authenticate(db, request.headers.get("Authorization", ""))
        except Unauthorized as error:
            raise HTTP(
                401,
                json.dumps(error.as_dict()),
                {"Content-Type": "application/json", "WWW-Authenticate": 'Bearer realm="hookline"'},
            ) from None


api_key = ApiKeyRequired()
