"""myapp's fixtures: the database, the API-key guard, and what the delivery API needs."""

from __future__ import annotations

import json

from py4web import DAL, HTTP, request
from py4web.core import Fixture

from hookline import apikeys, database, groupcommit
from hookline.delivery_api import ApiContext
from hookline.errors import Unauthorized
from hookline.netguard import NetworkPolicy
from hookline.secretbox import load_secret_box

from .settings import SETTINGS

db = database.connect(SETTINGS, dal_class=DAL)
api_context = ApiContext(
    box=load_secret_box(SETTINGS.secret_key or None, SETTINGS.data_dir),
    network=NetworkPolicy.from_settings(SETTINGS.allow_networks, SETTINGS.https_only),
    max_body_bytes=SETTINGS.max_body_bytes,
)

#: The seed webhook's group committer (None when HOOKLINE_GROUP_COMMIT is off).
committer = groupcommit.committer_for(SETTINGS) if SETTINGS.group_commit else None


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
