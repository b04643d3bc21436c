"""`second_factor` and its WebAuthn keys: u2f mapped to WebAuthn, refusals naming the key."""

from __future__ import annotations

import pytest

from teleport.config import make_config, parse_file_config
from teleport.config.runtime import StartFlags
from teleport.config.secondfactor import origin_matches_rp_id
from teleport.errors import BadParameter


def _auth(text: str) -> str:
    return "auth_service:\n  authentication:\n" + text


def _error(text: str) -> str:
    with pytest.raises(BadParameter) as info:
        parse_file_config(_auth(text), "teleport.yaml")
    assert "\n" not in str(info.value)
    return str(info.value)


def test_the_manuals_u2f_config_is_webauthn() -> None:
    text = _auth("    type: local\n    second_factor: u2f\n    u2f:\n"
                 "       app_id: https://localhost:3080\n       facets:\n"
                 "       - https://localhost:3080\n")
    mfa = make_config(parse_file_config(text, "teleport.yaml"), StartFlags()).auth.mfa
    assert (mfa.second_factor, mfa.rp_id, mfa.origins, mfa.passwordless) == \
        ("webauthn", "localhost", ("https://localhost:3080",), True)
    config = make_config(parse_file_config(text, "teleport.yaml"), StartFlags())
    assert config.auth.second_factor == "webauthn"


def test_webauthn_rp_id_and_passwordless() -> None:
    mfa = parse_file_config(_auth("    second_factor: 'on'\n    webauthn:\n      rp_id: Example.COM\n"
                                  "    passwordless: false\n")).auth_service.authentication.resolved()
    assert (mfa.second_factor, mfa.rp_id, mfa.origins, mfa.passwordless) == \
        ("on", "example.com", (), False)
    # on/optional without an RP ID: OTP only, no keys, no passwordless
    mfa = parse_file_config(_auth("    second_factor: optional\n")).auth_service.authentication.resolved()
    assert (mfa.rp_id, mfa.webauthn, mfa.passwordless) == ("", False, False)


@pytest.mark.parametrize(("text", "words"), [
    ("    second_factor: webauthn\n", "needs webauthn.rp_id"),
    ("    second_factor: u2f\n", "needs webauthn.rp_id (the proxy's DNS name) or u2f.app_id"),
    ("    second_factor: webauthn\n    webauthn:\n      rp_id: 10.0.0.1\n", "an IP address"),
    ("    second_factor: webauthn\n    webauthn:\n      rp_id: 'a b'\n", "webauthn.rp_id 'a b'"),
    ("    second_factor: u2f\n    u2f:\n      app_id: http://localhost:3080\n", "https://"),
    ("    second_factor: webauthn\n    u2f:\n      app_id: https://a.example.com\n"
     "    webauthn:\n      rp_id: b.example.com\n", "differs from the u2f.app_id's host"),
    ("    second_factor: otp\n    passwordless: yes\n", "passwordless needs WebAuthn"),
    ("    second_factor: webauthn\n    webauthn:\n      rp_id: x.example.com\n      origins: [y]\n",
     "origins"),
    ("    second_factor: yubikey\n", "second_factor"),
])
def test_refusals_are_one_line_naming_the_key(text: str, words: str) -> None:
    message = _error(text)
    assert message.startswith("teleport.yaml:"), message
    assert words in message


def test_origins_without_facets_are_the_rp_ids_host_over_https() -> None:
    assert origin_matches_rp_id("https://localhost:3080", "localhost")
    assert origin_matches_rp_id("https://proxy.example.com", "example.com")
    assert not origin_matches_rp_id("http://localhost:3080", "localhost")
    assert not origin_matches_rp_id("https://evilexample.com", "example.com")
    assert not origin_matches_rp_id("https://example.com.evil.org", "example.com")
    assert not origin_matches_rp_id("https://localhost:port", "localhost")
