"""Stand-ins for granian's RSGI request objects (scope and protocol), with their interface, for
the unit tests of the front and of the RSGI-to-ASGI bridge."""

from __future__ import annotations


class FakeHeaders:
    """granian's ``RSGIHeaders``: the request's header pairs, repeated names kept."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def items(self) -> list[tuple[str, str]]:
        return list(self.pairs)


class FakeScope:
    def __init__(self, method: str, path: str, headers: list[tuple[str, str]]) -> None:
        self.proto = "http"
        self.http_version = "1.1"
        self.method = method
        self.scheme = "http"
        self.path = path
        self.query_string = "a=1"
        self.headers = FakeHeaders(headers)
        self.client = "127.0.0.1:5000"
        self.server = "127.0.0.1:8000"


class FakeStream:
    def __init__(self, proto: FakeProto) -> None:
        self.proto = proto

    async def send_bytes(self, data: bytes) -> None:
        self.proto.streamed.append(data)


class FakeProto:
    """granian's ``RSGIHTTPProtocol`` for one request: the body in ``chunks``, the answer kept."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.reads = 0
        self.answer: tuple[int, list[tuple[str, str]], bytes] | None = None
        self.streamed: list[bytes] = []

    async def __call__(self) -> bytes:
        self.reads += 1
        return b"".join(self.chunks)

    async def __aiter__(self):
        self.reads += 1
        for chunk in self.chunks:
            yield chunk

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        assert self.answer is None, "answered twice"
        self.answer = (status, headers, body)

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> FakeStream:
        assert self.answer is None, "answered twice"
        self.answer = (status, headers, b"")
        return FakeStream(self)
