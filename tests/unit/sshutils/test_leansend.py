"""Packets sent and received the lean way (`sshutils.leansend`, `sshutils.leanrecv`) are the
packets asyncssh's own code sends and receives.

A real asyncssh server on loopback echoes what a `BulkClientConnection` sends. With a lean
server, each direction is sealed and opened by our paths; with a stock asyncssh server, ours
meet asyncssh's own code each way: one wrong byte of framing, padding or sequence number and
the tag check fails.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncssh
import pytest
from asyncssh.constants import MSG_KEXINIT

from teleport.sshutils import ciphers, clientconn, hop
from teleport.sshutils.leanrecv import LeanReceive
from teleport.sshutils.leansend import LeanSend

SIZE = 3 * 1024 * 1024 + 12345  # not a multiple of any packet size


class _StockServerConnection(asyncssh.SSHServerConnection):
    kexinits = 0

    def log_received_packet(self, pkttype: int, pktid: int | None, packet: Any,
                            note: str = "") -> None:
        if pkttype == MSG_KEXINIT:
            _StockServerConnection.kexinits += 1
        super().log_received_packet(pkttype, pktid, packet, note)


class _LeanServerConnection(LeanSend, LeanReceive, _StockServerConnection):
    pass


class _Echo(asyncssh.SSHServerSession):  # type: ignore[type-arg]
    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def exec_requested(self, command: str) -> bool:
        return True

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.chan.write(data)

    def eof_received(self) -> bool:
        self.chan.exit(0)
        return False


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> _Echo:
        return _Echo()


@dataclass
class Echo:
    port: int
    lean: bool


@pytest.fixture(params=[True, False], ids=["lean-server", "stock-server"])
async def echo(request: pytest.FixtureRequest) -> AsyncIterator[Echo]:
    loop = asyncio.get_running_loop()
    ciphers.install()  # as the node's listener and tsh's hops do
    options = asyncssh.SSHServerConnectionOptions(
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        server_factory=_Server, encoding=None)
    _StockServerConnection.kexinits = 0
    connection = _LeanServerConnection if request.param else _StockServerConnection
    server = await loop.create_server(lambda: connection(loop, options), "127.0.0.1", 0)
    yield Echo(server.sockets[0].getsockname()[1], request.param)
    server.close()


def _options(cipher: str, **extra: Any) -> asyncssh.SSHClientConnectionOptions:
    key = asyncssh.generate_private_key("ssh-ed25519")
    ca = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_user_certificate(key, "alice", principals=["root"])
    return asyncssh.SSHClientConnectionOptions(hop.user_options("root", key, cert, None),
                                               encryption_algs=[cipher], **extra)


async def _round_trip(port: int, options: asyncssh.SSHClientConnectionOptions,
                      data: bytes) -> bytes:
    conn = await clientconn.connect("127.0.0.1", port, options=options)
    async with conn:
        process = await conn.create_process("echo", encoding=None)
        process.stdin.write(data)
        process.stdin.write_eof()
        echoed = await process.stdout.read()
        await process.wait_closed()
    return echoed


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Record the size of the packet (or its sealed rest) of each call of our shims' name."""
    counted: list[int] = []
    for shim in (ciphers.AESGCMEncryption, ciphers.ChachaPolyEncryption):
        original: Callable[..., Any] = getattr(shim, name)

        def spy(self: Any, seq: int, header: Any, rest: Any,
                original: Callable[..., Any] = original) -> Any:
            counted.append(len(rest))
            return original(self, seq, header, rest)

        monkeypatch.setattr(shim, name, spy)
    return counted


@pytest.fixture
def seals(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Packets sealed the lean way (its only way to the wire)."""
    return _count_calls(monkeypatch, "seal")


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Packets opened in place the lean way (its only way in)."""
    return _count_calls(monkeypatch, "open")


def _bulk(sizes: list[int]) -> int:
    """How many times SIZE the packets of more than 16 KiB (data, not control) held."""
    return round(sum(size for size in sizes if size > 16384) / SIZE)


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                                    "chacha20-poly1305@openssh.com"])
async def test_bulk_data_sealed_and_opened_the_lean_way_arrives_intact_both_ways(
        echo: Echo, seals: list[int], opens: list[int], cipher: str) -> None:
    data = os.urandom(SIZE)
    assert await _round_trip(echo.port, _options(cipher), data) == data
    # The client sends and receives the lean way whatever the server; a lean server too.
    lean_ends = 2 if echo.lean else 1
    assert _bulk(seals) == _bulk(opens) == lean_ends


async def test_rekeying_in_the_middle_of_a_transfer_keeps_the_data_intact(
        echo: Echo, seals: list[int], opens: list[int]) -> None:
    """Past the rekey limit a packet goes through asyncssh's own path, which starts the key
    exchange; its packets arrive among data packets and go to asyncssh, the data packets after
    the new keys take the lean ways again."""
    data = os.urandom(SIZE)
    options = _options("aes128-gcm@openssh.com", rekey_bytes=256 * 1024)
    assert await _round_trip(echo.port, options, data) == data
    assert _StockServerConnection.kexinits >= 5  # the first exchange, then one per 256 KiB
    assert _bulk(seals) >= 1 and _bulk(opens) >= 1


class _Corrupting(asyncio.Protocol):
    """A relay to the server that flips one bit of what the client sends, deep in the data."""

    AT = 2 * 1024 * 1024

    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.seen = 0
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = transport
        asyncio.get_running_loop().create_task(self._dial())

    async def _dial(self) -> None:
        relay = self

        class Back(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                relay.client.write(data)  # type: ignore[attr-defined]

            def connection_lost(self, exc: Exception | None) -> None:
                relay.client.close()

        loop = asyncio.get_running_loop()
        self.upstream, _ = await loop.create_connection(Back, "127.0.0.1", self.server_port)
        for data in self.pending:
            self.upstream.write(data)

    def data_received(self, data: bytes) -> None:
        if self.seen <= self.AT < self.seen + len(data):
            flipped = bytearray(data)
            flipped[self.AT - self.seen] ^= 0x01
            data = bytes(flipped)
        self.seen += len(data)
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def test_a_flipped_bit_ends_the_connection_and_nothing_after_it_is_delivered(
        echo: Echo) -> None:
    loop = asyncio.get_running_loop()
    relay = await loop.create_server(lambda: _Corrupting(echo.port), "127.0.0.1", 0)
    data = os.urandom(SIZE)
    echoed = b""
    with pytest.raises((asyncssh.Error, OSError)):
        conn = await clientconn.connect("127.0.0.1", relay.sockets[0].getsockname()[1],
                                        options=_options("aes128-gcm@openssh.com"))
        async with conn:
            process = await conn.create_process("echo", encoding=None)
            process.stdin.write(data)
            process.stdin.write_eof()
            while chunk := await process.stdout.read(65536):
                echoed += chunk
            await process.wait_closed()
            raise OSError("the session ended without an error")  # not expected
    relay.close()
    assert len(echoed) < _Corrupting.AT and data.startswith(echoed)
