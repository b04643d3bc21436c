"""`host:port` parsing with default ports, IPv6 in brackets."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from teleport.errors import BadParameter


class HostPort(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_addr(text: str, default_port: int | None = None) -> HostPort:
    """Parse `host`, `host:port` or `[v6]:port`; the port falls back to default_port."""
    s = text.strip()
    for scheme in ("https://", "http://", "tcp://"):
        if s.startswith(scheme):
            s = s[len(scheme):].rstrip("/")
    if not s:
        raise BadParameter("empty address")
    host, port_text = s, ""
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise BadParameter(f"invalid address {text!r}: missing ']'")
        host, rest = s[1:end], s[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise BadParameter(f"invalid address {text!r}")
            port_text = rest[1:]
    elif s.count(":") == 1:
        host, port_text = s.split(":")
    if port_text:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise BadParameter(f"invalid port in address {text!r}")
        return HostPort(host or "0.0.0.0", int(port_text))
    if default_port is None:
        raise BadParameter(f"address {text!r} needs a port")
    return HostPort(host, default_port)


def is_ip(text: str) -> bool:
    """Tell an IP literal from a DNS name (certificates keep them in different SAN kinds)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
