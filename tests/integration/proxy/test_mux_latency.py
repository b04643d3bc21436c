"""A ClientHello or SSH banner sent whole is handed over at once, not after a re-peek delay.

Issue 20: the multiplexer first peeks 8 bytes to tell the protocols apart. When those said
TLS (with an auth relay to tell apart) or SSH (with tunnel agents to tell apart), it slept its
re-peek delay (10 ms) before reading the rest, although the whole ClientHello or banner had
come in the same segment: every TLS connection to the proxy's web port paid ~10 ms, twice per
`tsh ls`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import pytest

from teleport.proxy import mux as muxmod
from teleport.proxy.mux import Multiplexer, Protocol
from teleport.sshutils.reversetunnel import TUNNEL_BANNER

#: Long enough that a connection which waited for it cannot pass for one that did not.
DELAY = 3.0


def _client_hello(server_name: str) -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize(("first", "expected"), [
    (_client_hello("localhost"), Protocol.TLS),
    (_client_hello("teleport.cluster.local"), Protocol.AUTH),
    (b"SSH-2.0-OpenSSH_9.2\r\n", Protocol.SSH),
    (TUNNEL_BANNER + b"\r\n", Protocol.TUNNEL),
])
async def test_first_bytes_sent_whole_are_handed_over_at_once(
        monkeypatch: pytest.MonkeyPatch, first: bytes, expected: Protocol) -> None:
    monkeypatch.setattr(muxmod, "REPEEK_DELAY", DELAY)
    handed: asyncio.Queue[tuple[Protocol, float]] = asyncio.Queue()

    def handler(proto: Protocol):  # type: ignore[no-untyped-def]
        async def take(sock: socket.socket) -> None:
            handed.put_nowait((proto, time.monotonic()))
            sock.close()
        return take

    mux = Multiplexer({p: handler(p) for p in (Protocol.TLS, Protocol.AUTH, Protocol.SSH,
                                                Protocol.TUNNEL)}, wait=2 * DELAY)
    async with mux:
        await mux.start(socket.create_server(("127.0.0.1", 0)))
        _, writer = await asyncio.open_connection("127.0.0.1", mux.port)
        sent = time.monotonic()
        writer.write(first)
        await writer.drain()
        proto, at = await asyncio.wait_for(handed.get(), 4 * DELAY)
        writer.close()
    assert proto is expected
    assert at - sent < DELAY / 3, f"handed over after {at - sent:.2f} s"
