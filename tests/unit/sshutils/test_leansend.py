"""Packets sent the lean way (`sshutils.leansend`) arrive intact at a stock asyncssh peer.

A real asyncssh server on loopback echoes what a `BulkClientConnection` sends; both ends send
through `LeanSend`, so each direction is sealed by our path and opened by asyncssh's own
receiving code: one wrong byte of framing, padding or sequence number and the MAC check fails.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncssh
import pytest
from asyncssh.constants import MSG_KEXINIT

from teleport.sshutils import ciphers, clientconn, hop
from teleport.sshutils.leansend import LeanSend

SIZE = 3 * 1024 * 1024 + 12345  # not a multiple of any packet size


class _LeanServerConnection(LeanSend, asyncssh.SSHServerConnection):
    kexinits = 0

    def _send_cipher_name(self) -> bytes:
        return self._enc_alg_sc

    def log_received_packet(self, pkttype: int, pktid: int | None, packet: Any,
                            note: str = "") -> None:
        if pkttype == MSG_KEXINIT:
            type(self).kexinits += 1
        super().log_received_packet(pkttype, pktid, packet, note)


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


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    ciphers.install()  # as the node's listener and tsh's hops do
    options = asyncssh.SSHServerConnectionOptions(
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        server_factory=_Server, encoding=None)
    _LeanServerConnection.kexinits = 0
    server = await loop.create_server(lambda: _LeanServerConnection(loop, options),
                                      "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


def _options(cipher: str, **extra: Any) -> asyncssh.SSHClientConnectionOptions:
    key = asyncssh.generate_private_key("ssh-ed25519")
    ca = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_user_certificate(key, "alice", principals=["root"])
    return asyncssh.SSHClientConnectionOptions(hop.user_options("root", key, cert, None),
                                               encryption_algs=[cipher], **extra)


async def _round_trip(port: int, options: asyncssh.SSHClientConnectionOptions) -> None:
    data = os.urandom(SIZE)
    conn = await clientconn.connect("127.0.0.1", port, options=options)
    async with conn:
        process = await conn.create_process("echo", encoding=None)
        process.stdin.write(data)
        process.stdin.write_eof()
        echoed = await process.stdout.read()
        await process.wait_closed()
    assert echoed == data


@pytest.fixture
def seals(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the packets our cipher shims seal (the lean path's only way to the wire)."""
    counted: list[int] = []
    for shim in (ciphers.AESGCMEncryption, ciphers.ChachaPolyEncryption):
        original: Callable[..., tuple[bytes, ...]] = shim.seal

        def seal(self: Any, seq: int, header: bytes, packet: bytes,
                 original: Callable[..., tuple[bytes, ...]] = original) -> tuple[bytes, ...]:
            counted.append(len(packet))
            return original(self, seq, header, packet)

        monkeypatch.setattr(shim, "seal", seal)
    return counted


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                                    "chacha20-poly1305@openssh.com"])
async def test_bulk_data_sealed_the_lean_way_arrives_intact_both_ways(
        echo_port: int, seals: list[int], cipher: str) -> None:
    await _round_trip(echo_port, _options(cipher))
    # Both directions' data packets took the lean path: at most 32 KiB of data each (the
    # server asks for asyncssh's default), so at least this many of them.
    assert sum(1 for size in seals if size > 16384) >= 2 * SIZE // 32768


async def test_rekeying_in_the_middle_of_a_transfer_keeps_the_data_intact(
        echo_port: int, seals: list[int]) -> None:
    """Past the rekey limit a packet goes through asyncssh's own path, which starts the key
    exchange; data packets wait for the new keys and then take the lean way again."""
    await _round_trip(echo_port, _options("aes128-gcm@openssh.com",
                                          rekey_bytes=256 * 1024))
    assert _LeanServerConnection.kexinits >= 5  # the first exchange, then one per 256 KiB
    assert sum(1 for size in seals if size > 16384) >= 2 * SIZE // 32768
