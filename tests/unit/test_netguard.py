"""``hookline.netguard``: which addresses and URLs an outbound delivery may reach (guarantee 5)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookline.errors import ConfigError, ValidationFailed
from hookline.netguard import BlockedTarget, NetworkPolicy, check_url, forbidden_reason

DEFAULT = NetworkPolicy()
LOOPBACK_ALLOWED = NetworkPolicy.from_settings("127.0.0.0/8,::1/128", False)


def ip(text: str):
    return ipaddress.ip_address(text)


# (address, a word the reason must contain)
REFUSED_V4 = [
    ("127.0.0.1", "loopback"),
    ("127.0.0.2", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.0.1", "private"),
    ("192.168.255.255", "private"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.255.254", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.254", "reserved"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.200", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.254", "benchmarking"),
    ("192.0.0.8", "IETF"),
    ("192.0.0.9", "IETF"),
    ("192.88.99.1", "6to4 relay"),
]

REFUSED_V6 = [
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fc00::1", "unique local"),
    ("fd12:3456:789a::1", "unique local"),
    ("fd00:ec2::254", "cloud metadata"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff05::1:3", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("100::1", "discard-only"),
    ("::1.2.3.4", "IPv4-compatible"),
    ("::2", "IPv4-compatible"),
    ("1::1", "reserved"),
    ("64:ff9b:1::1", "NAT64"),
    ("2001:10::1", "IETF"),
    ("5f00::1", "segment-routing"),
    # IPv4-mapped: judged as the IPv4 address inside
    ("::ffff:127.0.0.1", "127.0.0.1 is a loopback"),
    ("::ffff:10.1.2.3", "10.1.2.3 is a private"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("::ffff:100.64.0.1", "carrier-grade NAT"),
    # NAT64 well-known prefix, 6to4 and Teredo carrying a forbidden IPv4
    ("64:ff9b::7f00:1", "127.0.0.1 is a loopback"),
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
    ("2002:7f00:1::1", "127.0.0.1 is a loopback"),
    ("2002:c0a8:101::1", "192.168.1.1 is a private"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),  # client 192.0.2.45
    ("2001:0:5db8:d822::1", "Teredo"),  # Teredo is refused whatever it carries
]

ALLOWED = [
    "93.184.216.34",
    "1.1.1.1",
    "8.8.8.8",
    "140.82.112.3",
    "100.63.255.255",  # just below 100.64.0.0/10
    "100.128.0.0",  # just above it
    "172.15.255.255",  # just below 172.16.0.0/12
    "172.32.0.0",  # just above it
    "169.253.255.255",
    "192.167.255.255",
    "11.0.0.1",
    "126.255.255.255",
    "128.0.0.1",
    "223.255.255.254",  # last unicast before multicast
    "2606:4700::1111",
    "2001:4860:4860::8888",
    "2a00:1450:4001:82a::200e",
    "::ffff:93.184.216.34",  # mapped public IPv4
    "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34
    "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
]


@pytest.mark.parametrize(("address", "word"), REFUSED_V4 + REFUSED_V6)
def test_non_public_addresses_are_refused_with_a_reason(address, word):
    reason = forbidden_reason(ip(address), DEFAULT)
    assert reason is not None
    assert word in reason
    assert reason.startswith(str(ip(address)))


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address):
    assert forbidden_reason(ip(address), DEFAULT) is None


def test_reason_reads_like_a_sentence():
    assert forbidden_reason(ip("127.0.0.1"), DEFAULT) == "127.0.0.1 is a loopback address"
    assert forbidden_reason(ip("10.0.0.1"), DEFAULT) == "10.0.0.1 is a private address (RFC 1918)"


@pytest.mark.parametrize(
    ("allow", "address"),
    [
        ("127.0.0.0/8", "127.0.0.1"),
        ("127.0.0.0/8", "127.1.2.3"),
        ("127.0.0.0/8", "::ffff:127.0.0.1"),  # the mapped address is judged as its IPv4
        ("127.0.0.0/8", "64:ff9b::7f00:1"),
        ("::1/128", "::1"),
        ("10.0.0.0/8", "10.20.30.40"),
        ("192.168.1.0/24", "192.168.1.77"),
        ("169.254.169.254/32", "169.254.169.254"),
        ("fd00::/8", "fd00::1"),
        ("fe80::/10", "fe80::1%eth0"),
        ("100.64.0.0/10", "100.64.0.1"),
        ("10.0.0.0/8, 192.168.0.0/16", "192.168.0.1"),
        ("10.0.0.0/8,,192.168.0.0/16,", "192.168.0.1"),
    ],
)
def test_allow_list_overrides_the_refusal(allow, address):
    assert forbidden_reason(ip(address), DEFAULT) is not None
    assert forbidden_reason(ip(address), NetworkPolicy.from_settings(allow, False)) is None


@pytest.mark.parametrize(
    ("allow", "address"),
    [
        ("127.0.0.0/8", "10.0.0.1"),
        ("127.0.0.0/8", "::1"),  # IPv4 loopback does not open IPv6 loopback
        ("::1/128", "127.0.0.1"),
        ("192.168.1.0/24", "192.168.2.1"),
        ("169.254.169.254/32", "169.254.169.253"),
        ("10.0.0.0/8", "::ffff:127.0.0.1"),
    ],
)
def test_allow_list_opens_only_what_it_names(allow, address):
    assert forbidden_reason(ip(address), NetworkPolicy.from_settings(allow, False)) is not None


def test_policy_from_settings_parses_the_list():
    policy = NetworkPolicy.from_settings(" 127.0.0.0/8 , ::1/128,10.1.2.3", True)
    assert policy.allow_networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("10.1.2.3/32"),
    )
    assert policy.https_only is True
    assert NetworkPolicy.from_settings("", False) == NetworkPolicy()


@pytest.mark.parametrize(
    "allow",
    ["nonsense", "127.0.0.1/8", "10.0.0.0/33", "::1/129", "127.0.0.0/8;10.0.0.0/8", "1.2.3", "*"],
)
def test_policy_from_settings_refuses_junk(allow):
    with pytest.raises(ConfigError) as raised:
        NetworkPolicy.from_settings(allow, False)
    assert "HOOKLINE_ALLOW_NETWORKS" in str(raised.value)


def test_policy_accepts_cidr_strings_and_refuses_other_types():
    assert NetworkPolicy(allow_networks=("10.0.0.0/8",)).allows(ip("10.9.9.9"))
    with pytest.raises(ConfigError):
        NetworkPolicy(allow_networks=(42,))


def test_policy_is_an_immutable_value():
    with pytest.raises(AttributeError):
        DEFAULT.https_only = True  # type: ignore[misc]
    assert hash(NetworkPolicy.from_settings("10.0.0.0/8", False)) == hash(
        NetworkPolicy.from_settings("10.0.0.0/8", False)
    )


def test_forbidden_reason_wants_an_address():
    with pytest.raises(TypeError):
        forbidden_reason("127.0.0.1", DEFAULT)  # type: ignore[arg-type]


# properties: an address that embeds an IPv4 address gets the verdict of that address


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=4))
def test_ipv4_mapped_address_gets_the_verdict_of_its_ipv4(v4):
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    assert (forbidden_reason(mapped, DEFAULT) is None) == (forbidden_reason(v4, DEFAULT) is None)


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=4))
def test_nat64_and_6to4_addresses_get_the_verdict_of_their_ipv4(v4):
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(v4))
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1)
    expected = forbidden_reason(v4, DEFAULT) is None
    assert (forbidden_reason(nat64, DEFAULT) is None) == expected
    assert (forbidden_reason(sixtofour, DEFAULT) is None) == expected


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(network="10.0.0.0/8") | st.ip_addresses(network="fc00::/7"))
def test_whole_private_ranges_are_refused(address):
    assert forbidden_reason(address, DEFAULT) is not None


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses())
def test_anything_python_calls_non_global_is_refused(address):
    if not address.is_global:
        assert forbidden_reason(address, DEFAULT) is not None


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=4))
def test_check_url_judges_literal_ipv4_like_forbidden_reason(v4):
    allowed = forbidden_reason(v4, DEFAULT) is None
    try:
        check_url(f"http://{v4}/hook", DEFAULT)
        passed = True
    except BlockedTarget:
        passed = False
    assert passed == allowed


# check_url

ACCEPTED_URLS = [
    "http://example.com/hook",
    "https://example.com/hook",
    "HTTPS://Example.COM/Hook?x=1#frag",
    "https://example.com:8443/hook",
    "https://example.com:1/",
    "https://example.com:65535/",
    "https://hooks.example.co.uk/a/b",
    "https://bücher.de/hook",
    "https://93.184.216.34/hook",
    "https://93.184.216.34:8080/hook",
    "https://[2606:4700::1111]/hook",
    "https://[2606:4700::1111]:8443/hook",
    "https://localhost.example.com/",  # only names that end in .localhost are loopback
    "https://mylocalhost/",
    "https://my_host.example.com/",
    "https://1.2.3.4.example.com/",
    "https://example.com./",
]


@pytest.mark.parametrize("url", ACCEPTED_URLS)
def test_check_url_accepts_public_http_urls(url):
    assert check_url(url, DEFAULT) is None


REFUSED_URLS = [
    # schemes
    ("ftp://example.com/", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://example.com/", "scheme"),
    ("ws://example.com/", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("//example.com/hook", "scheme"),
    ("example.com/hook", "scheme"),
    # host
    ("http:///hook", "no host"),
    ("http://", "no host"),
    ("", "empty"),
    ("   ", "empty"),
    ("http://exa mple.com/", "not a valid host name"),
    ("http://%31%32%37.0.0.1/", "not a valid host name"),
    ("http://-bad.example.com/", "not a valid host name"),
    ("http://a..b.example.com/", "not a valid host name"),
    ("http://evil.com\\@127.0.0.1/", "not a valid URL"),
    ("http://[127.0.0.1]/", "not a valid URL"),
    # userinfo
    ("http://user:pass@example.com/", "credentials"),
    ("http://user@example.com/", "credentials"),
    ("http://:pass@example.com/", "credentials"),
    ("http://127.0.0.1:80@example.com/", "credentials"),
    # ports
    ("http://example.com:0/", "port 0"),
    ("http://example.com:65536/", "not a valid URL"),
    ("http://example.com:99999999999/", "not a valid URL"),
    ("http://example.com:-1/", "not a valid URL"),
    # loopback names
    ("http://localhost/", "loopback host name"),
    ("http://LOCALHOST:8000/hook", "loopback host name"),
    ("http://localhost./", "loopback host name"),
    ("http://api.localhost/", "loopback host name"),
    ("http://a.b.localhost./", "loopback host name"),
    ("http://localhost.localdomain/", "loopback host name"),
    ("http://ip6-localhost/", "loopback host name"),
    # literal IPs (aiohttp does not resolve them, so they are judged here)
    ("http://127.0.0.1/", "loopback"),
    ("http://127.0.0.1:8000/hook", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://10.0.0.1/", "private"),
    ("http://192.168.1.1:8080/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://[::1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://[fd00::1]/", "unique local"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),
    ("http://[2002:7f00:1::1]/", "loopback"),
    # legacy numeric IPv4 spellings that getaddrinfo would map onto an address
    ("http://2130706433/", "not a canonical IPv4"),
    ("http://0x7f000001/", "not a canonical IPv4"),
    ("http://127.1/", "not a canonical IPv4"),
    ("http://0x7f.0.0.1/", "not a canonical IPv4"),
    ("http://0177.0.0.1/", "not a canonical IPv4"),
    ("http://①②⑦.0.0.1/", "loopback"),  # NFKC-normalised to 127.0.0.1 by the parser
]


@pytest.mark.parametrize(("url", "words"), REFUSED_URLS)
def test_check_url_refuses(url, words):
    with pytest.raises(BlockedTarget) as raised:
        check_url(url, DEFAULT)
    assert words in raised.value.reason


def test_blocked_target_is_a_422_validation_error_naming_the_url():
    with pytest.raises(ValidationFailed) as raised:
        check_url("http://127.0.0.1/", DEFAULT)
    error = raised.value
    assert isinstance(error, BlockedTarget)
    assert error.status == 422
    assert error.errors == {"url": "127.0.0.1 is a loopback address"}
    assert error.as_dict()["errors"] == {"url": "127.0.0.1 is a loopback address"}


def test_check_url_refuses_non_strings():
    with pytest.raises(BlockedTarget):
        check_url(b"http://example.com/", DEFAULT)  # type: ignore[arg-type]
    with pytest.raises(BlockedTarget):
        check_url(None, DEFAULT)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000/hook",
        "http://api.localhost/",
        "http://127.0.0.1:8000/hook",
        "http://[::1]:8000/hook",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_loopback_urls_pass_when_loopback_is_allowed(url):
    with pytest.raises(BlockedTarget):
        check_url(url, DEFAULT)
    assert check_url(url, LOOPBACK_ALLOWED) is None


def test_localhost_name_passes_when_only_ipv6_loopback_is_allowed():
    assert check_url("http://localhost/", NetworkPolicy.from_settings("::1/128", False)) is None
    with pytest.raises(BlockedTarget):
        check_url("http://localhost/", NetworkPolicy.from_settings("10.0.0.0/8", False))


def test_allow_list_does_not_open_other_private_literals():
    with pytest.raises(BlockedTarget) as raised:
        check_url("http://10.0.0.1/", LOOPBACK_ALLOWED)
    assert "private" in raised.value.reason


def test_https_only_refuses_plain_http():
    policy = NetworkPolicy(https_only=True)
    assert check_url("https://example.com/", policy) is None
    with pytest.raises(BlockedTarget) as raised:
        check_url("http://example.com/", policy)
    assert "https" in raised.value.reason
    assert check_url("http://example.com/", DEFAULT) is None


def test_https_only_still_applies_to_allowed_networks():
    policy = NetworkPolicy.from_settings("127.0.0.0/8", True)
    assert check_url("https://127.0.0.1:8443/", policy) is None
    with pytest.raises(BlockedTarget):
        check_url("http://127.0.0.1:8000/", policy)
