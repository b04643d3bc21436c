"""The CONNECT dialer against real loopback peers: what a server says first is kept, and a
proxy that hangs up or answers nonsense is one clear ConnectionProblem."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from teleport.api.proxydial import MAX_HEAD, open_tunnel
from teleport.api.proxyenv import ProxyURL
from teleport.errors import ConnectionProblem
from tests.ports import refused_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.fixture
async def banner_server() -> AsyncIterator[int]:
    """A server that speaks first, as sshd does."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-test\r\n")
        await writer.drain()
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
    async for port in _serve(handler):
        yield port


def _proxy_that(answer: bytes, relay_to: int | None = None) -> Handler:
    """A minimal CONNECT proxy: answer, then (optionally) relay to 127.0.0.1:relay_to."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if relay_to is None:
            writer.write(answer)
            await writer.drain()
            writer.close()
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", relay_to)
        # The 200 and the server's first bytes in one segment: the dialer must not eat them.
        first = await up_r.read(100)
        writer.write(answer + first)
        await writer.drain()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(4096):
                dst.write(data)
                await dst.drain()
            dst.close()
        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))
    return handler


async def test_server_first_bytes_survive_the_answer_head(banner_server: int) -> None:
    async for port in _serve(_proxy_that(b"HTTP/1.1 200 Connection established\r\n\r\n",
                                         relay_to=banner_server)):
        sock = await open_tunnel(ProxyURL("127.0.0.1", port), "127.0.0.1", banner_server)
        reader, writer = await asyncio.open_connection(sock=sock)
        assert await reader.readline() == b"SSH-2.0-test\r\n"
        writer.write(b"echo\n")
        assert await reader.readline() == b"echo\n"
        writer.close()


@pytest.mark.parametrize(("answer", "says"), [
    (b"", "closed the connection before answering CONNECT 10.0.0.1:22"),
    (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", "refused CONNECT 10.0.0.1:22: 'HTTP/1.1 502 Bad Gateway'"),
    (b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n",
     "(the proxy wants credentials: put user:password@ in HTTPS_PROXY)"),
    (b"SSH-2.0-not-a-proxy\r\n\r\n", "refused CONNECT 10.0.0.1:22: 'SSH-2.0-not-a-proxy'"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * MAX_HEAD, "answer head over 8192 bytes"),
])
async def test_a_proxy_that_says_no_is_one_clear_error(answer: bytes, says: str) -> None:
    async for port in _serve(_proxy_that(answer)):
        proxy = ProxyURL("127.0.0.1", port, source="HTTPS_PROXY")
        with pytest.raises(ConnectionProblem) as err:
            await open_tunnel(proxy, "10.0.0.1", 22, wait=5)
        assert f"HTTP proxy http://127.0.0.1:{port}" in str(err.value)
        assert says in str(err.value)


async def test_a_silent_proxy_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
    async for port in _serve(silent):
        with pytest.raises(ConnectionProblem, match="did not answer CONNECT 10.0.0.1:22 within"):
            await open_tunnel(ProxyURL("127.0.0.1", port), "10.0.0.1", 22, wait=0.3)


async def test_an_unreachable_proxy_is_named() -> None:
    with refused_port() as port, pytest.raises(
            ConnectionProblem, match=f"cannot reach HTTP proxy http://127.0.0.1:{port}"):
        await open_tunnel(ProxyURL("127.0.0.1", port), "10.0.0.1", 22, wait=2)
