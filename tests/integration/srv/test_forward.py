"""Local port forwarding (`-L`, direct-tcpip) from the node, gated by the certificate."""

from __future__ import annotations

import asyncio
import shlex

import asyncssh
import pytest

from teleport.events.emitter import PORT_FORWARD, MemoryEmitter
from teleport.srv import NodeServer
from tests.integration.srv.sshenv import Trust, peak_rss_while, run

SIZE = 200 * 1024 * 1024
MAX_GROWTH = 64 * 1024 * 1024


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


async def test_forward_to_slow_destination_stays_bounded(trust: Trust, node: NodeServer) -> None:
    """asyncssh's own forwarder held 107 MiB of a 400 MiB stream here; ours a few MiB."""
    received = 0

    async def slow_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await asyncio.sleep(1)
        while data := await reader.read(65536):
            received += len(data)
        writer.close()

    sink = await asyncio.start_server(slow_sink, "127.0.0.1", 0)
    try:
        argv = trust.ssh(trust.user(["root"]), node.port, "root")
        argv[-1:-1] = ["-W", f"127.0.0.1:{sink.sockets[0].getsockname()[1]}"]
        (rc, _, err), growth = await peak_rss_while(
            run(["sh", "-c", f"head -c {SIZE} /dev/zero | {shlex.join(argv)}"]))
    finally:
        sink.close()
        await sink.wait_closed()
    assert rc == 0 and received == SIZE, err
    assert growth < MAX_GROWTH, f"node RSS grew by {growth >> 20} MiB"
