"""A host's event keeps the time it happened if it arrives late, within bounds (real auth API).

Nodes and proxies spool events while the auth server is away (teleport.events.buffered); the
auth server keeps the host's `time` when it lies in [now - HOST_TIME_MAX_AGE, now + a minute's
skew] and stamps its own otherwise, so a host cannot file events far in the past or future.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.events import emitter as ev
from teleport.events.emitter import HOST_TIME_MAX_AGE, TIME_FORMAT, MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[AuthClient, MemoryEmitter, FakeClock]]:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc))
    audit = MemoryEmitter()
    auth = AuthServer(MemoryBackend(clock), audit, clock, AuthSettings(
        cluster_name="time.test", recordings_dir=tmp_path / "sessions"))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    tls_key = tlskeys.generate_tls_key()
    certs = await auth.certs.issue_host_certs(
        host_uuid="node-a", nodename="node-a", system_role="Node",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
    ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                       [c.encode() for c in certs.tls_ca_certs])
    try:
        async with AuthClient([addr], ctx, timeout=10, cluster=auth.cluster_name) as client:
            yield client, audit, clock
    finally:
        await runner.cleanup()


async def test_a_late_event_keeps_its_time_a_forged_one_gets_the_servers(
        node: tuple[AuthClient, MemoryEmitter, FakeClock]) -> None:
    client, audit, clock = node
    now = clock.now()
    cases = {
        "spooled an hour": now - timedelta(hours=1),
        "spooled almost the limit": now - HOST_TIME_MAX_AGE + timedelta(minutes=1),
        "clock a little ahead": now + timedelta(seconds=30),
        "past the limit": now - HOST_TIME_MAX_AGE - timedelta(minutes=1),
        "in the future": now + timedelta(hours=1),
    }
    for name, when in cases.items():
        await client.emit({"event": ev.EXEC, "command": name, "time": when.strftime(TIME_FORMAT)})
    await client.emit({"event": ev.EXEC, "command": "not a time", "time": "yesterday"})
    stored = {e["command"]: e["time"] for e in audit.of_type(ev.EXEC)}
    server_now = now.strftime(TIME_FORMAT)
    for kept in ("spooled an hour", "spooled almost the limit", "clock a little ahead"):
        assert stored[kept] == cases[kept].strftime(TIME_FORMAT), kept
    for forged in ("past the limit", "in the future", "not a time"):
        assert stored[forged] == server_now, forged
