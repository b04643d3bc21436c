"""Our client connections (`tsh`, the web terminal) send no empty MSG_IGNORE ahead of every
packet unless the cipher is CBC, and hand a tunnel one write per loop turn, on both hops.

Real asyncssh servers on loopback stand for the proxy and the node: the node counts the
MSG_IGNOREs it receives, the proxy relays `direct-tcpip` to it and counts the data packets
that carry the inner connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh
import pytest
from asyncssh.constants import MSG_IGNORE

from teleport.sshutils import clientconn, hop, reversetunnel

SIZE = 1024 * 1024
#: What the servers here take from a channel in one packet (asyncssh's default).
PKTSIZE = 32768


@dataclass
class Counts:
    ignores: int = 0
    relayed_packets: int = 0
    received: list[int] = field(default_factory=list)


class _Counting(asyncssh.SSHServerConnection):
    counts: Counts

    def log_received_packet(self, pkttype: int, pktid: int | None, packet: Any,
                            note: str = "") -> None:
        if pkttype == MSG_IGNORE:
            self.counts.ignores += 1
        super().log_received_packet(pkttype, pktid, packet, note)


class _Sink(asyncssh.SSHServerSession):  # type: ignore[type-arg]
    """Count what arrives; answer with the count at end of input."""

    def __init__(self, counts: Counts) -> None:
        self.counts, self.size = counts, 0

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def exec_requested(self, command: str) -> bool:
        return True

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.size += len(data)

    def eof_received(self) -> bool:
        self.counts.received.append(self.size)
        self.chan.write(str(self.size).encode())
        self.chan.exit(0)
        return False


class _Relay(asyncssh.SSHTCPSession):  # type: ignore[type-arg]
    """The proxy's `direct-tcpip`: a TCP connection to the node, counting channel packets."""

    def __init__(self, counts: Counts, host: str, port: int) -> None:
        self.counts, self.host, self.port = counts, host, port
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> _Relay:
        reader, self.writer = await asyncio.open_connection(self.host, self.port)
        asyncio.get_running_loop().create_task(self._back(reader))
        return self

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    async def _back(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(65536):
            self.chan.write(data)
        self.chan.write_eof()

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.counts.relayed_packets += 1  # asyncssh hands each data packet over as it comes
        assert self.writer is not None
        self.writer.write(data)

    def eof_received(self) -> bool:
        if self.writer is not None:
            self.writer.write_eof()
        return True


class _Server(asyncssh.SSHServer):
    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    def begin_auth(self, username: str) -> bool:
        return False  # anyone: what is measured here is the data path

    def session_requested(self) -> _Sink:
        return _Sink(self.counts)

    async def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                                   orig_port: int) -> _Relay:
        return await _Relay(self.counts, dest_host, dest_port).open()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[list[str]], Any]]:
    """Start a counting server offering these ciphers; return its port and counts."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    host_key = asyncssh.generate_private_key("ssh-ed25519")

    async def start(ciphers: list[str]) -> tuple[int, Counts]:
        counts = Counts()
        options = asyncssh.SSHServerConnectionOptions(
            server_host_keys=[host_key], server_factory=lambda: _Server(counts),
            encryption_algs=ciphers, encoding=None)

        def connection() -> _Counting:
            conn = _Counting(loop, options)
            conn.counts = counts
            return conn

        server = await loop.create_server(connection, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1], counts

    yield start
    for server in servers:
        server.close()


def _options(cipher: str) -> asyncssh.SSHClientConnectionOptions:
    ca, key = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_user_certificate(key, "alice", principals=["root"])
    options = hop.user_options("root", key, cert, None)  # registers our cipher shims too
    return asyncssh.SSHClientConnectionOptions(options, encryption_algs=[cipher])


async def _upload(conn: asyncssh.SSHClientConnection) -> int:
    """Send SIZE bytes in one write (one loop turn) and return what the server counted."""
    process = await conn.create_process("count", encoding=None)
    process.stdin.write(bytes(SIZE))
    process.stdin.write_eof()
    answer = await process.stdout.read()
    await process.wait_closed()
    return int(answer)


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                                    "aes128-ctr"])
async def test_both_hops_send_no_ignore_packets_and_one_tunnel_write_per_turn(
        serve: Callable[[list[str]], Any], cipher: str) -> None:
    node_port, node = await serve([cipher])
    proxy_port, proxy = await serve([cipher])
    async with hop.connect_node(None, ("127.0.0.1", proxy_port), _options(cipher),
                                ("127.0.0.1", node_port), _options(cipher), name="node",
                                via="proxy") as conn:
        assert isinstance(conn, clientconn.BulkClientConnection)
        assert await _upload(conn) == SIZE
    # asyncssh puts one ahead of every packet after the key exchange: about 40 on each hop.
    assert (proxy.ignores, node.ignores) == (0, 0)
    # The inner connection's 32 packets went to the tunnel as one write, which the proxy's
    # channel carries in 33 full packets (plus about 10 of the inner handshake); one write
    # per inner packet split each in a full one and a tiny one: 76 in all.
    assert proxy.relayed_packets <= SIZE // PKTSIZE + 16


async def test_cbc_keeps_an_ignore_packet_ahead_of_each_packet(
        serve: Callable[[list[str]], Any]) -> None:
    """The countermeasure to chosen-plaintext attacks on CBC's chained IVs (RFC 4251 9.3.1)."""
    port, node = await serve(["aes128-cbc"])
    conn = await clientconn.connect("127.0.0.1", port, options=_options("aes128-cbc"))
    async with conn:
        assert conn.get_extra_info("send_cipher") == "aes128-cbc"
        assert await _upload(conn) == SIZE
    assert node.ignores >= SIZE // PKTSIZE


async def test_a_failed_handshake_raises_as_asyncssh_connect_does(
        serve: Callable[[list[str]], Any]) -> None:
    port, _ = await serve(["aes128-gcm@openssh.com"])
    options = asyncssh.SSHClientConnectionOptions(_options("aes256-gcm@openssh.com"))
    with pytest.raises(asyncssh.KeyExchangeFailed):
        await clientconn.connect("127.0.0.1", port, options=options)


def test_tunnel_agents_connect_without_the_per_packet_extras() -> None:
    """A node's agent carries downloads from the node over its reverse tunnel."""
    assert issubclass(reversetunnel.TunnelClientConnection, clientconn.BulkClientConnection)
