"""Which HTTP CONNECT proxy, if any, a connection must go through: `HTTPS_PROXY`, `NO_PROXY`.

Pure functions over an environment mapping, so the rules are tested without sockets. The
rules are Go's (`golang.org/x/net/http/httpproxy`), which Teleport users already live with:

- The uppercase name wins over the lowercase one when both are set and non-empty.
- An HTTPS request (every web and auth API call of ours) uses `HTTPS_PROXY` only. A raw TCP
  dial (the SSH connection to the proxy, later the reverse tunnel) uses `HTTPS_PROXY`, else
  `HTTP_PROXY`, as Teleport's dialer does.
- A value without a scheme (`host:port`) means `http://host:port`; `user:pass@` (percent-encoded)
  is sent as basic auth. Only `http://` proxies are supported: anything else is one clear error,
  not Go's silent "no proxy".
- `NO_PROXY` is comma-separated; entries are trimmed and lowercased, empty ones ignored. `*`
  bypasses everything; `1.2.3.4`, `::1`, `[::1]:443`, `1.2.3.4:3080` match that address (and
  port); `10.0.0.0/8`, `fd00::/8` match the addresses inside; `example.com` matches it and its
  subdomains, `.example.com` and `*.example.com` only its subdomains; `host:port` narrows a name
  to one port. Names never match an IP literal and addresses never match a name (no DNS).

As in Go, `localhost` and loopback addresses are never proxied, whatever the variables say: a
single-host cluster's own calls (auth on 127.0.0.1:3025, `tsh --proxy=localhost:3080`) must not
go to a corporate proxy from the shell's `HTTPS_PROXY`. Go's test is exact: the name
`localhost` as written (not `LOCALHOST`, `localhost.` or `a.localhost`), and an IP literal in
127.0.0.0/8, `::1` or `::ffff:127.x.x.x` (not one with a `%zone`). For such a target the proxy
variables are not even parsed, so a bad value cannot break a local call.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from teleport.errors import BadParameter

#: (uppercase, lowercase) names, uppercase first as Go reads them.
HTTPS_PROXY = ("HTTPS_PROXY", "https_proxy")
HTTP_PROXY = ("HTTP_PROXY", "http_proxy")
NO_PROXY = ("NO_PROXY", "no_proxy")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class ProxyURL:
    """An HTTP proxy to send CONNECT to. `str()` never shows the password."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: The variable it came from, for messages ("HTTPS_PROXY").
    source: str = field(default="", compare=False)

    @property
    def netloc(self) -> str:
        """`host:port`, with brackets around an IPv6 address."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The proxy's URL without credentials (aiohttp takes those apart)."""
        return f"http://{self.netloc}"

    def __str__(self) -> str:
        return self.url


def getenv_any(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str]:
    """Return (name, value) of the first of `names` set to a non-empty value, else ("", "")."""
    for name in names:
        value = env.get(name, "")
        if value:
            return name, value
    return "", ""


def parse_proxy(value: str, source: str = "proxy") -> ProxyURL:
    """Parse a proxy variable's value; `host:port` means `http://host:port`."""
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise BadParameter(f"{source}={_safe(value)!r}: {err}") from None
    if parts.scheme.lower() != "http":
        raise BadParameter(f"{source}={_safe(value)!r}: only http:// proxies are supported "
                           f"(HTTP CONNECT)")
    if not parts.hostname:
        raise BadParameter(f"{source}={_safe(value)!r}: no proxy host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadParameter(f"{source}={_safe(value)!r}: a proxy is host:port, not a path")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return ProxyURL(parts.hostname, port or 80, username, password, source)


def _safe(value: str) -> str:
    """Hide the password of a proxy value quoted in an error."""
    head, sep, tail = value.rpartition("@")
    if not sep:
        return value
    scheme, _, userinfo = head.rpartition("://")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}" if scheme else f"{user}:***@{tail}"


def proxy_for(host: str, port: int, env: Mapping[str, str] | None = None, *,
              dial: bool = False) -> ProxyURL | None:
    """Return the proxy for a connection to host:port, or None to connect directly.

    dial: a raw TCP dial (SSH) rather than an HTTPS request, so `HTTP_PROXY` is the fallback.
    """
    if is_loopback(host):
        return None
    env = os.environ if env is None else env
    name, value = getenv_any(env, HTTPS_PROXY)
    if not value and dial:
        name, value = getenv_any(env, HTTP_PROXY)
    if not value:
        return None
    proxy = parse_proxy(value, name)
    if bypass(host, port, getenv_any(env, NO_PROXY)[1]):
        return None
    return proxy


def is_loopback(host: str) -> bool:
    """Whether host is one Go never proxies: exactly `localhost`, or a loopback IP literal."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if name == "localhost":
        return True
    if "%" in name:
        return False  # Go's net.ParseIP refuses a zone, so `::1%lo` is not an address to it
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # Go's IsLoopback looks at the IPv4 inside ::ffff:a.b.c.d
    return ip.is_loopback


def bypass(host: str, port: int, no_proxy: str) -> bool:
    """Whether NO_PROXY says host:port is reached directly."""
    target = host.strip().lower().strip("[]")
    ip = _ip(target)
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if entry and _matches(entry, target, ip, str(port)):
            return True
    return False


def _matches(entry: str, target: str, ip: IPAddress | None, port: str) -> bool:
    if entry == "*":
        return True
    if "/" in entry:
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False  # Go ignores what it cannot parse
        return ip is not None and ip.version == net.version and ip in net
    name, want_port = _split_host_port(entry)
    if not name:
        return False
    if want_port and want_port != port:
        return False
    entry_ip = _ip(name)
    if entry_ip is not None:
        return ip == entry_ip
    if ip is not None:
        return False
    if name.startswith("*."):
        name = name[1:]
    if name.startswith("."):
        return target.endswith(name)
    return target == name or target.endswith("." + name)


def _split_host_port(entry: str) -> tuple[str, str]:
    """Split `host:port`, `[v6]:port`, `[v6]`; a bare IPv6 address has no port."""
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0:
            return "", ""
        rest = entry[end + 1:]
        return entry[1:end], rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        name, port = entry.split(":")
        return name, port
    return entry, ""


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


__all__ = ["HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ProxyURL", "bypass", "getenv_any",
           "is_loopback", "parse_proxy", "proxy_for"]
