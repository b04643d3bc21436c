"""Which exec commands are scp transfers, and in which direction."""

from __future__ import annotations

import pytest

from teleport.srv.scp import ScpRequest, parse_scp


@pytest.mark.parametrize("command, expected", [
    ("scp -t /tmp/upload.bin", ScpRequest("write", "/tmp/upload.bin")),
    ("scp -f /etc/hostname", ScpRequest("read", "/etc/hostname")),
    ("/usr/bin/scp -v -r -t -- '/tmp/with space'", ScpRequest("write", "/tmp/with space")),
    ("scp -pf ~/file", ScpRequest("read", "~/file")),
])
def test_scp_commands(command: str, expected: ScpRequest) -> None:
    assert parse_scp(command) == expected


@pytest.mark.parametrize("command", ["ls -t /tmp", "scp /a /b", "scp -t -f x", "scp -t", "scp 'unclosed",
                                     "notscp -t x", ""])
def test_other_commands_are_not_scp(command: str) -> None:
    assert parse_scp(command) is None
