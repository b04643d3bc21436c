"""Reverse tunnels in one process: what a node, an impostor and a user can do on the tunnel port.

A real TunnelServer (the proxy's side) on loopback, real agents (`reversetunnel.connect`, or
the node's TunnelPool) holding host certificates from the test CAs, a real NodeServer served
over the tunnel, and a real auth API for the proxy's node lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncssh
import pytest

from teleport.api.proxydial import connect_tcp
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.errors import ConnectionProblem, NotFound
from teleport.events.emitter import AUTH, MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.metrics import REGISTRY
from teleport.proxy.ssh import ProxySSHServer
from teleport.proxy.tunnel import TunnelServer
from teleport.service import tunnels as pool_module
from teleport.service.resolve import NodeResolver
from teleport.service.tunnels import TunnelPool
from teleport.srv import NodeServer
from teleport.sshutils import reversetunnel
from teleport.sshutils.reversetunnel import (
    AUTH_TARGET,
    NODE_LISTEN,
    TunnelClientConnection,
    TunnelCredentials,
)
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock, RealClock
from tests.e2e.balancer import RoundRobin
from tests.integration.auth_api import serve_auth_api
from tests.integration.srv.sshenv import CLUSTER, Trust

WAIT = 10.0


@dataclass(frozen=True)
class Host:
    key: bytes
    cert: str
    uuid: str


@dataclass
class Proxy:
    server: TunnelServer
    events: MemoryEmitter
    host: Host


def _host(trust: Trust, name: str, role: str = "Node", **kwargs: object) -> Host:
    key, cert, host_uuid = trust.host_identity(name, role, **kwargs)  # type: ignore[arg-type]
    return Host(key, cert, host_uuid)


@contextlib.asynccontextmanager
async def tunnel_server(trust: Trust, auth_addrs: Callable[[], list[HostPort]] = list,
                        host: Host | None = None, port: int = 0) -> AsyncIterator[Proxy]:
    """The proxy's tunnel server on 127.0.0.1, holding a proxy certificate of trust's cluster."""
    host = host or _host(trust, "proxy", "Proxy")
    events = MemoryEmitter()
    server = TunnelServer(host_private_key=host.key, host_cert=host.cert,
                          trusted_host_cas=trust.host_cas, cluster_name=CLUSTER,
                          auth_addrs=auth_addrs, emitter=events)
    async with server:
        await server.start("127.0.0.1", port)
        yield Proxy(server, events, host)


@contextlib.asynccontextmanager
async def tunnel_node(trust: Trust, host: Host) -> AsyncIterator[NodeServer]:
    """A node that binds no port: it serves SSH only on sockets handed to it (its tunnels)."""
    node = NodeServer(host_private_key=host.key, host_cert=host.cert,
                      trusted_user_cas=trust.user_cas, cluster_name=CLUSTER,
                      server_id=host.uuid, nodename="natted", labels=dict,
                      emitter=MemoryEmitter(), proxy_addr=lambda: "proxy:3080")
    async with node:
        await node.start("127.0.0.1", 0, bind=False)
        yield node


async def agent(trust: Trust, port: int, key: bytes, cert: str, login: str, *,
                cluster: str = CLUSTER) -> TunnelClientConnection:
    """Dial the tunnel port as a node's agent does, with whatever credentials are given."""
    sock = await connect_tcp("127.0.0.1", port)
    creds = TunnelCredentials(host_uuid=login, private_key=key.decode(), cert=cert,
                              cluster=cluster, trusted_host_cas=trust.host_cas)
    return await reversetunnel.connect(sock, creds, host="127.0.0.1", port=port,
                                       now=RealClock().now, wait=WAIT)


async def eventually(check: Callable[[], bool], what: str, wait: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + wait
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def ssh_over(sock: socket.socket, trust: Trust, login: str = "root"
                   ) -> asyncssh.SSHClientConnection:
    """A user's SSH connection to the node at the far end of a dialled socket."""
    alice = trust.user([login])
    return await trust.connect(alice, 0, login, host="natted", sock=sock)


@pytest.fixture
def trust(tmp_path: Path) -> Trust:
    return Trust(tmp_path)


@pytest.fixture
async def echo() -> AsyncIterator[HostPort]:
    """A loopback echo server, standing in for the auth API the tunnel splices to."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield HostPort("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def proxy(trust: Trust, echo: HostPort) -> AsyncIterator[Proxy]:
    async with tunnel_server(trust, lambda: [echo]) as started:
        yield started


def _pool(trust: Trust, host: Host, node: NodeServer, addr: Callable[[], HostPort]) -> TunnelPool:
    async def locate() -> HostPort:
        return addr()

    creds = TunnelCredentials(host_uuid=host.uuid, private_key=host.key.decode(), cert=host.cert,
                              cluster=CLUSTER, trusted_host_cas=trust.host_cas)
    return TunnelPool(locate, creds, RealClock(), node.serve_socket)


@contextlib.asynccontextmanager
async def running(pool: TunnelPool) -> AsyncIterator[TunnelPool]:
    async with pool:
        task = asyncio.create_task(pool.run())
        try:
            yield pool
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- a node's tunnel ---------------------------------------------------------------------------


async def test_node_tunnels_in_and_the_proxy_reaches_its_ssh_server(trust: Trust,
                                                                   proxy: Proxy) -> None:
    host = _host(trust, "natted")
    async with tunnel_node(trust, host) as node:
        pool = _pool(trust, host, node, lambda: HostPort("127.0.0.1", proxy.server.port))
        async with running(pool):
            await eventually(lambda: proxy.server.has(host.uuid), "the tunnel")
            assert proxy.server.snapshot() == [host.uuid]
            assert list(pool.tunnels) == [proxy.host.uuid]  # keyed by the proxy's certificate
            sock = await proxy.server.dial(host.uuid, ("192.0.2.7", 40404))
            async with await ssh_over(sock, trust) as conn:
                result = await conn.run("echo $SSH_CLIENT", check=True)
    # The node sees the user's address the proxy sent along, not the tunnel's socket pair.
    assert str(result.stdout).startswith("192.0.2.7 40404 ")
    assert not proxy.events.of_type(AUTH)  # nothing refused


async def test_tunnel_reaches_the_auth_api_and_nothing_else(trust: Trust, proxy: Proxy,
                                                            echo: HostPort) -> None:
    host = _host(trust, "natted")
    async with await agent(trust, proxy.server.port, host.key, host.cert, host.uuid) as conn:
        # AUTH_TARGET is spliced to the auth address (an echo server here).
        reader, writer = await conn.open_connection(*AUTH_TARGET)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), WAIT) == b"ping"
        writer.close()
        # Anything else, even the real address of the auth server, is refused.
        # A node cannot reach another node (or itself) the way a peer proxy does.
        _, _, victim = trust.host_identity("victim")
        for dest in [(echo.host, echo.port), ("localhost", echo.port), ("@local-node", 3022),
                     (AUTH_TARGET[0], 22), (victim, 3022), (host.uuid, 3022)]:
            with pytest.raises(asyncssh.ChannelOpenError) as refused:
                await conn.open_connection(*dest)
            assert refused.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, dest
        # No shell, no command.
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_session(asyncssh.SSHClientSession)
        # Only NODE_LISTEN may be forwarded: no listener on any other address.
        for listen in [("127.0.0.1", 0), ("", 3022), ("@local-node", 3023), (host.uuid, 3022)]:
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.create_server(lambda *_: None, *listen)
        assert not proxy.server.has(host.uuid)
        await conn.create_server(lambda *_: None, *NODE_LISTEN)
        assert proxy.server.snapshot() == [host.uuid]


# --- who may not tunnel in ---------------------------------------------------------------------


def _other_trust(trust: Trust) -> Trust:
    """Another cluster's CAs."""
    tmp = trust.tmp / "other"
    tmp.mkdir(exist_ok=True)
    return Trust(tmp)


def _user_cert(trust: Trust) -> tuple[bytes, str, str, str]:
    # A user certificate signed by the *host* CA: refused for its type, not only its CA.
    creds = trust.user(["root"], name="alice", ca=trust.host_ca)
    return creds.key, creds.cert, "alice", "expected a host certificate, got a user"


def _other_ca(trust: Trust) -> tuple[bytes, str, str, str]:
    other = _other_trust(trust)
    key, cert, host_uuid = other.host_identity("natted")
    return key, cert, host_uuid, "not signed by a trusted"


def _other_cluster(trust: Trust) -> tuple[bytes, str, str, str]:
    key, cert, host_uuid = trust.host_identity("natted", cluster="other.example.com")
    return key, cert, host_uuid, "host certificate of cluster 'other.example.com'"


def _as_another_node(trust: Trust) -> tuple[bytes, str, str, str]:
    _, _, victim = trust.host_identity("victim")
    key, cert, host_uuid = trust.host_identity("natted")
    return key, cert, victim, f"host {host_uuid} may tunnel only as itself"


def _expired(trust: Trust) -> tuple[bytes, str, str, str]:
    late = datetime.now(timezone.utc) - timedelta(minutes=1)
    key, cert, host_uuid = trust.host_identity("natted", valid_before=late)
    return key, cert, host_uuid, "expired"


def _auth_cert(trust: Trust) -> tuple[bytes, str, str, str]:
    key, cert, host_uuid = trust.host_identity("auth", role="Auth")
    return key, cert, host_uuid, "a auth certificate cannot serve as"


@pytest.mark.parametrize("offer", [_user_cert, _other_ca, _other_cluster, _as_another_node,
                                   _expired, _auth_cert],
                         ids=["user cert", "other host CA", "other cluster", "as another node",
                              "expired", "auth cert"])
async def test_refused_and_audited(trust: Trust, proxy: Proxy,
                                   offer: Callable[[Trust], tuple[bytes, str, str, str]]) -> None:
    key, cert, login, reason = offer(trust)
    with pytest.raises(asyncssh.PermissionDenied):
        await agent(trust, proxy.server.port, key, cert, login)
    refusals = [e for e in proxy.events.of_type(AUTH) if not e["success"]]
    assert refusals and all(e["login"] == login for e in refusals)
    assert reason in refusals[0]["error"], refusals[0]["error"]
    assert proxy.server.tunnels == {}


async def test_plain_key_refused_and_audited(trust: Trust, proxy: Proxy) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect("127.0.0.1", proxy.server.port, username="some-uuid",
                               client_keys=[asyncssh.import_private_key(
                                   sshkeys.generate_private_key())],
                               known_hosts=None, agent_path=None, config=None,
                               preferred_auth=["publickey"],
                               client_version=reversetunnel.CLIENT_VERSION)
    error, = {e["error"] for e in proxy.events.of_type(AUTH)}
    assert "a certificate is required" in error
    assert proxy.server.tunnels == {}


async def test_proxy_certificate_cannot_register_as_a_node(trust: Trust, proxy: Proxy) -> None:
    """Another proxy may connect (to reach nodes tunnelled here), but never serve as a node."""
    other = _host(trust, "proxy2", "Proxy")
    async with await agent(trust, proxy.server.port, other.key, other.cert, other.uuid) as conn:
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.create_server(lambda *_: None, *NODE_LISTEN)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection(*AUTH_TARGET)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_session(asyncssh.SSHClientSession)
    assert proxy.server.tunnels == {}
    # Nor as another host: its SSH user must be its own UUID.
    with pytest.raises(asyncssh.PermissionDenied):
        await agent(trust, proxy.server.port, other.key, other.cert, proxy.host.uuid)
    assert proxy.server.tunnels == {}


# --- reconnects --------------------------------------------------------------------------------


def _connected_metric() -> float:
    return REGISTRY.get_sample_value("teleport_reverse_tunnels_connected") or 0.0


async def test_newest_tunnel_of_a_node_wins_and_its_close_ends_the_route(trust: Trust,
                                                                         proxy: Proxy) -> None:
    host = _host(trust, "natted")
    before = _connected_metric()
    port = proxy.server.port
    first = await agent(trust, port, host.key, host.cert, host.uuid)
    await first.create_server(lambda *_: None, *NODE_LISTEN)
    assert _connected_metric() == before + 1
    second = await agent(trust, port, host.key, host.cert, host.uuid)
    await second.create_server(lambda *_: None, *NODE_LISTEN)
    await asyncio.wait_for(first.wait_closed(), WAIT)  # the proxy closed the older tunnel
    assert proxy.server.tunnels[host.uuid].host_uuid == host.uuid
    assert _connected_metric() == before + 1
    second.close()
    await second.wait_closed()
    await eventually(lambda: not proxy.server.has(host.uuid), "the route to go")
    with pytest.raises(ConnectionProblem, match="has no reverse tunnel"):
        await proxy.server.dial(host.uuid)
    assert _connected_metric() == before


async def test_repeated_forward_request_is_counted_once(trust: Trust, proxy: Proxy) -> None:
    host = _host(trust, "natted")
    before = _connected_metric()
    async with await agent(trust, proxy.server.port, host.key, host.cert, host.uuid) as conn:
        await conn.create_server(lambda *_: None, *NODE_LISTEN)
        with contextlib.suppress(asyncssh.ChannelListenError):
            await conn.create_server(lambda *_: None, *NODE_LISTEN)
        assert proxy.server.has(host.uuid)
    await eventually(lambda: not proxy.server.has(host.uuid), "the route to go")
    assert _connected_metric() == before


# --- the agent checks the proxy ----------------------------------------------------------------


class Recorder(asyncssh.SSHServer):
    """A plain SSH server that notes every user authentication it is asked for."""

    attempts: list[str] = []

    def begin_auth(self, username: str) -> bool:
        Recorder.attempts.append(username)
        return True


@pytest.mark.parametrize("server_host", ["node", "other cluster", "other CA"])
async def test_agent_refuses_a_server_that_is_no_proxy_of_its_cluster(
        trust: Trust, server_host: str) -> None:
    if server_host == "node":
        host = _host(trust, "impostor", "Node")
    elif server_host == "other cluster":
        host = _host(trust, "impostor", "Proxy", cluster="other.example.com")
    else:
        host = _host(_other_trust(trust), "impostor", "Proxy")
    Recorder.attempts = []
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_factory=Recorder,
        server_host_keys=[(asyncssh.import_private_key(host.key),
                           asyncssh.import_certificate(host.cert))])
    try:
        node = _host(trust, "natted")
        with pytest.raises(asyncssh.HostKeyNotVerifiable, match="proxy's host key is not trusted"):
            await agent(trust, server.sockets[0].getsockname()[1], node.key, node.cert, node.uuid)
    finally:
        server.close()
        await server.wait_closed()
    assert Recorder.attempts == []  # the agent never offered its certificate


# --- users cannot reach the auth API through the proxy -----------------------------------------


@dataclass
class Site:
    proxy: ProxySSHServer
    tunnels: Proxy
    node: Host


@contextlib.asynccontextmanager
async def open_site(trust: Trust, tunnels: Proxy) -> AsyncIterator[Site]:
    """A real auth API listing one tunnel node, and the proxy's SSH server routing with it."""
    clock = FakeClock(datetime.now(timezone.utc))
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name=CLUSTER))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    tls_key = tlskeys.generate_tls_key()
    certs = await auth.certs.issue_host_certs(
        host_uuid="proxy-1", nodename="proxy", system_role="Proxy",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
    cas = (await auth.certs.get_ca("tls")).trusted_tls_certs()
    ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key, [c.encode() for c in cas])
    node = _host(trust, "natted")
    try:
        async with AuthClient([addr], ctx, timeout=WAIT, cluster=CLUSTER) as client:
            await auth.hosts.upsert_server(Server(kind="node", metadata=Metadata(name=node.uuid),
                                            spec=ServerSpec(addr="", hostname="natted",
                                                            use_tunnel=True)))
            resolver = NodeResolver(client, CLUSTER, tunnels.server)
            key, cert, _ = trust.host_identity("proxy", role="Proxy")
            proxy = ProxySSHServer(host_private_key=key, host_cert=cert,
                                   trusted_user_cas=trust.user_cas, cluster_name=CLUSTER,
                                   dial=resolver.dial, emitter=MemoryEmitter())
            async with proxy:
                await proxy.start("127.0.0.1", 0)
                yield Site(proxy, tunnels, node)
    finally:
        await runner.cleanup()


async def test_user_cannot_reach_the_auth_api_through_the_proxy(trust: Trust,
                                                                proxy: Proxy) -> None:
    async with open_site(trust, proxy) as site, tunnel_node(trust, site.node) as node:
        with pytest.raises(NotFound):
            await site.proxy.dial(*AUTH_TARGET)
        alice = trust.user(["root"])
        async with await trust.connect(alice, site.proxy.port, "alice") as conn:
            with pytest.raises(asyncssh.ChannelOpenError, match="not registered"):
                await conn.open_connection(*AUTH_TARGET)
            # The same user reaches the tunnelled node by name, over its tunnel.
            pool = _pool(trust, site.node, node, lambda: HostPort("127.0.0.1", proxy.server.port))
            async with running(pool):
                await eventually(lambda: proxy.server.has(site.node.uuid), "the tunnel")
                async with await trust.connect(alice, 3022, "root", tunnel=conn,
                                               host="natted") as ssh:
                    assert (await ssh.run("echo through the tunnel")).stdout == "through the tunnel\n"


# --- the node's pool: one tunnel to every proxy behind a balancer ------------------------------


def _agents(state: str) -> float:
    return REGISTRY.get_sample_value("teleport_reverse_tunnel_agents", {"state": state}) or 0.0


async def test_pool_keeps_one_tunnel_to_each_proxy_and_comes_back_after_a_restart(
        trust: Trust, monkeypatch: pytest.MonkeyPatch) -> None:
    # Full jitter as in production, but capped low: the test waits for reconnects.
    monkeypatch.setattr(pool_module, "BACKOFF_CAP", 0.3)
    host = _host(trust, "natted")
    connected = _agents("connected")
    before = {state: _agents(state) for state in ("connecting", "connected", "disconnected")}
    async with tunnel_server(trust) as a, tunnel_server(trust) as b, \
            tunnel_node(trust, host) as node:
        b_port = b.server.port
        balancer = RoundRobin([("127.0.0.1", a.server.port), ("127.0.0.1", b_port)]).start()
        try:
            pool = _pool(trust, host, node, lambda: HostPort("127.0.0.1", balancer.port))
            async with running(pool):
                pool.set_proxies({a.host.uuid, b.host.uuid})
                await eventually(lambda: set(pool.tunnels) == {a.host.uuid, b.host.uuid},
                                 "a tunnel to each proxy")
                assert a.server.has(host.uuid) and b.server.has(host.uuid)
                assert _agents("connected") == connected + 2
                # Proxy b goes away: the node is reached through a alone.
                await b.server.close()
                await eventually(lambda: set(pool.tunnels) == {a.host.uuid}, "b's tunnel to drop")
                assert _agents("connected") == connected + 1
                sock = await a.server.dial(host.uuid)
                async with await ssh_over(sock, trust) as conn:
                    assert (await conn.run("echo via a")).stdout == "via a\n"
                # b is back on its port, same identity: the pool tunnels to it again.
                async with tunnel_server(trust, host=b.host, port=b_port) as b_again:
                    # The proxy registers the tunnel a moment before the node's pool does.
                    await eventually(lambda: b_again.server.has(host.uuid) and
                                     set(pool.tunnels) == {a.host.uuid, b.host.uuid},
                                     "a tunnel to b again")
                    assert _agents("connected") == connected + 2
                    sock = await b_again.server.dial(host.uuid)
                    async with await ssh_over(sock, trust) as conn:
                        assert (await conn.run("echo via b")).stdout == "via b\n"
        finally:
            await asyncio.to_thread(balancer.stop)
    # Every tunnel the pool made, refused or closed, left the state counts as it found them.
    assert {state: _agents(state) for state in before} == before
