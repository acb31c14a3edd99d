"""``AiohttpTransport`` against real aiohttp servers on 127.0.0.1 (no other network is needed).

Each test runs its own event loop with ``asyncio.run`` and a hard deadline (``run``), so nothing
here can hang; the servers are started on port 0 and stopped by the test that started them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

import hookline
from hookline.netguard import NetworkPolicy
from hookline.transport import (
    MAX_RESPONSE_BODY,
    AiohttpTransport,
    OutboundRequest,
    Transport,
    TransportResult,
)

LOOPBACK = NetworkPolicy.from_settings("127.0.0.0/8", False)
DEADLINE_SECONDS = 20


def run(coro: Coroutine[Any, Any, Any], limit: float = DEADLINE_SECONDS) -> Any:
    """Run ``coro`` in a fresh loop, failing the test if it takes longer than ``limit``."""
    return asyncio.run(asyncio.wait_for(coro, limit))


class Sink:
    """A real aiohttp.web server with a few behaviours, recording what it received."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.hits: dict[str, int] = {}
        self.peers: set[tuple[str, int]] = set()
        self.release = asyncio.Event()
        self.port = 0
        app = web.Application()
        app.router.add_post("/ok", self.ok)
        app.router.add_post("/redirect", self.redirect)
        app.router.add_post("/target", self.target)
        app.router.add_get("/target", self.target)
        app.router.add_post("/slow", self.slow)
        app.router.add_post("/big", self.big)
        app.router.add_post("/endless", self.endless)
        app.router.add_post("/cookie", self.cookie)
        app.router.add_post("/error", self.error)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def _record(self, request: web.Request, body: bytes) -> None:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        self.peers.add(request.transport.get_extra_info("peername")[:2])
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})

    async def ok(self, request: web.Request) -> web.Response:
        self._record(request, await request.read())
        return web.Response(
            status=201, body=b'{"received": true}', headers={"X-Sink": "yes", "Retry-After": "7"}
        )

    async def redirect(self, request: web.Request) -> web.Response:
        self._record(request, await request.read())
        return web.Response(status=302, headers={"Location": self.url("/target")})

    async def target(self, request: web.Request) -> web.Response:
        self._record(request, await request.read())
        return web.Response(text="you followed a redirect")

    async def slow(self, request: web.Request) -> web.Response:
        self._record(request, await request.read())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), 10)
        return web.Response(text="late")

    async def big(self, request: web.Request) -> web.Response:
        self._record(request, await request.read())
        return web.Response(body=bytes(range(256)) * 400)  # 100 KiB

    async def endless(self, request: web.Request) -> web.StreamResponse:
        """A body that never ends: the client must stop reading by itself."""
        self._record(request, await request.read())
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * 65536
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while not self.release.is_set():
                await response.write(chunk)
        return response

    async def cookie(self, request: web.Request) -> web.Response:
        self._record(request, await request.read())
        response = web.Response(text="cookie")
        response.set_cookie("session", "secret")
        return response

    async def error(self, request: web.Request) -> web.Response:
        self._record(request, await request.read())
        return web.Response(status=503, text="try later")

    async def __aenter__(self) -> Sink:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release.set()
        await self.runner.cleanup()


@contextlib.asynccontextmanager
async def transport(**kwargs: Any) -> AsyncIterator[AiohttpTransport]:
    sender = AiohttpTransport(**kwargs)
    try:
        yield sender
    finally:
        await sender.close()


def post(url: str, body: bytes = b'{"type": "order.created"}', **kwargs: Any) -> OutboundRequest:
    headers = kwargs.pop("headers", {"Content-Type": "application/json"})
    return OutboundRequest(url=url, headers=headers, body=body, **kwargs)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeResolver(AbstractResolver):
    """An upstream resolver with a fixed table (and a record of the names it was asked)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        pass


def test_aiohttp_transport_satisfies_the_protocol():
    assert isinstance(AiohttpTransport(), Transport)


def test_2xx_answer_with_body_and_headers_captured():
    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK) as sender:
            request = post(
                sink.url("/ok"), headers={"Content-Type": "application/json", "webhook-id": "msg_1"}
            )
            return sink, await sender.send(request)

    sink, result = run(scenario())
    assert result.error is None
    assert result.status_code == 201
    assert result.body == b'{"received": true}'
    assert result.headers["x-sink"] == "yes"
    assert result.headers["retry-after"] == "7"
    assert all(name == name.lower() for name in result.headers)
    assert 0 < result.duration_ms < DEADLINE_SECONDS * 1000
    [received] = sink.requests
    assert received["body"] == b'{"type": "order.created"}'
    assert received["headers"]["webhook-id"] == "msg_1"
    assert received["headers"]["Content-Type"] == "application/json"
    assert received["headers"]["User-Agent"] == f"hookline/{hookline.__version__}"


def test_user_agent_is_configurable_and_a_request_header_wins():
    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK, user_agent="acme/2") as sender:
            await sender.send(post(sink.url("/ok")))
            await sender.send(post(sink.url("/ok"), headers={"user-agent": "custom/1"}))
            return sink

    sink = run(scenario())
    assert [r["headers"]["User-Agent"] for r in sink.requests] == ["acme/2", "custom/1"]


def test_non_2xx_answers_are_results_not_errors():
    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK) as sender:
            return await sender.send(post(sink.url("/error"))), await sender.send(
                post(sink.url("/missing"))
            )

    unavailable, missing = run(scenario())
    assert (unavailable.status_code, unavailable.error, unavailable.body) == (
        503,
        None,
        b"try later",
    )
    assert (missing.status_code, missing.error) == (404, None)


def test_redirect_is_returned_not_followed():
    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK) as sender:
            return sink, await sender.send(post(sink.url("/redirect")))

    sink, result = run(scenario())
    assert result.status_code == 302
    assert result.error is None
    assert result.headers["location"] == sink.url("/target")
    assert sink.hits == {"/redirect": 1}  # the target was never requested


def test_slow_endpoint_times_out_within_total_timeout():
    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK) as sender:
            started = time.monotonic()
            result = await sender.send(post(sink.url("/slow"), total_timeout=0.5))
            return sink, result, time.monotonic() - started

    sink, result, elapsed = run(scenario())
    assert result.status_code is None
    assert result.error == "timeout after 0.5s"
    assert sink.hits == {"/slow": 1}
    assert 0.4 <= elapsed < 2.0
    assert 400 <= result.duration_ms < 2000


@pytest.mark.skipif(
    sys.platform != "linux", reason="relies on Linux dropping SYNs to a full backlog"
)
def test_unanswered_connect_times_out_after_connect_timeout():
    """A listener with a full backlog drops further SYNs: the connect itself never completes."""

    async def scenario():
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            fillers = []
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
                fillers.append(filler)
            try:
                async with transport(policy=LOOPBACK) as sender:
                    request = post(f"http://127.0.0.1:{port}/", connect_timeout=0.3)
                    return await sender.send(request)
            finally:
                for filler in fillers:
                    filler.close()

    result = run(scenario())
    assert result.status_code is None
    assert result.error == "timeout after 0.3s (connecting)"
    assert 250 <= result.duration_ms < 3000


def test_connection_refused_is_an_error_not_an_exception():
    port = closed_port()

    async def scenario():
        async with transport(policy=LOOPBACK) as sender:
            return await sender.send(post(f"http://127.0.0.1:{port}/hook", total_timeout=5))

    result = run(scenario())
    assert result.status_code is None
    assert result.error == f"connection refused by 127.0.0.1:{port}"


def test_dns_failure_is_an_error_not_an_exception():
    upstream = FakeResolver({})

    async def scenario():
        async with transport(upstream_resolver=upstream) as sender:
            return await sender.send(post("http://no-such-host.test/hook", total_timeout=5))

    result = run(scenario())
    assert result.status_code is None
    assert result.error.startswith("DNS lookup failed for no-such-host.test")
    assert upstream.asked == ["no-such-host.test"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"", "server disconnected before answering"),
        (b"this is not HTTP\r\n\r\n", "invalid HTTP response"),
    ],
)
def test_broken_servers_give_errors_not_exceptions(reply, expected):
    async def scenario():
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with transport(policy=LOOPBACK) as sender:
                return await sender.send(post(f"http://127.0.0.1:{port}/", total_timeout=5))
        finally:
            server.close()
            await server.wait_closed()

    result = run(scenario())
    assert result.status_code is None
    assert result.error.startswith(expected)


def test_large_body_is_truncated_to_the_limit():
    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK) as sender:
            return await sender.send(post(sink.url("/big")))

    result = run(scenario())
    assert result.status_code == 200
    assert result.error is None
    assert len(result.body) == MAX_RESPONSE_BODY == 20 * 1024
    assert result.body == (bytes(range(256)) * 400)[:MAX_RESPONSE_BODY]


def test_endless_body_is_not_read_to_the_end():
    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK) as sender:
            started = time.monotonic()
            result = await sender.send(post(sink.url("/endless"), total_timeout=5))
            return result, time.monotonic() - started

    result, elapsed = run(scenario())
    assert result.error is None
    assert result.status_code == 200
    assert result.body == b"x" * MAX_RESPONSE_BODY
    assert elapsed < 2.0  # stopped after the limit instead of reading until the timeout


def test_truncated_answer_does_not_poison_the_pool():
    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK, limit_per_host=1) as sender:
            first = await sender.send(post(sink.url("/big")))
            second = await sender.send(post(sink.url("/ok")))
            return first, second

    first, second = run(scenario())
    assert len(first.body) == MAX_RESPONSE_BODY
    assert (second.status_code, second.body) == (201, b'{"received": true}')


def test_loopback_is_blocked_by_default_without_connecting():
    async def scenario():
        async with Sink() as sink, transport() as sender:
            return sink, await sender.send(post(sink.url("/ok")))

    sink, result = run(scenario())
    assert result.status_code is None
    assert result.error == "blocked: 127.0.0.1 is a loopback address"
    assert sink.hits == {}


def test_loopback_is_reached_when_allow_listed():
    async def scenario():
        async with (
            Sink() as sink,
            transport(policy=NetworkPolicy(allow_networks=("127.0.0.0/8",))) as sender,
        ):
            return sink, await sender.send(post(sink.url("/ok")))

    sink, result = run(scenario())
    assert (result.status_code, result.error) == (201, None)
    assert sink.hits == {"/ok": 1}


def test_localhost_name_is_blocked_by_default():
    async def scenario():
        async with Sink() as sink, transport() as sender:
            return sink, await sender.send(post(sink.url("/ok", host="localhost")))

    sink, result = run(scenario())
    assert result.error == "blocked: localhost is a loopback host name"
    assert sink.hits == {}


def test_resolver_refuses_a_name_that_resolves_to_loopback():
    """check_url lets ``rebind.test`` through (a name); the resolver sees 127.0.0.1 and refuses."""
    upstream = FakeResolver({"rebind.test": ["127.0.0.1"]})

    async def scenario():
        async with Sink() as sink, transport(upstream_resolver=upstream) as sender:
            return sink, await sender.send(post(sink.url("/ok", host="rebind.test")))

    sink, result = run(scenario())
    assert result.status_code is None
    assert result.error.startswith("blocked: rebind.test resolves only to refused addresses")
    assert "127.0.0.1 is a loopback address" in result.error
    assert upstream.asked == ["rebind.test"]  # the refusal came from the resolver path
    assert sink.hits == {}


def test_resolver_lets_the_same_name_through_when_allowed():
    upstream = FakeResolver({"rebind.test": ["127.0.0.1"]})

    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK, upstream_resolver=upstream) as s:
            return sink, await s.send(post(sink.url("/ok", host="rebind.test")))

    sink, result = run(scenario())
    assert (result.status_code, result.error) == (201, None)
    assert sink.hits == {"/ok": 1}
    assert sink.requests[0]["headers"]["Host"] == f"rebind.test:{sink.port}"


@pytest.mark.skipif(sys.platform != "linux", reason="needs 127.0.0.2 on the loopback interface")
def test_resolver_connects_only_to_the_allowed_addresses_of_a_mixed_answer():
    """127.0.0.2 comes first in the answer and a decoy listens there on the same port: were the
    refused address kept, aiohttp would connect to the decoy."""
    upstream = FakeResolver({"mixed.test": ["127.0.0.2", "169.254.169.254", "127.0.0.1"]})
    policy = NetworkPolicy.from_settings("127.0.0.1/32", False)
    decoy_hits: list[bytes] = []

    async def decoy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoy_hits.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario():
        async with Sink() as sink:
            server = await asyncio.start_server(decoy, "127.0.0.2", sink.port)
            try:
                async with transport(policy=policy, upstream_resolver=upstream) as sender:
                    return sink, await sender.send(post(sink.url("/ok", host="mixed.test")))
            finally:
                server.close()
                await server.wait_closed()

    sink, result = run(scenario())
    assert (result.status_code, result.error) == (201, None)
    assert sink.hits == {"/ok": 1}
    assert decoy_hits == []


def test_environment_proxy_is_ignored(monkeypatch):
    """A proxy would connect to addresses we never checked: HTTP(S)_PROXY must not be used."""
    port = closed_port()
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK) as sender:
            return await sender.send(post(sink.url("/ok")))

    result = run(scenario())
    assert (result.status_code, result.error) == (201, None)


def test_cookies_are_not_carried_between_requests():
    """By name, not IP: aiohttp's default jar ignores cookies from IP hosts anyway."""
    upstream = FakeResolver({"sink.test": ["127.0.0.1"]})

    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK, upstream_resolver=upstream) as s:
            first = await s.send(post(sink.url("/cookie", host="sink.test")))
            await s.send(post(sink.url("/ok", host="sink.test")))
            return sink, first

    sink, first = run(scenario())
    assert "session=secret" in first.headers["set-cookie"]
    assert "Cookie" not in sink.requests[1]["headers"]


def test_sequential_sends_reuse_one_connection():
    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK) as sender:
            results = [await sender.send(post(sink.url("/ok"))) for _ in range(10)]
            return sink, results

    sink, results = run(scenario())
    assert [r.status_code for r in results] == [201] * 10
    assert len(sink.peers) == 1


def test_fifty_concurrent_sends_succeed_over_keep_alive():
    async def scenario():
        async with Sink() as sink, transport(policy=LOOPBACK, limit_per_host=10) as sender:
            first = await asyncio.gather(*(sender.send(post(sink.url("/ok"))) for _ in range(50)))
            second = await asyncio.gather(*(sender.send(post(sink.url("/ok"))) for _ in range(50)))
            return sink, first + second

    sink, results = run(scenario())
    assert [(r.status_code, r.error) for r in results] == [(201, None)] * 100
    assert sink.hits == {"/ok": 100}
    assert 1 <= len(sink.peers) <= 10  # 100 requests over at most limit_per_host connections


def test_a_slow_endpoint_does_not_delay_a_fast_one():
    async def scenario():
        async with Sink() as slow_sink, Sink() as fast_sink, transport(policy=LOOPBACK) as s:
            started = time.monotonic()
            finished: dict[str, list[float]] = {"slow": [], "fast": []}

            async def timed(kind: str, url: str, timeout: float) -> TransportResult:
                result = await s.send(post(url, total_timeout=timeout))
                finished[kind].append(time.monotonic() - started)
                return result

            slow = [timed("slow", slow_sink.url("/slow"), 2.0) for _ in range(20)]
            fast = [timed("fast", fast_sink.url("/ok"), 2.0) for _ in range(30)]
            results = await asyncio.gather(*slow, *fast)
            return results[:20], results[20:], finished

    slow, fast, finished = run(scenario())
    assert all(r.error == "timeout after 2s" for r in slow)
    assert [(r.status_code, r.error) for r in fast] == [(201, None)] * 30
    assert max(finished["fast"]) < 1.0 < min(finished["slow"])


def test_send_after_close_is_a_programming_error():
    async def scenario():
        sender = AiohttpTransport(policy=LOOPBACK)
        await sender.close()
        with pytest.raises(RuntimeError, match="closed"):
            await sender.send(post("http://127.0.0.1:9/"))

    run(scenario())


def test_a_blocked_url_needs_no_event_loop_resources():
    """A blocked URL is answered before any session exists (nothing to close, nothing opened)."""

    async def scenario():
        sender = AiohttpTransport()
        result = await sender.send(post("http://169.254.169.254/latest/meta-data/"))
        assert sender._session is None
        await sender.close()
        return result

    result = run(scenario())
    assert (
        result.error == "blocked: 169.254.169.254 is a link-local address (cloud metadata service)"
    )
