"""HTTPS_PROXY / HTTP_PROXY / NO_PROXY: which proxy a connection takes (Go's rules)."""

from __future__ import annotations

import pytest

from teleport.api.proxyenv import ProxyURL, bypass, parse_proxy, proxy_for
from teleport.errors import BadParameter

P = "http://proxy.corp:3128"


@pytest.mark.parametrize(("value", "want"), [
    ("proxy.corp:3128", ProxyURL("proxy.corp", 3128)),
    ("http://proxy.corp:3128", ProxyURL("proxy.corp", 3128)),
    ("HTTP://Proxy.Corp:3128/", ProxyURL("proxy.corp", 3128)),
    ("proxy.corp", ProxyURL("proxy.corp", 80)),
    ("http://[::1]:8888", ProxyURL("::1", 8888)),
    ("  10.0.0.1:8080 ", ProxyURL("10.0.0.1", 8080)),
    ("alice:s3cret@proxy.corp:3128", ProxyURL("proxy.corp", 3128, "alice", "s3cret")),
    ("http://al%40ce:p%3Ass%2F@proxy.corp:3128", ProxyURL("proxy.corp", 3128, "al@ce", "p:ss/")),
    ("http://alice@proxy.corp:3128", ProxyURL("proxy.corp", 3128, "alice", None)),
])
def test_parse_proxy(value: str, want: ProxyURL) -> None:
    assert parse_proxy(value) == want


@pytest.mark.parametrize(("value", "says"), [
    ("https://proxy.corp:3128", "only http:// proxies"),
    ("socks5://proxy.corp:1080", "only http:// proxies"),
    ("http://proxy.corp:99999", "HTTPS_PROXY="),
    ("http://proxy.corp:3128/path", "not a path"),
    ("http://:3128", "no proxy host"),
])
def test_parse_proxy_refuses(value: str, says: str) -> None:
    with pytest.raises(BadParameter, match=says):
        parse_proxy(value, "HTTPS_PROXY")


def test_error_and_str_hide_the_password() -> None:
    with pytest.raises(BadParameter) as err:
        parse_proxy("socks5://alice:s3cret@proxy.corp:1080", "HTTPS_PROXY")
    assert "s3cret" not in str(err.value) and "alice" in str(err.value)
    proxy = parse_proxy("alice:s3cret@proxy.corp:3128")
    assert "s3cret" not in str(proxy) and str(proxy) == "http://proxy.corp:3128"
    assert "s3cret" not in repr(ProxyURL("h", 1, "u", None))


@pytest.mark.parametrize(("env", "dial", "want"), [
    ({}, False, None),
    ({}, True, None),
    ({"HTTPS_PROXY": P}, False, P),
    ({"https_proxy": P}, False, P),
    ({"HTTPS_PROXY": P, "https_proxy": "http://other:1"}, False, P),  # uppercase wins
    ({"HTTPS_PROXY": "", "https_proxy": P}, False, P),  # empty counts as unset
    ({"HTTP_PROXY": P}, False, None),  # an HTTPS request uses HTTPS_PROXY only (Go)
    ({"http_proxy": P}, True, P),  # a dial falls back to HTTP_PROXY (Teleport)
    ({"HTTPS_PROXY": P, "HTTP_PROXY": "http://other:1"}, True, P),
])
def test_which_variable(env: dict[str, str], dial: bool, want: str | None) -> None:
    got = proxy_for("node.example.com", 3080, env, dial=dial)
    assert (str(got) if got else None) == want


def test_source_names_the_variable() -> None:
    got = proxy_for("a", 1, {"https_proxy": P})
    assert got is not None and got.source == "https_proxy"


def test_no_proxy_applies_and_lowercase_is_read() -> None:
    assert proxy_for("db.internal", 3080, {"HTTPS_PROXY": P, "no_proxy": ".internal"}) is None
    assert proxy_for("db.internal", 3080, {"HTTPS_PROXY": P, "NO_PROXY": "x",
                                           "no_proxy": ".internal"}) is not None


@pytest.mark.parametrize(("host", "proxied"), [
    # Go's useProxy: never `localhost` nor a loopback IP literal, whatever NO_PROXY says.
    ("localhost", False),
    ("127.0.0.1", False),
    ("127.255.0.9", False),  # all of 127.0.0.0/8
    ("::1", False),
    ("[::1]", False),
    ("0:0:0:0:0:0:0:1", False),
    ("::ffff:127.0.0.1", False),  # Go's IsLoopback looks inside IPv4-mapped addresses
    # Go compares the name exactly, before lowercasing, and resolves nothing.
    ("LOCALHOST", True),
    ("Localhost", True),
    ("localhost.", True),
    ("a.localhost", True),
    ("localhost.example.com", True),
    ("::1%lo", True),  # net.ParseIP refuses a zone: a name to Go
    ("128.0.0.1", True),
    ("::2", True),
    ("0.0.0.0", True),
    ("10.213.57.1", True),
])
def test_localhost_and_loopback_are_never_proxied(host: str, proxied: bool) -> None:
    for dial in (False, True):
        got = proxy_for(host, 3080, {"HTTPS_PROXY": P, "HTTP_PROXY": P}, dial=dial)
        assert (got is not None) is proxied


def test_loopback_ignores_even_a_bad_proxy_value() -> None:
    """The proxy is never used for loopback, so its value cannot break a local call."""
    assert proxy_for("127.0.0.1", 3025, {"HTTPS_PROXY": "socks5://proxy:1080"}) is None
    with pytest.raises(BadParameter):
        proxy_for("10.0.0.1", 3025, {"HTTPS_PROXY": "socks5://proxy:1080"})


def test_bad_proxy_value_is_an_error_not_a_silent_direct_dial() -> None:
    with pytest.raises(BadParameter, match="HTTPS_PROXY="):
        proxy_for("a", 1, {"HTTPS_PROXY": "ftp://proxy:21"})


@pytest.mark.parametrize(("no_proxy", "host", "port", "want"), [
    ("", "example.com", 443, False),
    (",, ,", "example.com", 443, False),  # empty entries are ignored
    ("*", "anything.example", 1, True),
    ("*", "10.1.2.3", 1, True),
    ("foo,*", "bar", 1, True),
    # names: a name matches itself and its subdomains
    ("example.com", "example.com", 443, True),
    ("example.com", "www.example.com", 443, True),
    ("example.com", "a.b.example.com", 443, True),
    ("example.com", "notexample.com", 443, False),
    ("example.com", "example.com.evil", 443, False),
    # .suffix and *.suffix: subdomains only
    (".example.com", "www.example.com", 443, True),
    (".example.com", "example.com", 443, False),
    ("*.example.com", "www.example.com", 443, True),
    ("*.example.com", "example.com", 443, False),
    # case and spaces
    (" Example.COM ", "WWW.example.com", 443, True),
    # ports narrow an entry
    ("example.com:3080", "example.com", 3080, True),
    ("example.com:3080", "example.com", 3023, False),
    (".example.com:3080", "a.example.com", 3080, True),
    # IPv4
    ("10.1.2.3", "10.1.2.3", 443, True),
    ("10.1.2.3", "10.1.2.4", 443, False),
    ("10.1.2.3:3080", "10.1.2.3", 3080, True),
    ("10.1.2.3:3080", "10.1.2.3", 3023, False),
    ("127.0.0.1", "127.0.0.1", 3080, True),
    # CIDR
    ("10.0.0.0/8", "10.200.3.4", 443, True),
    ("10.0.0.0/8", "11.0.0.1", 443, False),
    ("192.168.1.7/24", "192.168.1.200", 443, True),  # host bits set: still the /24
    ("10.0.0.0/8", "ten.example", 443, False),  # names are not resolved
    ("10.0.0.0/33", "10.0.0.1", 443, False),  # unparsable: ignored
    ("fd00::/8", "fd12::1", 443, True),
    ("fd00::/8", "10.0.0.1", 443, False),
    # IPv6, bracketed or not, with a port
    ("::1", "::1", 443, True),
    ("::1", "[::1]", 443, True),
    ("[::1]", "::1", 443, True),
    ("[::1]:3080", "::1", 3080, True),
    ("[::1]:3080", "::1", 3023, False),
    ("2001:db8::1", "2001:DB8:0::1", 443, True),  # compared as addresses
    # a name never matches an IP literal, nor an IP a name
    ("1.2.3.4", "1.2.3.4.example.com", 443, False),
    ("example.com", "10.0.0.1", 443, False),
])
def test_no_proxy(no_proxy: str, host: str, port: int, want: bool) -> None:
    assert bypass(host, port, no_proxy) is want
