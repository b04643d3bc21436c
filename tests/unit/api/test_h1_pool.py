"""The HTTP client's pool lets go of idle connections after a burst, without another request.

`_take` reuses the newest kept-alive connection, so after a burst of parallel requests (a node's
sessions ending together, each with its audit and unlisting calls) the older ones were kept open
for good: ~0.5 MiB of TLS buffers each, counting both ends (issue 20: node RSS that never came
back down after 61 sessions closed).
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from teleport.api import h1

BURST = 6


async def test_idle_connections_are_closed_after_idle_seconds(
        tls: tuple[ssl.SSLContext, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h1, "IDLE_SECONDS", 0.3)
    open_conns = 0
    all_open, release = asyncio.Event(), asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_conns
        open_conns += 1
        if open_conns == BURST:
            all_open.set()
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                await release.wait()  # every request of the burst is in flight at once
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            open_conns -= 1
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls[0])
    port = server.sockets[0].getsockname()[1]
    pool = h1.Pool()
    dest = h1.Destination("127.0.0.1", port, tls[1], "localhost")
    timeouts = h1.Timeouts(total=10, connect=5, read=5)

    async def get() -> bytes:
        resp = await pool.request(dest, "GET", "/", headers=[], body=None, timeouts=timeouts)
        return await resp.read()

    try:
        burst = asyncio.gather(*(get() for _ in range(BURST)))
        await asyncio.wait_for(all_open.wait(), 10)
        release.set()
        assert await burst == [b"ok"] * BURST
        assert sum(map(len, pool._idle.values())) == BURST  # kept alive for the next requests
        await asyncio.sleep(1.0)  # no request comes: they are closed, both ends
        assert sum(map(len, pool._idle.values())) == 0
        assert open_conns == 0
    finally:
        pool.close()
        server.close()
        await server.wait_closed()
