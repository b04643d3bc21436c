"""A background loop of a real in-process daemon that raises is logged, reported and restarted."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from teleport.auth.client import AuthClient
from teleport.auth.identity_file import IdentityFile
from teleport.config import StartFlags, load_config
from teleport.service import process as process_module
from teleport.service.process import TeleportProcess
from teleport.utils.addr import HostPort

NODENAME = "supervised"


def _config(tmp_path: Path) -> Any:
    path = tmp_path / "teleport.yaml"
    path.write_text(f"""\
teleport:
  nodename: {NODENAME}
  data_dir: {tmp_path / "data"}
  diag_addr: 127.0.0.1:0
auth_service:
  enabled: yes
  cluster_name: supervised.example
  listen_addr: 127.0.0.1:0
ssh_service:
  enabled: yes
  listen_addr: 127.0.0.1:0
proxy_service:
  enabled: no
""")
    return load_config(StartFlags(config_path=str(path)))


async def _readyz(session: aiohttp.ClientSession, port: int) -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
        return response.status, (await response.json()).get("reason", "")


async def test_a_crashing_heartbeat_degrades_readyz_and_the_node_comes_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real_heartbeat = process_module.heartbeat_forever
    calls = 0

    async def failing_heartbeat(*args: Any, **kwargs: Any) -> None:
        # Not a TeleportError: before the supervisor this ended the task without a word.
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError(f"injected heartbeat failure {calls}")
        await real_heartbeat(*args, **kwargs)

    monkeypatch.setattr(process_module, "heartbeat_forever", failing_heartbeat)
    caplog.set_level(logging.ERROR, "teleport.supervisor")
    process = TeleportProcess(_config(tmp_path))
    # Shorter than production (1 s, 10 s) so the test is quick; the mechanism is the same.
    process.supervisor.initial = 0.6
    process.supervisor.healthy_after = 0.5
    async with process, aiohttp.ClientSession() as http:
        admin = AuthClient.from_identity(IdentityFile.load(tmp_path / "data", "Admin"),
                                         [HostPort("127.0.0.1", process.ports["auth"])])
        try:
            reasons = []
            async with asyncio.timeout(30):
                while not any("injected heartbeat failure 2" in r for r in reasons):
                    status, reason = await _readyz(http, process.ports["diag"])
                    if status == 503:
                        reasons.append(reason)
                    await asyncio.sleep(0.02)
            degraded = next(r for r in reasons if "injected" in r)
            assert "node-heartbeat: task failed (RuntimeError: injected heartbeat failure" in degraded
            assert "node-heartbeat (failed" in process.diagnostics()

            async with asyncio.timeout(30):
                while not [s for s in await admin.list_servers("node")  # noqa: ASYNC110 - polls as tctl would
                           if s.spec.hostname == NODENAME]:
                    await asyncio.sleep(0.05)
                while (await _readyz(http, process.ports["diag"]))[0] != 200:  # noqa: ASYNC110 - polls /readyz
                    await asyncio.sleep(0.05)
        finally:
            await admin.close()
    assert calls == 3
    failures = [r for r in caplog.records if "node-heartbeat failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)
    assert "Traceback" in caplog.text and "injected heartbeat failure 1" in caplog.text


async def test_close_leaves_no_task_of_the_process_running(tmp_path: Path) -> None:
    before = asyncio.all_tasks()
    async with TeleportProcess(_config(tmp_path)) as process:
        assert "node-heartbeat" in process.supervisor.names()
        assert "supervised: auth-heartbeat" in process.diagnostics()
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() - before if not t.done()} == set()
