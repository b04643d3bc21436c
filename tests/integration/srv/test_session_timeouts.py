"""`disconnect_expired_cert` and `client_idle_timeout` end live sessions on a real node, audited.

A real node on loopback with an injected clock: moving the clock past the certificate's expiry
or the idle limit must cut a running session within a couple of monitor checks, and record a
`client.disconnect` event with the reason. Without the setting, the same session lives on.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import asyncssh
import pytest

from teleport.events.emitter import CLIENT_DISCONNECT, MemoryEmitter
from teleport.srv import NodeServer
from teleport.sshutils.monitor import CHECK_SECONDS, SessionPolicy
from teleport.utils.clock import FakeClock
from tests.integration.srv.sshenv import CLUSTER, NODENAME, Trust

#: Long enough for the monitor to have looked a few times.
SETTLE = CHECK_SECONDS * 3
CUT_WITHIN = 5.0


def _me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(timezone.utc))


@pytest.fixture
async def node(trust: Trust, emitter: MemoryEmitter, clock: FakeClock) -> AsyncIterator[NodeServer]:
    key, cert, host_uuid = trust.host_identity(NODENAME)
    async with NodeServer(host_private_key=key, host_cert=cert, trusted_user_cas=trust.user_cas,
                          cluster_name=CLUSTER, server_id=host_uuid, nodename=NODENAME,
                          labels=dict, emitter=emitter, proxy_addr=lambda: "",
                          clock=clock) as server:
        await server.start("127.0.0.1", 0)
        yield server


async def _session(trust: Trust, node: NodeServer, command: str,
                   valid_for: timedelta = timedelta(hours=1),
                   ) -> tuple[asyncssh.SSHClientConnection, asyncssh.SSHClientProcess[str]]:
    conn = await trust.connect(trust.user([_me()], valid_for=valid_for), node.port, _me())
    return conn, await conn.create_process(command)


async def _cut(conn: asyncssh.SSHClientConnection) -> None:
    await asyncio.wait_for(conn.wait_closed(), CUT_WITHIN)


async def _still_open(proc: asyncssh.SSHClientProcess[str]) -> None:
    proc.stdin.write("ping\n")
    assert await asyncio.wait_for(proc.stdout.readline(), CUT_WITHIN) == "ping\n"


async def test_expired_certificate_cuts_the_session_and_is_audited(
        trust: Trust, node: NodeServer, emitter: MemoryEmitter, clock: FakeClock) -> None:
    node.policy = lambda: SessionPolicy(disconnect_expired_cert=True)
    conn, proc = await _session(trust, node, "cat", valid_for=timedelta(minutes=1))
    await _still_open(proc)
    clock.advance(timedelta(minutes=1, seconds=1))
    await _cut(conn)
    [event] = emitter.of_type(CLIENT_DISCONNECT)
    assert event["user"] == "alice" and event["login"] == _me()
    assert event["reason"].startswith("client certificate expired at ")


async def test_without_the_setting_an_expired_certificate_keeps_its_session(
        trust: Trust, node: NodeServer, emitter: MemoryEmitter, clock: FakeClock) -> None:
    conn, proc = await _session(trust, node, "cat", valid_for=timedelta(minutes=1))
    clock.advance(timedelta(minutes=5))
    await asyncio.sleep(SETTLE)
    await _still_open(proc)
    assert emitter.of_type(CLIENT_DISCONNECT) == []
    conn.close()


async def test_idle_session_is_closed_and_audited(
        trust: Trust, node: NodeServer, emitter: MemoryEmitter, clock: FakeClock) -> None:
    node.policy = lambda: SessionPolicy(client_idle_timeout=timedelta(minutes=1))
    conn, proc = await _session(trust, node, "cat")
    # Input keeps it alive: 50 s, a keystroke, 50 s more is never a minute of silence.
    clock.advance(timedelta(seconds=50))
    await _still_open(proc)
    clock.advance(timedelta(seconds=50))
    await asyncio.sleep(SETTLE)
    await _still_open(proc)
    assert emitter.of_type(CLIENT_DISCONNECT) == []
    clock.advance(timedelta(seconds=61))
    await _cut(conn)
    [event] = emitter.of_type(CLIENT_DISCONNECT)
    assert event["user"] == "alice"
    assert event["reason"] == "client is idle for 1m1s, exceeded idle timeout of 1m0s"
