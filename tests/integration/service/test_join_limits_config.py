"""`auth_service.join_limits` reaches the auth API of a real process on 3025."""

from __future__ import annotations

from pathlib import Path

import pytest

from teleport.auth.join import JoinResult, join
from teleport.config import StartFlags, load_config
from teleport.errors import AccessDenied, LimitExceeded
from teleport.service.process import TeleportProcess
from teleport.utils.addr import HostPort

TOKEN = "fleet-token-2"
FAILURES = 2  # the default is 10: a third refusal proves the file's value is used


async def _join(port: int, token: str, n: int) -> JoinResult:
    return await join([HostPort("127.0.0.1", port)], token=token, role="Node",
                      host_uuid=f"host-{n}", nodename=f"node-{n}", addresses=[], ca_pins=[],
                      warn=lambda _: None)


async def test_the_configured_failure_budget_is_the_one_enforced(tmp_path: Path) -> None:
    path = tmp_path / "teleport.yaml"
    path.write_text(f"""\
teleport:
  nodename: limits
  data_dir: {tmp_path / "data"}
  connection_limits:
    rates: []
auth_service:
  enabled: yes
  cluster_name: limits.example
  listen_addr: 127.0.0.1:0
  tokens: ["node:{TOKEN}"]
  join_limits:
    failed_per_source: {{period: 1h, average: 1, burst: {FAILURES}}}
ssh_service:
  enabled: no
proxy_service:
  enabled: no
""")
    async with TeleportProcess(load_config(StartFlags(config_path=str(path)))) as process:
        port = process.ports["auth"]
        for n in range(5 * FAILURES):  # valid tokens spend nothing of the budget
            await _join(port, TOKEN, n)
        for n in range(FAILURES):
            with pytest.raises(AccessDenied):
                await _join(port, f"guess-{n}", 100 + n)
        with pytest.raises(LimitExceeded):
            await _join(port, "guess-last", 200)
        with pytest.raises(LimitExceeded):
            await _join(port, TOKEN, 201)
