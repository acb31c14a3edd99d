"""The RSGI front: the seed webhook is read with the same limits as the WSGI path and handed to
the writer; everything else, and a webhook the writer sends back for verification (with its
body), reaches the WSGI app through the RSGI-to-ASGI bridge. The writer here is a recording
stand-in and granian's request a fake with its interface: the real writer is tested in
tests/integration/test_writer.py, and the whole front under granian through `hookline serve`
in tests/e2e."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hookline.web.front import Front
from hookline.webio import Request, Response, json_response
from rsgi_fakes import FakeProto, FakeScope

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

    def close(self) -> None:
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
    headers: list[tuple[str, str]] | None = None,
    chunks: list[bytes] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP exchange through the front: status, headers, body."""
    proto = FakeProto([b""] if chunks is None else chunks)
    asyncio.run(front.__rsgi__(FakeScope(method, path, headers or []), proto))
    assert proto.answer is not None, "not answered"
    status, answer_headers, body = proto.answer
    return status, dict(answer_headers), body + b"".join(proto.streamed)


OK = json_response(200, {"ok": True})


def make_front(answer: Response | None = OK):
    link = RecordingLink(answer)
    return Front(wsgi_echo, link, max_body_bytes=LIMIT, threads=2), link


def test_the_webhook_goes_to_the_writer_and_its_answer_comes_back():
    front, link = make_front(Response(201, b"stored", {"Content-Type": "text/plain", "X-A": "b"}))

    status, headers, body = call(
        front,
        headers=[("content-type", "application/json"), ("Webhook-Id", "msg_1")],
        chunks=[b'{"order_id": ', b'"1"}'],
    )

    assert (status, body) == (201, b"stored")
    assert headers == {"Content-Type": "text/plain", "X-A": "b"}
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

    call(front, headers=[("x-tag", "a"), ("X-Tag", "b")])

    assert link.requests[0].headers == {"x-tag": "a,b"}


@pytest.mark.parametrize(
    ("headers", "chunks", "status", "needle"),
    [
        ([("content-length", "101")], [b""], 413, "101 bytes; the limit is 100"),
        ([], [b"x" * 60, b"x" * 41], 413, "over the limit of 100 bytes"),
        ([("content-length", "ten")], [b""], 400, "Content-Length is not a number"),
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

    status, _, body = call(front, headers=[("content-length", "5")], chunks=[b"hello"])

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


def test_a_declared_body_is_read_in_one_call_and_a_chunked_one_piece_by_piece():
    front, link = make_front()

    call(front, headers=[("content-length", "6")], chunks=[b"abc", b"def"])
    call(front, chunks=[b"ab", b"cd"])

    assert [r.body for r in link.requests] == [b"abcdef", b"abcd"]


def test_a_worker_that_stops_closes_the_link():
    front, link = make_front()

    front.__rsgi_del__(None)

    assert link.closed
