"""Local port forwarding (`-L`, direct-tcpip) from the node, gated by the certificate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncssh
import pytest

from teleport.events.emitter import PORT_FORWARD, MemoryEmitter
from teleport.srv import NodeServer
from tests.integration.srv.sshenv import Trust


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A loopback TCP echo server."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_local_forward_to_echo_server(trust: Trust, node: NodeServer,
                                            emitter: MemoryEmitter, echo_port: int) -> None:
    alice = trust.user(["root"])
    async with await trust.connect(alice, node.port, "root") as conn:
        listener = await conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", echo_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.get_port())
        writer.write(b"ping through the node")
        assert await reader.readexactly(21) == b"ping through the node"
        writer.close()
        listener.close()
    event, = emitter.of_type(PORT_FORWARD)
    assert event["addr"] == f"127.0.0.1:{echo_port}" and event["user"] == "alice"


async def test_forward_refused_without_permission(trust: Trust, node: NodeServer,
                                                  echo_port: int) -> None:
    alice = trust.user(["root"], port_forwarding=False)
    async with await trust.connect(alice, node.port, "root") as conn:
        with pytest.raises(asyncssh.ChannelOpenError, match="not permitted"):
            await conn.open_connection("127.0.0.1", echo_port)
