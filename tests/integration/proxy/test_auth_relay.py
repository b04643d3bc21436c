"""The proxy's web port relays TLS naming the auth server to it: joining and the auth API via 3080.

A real auth API on loopback, a multiplexer whose TLS handler is a TLS echo server (standing in
for the web server) and whose AUTH handler is the real relay. A node given only the mux port
joins with the CA pin, TLS ending at the auth server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvloop

from teleport.auth.client import AuthClient
from teleport.auth.join import JoinResult, join
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.config import StaticToken
from teleport.errors import AccessDenied, ConnectionProblem
from teleport.events.emitter import MemoryEmitter
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.keys.authname import auth_server_name
from teleport.keys.pin import ca_pin
from teleport.proxy.authrelay import AuthRelay
from teleport.proxy.mux import Multiplexer, Protocol
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api
from tests.integration.proxy.probes import closed_after
from tests.ports import refused_port

WAIT = 0.5
TOKEN = "relay-token-1"
CLUSTER = "relay.test"


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"web:" + data)  # type: ignore[attr-defined]


@dataclass
class Setup:
    mux: Multiplexer
    relay: AuthRelay
    auth: AuthServer
    pin: str

    @property
    def addr(self) -> HostPort:
        return HostPort("127.0.0.1", self.mux.port)


@contextlib.asynccontextmanager
async def proxy_port(tmp_path: Path, auth_addrs: list[HostPort] | None = None
                     ) -> AsyncIterator[Setup]:
    """An auth API, and a multiplexed port: TLS to a TLS echo server, AUTH to the relay."""
    clock = FakeClock(datetime.now(UTC))
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name=CLUSTER, static_tokens=(
                          StaticToken(roles=frozenset({"node"}), token=TOKEN),)))
    await auth.init()
    runner, auth_addr = await serve_auth_api(auth)
    key_pem, cert_pem = tlskeys.self_signed_web_cert(["localhost"], now=clock.now())
    (tmp_path / "k.pem").write_bytes(key_pem)
    (tmp_path / "c.pem").write_bytes(cert_pem)
    web_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    web_tls.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    loop = asyncio.get_running_loop()
    echoes: list[asyncio.BaseTransport] = []

    async def serve_web(sock: socket.socket) -> None:
        transport, _ = await loop.connect_accepted_socket(Echo, sock, ssl=web_tls)
        echoes.append(transport)

    pin = ca_pin((await auth.certs.get_ca("tls")).trusted_tls_certs()[0].encode())
    try:
        async with AuthRelay(lambda: auth_addrs if auth_addrs is not None else [auth_addr]) as relay:
            mux = Multiplexer({Protocol.TLS: serve_web, Protocol.AUTH: relay.serve_socket},
                              wait=WAIT)
            async with mux:
                await mux.start(socket.create_server(("127.0.0.1", 0)))
                yield Setup(mux, relay, auth, pin)
            for transport in echoes:
                transport.close()
    finally:
        await runner.cleanup()


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with proxy_port(tmp_path) as started:
        yield started


async def _join(addr: HostPort, pins: list[str]) -> JoinResult:
    return await join([addr], token=TOKEN, role="Node", host_uuid="nat-node", nodename="natted",
                      addresses=[], ca_pins=pins, warn=lambda _: None)


def _insecure() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _web_echo(port: int, server_hostname: str | None) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=_insecure(), server_hostname=server_hostname)
    writer.write(b"hi")
    await writer.drain()
    answer = await asyncio.wait_for(reader.readexactly(6), 5)
    writer.close()
    return answer


async def test_node_joins_and_reaches_the_auth_api_through_the_web_port(setup: Setup) -> None:
    result = await _join(setup.addr, [setup.pin])
    assert result.cluster_name == CLUSTER
    assert tlskeys.identity_from_cert(result.identity.tls_cert.encode()).username == "nat-node"
    assert setup.relay.relayed == 2  # both joining requests went to the auth server
    # The joined identity talks to the auth API through the same port, checking the auth
    # server's name and our CA end to end.
    ident = result.identity
    ctx = tlsconfig.ssl_client_context(ident.tls_cert.encode(), ident.tls_private_key.encode(),
                                       [c.encode() for c in ident.tls_ca_certs])
    async with AuthClient([setup.addr], ctx, timeout=10, cluster=CLUSTER) as client:
        assert (await client.ping()).cluster_name == CLUSTER
    assert setup.relay.relayed >= 3


async def test_wrong_pin_through_the_web_port_is_refused(setup: Setup) -> None:
    with pytest.raises(AccessDenied, match=r"^the certificate authority of 127\.0\.0\.1:\d+ "
                       "does not match the CA pin; refusing to join"):
        await _join(setup.addr, ["sha256:" + "ab" * 32])
    # The token was never sent: only the CA request reached the auth server.
    assert setup.relay.relayed == 1


async def test_other_tls_still_reaches_the_web_server(setup: Setup) -> None:
    assert await _web_echo(setup.mux.port, "localhost") == b"web:hi"
    assert await _web_echo(setup.mux.port, None) == b"web:hi"
    assert setup.relay.relayed == 0


async def test_silent_partial_and_oversized_hellos_are_closed(setup: Setup) -> None:
    assert WAIT * 0.9 <= await closed_after(setup.mux.port, b"") < WAIT + 2
    # A record header promising more than ever comes: closed after the same wait.
    assert WAIT * 0.9 <= await closed_after(setup.mux.port, b"\x16\x03\x01\x01\x00\x01") < WAIT + 2
    # Longer than any TLS record: closed at once.
    assert await closed_after(setup.mux.port, b"\x16\x03\x01\xff\xff\x01") < WAIT
    assert setup.mux.refused == {"silent": 2, "unknown": 1}
    assert setup.relay.relayed == 0


async def test_unreachable_auth_server_is_one_clear_error(tmp_path: Path) -> None:
    with refused_port() as dead:
        async with proxy_port(tmp_path, [HostPort("127.0.0.1", dead)]) as setup:
            with pytest.raises(ConnectionProblem, match="cannot join the cluster"):
                await _join(setup.addr, [setup.pin])
            assert setup.relay.failed == 1 and setup.relay.active == 0


async def test_close_ends_live_relays(setup: Setup) -> None:
    ca = [c.encode() for c in (await setup.auth.certs.get_ca("tls")).trusted_tls_certs()]
    ctx = tlsconfig.ssl_client_context(None, None, ca)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", setup.mux.port, ssl=ctx, server_hostname=auth_server_name(CLUSTER))
    assert setup.relay.active == 1  # the handshake with the auth server went through the relay
    await setup.relay.close()
    assert setup.relay.active == 0
    with contextlib.suppress(ConnectionResetError, ssl.SSLError):
        assert await asyncio.wait_for(reader.read(10), 5) == b""
    writer.close()


def test_daemon_loop_uvloop(tmp_path: Path) -> None:
    """The daemon runs uvloop: peeking the whole hello and splicing work there too."""

    async def join_through_the_port() -> None:
        async with proxy_port(tmp_path) as setup:
            assert (await _join(setup.addr, [setup.pin])).cluster_name == CLUSTER
            assert await _web_echo(setup.mux.port, "localhost") == b"web:hi"

    uvloop.run(join_through_the_port())
