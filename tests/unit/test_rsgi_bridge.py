"""The RSGI-to-ASGI bridge the front serves py4web's routes through: scopes translated, request
bodies handed over piece by piece, answers sent in one piece or, when large, streamed. The ASGI
app is py4web's real adapter (``a2wsgi``) around small WSGI apps; granian's side is the fake of
tests/rsgi_fakes.py, and the real granian is exercised through `hookline serve` (tests/e2e)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from a2wsgi import WSGIMiddleware

from hookline.web.rsgi_bridge import STREAM_AFTER_BYTES, _address, asgi_scope, serve_asgi
from rsgi_fakes import FakeProto, FakeScope


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:5000", ("127.0.0.1", 5000)),
        ("[::1]:8000", ("::1", 8000)),
        ("unix-socket", ("unix-socket", 0)),
        ("", None),
        (None, None),
    ],
)
def test_an_rsgi_address_becomes_an_asgi_host_and_port(text, address):
    assert _address(text) == address


def test_the_asgi_scope_carries_the_request():
    scope = FakeScope("PUT", "/myapp/api/x y", [("X-Tag", "a"), ("x-tag", "b")])

    got = asgi_scope(scope)

    assert got["type"] == "http"
    assert (got["method"], got["path"], got["query_string"]) == ("PUT", "/myapp/api/x y", b"a=1")
    assert got["headers"] == [(b"x-tag", b"a"), (b"x-tag", b"b")]
    assert (got["client"], got["server"]) == (("127.0.0.1", 5000), ("127.0.0.1", 8000))


def run(wsgi_app: Any, chunks: list[bytes], body: bytes | None = None) -> FakeProto:
    proto = FakeProto(chunks)
    scope = FakeScope("POST", "/myapp/api/things", [("content-type", "text/plain")])
    asyncio.run(serve_asgi(WSGIMiddleware(wsgi_app, workers=1), scope, proto, body=body))
    return proto


def echo(environ: dict[str, Any], start_response) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("201 Created", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    return [b"got ", body]


def test_a_small_answer_leaves_in_one_piece_with_every_header():
    proto = run(echo, [b"one ", b"two"])

    assert proto.answer == (201, [("set-cookie", "a=1"), ("set-cookie", "b=2")], b"got one two")
    assert proto.streamed == []


def test_a_body_already_read_is_handed_over_without_reading_the_request_again():
    proto = run(echo, [b"not this"], body=b"this")

    assert proto.answer is not None and proto.answer[2] == b"got this"
    assert proto.reads == 0


def test_a_large_answer_streams_in_order():
    pieces = [bytes([65 + n]) * (STREAM_AFTER_BYTES // 2) for n in range(5)]

    def large(environ: dict[str, Any], start_response) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return pieces

    proto = run(large, [b""])

    assert proto.answer == (200, [("content-type", "application/octet-stream")], b"")
    assert b"".join(proto.streamed) == b"".join(pieces)


def test_an_app_that_fails_before_answering_leaves_the_answer_to_the_server():
    def broken(environ: dict[str, Any], start_response) -> list[bytes]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(broken, [b""])
