"""`ssh_service.pam` (issue 11, item 5): enabled and service_name load and reach the node's config."""

from __future__ import annotations

import pytest

from teleport.config import StartFlags, make_config, parse_file_config
from tests.unit.config.errors import error_of


def test_pam_is_off_with_sshd_service_by_default() -> None:
    pam = make_config(parse_file_config("ssh_service:\n  enabled: yes\n"), StartFlags()).ssh.pam
    assert (pam.enabled, pam.service_name) == (False, "sshd")


@pytest.mark.parametrize("text, enabled, service", [
    ("ssh_service:\n  pam:\n    enabled: yes\n", True, "sshd"),
    ('ssh_service:\n  pam:\n    enabled: "true"\n    service_name: teleport\n', True, "teleport"),
    ("ssh_service:\n  pam:\n    enabled: no\n    service_name: my-svc.d_1\n", False, "my-svc.d_1"),
    ("ssh_service:\n  pam:\n    enabled: yes\n    use_pam_auth: no\n", True, "sshd"),
])
def test_pam_settings_reach_the_node_config(text: str, enabled: bool, service: str) -> None:
    pam = make_config(parse_file_config(text), StartFlags()).ssh.pam
    assert (pam.enabled, pam.service_name) == (enabled, service)


@pytest.mark.parametrize("text, line, key, says", [
    ("ssh_service:\n  pam:\n    enabled: maybe\n", 3, "ssh_service.pam.enabled", "yes/no"),
    ("ssh_service:\n  pam:\n    service_name: ../shadow\n", 3, "ssh_service.pam.service_name",
     "not a PAM service name"),
    ("ssh_service:\n  pam:\n    service_name: ''\n", 3, "ssh_service.pam.service_name",
     "not a PAM service name"),
    ("ssh_service:\n  pam:\n    service_name: two words\n", 3, "ssh_service.pam.service_name",
     "not a PAM service name"),
    ("ssh_service:\n  pam:\n    use_pam_auth: yes\n", 3, "ssh_service.pam.use_pam_auth",
     "is not supported yet"),
    ("ssh_service:\n  pam:\n    envirnoment: {A: b}\n", 3, "ssh_service.pam.envirnoment", ""),
])
def test_bad_pam_settings_are_one_line_errors(text: str, line: int, key: str, says: str) -> None:
    message = error_of(text)
    assert message.startswith(f"teleport.yaml:{line}: {key}: ")
    assert says in message

