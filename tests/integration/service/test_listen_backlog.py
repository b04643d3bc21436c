"""Every listening socket keeps the 1024-deep listen queue it was created with.

aiohttp's SockSite and asyncio's create_server(sock=...) call listen() again, with their own
backlog (128 for aiohttp) unless given ours; the queue that counts is the kernel's, read here
with `ss` (Send-Q of a listening socket is its backlog).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess

import pytest

from teleport.api.constants import LISTEN_BACKLOG
from teleport.auth import api as auth_api
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.events.emitter import MemoryEmitter
from teleport.service import diag
from teleport.service.health import Health
from teleport.service.listeners import Listeners
from teleport.service.process import TeleportProcess
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.service.conftest import LoopbackConfig

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")


def listen_backlog(port: int) -> int:
    """The kernel's listen queue size of the socket listening on 127.0.0.1:port."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out and out[0] == "LISTEN", f"nothing listens on {port}: {out}"
    return int(out[2])  # State Recv-Q Send-Q Local Peer


def _sock() -> socket.socket:
    return Listeners({}).get("test", HostPort("127.0.0.1", 0))


def test_a_plain_listener_asks_for_1024() -> None:
    sock = _sock()
    try:
        assert listen_backlog(sock.getsockname()[1]) == LISTEN_BACKLOG == 1024
    finally:
        sock.close()


async def test_diag_and_auth_api_keep_the_backlog_of_a_socket_they_are_handed() -> None:
    runner, port = await diag.serve(Health(), "127.0.0.1", 0, sock=_sock())
    try:
        assert listen_backlog(port) == LISTEN_BACKLOG
    finally:
        await runner.cleanup()
    # The auth API on its own socket (not behind the multiplexer): SockSite listens again.
    clock = FakeClock()
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name="backlog.test"))
    await auth.init()
    sock = _sock()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # no handshake happens here
    api_runner = await auth_api.serve(auth, ctx, "", 0, sock=sock)
    try:
        assert listen_backlog(sock.getsockname()[1]) == LISTEN_BACKLOG
    finally:
        await api_runner.cleanup()


async def test_every_listener_of_a_running_process_has_the_full_backlog(
        loopback: LoopbackConfig) -> None:
    async with TeleportProcess(loopback("backlog", "backlog.example", diag=True)) as process:
        ports = {name: port for name, port in process.ports.items() if port}
        assert {"auth", "diag", "node"} <= set(ports), ports
        assert {name: listen_backlog(port) for name, port in ports.items()} == {
            name: LISTEN_BACKLOG for name in ports}
