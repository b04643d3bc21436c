from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest
import uvloop

from teleport.events.emitter import MemoryEmitter
from teleport.srv import NodeServer
from tests.integration.srv.sshenv import Trust, make_node


def pytest_asyncio_loop_factories(config: pytest.Config,
                                  item: pytest.Item) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run every node test on both loops: the daemon uses uvloop, whose transports differ."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
def trust(tmp_path: Path) -> Trust:
    return Trust(tmp_path)


@pytest.fixture
def emitter() -> MemoryEmitter:
    return MemoryEmitter()


@pytest.fixture
async def node(trust: Trust, emitter: MemoryEmitter) -> AsyncIterator[NodeServer]:
    """A node on a free loopback port, closed when the test ends."""
    async with make_node(trust, emitter) as server:
        await server.start("127.0.0.1", 0)
        yield server


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
