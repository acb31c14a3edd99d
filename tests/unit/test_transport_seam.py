"""The transport seam without sockets: ``RecordingTransport``, ``GuardedResolver``, the values."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from hookline.netguard import NetworkPolicy
from hookline.transport import (
    BlockedAddress,
    GuardedResolver,
    OutboundRequest,
    RecordingTransport,
    Transport,
    TransportResult,
)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


@pytest.fixture
def no_sockets(monkeypatch):
    """Make any attempt to connect a socket fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a unit test tried to open a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def request(url: str = "https://example.com/hook") -> OutboundRequest:
    return OutboundRequest(url=url, headers={"webhook-id": "msg_1"}, body=b"{}")


class TableResolver(AbstractResolver):
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
            for a in self.table[host]
        ]

    async def close(self) -> None:
        self.closed = True


# values


def test_outbound_request_defaults_and_validation():
    sent = request()
    assert (sent.connect_timeout, sent.total_timeout) == (5.0, 15.0)
    with pytest.raises(ValueError):
        OutboundRequest("https://example.com/", {}, b"", total_timeout=0)
    with pytest.raises(ValueError):
        OutboundRequest("https://example.com/", {}, b"", connect_timeout=-1)


def test_values_are_frozen():
    with pytest.raises(AttributeError):
        request().url = "https://other.example/"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        TransportResult(200).status_code = 500  # type: ignore[misc]


# RecordingTransport


def test_recording_transport_is_a_transport_and_answers_200_by_default(no_sockets):
    fake = RecordingTransport()
    assert isinstance(fake, Transport)
    result = run(fake.send(request()))
    assert result == TransportResult(200)
    assert fake.requests == [request()]


def test_recording_transport_calls_the_responder_with_each_request(no_sockets):
    def respond(sent: OutboundRequest) -> TransportResult:
        return TransportResult(410 if "gone" in sent.url else 204)

    fake = RecordingTransport(respond)

    async def scenario():
        return [
            await fake.send(request("https://example.com/gone")),
            await fake.send(request("https://example.com/ok")),
        ]

    results = run(scenario())
    assert [r.status_code for r in results] == [410, 204]
    assert [r.url for r in fake.requests] == ["https://example.com/gone", "https://example.com/ok"]


def test_recording_transport_accepts_an_async_responder(no_sockets):
    async def respond(sent: OutboundRequest) -> TransportResult:
        await asyncio.sleep(0)
        return TransportResult(None, error="timeout after 15s")

    result = run(RecordingTransport(respond).send(request()))
    assert result.error == "timeout after 15s"


def test_recording_transport_returns_scripted_results_in_order_then_complains(no_sockets):
    script = [
        TransportResult(500),
        TransportResult(None, error="connection refused"),
        TransportResult(200),
    ]
    fake = RecordingTransport(script)

    async def scenario():
        results = [await fake.send(request()) for _ in range(3)]
        with pytest.raises(AssertionError, match="no result left"):
            await fake.send(request())
        return results

    assert run(scenario()) == script
    assert len(fake.requests) == 4


def test_recording_transport_applies_a_policy_when_given(no_sockets):
    called = []
    fake = RecordingTransport(
        lambda sent: called.append(sent) or TransportResult(200), policy=NetworkPolicy()
    )
    result = run(fake.send(request("http://10.0.0.1/hook")))
    assert result == TransportResult(
        None, error="blocked: 10.0.0.1 is a private address (RFC 1918)"
    )
    assert called == []
    assert len(fake.requests) == 1


def test_recording_transport_close(no_sockets):
    fake = RecordingTransport()

    async def scenario():
        await fake.close()
        with pytest.raises(RuntimeError):
            await fake.send(request())

    run(scenario())
    assert fake.closed


# GuardedResolver


def test_guarded_resolver_drops_refused_addresses(no_sockets):
    upstream = TableResolver(
        {"mixed.example": ["10.0.0.1", "93.184.216.34", "127.0.0.1", "1.1.1.1"]}
    )
    guarded = GuardedResolver(NetworkPolicy(), upstream)
    answers = run(guarded.resolve("mixed.example", 443))
    assert [a["host"] for a in answers] == ["93.184.216.34", "1.1.1.1"]
    assert all(a["port"] == 443 for a in answers)


def test_guarded_resolver_refuses_when_nothing_is_left(no_sockets):
    upstream = TableResolver(
        {"internal.example": ["10.0.0.1", "169.254.169.254", "10.0.0.1", "::ffff:127.0.0.1"]}
    )
    with pytest.raises(BlockedAddress) as raised:
        run(GuardedResolver(NetworkPolicy(), upstream).resolve("internal.example", 80))
    error = raised.value
    assert isinstance(error, OSError)
    assert error.host == "internal.example"
    assert error.reasons[:2] == [
        "10.0.0.1 is a private address (RFC 1918)",
        "169.254.169.254 is a link-local address (cloud metadata service)",
    ]
    assert len(error.reasons) == 3  # the repeated address is reported once
    assert str(error).startswith("internal.example resolves only to refused addresses (")


def test_guarded_resolver_honours_the_allow_list(no_sockets):
    upstream = TableResolver({"dev.example": ["127.0.0.1", "10.0.0.1"]})
    guarded = GuardedResolver(NetworkPolicy.from_settings("127.0.0.0/8"), upstream)
    assert [a["host"] for a in run(guarded.resolve("dev.example", 80))] == ["127.0.0.1"]


def test_guarded_resolver_refuses_answers_that_are_not_addresses(no_sockets):
    upstream = TableResolver({"odd.example": ["not-an-ip"]})
    with pytest.raises(BlockedAddress, match="not an IP address"):
        run(GuardedResolver(NetworkPolicy(), upstream).resolve("odd.example", 80))


def test_guarded_resolver_passes_lookup_failures_on(no_sockets):
    guarded = GuardedResolver(NetworkPolicy(), TableResolver({"empty.example": []}))
    with pytest.raises(socket.gaierror):
        run(guarded.resolve("unknown.example", 80))
    with pytest.raises(OSError, match="no address") as raised:
        run(guarded.resolve("empty.example", 80))
    assert not isinstance(raised.value, BlockedAddress)


def test_guarded_resolver_leaves_an_injected_upstream_open(no_sockets):
    upstream = TableResolver({})
    run(GuardedResolver(NetworkPolicy(), upstream).close())
    assert upstream.closed is False
