"""The manual's `u2f` settings mapped to WebAuthn: the RP ID and the origins answers come from."""

from __future__ import annotations

import pytest

from teleport.auth.webauthn import origins_from_facets, rp_id_from_app_id
from teleport.errors import BadParameter


@pytest.mark.parametrize(("app_id", "rp_id"), [
    ("https://localhost:3080", "localhost"),  # the manual's example
    ("https://Proxy.Example.com:3080/", "proxy.example.com"),
    ("https://example.com/app-id.json", "example.com"),  # a multi-proxy app ID file
    ("example.com", "example.com"),  # "equal to the domain name of the proxy"
    ("example.com:3080", "example.com"),
])
def test_rp_id_is_the_app_ids_host(app_id: str, rp_id: str) -> None:
    assert rp_id_from_app_id(app_id) == rp_id


@pytest.mark.parametrize(("app_id", "message"), [
    ("", "is empty"),
    ("http://example.com", "must be an https:// URL"),
    ("https://127.0.0.1:3080", "an IP address cannot be a WebAuthn RP ID"),
    ("https://[::1]:3080", "an IP address cannot be a WebAuthn RP ID"),
    ("https://example.com:port", "is not a URL"),
    ("https://exa mple.com", "does not name a host"),
    ("https://", "does not name a host"),
])
def test_bad_app_ids_are_one_line(app_id: str, message: str) -> None:
    with pytest.raises(BadParameter, match=message) as err:
        rp_id_from_app_id(app_id)
    assert "\n" not in str(err.value)


def test_origins_are_the_facets_or_the_app_id() -> None:
    assert origins_from_facets("https://localhost:3080", ["https://localhost:3080"]) == \
        ["https://localhost:3080"]
    assert origins_from_facets("https://a.example.com:3080",
                               ["https://A.example.com:3080/", "https://b.example.com:3080"]) == \
        ["https://a.example.com:3080", "https://b.example.com:3080"]
    assert origins_from_facets("https://localhost:3080", []) == ["https://localhost:3080"]
    assert origins_from_facets("example.com", []) == ["https://example.com"]
    with pytest.raises(BadParameter, match="u2f.facets"):
        origins_from_facets("example.com", ["ftp://example.com"])
