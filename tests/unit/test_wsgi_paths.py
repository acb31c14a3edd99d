"""The WSGI app `hookline serve` runs answers a path with a control character with a JSON 400
before py4web routes it (``hookline.web.server.refuse_control_characters``): a segment that is
just ``%0D`` matched a route without its argument and a NUL reached a query, both 500s."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hookline.web.server import refuse_control_characters


def _call(path: str) -> tuple[list[dict[str, Any]], str, dict[str, str], bytes]:
    """Run a request for ``path`` through the check: (environs the app got, status, headers,
    body)."""
    reached: list[dict[str, Any]] = []

    def app(environ, start_response):
        reached.append(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"routed"]

    started: list[tuple[str, dict[str, str]]] = []
    body = b"".join(
        refuse_control_characters(app)(
            {"PATH_INFO": path}, lambda status, headers: started.append((status, dict(headers)))
        )
    )
    return reached, started[0][0], started[0][1], body


@pytest.mark.parametrize(
    "path",
    [
        "/myapp/api/orders/\r",
        "/myapp/api/endpoints/\x00",
        "/myapp/api/orders/\n/x",
        "/myapp/webhook/a\tb",
        "/myapp/api/sources/\x7f",
    ],
)
def test_a_path_with_a_control_character_is_a_json_400(path: str) -> None:
    reached, status, headers, body = _call(path)
    assert reached == []
    assert status == "400 Bad Request"
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    assert json.loads(body) == {
        "status": "error",
        "message": "the path contains a control character",
    }


@pytest.mark.parametrize(
    "path",
    ["/myapp/api/orders/ord_1", "/myapp/api/orders/caf\xc3\xa9", "/myapp/api/orders/a b", "/"],
)
def test_other_paths_reach_the_app(path: str) -> None:
    reached, status, _, body = _call(path)
    assert [environ["PATH_INFO"] for environ in reached] == [path]
    assert (status, body) == ("200 OK", b"routed")
