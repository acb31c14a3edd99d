"""The network guard: which outbound targets a delivery may reach (pure policy, no I/O).

Guarantee 5 of the design: outbound requests never reach private, loopback or link-local addresses
unless allow-listed. The policy is judged twice, by the same function:

- ``check_url`` when an endpoint is created (and again before every send): the scheme, the
  authority and, for IP literals, the address itself (aiohttp does not resolve literals);
- ``forbidden_reason`` on every address a host name resolves to, inside the sender's resolver
  (``hookline.transport.GuardedResolver``), so the addresses connected to are the ones checked.

Ranges are listed explicitly (IANA special-purpose registries) rather than taken from
``ipaddress``'s ``is_private``, whose meaning changed between Python patch releases; anything the
table misses but Python does not call global is refused as well. Addresses that embed an IPv4
address (IPv4-mapped, NAT64, 6to4, Teredo) are judged by the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TypeAlias

import yarl

from hookline.errors import ConfigError, ValidationFailed

__all__ = [
    "BlockedTarget",
    "IPAddress",
    "IPNetwork",
    "NetworkPolicy",
    "check_url",
    "forbidden_reason",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = ("http", "https")
LOOPBACK_HOST_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
)
CLOUD_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)

# Order matters: the first matching range names the reason (a single address before its block).
_V4_RANGES: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(cidr), what)
    for cidr, what in (
        ("0.0.0.0/32", "the unspecified address"),
        ("0.0.0.0/8", "a 'this network' address (RFC 791)"),
        ("10.0.0.0/8", "a private address (RFC 1918)"),
        ("100.64.0.0/10", "a shared address (carrier-grade NAT, RFC 6598)"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address (RFC 1918)"),
        ("192.0.0.0/24", "an IETF protocol assignment (reserved, RFC 6890)"),
        ("192.0.2.0/24", "a documentation address (RFC 5737)"),
        ("192.88.99.0/24", "a reserved address (former 6to4 relay anycast, RFC 7526)"),
        ("192.168.0.0/16", "a private address (RFC 1918)"),
        ("198.18.0.0/15", "a benchmarking address (RFC 2544)"),
        ("198.51.100.0/24", "a documentation address (RFC 5737)"),
        ("203.0.113.0/24", "a documentation address (RFC 5737)"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address (RFC 1112)"),
    )
)

_V6_RANGES: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(cidr), what)
    for cidr, what in (
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/96", "a deprecated IPv4-compatible address (RFC 4291)"),
        ("64:ff9b:1::/48", "a local-use NAT64 address (RFC 8215)"),
        ("::/8", "a reserved address (RFC 4291)"),
        ("100::/64", "a discard-only address (RFC 6666)"),
        ("2001:db8::/32", "a documentation address (RFC 3849)"),
        ("2001:2::/48", "a benchmarking address (RFC 5180)"),
        ("2001::/32", "a Teredo tunnelling address (RFC 4380)"),
        ("2001::/23", "an IETF protocol assignment (reserved, RFC 2928)"),
        ("3fff::/20", "a documentation address (RFC 9637)"),
        ("5f00::/16", "a segment-routing address (RFC 9602)"),
        ("fc00::/7", "a unique local (private) address (RFC 4193)"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address (deprecated, RFC 3879)"),
        ("ff00::/8", "a multicast address"),
    )
)

_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_HOST_NAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


class BlockedTarget(ValidationFailed):
    """A webhook URL the network policy refuses (422); ``reason`` says why, safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"URL refused: {reason}", errors={"url": reason})
        self.reason = reason


def _parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as error:
        raise ConfigError(
            f"HOOKLINE_ALLOW_NETWORKS: {text.strip()!r} is not a CIDR network ({error})"
        ) from None


@dataclass(frozen=True)
class NetworkPolicy:
    """Which outbound targets are allowed: the default refuses every non-public address.

    ``allow_networks`` re-opens ranges that would be refused (e.g. ``127.0.0.0/8`` for local
    development); ``https_only`` refuses plain ``http://`` URLs.
    """

    allow_networks: tuple[IPNetwork, ...] = ()
    https_only: bool = False

    def __post_init__(self) -> None:
        networks = tuple(
            _parse_network(item) if isinstance(item, str) else item for item in self.allow_networks
        )
        for network in networks:
            if not isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
                raise ConfigError(f"allow_networks: {network!r} is not an IP network")
        object.__setattr__(self, "allow_networks", networks)

    @classmethod
    def from_settings(cls, allow: str = "", https_only: bool = False) -> NetworkPolicy:
        """The policy from ``HOOKLINE_ALLOW_NETWORKS`` (comma-separated CIDRs) and HTTPS_ONLY."""
        if not isinstance(allow, str):
            raise ConfigError("HOOKLINE_ALLOW_NETWORKS must be a string of comma-separated CIDRs")
        items = [item for item in allow.split(",") if item.strip()]
        return cls(
            allow_networks=tuple(_parse_network(item) for item in items),
            https_only=bool(https_only),
        )

    def allows(self, ip: IPAddress) -> bool:
        """Whether ``ip`` is inside one of the allow-listed networks."""
        return any(ip in network for network in self.allow_networks)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]]:
    """What kind of IPv4-embedding address ``ip`` is and the IPv4 addresses it carries."""
    if ip.ipv4_mapped is not None:
        return "an IPv4-mapped address", [ip.ipv4_mapped]
    if ip in _NAT64_WELL_KNOWN:
        return "a NAT64 address", [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return "a 6to4 address", [ip.sixtofour]
    if ip.teredo is not None:
        server, client = ip.teredo
        return "a Teredo address", [client, server]
    return "", []


def _without_scope(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return ipaddress.IPv6Address(int(ip))
    return ip


def forbidden_reason(ip: IPAddress, policy: NetworkPolicy) -> str | None:
    """Why ``policy`` refuses to connect to ``ip``, or None when it may be reached.

    The reason is a sentence safe to show, e.g. ``"127.0.0.1 is a loopback address"``.
    """
    if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise TypeError(f"forbidden_reason expects an IP address, not {type(ip).__name__}")
    if policy.allows(ip):
        return None
    bare = _without_scope(ip)
    if isinstance(bare, ipaddress.IPv6Address):
        kind, embedded = _embedded_ipv4(bare)
        for inner in embedded:
            inner_reason = forbidden_reason(inner, policy)
            if inner_reason is not None:
                return f"{ip} is {kind}; {inner_reason}"
        if embedded and kind != "a Teredo address":  # Teredo is refused whatever it carries
            return None
        ranges: tuple[tuple[IPNetwork, str], ...] = _V6_RANGES
    else:
        ranges = _V4_RANGES
    for network, what in ranges:
        if bare in network:
            if bare in CLOUD_METADATA_ADDRESSES:
                return f"{ip} is {what} (cloud metadata service)"
            return f"{ip} is {what}"
    if bare.is_multicast:
        return f"{ip} is a multicast address"
    if bare.is_reserved:
        return f"{ip} is a reserved address"
    if not bare.is_global:
        return f"{ip} is not a globally routable address"
    return None


def _loopback_allowed(policy: NetworkPolicy) -> bool:
    return any(
        forbidden_reason(ipaddress.ip_address(a), policy) is None for a in ("127.0.0.1", "::1")
    )


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url(url: str, policy: NetworkPolicy) -> None:
    """Refuse a webhook URL the policy does not allow; raise ``BlockedTarget`` with the reason.

    Checks the scheme (http/https, https only when the policy says so), that there is a host and
    no ``user:password@``, the port (1-65535), legacy numeric IPv4 forms (``2130706433``,
    ``127.1``), loopback names (``localhost``, ``*.localhost``) and, for IP literals, the address.
    Host names are judged again, by address, when the sender resolves them.
    """
    if not isinstance(url, str):
        raise BlockedTarget("the URL must be a string")
    if not url.strip():
        raise BlockedTarget("the URL is empty")
    try:
        parsed = yarl.URL(url)
        port = parsed.explicit_port
        # yarl decodes an IDNA host only when asked, and refuses a bad one then.
        host, raw_host = parsed.host, parsed.raw_host
    except (ValueError, TypeError) as error:
        raise BlockedTarget(f"not a valid URL ({error})") from None
    scheme = parsed.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = f"{scheme!r}" if scheme else "no scheme"
        raise BlockedTarget(f"the scheme must be http or https, not {shown}")
    if policy.https_only and scheme != "https":
        raise BlockedTarget("only https:// URLs are allowed")
    if parsed.user is not None or parsed.password is not None:
        raise BlockedTarget("credentials in the URL (user:password@) are not allowed")
    if not host or not raw_host:
        raise BlockedTarget("the URL has no host")
    if port is not None and not 1 <= port <= 65535:
        raise BlockedTarget(f"port {port} is out of range 1-65535")

    ip = _literal_ip(host)
    if ip is None and ":" not in host:
        ip = _literal_ip(host.rstrip("."))  # "127.0.0.1." is still an IPv4 address
    if ip is not None:
        reason = forbidden_reason(ip, policy)
        if reason is not None:
            raise BlockedTarget(reason)
        return

    name = raw_host.lower()
    if not _HOST_NAME.match(name) or len(name.rstrip(".")) > 253:
        raise BlockedTarget(f"{host!r} is not a valid host name")
    labels = name.rstrip(".").split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise BlockedTarget(f"{host!r} is not a canonical IPv4 address")
    bare = name.rstrip(".")
    is_loopback_name = bare in LOOPBACK_HOST_NAMES or bare.endswith(".localhost")
    if is_loopback_name and not _loopback_allowed(policy):
        raise BlockedTarget(f"{host} is a loopback host name")
