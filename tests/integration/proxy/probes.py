"""What the multiplexer tests share: how long a port takes to hang up on a peer."""

from __future__ import annotations

import asyncio
import contextlib


async def closed_after(port: int, send: bytes) -> float:
    """Connect, send, and return how long the multiplexer took to close the connection."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = loop.time()
    if send:
        writer.write(send)
        await writer.drain()
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(100), 5) == b""
    writer.close()
    return loop.time() - start
