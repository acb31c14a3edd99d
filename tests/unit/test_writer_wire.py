"""The ingest writer's wire: frames survive any split of the byte stream, oversized or
malformed frames are refused, and requests and answers come back as they went."""

from __future__ import annotations

import pytest

from hookline.webio import Request, Response
from hookline.writer_wire import (
    MAX_META_BYTES,
    FrameReader,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
)

REQUESTS = [
    Request(method="POST", path="/myapp/webhook", headers={}, body=b""),
    Request(
        method="POST",
        path="/myapp/webhook",
        headers={"content-type": "application/json", "webhook-id": "msg_1"},
        body=b'{"order_id": "1", "product_name": "kettle"}',
    ),
    # Header values are latin-1 strings in WSGI: any code point below 256 must come back as is.
    Request(method="PUT", path="/p", headers={"x-odd": "caf\xe9\xff"}, body=bytes(range(256))),
    Request(method="POST", path="/q", headers={}, body=b"\x00" * 70_000, query={"a": ["1", "2"]}),
]


@pytest.mark.parametrize("request_", REQUESTS)
def test_a_request_comes_back_as_it_was_sent(request_):
    [(request_id, meta, body)] = FrameReader().feed(encode_request(7, request_))

    assert request_id == 7
    assert decode_request(meta, body) == request_


ANSWERS = [
    Response(200, b'{"status": "success"}', {"Content-Type": "application/json"}),
    Response(400, b"Invalid request", {"Content-Type": "text/plain; charset=utf-8"}),
    Response(503, b"{}", {"Content-Type": "application/json", "Retry-After": "1"}),
    Response(204, b"", {}),
    None,  # the orders source verifies signatures: answer on the web process's own path
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_an_answer_comes_back_as_it_was_sent(answer):
    [(request_id, meta, body)] = FrameReader().feed(encode_answer(2**32 - 1, answer))

    assert request_id == 2**32 - 1
    assert decode_answer(meta, body) == answer


def test_frames_are_found_whatever_the_stream_is_cut_into():
    stream = b"".join(encode_request(n, request) for n, request in enumerate(REQUESTS))
    for size in (1, 2, 7, 12, 13, 1000, len(stream)):
        reader = FrameReader()
        frames = []
        for start in range(0, len(stream), size):
            frames += reader.feed(stream[start : start + size])
        assert [n for n, _, _ in frames] == list(range(len(REQUESTS)))
        assert [decode_request(meta, body) for _, meta, body in frames] == REQUESTS


def test_an_oversized_frame_is_refused_before_it_is_buffered():
    head = (1).to_bytes(4, "big") + (MAX_META_BYTES + 1).to_bytes(4, "big") + bytes(4)

    with pytest.raises(ValueError, match="over the limit"):
        FrameReader().feed(head)


@pytest.mark.parametrize(
    "meta",
    [
        b"not json",
        b"[]",
        b'["POST", "/p", {}]',  # no query
        b'[1, "/p", {}, {}]',
        b'["POST", "/p", [], {}]',
        b'["POST", "/p", {}, "q"]',
    ],
)
def test_a_malformed_request_frame_is_a_value_error(meta):
    with pytest.raises((ValueError, TypeError)):
        decode_request(meta, b"")
