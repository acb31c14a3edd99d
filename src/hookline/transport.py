"""The outbound HTTP seam: one request in, one ``TransportResult`` out, never an exception.

``Transport`` is the one seam the delivery worker sends through (the idea of httpx's
``MockTransport``, DESIGN §7), so unit tests of the worker use ``RecordingTransport`` and never
open sockets, while ``AiohttpTransport`` is the real sender::

    check_url(url, policy)          refuse the scheme, credentials, port, literal IP, localhost
        │  (blocked -> error "blocked: <reason>", nothing is connected)
        ▼
    aiohttp ClientSession           one per transport, keep-alive pool (TCPConnector)
        │  host names are resolved by GuardedResolver, which drops every address the policy
        │  refuses, so aiohttp connects only to addresses that were checked (no rebinding window)
        ▼
    POST, redirects not followed, timeouts, at most MAX_RESPONSE_BODY bytes of the answer kept

Network problems (timeouts, refused or reset connections, DNS failures, bad HTTP) come back as
``TransportResult.error``; only programming errors (a closed transport) raise.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from hookline.netguard import BlockedTarget, NetworkPolicy, check_url, forbidden_reason

__all__ = [
    "MAX_RESPONSE_BODY",
    "AiohttpTransport",
    "BlockedAddress",
    "GuardedResolver",
    "OutboundRequest",
    "RecordingTransport",
    "Transport",
    "TransportResult",
]

MAX_RESPONSE_BODY = 20 * 1024
"""Bytes of a response body that are read and kept; the rest is never read."""

_READ_CHUNK = 4096
_GUARD_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class OutboundRequest:
    """One POST to send: the URL, its headers and body, and how long it may take."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    connect_timeout: float = 5.0
    total_timeout: float = 15.0

    def __post_init__(self) -> None:
        if not (self.connect_timeout > 0 and self.total_timeout > 0):
            raise ValueError("connect_timeout and total_timeout must be positive")


@dataclass(frozen=True)
class TransportResult:
    """What happened: a status (None when no answer came), headers, body, error, duration.

    ``headers`` has lower-case names; ``body`` holds at most ``MAX_RESPONSE_BODY`` bytes.
    ``error`` is None when an HTTP answer arrived (whatever its status), else a short reason.
    """

    status_code: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None
    duration_ms: float = 0.0


@runtime_checkable
class Transport(Protocol):
    """Sends one ``OutboundRequest``; network problems are results, not exceptions."""

    async def send(self, request: OutboundRequest) -> TransportResult:
        """POST ``request`` and return what happened."""
        ...

    async def close(self) -> None:
        """Release connections; the transport is not used afterwards."""
        ...


MAX_CHECKED_URLS = 10_000


class BlockedAddress(OSError):
    """Every address a host name resolved to is refused by the network policy."""

    def __init__(self, host: str, reasons: list[str]) -> None:
        self.host = host
        self.reasons = list(reasons)
        self.reason = f"{host} resolves only to refused addresses ({'; '.join(self.reasons)})"
        super().__init__(self.reason)

    def __str__(self) -> str:
        return self.reason


class GuardedResolver(AbstractResolver):
    """A resolver that passes on only the addresses the policy allows.

    Wraps ``upstream`` (aiohttp's default resolver unless given); addresses the policy refuses
    are dropped, and when none is left ``BlockedAddress`` (an ``OSError``) says why. Because
    aiohttp connects to exactly what its resolver returns, a name cannot be re-bound to a
    private address between the check and the connection.
    """

    def __init__(self, policy: NetworkPolicy, upstream: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._upstream = upstream
        self._owns_upstream = upstream is None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` upstream and keep only the allowed addresses."""
        if self._upstream is None:
            self._upstream = DefaultResolver()
        answers = await self._upstream.resolve(host, port, family)
        kept: list[ResolveResult] = []
        refused: list[str] = []
        for answer in answers:
            try:
                ip = ipaddress.ip_address(answer["host"])
            except ValueError:
                refused.append(f"{answer['host']!r} is not an IP address")
                continue
            reason = forbidden_reason(ip, self._policy)
            if reason is None:
                kept.append(answer)
            elif reason not in refused:
                refused.append(reason)
        if kept:
            return kept
        if refused:
            raise BlockedAddress(host, refused)
        raise OSError(f"{host} has no address")

    async def close(self) -> None:
        """Close the upstream resolver if this one created it."""
        if self._owns_upstream and self._upstream is not None:
            await self._upstream.close()
            self._upstream = None


def _default_user_agent() -> str:
    import hookline  # at call time: hookline/__init__ may import this module

    return f"hookline/{hookline.__version__}"


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _describe(error: BaseException, request: OutboundRequest) -> str:
    """A short, stable reason for a network failure (the attempt's ``error``)."""
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return f"timeout after {_seconds(request.connect_timeout)} (connecting)"
    if isinstance(error, TimeoutError):
        return f"timeout after {_seconds(request.total_timeout)}"
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        if isinstance(error.os_error, BlockedAddress):
            return f"blocked: {error.os_error.reason}"
        return f"DNS lookup failed for {error.host}: {error.os_error.strerror or error.os_error}"
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate error for {error.host}: {error.certificate_error}"
    if isinstance(error, aiohttp.ClientSSLError):
        return f"TLS error: {error}"
    if isinstance(error, aiohttp.ClientConnectorError):
        target = f"{error.host}:{error.port}"
        if isinstance(error.os_error, ConnectionRefusedError):
            return f"connection refused by {target}"
        return f"cannot connect to {target}: {error.os_error.strerror or error.os_error}"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "server disconnected before answering"
    if isinstance(error, aiohttp.ClientPayloadError):
        return f"response body error: {error}"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"invalid HTTP response: {error.message}"
    if isinstance(error, aiohttp.InvalidURL):
        return f"invalid URL: {error}"
    if isinstance(error, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(error, OSError) and isinstance(error.__cause__, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(error, OSError):
        return f"network error: {error.strerror or error}"
    return f"{type(error).__name__}: {error}"


def _response_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in response.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def _read_bounded(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """Read at most ``MAX_RESPONSE_BODY`` bytes; also say whether the body was complete."""
    chunks: list[bytes] = []
    remaining = MAX_RESPONSE_BODY
    while remaining > 0:
        chunk = await response.content.read(min(remaining, _READ_CHUNK))
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks), response.content.at_eof()


class AiohttpTransport:
    """The real sender: one aiohttp session with a keep-alive pool and a guarded resolver.

    ``policy`` is the network policy (the default refuses every non-public address);
    ``limit``/``limit_per_host`` bound the pool; ``ttl_dns_cache`` keeps (already checked)
    resolver answers that many seconds; ``upstream_resolver`` replaces aiohttp's resolver under
    the guard (tests use it). The session is created inside the running loop on first send and
    stays bound to that loop.
    """

    def __init__(
        self,
        policy: NetworkPolicy | None = None,
        *,
        limit: int = 100,
        limit_per_host: int = 10,
        ttl_dns_cache: int = 10,
        user_agent: str | None = None,
        upstream_resolver: AbstractResolver | None = None,
    ) -> None:
        self.policy = policy if policy is not None else NetworkPolicy()
        self.user_agent = user_agent if user_agent is not None else _default_user_agent()
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._ttl_dns_cache = ttl_dns_cache
        self._upstream_resolver = upstream_resolver
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # URLs that passed ``check_url`` under this transport's (fixed) policy: most deliveries
        # go to a few endpoints, and the check parses the URL every time.
        self._checked_urls: set[str] = set()

    def _check(self, url: str) -> None:
        if url not in self._checked_urls:
            check_url(url, self.policy)
            if len(self._checked_urls) >= MAX_CHECKED_URLS:
                self._checked_urls.clear()
            self._checked_urls.add(url)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this AiohttpTransport is closed")
        loop = asyncio.get_running_loop()
        if self._session is not None:
            if self._loop is not loop:
                raise RuntimeError("this AiohttpTransport belongs to another event loop")
            return self._session
        self._resolver = GuardedResolver(self.policy, self._upstream_resolver)
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            limit_per_host=self._limit_per_host,
            ttl_dns_cache=self._ttl_dns_cache,
            resolver=self._resolver,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # an environment proxy would connect where we did not check
            cookie_jar=aiohttp.DummyCookieJar(),  # no cookies carried between endpoints
        )
        self._loop = loop
        return self._session

    def _headers(self, request: OutboundRequest) -> dict[str, str]:
        headers = dict(request.headers)
        if not any(name.lower() == "user-agent" for name in headers):
            headers["User-Agent"] = self.user_agent
        return headers

    async def send(self, request: OutboundRequest) -> TransportResult:
        """POST ``request`` (redirects not followed) and return what happened.

        Network problems are returned as ``error``; only a closed transport or one used from
        another event loop raises (``RuntimeError``).
        """
        started = time.perf_counter()
        try:
            self._check(request.url)
        except BlockedTarget as blocked:
            return TransportResult(
                None, error=f"blocked: {blocked.reason}", duration_ms=_elapsed_ms(started)
            )
        session = self._get_session()
        timeout = aiohttp.ClientTimeout(
            total=request.total_timeout, sock_connect=request.connect_timeout
        )
        try:
            async with asyncio.timeout(request.total_timeout + _GUARD_GRACE_SECONDS):
                async with session.post(
                    request.url,
                    data=request.body,
                    headers=self._headers(request),
                    allow_redirects=False,
                    timeout=timeout,
                ) as response:
                    body, complete = await _read_bounded(response)
                    if not complete:
                        response.close()  # unread rest: drop the connection, do not drain it
                    return TransportResult(
                        status_code=response.status,
                        headers=_response_headers(response),
                        body=body,
                        error=None,
                        duration_ms=_elapsed_ms(started),
                    )
        except (aiohttp.ClientError, OSError, ValueError) as error:  # TimeoutError is an OSError
            return TransportResult(
                None, error=_describe(error, request), duration_ms=_elapsed_ms(started)
            )

    async def close(self) -> None:
        """Close the session and its connections; later sends raise ``RuntimeError``."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            await resolver.close()


Responder = Callable[[OutboundRequest], "TransportResult | Awaitable[TransportResult]"]


class RecordingTransport:
    """A fake ``Transport`` for unit tests: records requests, answers from a script, no sockets.

    ``responder`` is a callable ``(OutboundRequest) -> TransportResult`` (or an awaitable of
    one), or an iterable of results returned in order (an ``AssertionError`` once exhausted);
    by default every request gets an empty 200. With a ``policy``, URLs it refuses are answered
    like ``AiohttpTransport`` does (``error="blocked: ..."``) and the responder is not called.
    """

    def __init__(
        self,
        responder: Responder | Iterable[TransportResult] | None = None,
        *,
        policy: NetworkPolicy | None = None,
    ) -> None:
        self.requests: list[OutboundRequest] = []
        self.closed = False
        self.policy = policy
        self._respond: Responder
        if responder is None:
            self._respond = lambda _request: TransportResult(200)
        elif callable(responder):
            self._respond = responder
        else:
            self._respond = self._scripted(list(responder))

    def _scripted(self, results: list[TransportResult]) -> Responder:
        queue = iter(results)

        def respond(request: OutboundRequest) -> TransportResult:
            try:
                return next(queue)
            except StopIteration:
                raise AssertionError(
                    f"RecordingTransport has no result left for request {len(self.requests)}"
                    f" ({len(results)} scripted): {request.url}"
                ) from None

        return respond

    async def send(self, request: OutboundRequest) -> TransportResult:
        """Record ``request`` and return the scripted result."""
        if self.closed:
            raise RuntimeError("this RecordingTransport is closed")
        self.requests.append(request)
        if self.policy is not None:
            try:
                check_url(request.url, self.policy)
            except BlockedTarget as blocked:
                return TransportResult(None, error=f"blocked: {blocked.reason}")
        result = self._respond(request)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def close(self) -> None:
        """Mark the transport closed (later sends raise ``RuntimeError``)."""
        self.closed = True
