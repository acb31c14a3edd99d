"""The ASGI front: the seed webhook is read with the same limits as the WSGI path and handed to
the writer; everything else, and a webhook the writer sends back for verification (with its
body), reaches the WSGI app. The writer here is a recording stand-in: the real one is tested in
tests/integration/test_writer.py, and the whole front through `hookline serve` in tests/e2e."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hookline.web.front import Front
from hookline.webio import Request, Response, json_response

LIMIT = 100


class RecordingLink:
    """Answers every request with ``answer`` and keeps what it was given."""

    def __init__(self, answer: Response | None) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self.closed = False

    async def receive(self, request: Request) -> Response | None:
        self.requests.append(request)
        return self.answer

    async def close(self) -> None:
        self.closed = True


def wsgi_echo(environ: dict[str, Any], start_response) -> list[bytes]:
    """A WSGI app that answers with what it was asked."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read()
    seen = {
        "path": environ["PATH_INFO"],
        "method": environ["REQUEST_METHOD"],
        "body": body.decode(),
    }
    start_response("299 Echo", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def call(
    front: Front,
    *,
    path: str = "/myapp/webhook",
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: list[bytes] | None = None,
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One HTTP exchange through the front: status, headers, body."""
    chunks = [b""] if chunks is None else chunks
    messages = [
        {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
        for n, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"a=1",
        "root_path": "",
        "headers": headers or [],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(front(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


OK = json_response(200, {"ok": True})


def make_front(answer: Response | None = OK):
    link = RecordingLink(answer)
    return Front(wsgi_echo, link, max_body_bytes=LIMIT, threads=2), link


def test_the_webhook_goes_to_the_writer_and_its_answer_comes_back():
    front, link = make_front(Response(201, b"stored", {"Content-Type": "text/plain", "X-A": "b"}))

    status, headers, body = call(
        front,
        headers=[(b"content-type", b"application/json"), (b"Webhook-Id", b"msg_1")],
        chunks=[b'{"order_id": ', b'"1"}'],
    )

    assert (status, body) == (201, b"stored")
    assert headers == {b"content-type": b"text/plain", b"x-a": b"b"}
    [request] = link.requests
    assert request == Request(
        method="POST",
        path="/myapp/webhook",
        headers={"content-type": "application/json", "webhook-id": "msg_1"},
        body=b'{"order_id": "1"}',
        query={"a": ["1"]},
    )


def test_repeated_headers_reach_the_writer_joined():
    front, link = make_front()

    call(front, headers=[(b"x-tag", b"a"), (b"X-Tag", b"b")])

    assert link.requests[0].headers == {"x-tag": "a,b"}


@pytest.mark.parametrize(
    ("headers", "chunks", "status", "needle"),
    [
        ([(b"content-length", b"101")], [b""], 413, "101 bytes; the limit is 100"),
        ([], [b"x" * 60, b"x" * 41], 413, "over the limit of 100 bytes"),
        ([(b"content-length", b"ten")], [b""], 400, "Content-Length is not a number"),
    ],
)
def test_a_body_over_the_limit_or_a_bad_length_is_refused_before_the_writer(
    headers, chunks, status, needle
):
    front, link = make_front()

    got, _, body = call(front, headers=headers, chunks=chunks)

    assert got == status
    assert needle in json.loads(body)["message"]
    assert link.requests == []


def test_a_body_at_the_limit_is_taken():
    front, link = make_front()

    status, _, _ = call(front, chunks=[b"x" * 50, b"x" * 50])

    assert status == 200
    assert link.requests[0].body == b"x" * 100


def test_a_webhook_the_writer_sends_back_is_answered_by_the_wsgi_app_with_its_body():
    front, link = make_front(answer=None)  # the orders source verifies signatures

    status, _, body = call(front, headers=[(b"content-length", b"5")], chunks=[b"hello"])

    assert status == 299
    assert json.loads(body) == {"path": "/myapp/webhook", "method": "POST", "body": "hello"}
    assert len(link.requests) == 1


@pytest.mark.parametrize("path", ["/myapp/api/orders", "/myapp/webhook/stripe", "/myapp/"])
def test_every_other_path_goes_to_the_wsgi_app(path):
    front, link = make_front()

    status, _, body = call(front, path=path, method="GET")

    assert status == 299
    assert json.loads(body)["path"] == path
    assert link.requests == []


def test_lifespan_starts_and_closes_the_link():
    front, link = make_front()
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(front({"type": "lifespan"}, receive, send))

    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert link.closed
