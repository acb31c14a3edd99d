"""Header limits on the seed's ``POST /myapp/webhook`` of a real `hookline serve` (the ASGI front
and the ingest writer), on SQLite and PostgreSQL: 100 headers and 16 KiB of them (names and
values) are accepted, one more header or byte is a 431 that writes nothing.

The header count and bytes are those the server receives: the request line's ``Host`` and the
``Content-Length`` that ``http.client`` adds are counted too.
"""

from __future__ import annotations

import http.client
import itertools
from collections.abc import Iterator

import pytest

from hookline.config import Settings
from hookline.database import connect
from hookline.inbound import MAX_HEADER_BYTES, MAX_HEADERS

pytestmark = pytest.mark.e2e

FORM = "application/x-www-form-urlencoded"
_ORDER_IDS = itertools.count(1)


@pytest.fixture(scope="module")
def db(server) -> Iterator[object]:
    connection = connect(Settings.from_env(server.env))
    yield connection
    connection.close()


def written(db) -> tuple[int, int, int]:
    db.commit()  # a fresh snapshot
    return tuple(
        int(db.executesql(f"SELECT COUNT(*) FROM {table}")[0][0])
        for table in ("hookline_order", "hookline_event", "hookline_inbox")
    )


def request_lines(server, extra: list[tuple[str, str]]) -> tuple[bytes, list[tuple[str, str]]]:
    """A new order's body and every header line it is sent with (lower-case names), ``Host``
    and ``Content-Length`` included."""
    body = f"order_id=hl-{next(_ORDER_IDS):06d}&product_name=kettle".encode()
    lines = [
        ("host", f"127.0.0.1:{server.port}"),
        ("content-type", FORM),
        ("content-length", str(len(body))),
        *((name.lower(), value) for name, value in extra),
    ]
    return body, lines


def post(server, extra: list[tuple[str, str]]) -> tuple[int, bytes, list[tuple[str, str]]]:
    """POST a new order with ``extra`` headers; the status, the answer's body, the lines sent."""
    body, lines = request_lines(server, extra)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("POST", "/myapp/webhook", skip_host=True, skip_accept_encoding=True)
        for name, value in lines:
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read(), lines
    finally:
        conn.close()


def header_bytes(lines: list[tuple[str, str]]) -> int:
    return sum(len(name) + len(value) for name, value in lines)


def test_100_headers_are_accepted(server, db):
    before = written(db)
    status, body, lines = post(server, [(f"X-Extra-{i}", "v") for i in range(MAX_HEADERS - 3)])

    assert len(lines) == MAX_HEADERS
    assert status == 200, body
    assert written(db) == tuple(n + 1 for n in before)


def test_101_headers_are_refused_with_431_and_nothing_is_written(server, db):
    before = written(db)
    status, body, lines = post(server, [(f"X-Extra-{i}", "v") for i in range(MAX_HEADERS - 2)])

    assert len(lines) == MAX_HEADERS + 1
    assert status == 431, body
    assert written(db) == before


def test_101_lines_of_one_repeated_header_are_refused_with_431(server, db):
    before = written(db)
    status, body, lines = post(server, [("X-Repeated", str(i)) for i in range(MAX_HEADERS - 2)])

    assert len(lines) == MAX_HEADERS + 1
    assert status == 431, body
    assert written(db) == before


def _padding_for(server, total: int) -> list[tuple[str, str]]:
    """One ``X-Big`` header that makes the request's header bytes exactly ``total``."""
    _body, base = request_lines(server, [("X-Big", "")])
    return [("X-Big", "z" * (total - header_bytes(base)))]


def test_16_kib_of_header_bytes_are_accepted(server, db):
    padding = _padding_for(server, MAX_HEADER_BYTES)
    before = written(db)

    status, body, lines = post(server, padding)

    assert header_bytes(lines) == MAX_HEADER_BYTES
    assert status == 200, body
    assert written(db) == tuple(n + 1 for n in before)


def test_one_byte_over_16_kib_of_headers_is_refused_with_431_and_a_reason(server, db):
    padding = _padding_for(server, MAX_HEADER_BYTES + 1)
    before = written(db)

    status, body, lines = post(server, padding)

    assert header_bytes(lines) == MAX_HEADER_BYTES + 1
    assert status == 431, body
    assert f"the limit is {MAX_HEADER_BYTES}" in body.decode()
    assert written(db) == before
