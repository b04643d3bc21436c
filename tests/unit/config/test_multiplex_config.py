"""`tunnel_listen_addr` loads anywhere: its own listener, or `web_listen_addr` (multiplexing)."""

from __future__ import annotations

import pytest

from teleport.config import parse_file_config


def test_tunnel_on_the_web_address_loads() -> None:
    config = parse_file_config("proxy_service:\n  web_listen_addr: 0.0.0.0:443\n"
                               "  tunnel_listen_addr: 0.0.0.0:443\n", "teleport.yaml")
    assert config.proxy_service.tunnel_listen_addr == config.proxy_service.web_listen_addr


def test_tunnel_on_the_default_web_address_loads() -> None:
    parse_file_config("proxy_service:\n  tunnel_listen_addr: 0.0.0.0:3080\n", "teleport.yaml")


@pytest.mark.parametrize("addr", ["127.0.0.1:3024", "0.0.0.0:3081", "127.0.0.1:3080"])
def test_a_tunnel_listener_of_its_own_loads(addr: str) -> None:
    config = parse_file_config(f"proxy_service:\n  tunnel_listen_addr: {addr}\n", "teleport.yaml")
    assert str(config.proxy_service.tunnel_listen_addr) == addr
