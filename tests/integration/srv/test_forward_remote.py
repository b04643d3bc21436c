"""Remote port forwarding (`-R`) and the forwarded agent's socket on the node."""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
from pathlib import Path

import asyncssh
import pytest

from teleport.events.emitter import PORT_FORWARD, MemoryEmitter
from teleport.srv import NodeServer
from tests.integration.srv.sshenv import Trust


async def test_remote_listener_is_loopback_only(trust: Trust, node: NodeServer,
                                                emitter: MemoryEmitter, echo_port: int) -> None:
    alice = trust.user(["root"])
    async with await trust.connect(alice, node.port, "root") as conn:
        # Asked for every interface, the node listens on loopback only (GatewayPorts no).
        listener = await conn.forward_remote_port("0.0.0.0", 0, "127.0.0.1", echo_port)
        port = listener.get_port()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"back to the client")
        assert await reader.readexactly(18) == b"back to the client"
        writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.2", port)
    event, = emitter.of_type(PORT_FORWARD)
    assert event["addr"] == f"127.0.0.1:{port}" and event["success"] is True
    assert event["user"] == "alice" and event["login"] == "root"


async def test_privileged_port_only_for_root(trust: Trust, node: NodeServer,
                                             emitter: MemoryEmitter, echo_port: int) -> None:
    creds = trust.user(["nobody"])
    async with await trust.connect(creds, node.port, "nobody") as conn:
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("localhost", 80, "127.0.0.1", echo_port)
    event, = emitter.of_type(PORT_FORWARD)
    assert event["success"] is False and event["addr"] == "localhost:80"
    assert event["error"] == "only root may listen on port 80 (below 1024)"


async def test_remote_forward_refused_without_permission(trust: Trust, node: NodeServer,
                                                         emitter: MemoryEmitter) -> None:
    alice = trust.user(["root"], port_forwarding=False)
    async with await trust.connect(alice, node.port, "root") as conn:
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("localhost", 0, "127.0.0.1", 9)
        with pytest.raises(asyncssh.ChannelOpenError, match="not permitted"):
            await conn.open_connection("127.0.0.1", 9)
    await asyncio.sleep(0.1)  # the -L refusal is audited in the background
    events = emitter.of_type(PORT_FORWARD)
    assert [(e["addr"], e["success"]) for e in events] == [("localhost:0", False),
                                                          ("127.0.0.1:9", False)]


async def test_agent_socket_belongs_to_the_login(trust: Trust, node: NodeServer,
                                                 tmp_path: Path) -> None:
    """Made for `nobody`: its directory and socket are nobody's and private, and go at the end."""
    agent_sock = str(tmp_path / "agent")
    agent = await asyncio.create_subprocess_exec("ssh-agent", "-D", "-a", agent_sock,
                                                 stdout=asyncio.subprocess.DEVNULL,
                                                 stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(agent_sock):
                break
            await asyncio.sleep(0.05)
        creds = trust.user(["nobody"])
        async with await trust.connect(creds, node.port, "nobody",
                                       agent_forwarding=agent_sock) as conn:
            await conn.run("true")  # nobody has no shell; the agent request comes first
            path, = [c.forwarding.agent_path for c in node.connections]
            assert path is not None
            nobody = pwd.getpwnam("nobody").pw_uid
            directory = os.stat(os.path.dirname(path))
            sock = os.stat(path)
            assert (directory.st_uid, stat.S_IMODE(directory.st_mode)) == (nobody, 0o700)
            assert (sock.st_uid, stat.S_IMODE(sock.st_mode)) == (nobody, 0o600)
            assert stat.S_ISSOCK(sock.st_mode)
        for _ in range(100):
            if not os.path.exists(os.path.dirname(path)):
                break
            await asyncio.sleep(0.05)
        assert not os.path.exists(os.path.dirname(path))
    finally:
        agent.terminate()
        await agent.wait()
