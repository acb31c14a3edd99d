"""The ingest writer's wire: how a web process and the writer frame requests and answers.

A private, trusted-peer protocol on a Unix socket in a directory only this user can enter.
Each frame is ``!III`` (request id, meta length, body length), then JSON meta, then the raw
body: requests carry ``[method, path, headers, query]``, answers ``[status, headers]``, or
``[0, {}]`` for "the orders source verifies signatures, answer on the verifying path". An
answer repeats its request's id, so one connection carries many requests in flight.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from hookline.errors import ServiceUnavailable
from hookline.webio import Request, Response, error_response

__all__ = [
    "HEAD",
    "MAX_BODY_BYTES",
    "MAX_META_BYTES",
    "SOCKET_ENV",
    "UNAVAILABLE",
    "FrameReader",
    "decode_answer",
    "decode_request",
    "encode_answer",
    "encode_request",
]

SOCKET_ENV = "HOOKLINE_WRITER_SOCKET"
HEAD = struct.Struct("!III")
#: Meta is a method, a path and headers: far below this. A body is bounded by the web layer.
MAX_META_BYTES = 1 << 20
MAX_BODY_BYTES = 1 << 30
_VERIFY = 0  # the answer "status" meaning: verify on the web process's own path
#: What a request the writer could not store is answered.
UNAVAILABLE = error_response(ServiceUnavailable("the request could not be stored; retry"))


def _frame(request_id: int, meta: Any, body: bytes) -> bytes:
    return _pack(request_id, json.dumps(meta, separators=(",", ":")).encode("utf-8"), body)


def _pack(request_id: int, meta: bytes, body: bytes) -> bytes:
    return HEAD.pack(request_id, len(meta), len(body)) + meta + body


def encode_request(request_id: int, request: Request) -> bytes:
    """One request frame."""
    meta = [request.method, request.path, dict(request.headers), dict(request.query)]
    return _frame(request_id, meta, request.body)


def decode_request(meta: bytes, body: bytes) -> Request:
    """The ``Request`` of a request frame's meta and body; ``ValueError`` if malformed."""
    method, path, headers, query = json.loads(meta)
    if not (isinstance(method, str) and isinstance(path, str)):
        raise ValueError("method and path must be strings")
    if not isinstance(headers, dict) or not isinstance(query, dict):
        raise ValueError("headers and query must be objects")
    return Request(method=method, path=path, headers=headers, body=body, query=query)


_answer_metas: dict[tuple[int, tuple[tuple[str, str], ...]], bytes] = {}


def encode_answer(request_id: int, response: Response | None) -> bytes:
    """One answer frame: the response, or ``None`` (verify on the web process's path)."""
    if response is None:
        return _frame(request_id, [_VERIFY, {}], b"")
    # Answers come in few shapes (the seed's success above all): their meta is encoded once.
    key = (response.status, tuple(response.headers.items()))
    meta = _answer_metas.get(key)
    if meta is None:
        meta = json.dumps([response.status, dict(response.headers)]).encode("utf-8")
        if len(_answer_metas) < 1024:
            _answer_metas[key] = meta
    return _pack(request_id, meta, response.body)


def decode_answer(meta: bytes, body: bytes) -> Response | None:
    """The inverse of ``encode_answer``."""
    status, headers = json.loads(meta)
    return None if status == _VERIFY else Response(status, body, headers)


class FrameReader:
    """Splits a byte stream into ``(request id, meta, body)`` frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes, bytes]]:
        """Add ``data``; return the frames it completed. ``ValueError`` for an oversized one."""
        self._buffer += data
        frames = []
        start = 0
        buffer = self._buffer
        while len(buffer) - start >= HEAD.size:
            request_id, meta_len, body_len = HEAD.unpack_from(buffer, start)
            if meta_len > MAX_META_BYTES or body_len > MAX_BODY_BYTES:
                raise ValueError(f"frame of {meta_len} + {body_len} bytes is over the limit")
            end = start + HEAD.size + meta_len + body_len
            if len(buffer) < end:
                break
            meta_at = start + HEAD.size
            body_at = meta_at + meta_len
            frames.append((request_id, bytes(buffer[meta_at:body_at]), bytes(buffer[body_at:end])))
            start = end
        if start:
            del buffer[:start]
        return frames
