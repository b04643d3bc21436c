"""Every key teleport.yaml accepts is honoured, or refused at load naming the key (issue 10, item 6).

A security setting that is parsed and silently ignored is a vulnerability, so each feature not
built yet fails the load with one line `file:line: key.path: ... is not supported yet`.
"""

from __future__ import annotations

import pytest

from teleport.config import parse_file_config, sample_config
from teleport.config.modes import SessionRecording, parse_mode, records_at, streams
from tests.unit.config.errors import error_of

UNSUPPORTED = [
    ("auth_service:\n  authentication:\n    type: saml\n", 3, "auth_service.authentication.type"),
    ("auth_service:\n  license_file: /var/lib/teleport/license.pem\n", 2,
     "auth_service.license_file"),
    ("auth_service:\n  keep_alive_interval: 1m\n", 2, "auth_service.keep_alive_interval"),
    ("auth_service:\n  keep_alive_count_max: 5\n", 2, "auth_service.keep_alive_count_max"),
    ("ssh_service:\n  pam:\n    use_pam_auth: yes\n", 3, "ssh_service.pam.use_pam_auth"),
    ("proxy_service:\n  kubernetes:\n    enabled: yes\n    listen_addr: 0.0.0.0:3026\n", 2,
     "proxy_service.kubernetes"),
    ("teleport:\n  cache:\n    type: sqlite\n", 3, "teleport.cache.type"),
    ("teleport:\n  storage:\n    type: firestore\n", 3, "teleport.storage.type"),
    ("teleport:\n  storage:\n    project_id: p\n", 3, "teleport.storage.project_id"),
]


@pytest.mark.parametrize("text, line, key", UNSUPPORTED, ids=[k for _, _, k in UNSUPPORTED])
def test_unsupported_key_is_refused_with_one_line(text: str, line: int, key: str) -> None:
    message = error_of(text)
    assert message.startswith(f"teleport.yaml:{line}: {key}: ")
    assert "is not supported yet" in message


@pytest.mark.parametrize("text", [
    "proxy_service:\n  tunnel_listen_addr: 0.0.0.0:3024\n",
    "proxy_service:\n  kubernetes:\n    enabled: no\n",
    "ssh_service:\n  pam:\n    enabled: no\n",
    "auth_service:\n  keep_alive_interval: 5m0s\n  keep_alive_count_max: 3\n",
    "auth_service:\n  authentication:\n    type: local\n    second_factor: 'off'\n",
    "teleport:\n  storage:\n    type: sqlite\n  cache:\n    type: in-memory\n",
    # DynamoDB (issue 19); region goes with every type, as the audit URIs' default region
    "teleport:\n  storage:\n    type: dynamodb\n    table_name: teleport\n",
    "teleport:\n  storage:\n    region: us-east-1\n",
    "auth_service:\n  disconnect_expired_cert: yes\n  client_idle_timeout: 5m\n",
    "auth_service:\n  authentication:\n    type: github\n",
    "auth_service:\n  authentication:\n    type: oidc\n    connector_name: corp\n",
    # second factors (issue 15): u2f is WebAuthn, on/optional offer OTP and keys
    "auth_service:\n  authentication:\n    second_factor: u2f\n    u2f:\n"
    "      app_id: https://localhost:3080\n      facets: [https://localhost:3080]\n",
    "auth_service:\n  authentication:\n    second_factor: 'on'\n",
    "auth_service:\n  authentication:\n    second_factor: optional\n",
    "auth_service:\n  authentication:\n    u2f:\n      app_id: https://localhost:3080\n",
    "auth_service:\n  authentication:\n    second_factor: webauthn\n    webauthn:\n"
    "      rp_id: teleport.example.com\n    passwordless: no\n",
])
def test_what_is_done_anyway_still_loads(text: str) -> None:
    parse_file_config(text, "teleport.yaml")


@pytest.mark.parametrize("mode", [m.value for m in SessionRecording])
def test_every_recording_mode_loads(mode: str) -> None:
    config = parse_file_config(f"auth_service:\n  session_recording: {mode}\n")
    assert config.auth_service.session_recording == SessionRecording(mode)


@pytest.mark.parametrize("text, line, key, placeholder", [
    ("teleport:\n  nodename: NODE_NAME\n", 2, "teleport.nodename", "NODE_NAME"),
    ("teleport:\n  auth_token: xxxx-token-xxxx\n", 2, "teleport.auth_token", "xxxx-token-xxxx"),
    ('teleport:\n  ca_pin: "sha256:ca-pin-hash-goes-here"\n', 2, "teleport.ca_pin",
     "ca-pin-hash-goes-here"),
    ("auth_service:\n  tokens:\n  - proxy,node:xxxx-token-xxxx\n", 3, "auth_service.tokens[0]",
     "xxxx-token-xxxx"),
    ("proxy_service:\n  public_addr: TELEPORT_PUBLIC_DNS_NAME:3080\n", 2,
     "proxy_service.public_addr", "TELEPORT_PUBLIC_DNS_NAME"),
])
def test_sample_placeholders_are_refused(text: str, line: int, key: str, placeholder: str) -> None:
    message = error_of(text)
    assert message.startswith(f"teleport.yaml:{line}: {key}: {placeholder} is a placeholder")
    assert "replace it with" in message


def test_teleport_configure_output_loads_as_it_is() -> None:
    # its placeholders sit in comments, and its tunnel_listen_addr is the default
    parse_file_config(sample_config(), "sample")


def test_recording_modes_have_one_answer_each() -> None:
    assert [records_at(m) for m in SessionRecording] == ["node", "proxy", None, "node", "proxy"]
    assert [streams(m) for m in SessionRecording] == [False, False, False, True, True]
    assert parse_mode("proxy-sync") is SessionRecording.PROXY_SYNC
    assert parse_mode("from-the-future") is SessionRecording.NODE
    assert parse_mode(None) is SessionRecording.NODE
