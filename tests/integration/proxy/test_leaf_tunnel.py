"""A leaf cluster's proxy on a root's tunnel port, in one process: it registers its cluster and
the root dials its nodes through it (`sshutils.clusterdial`), and nothing more: no channel to
the root's auth server or nodes, no standing as one of the root's nodes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from teleport.errors import ConnectionProblem
from teleport.events.emitter import MemoryEmitter
from teleport.proxy.tunnel import TunnelServer
from teleport.sshutils import clusterdial
from teleport.sshutils.reversetunnel import (
    AUTH_TARGET,
    NODE_LISTEN,
    PEER_PORT,
    TunnelClientConnection,
)
from teleport.sshutils.splice import ChannelSplice, SpliceTCPSession
from teleport.utils.addr import HostPort
from tests.integration.proxy.test_tunnel import WAIT, _host, agent, eventually
from tests.integration.srv.sshenv import CLUSTER, Trust

LEAF = "leaf.test"


@pytest.fixture
async def root_and_leaf(tmp_path: Path) -> AsyncIterator[tuple[TunnelServer, Trust, Trust]]:
    (tmp_path / "root").mkdir()
    (tmp_path / "leaf").mkdir()
    root, leaf = Trust(tmp_path / "root"), Trust(tmp_path / "leaf")
    proxy = _host(root, "proxy", "Proxy")
    server = TunnelServer(host_private_key=proxy.key, host_cert=proxy.cert,
                          trusted_host_cas=root.host_cas, cluster_name=CLUSTER,
                          auth_addrs=lambda: [HostPort("127.0.0.1", 9)], emitter=MemoryEmitter(),
                          remote_host_cas=lambda: {LEAF: leaf.host_cas()})
    async with server:
        await server.start("127.0.0.1", 0)
        yield server, root, leaf


async def _dialler(sock_pair: list[socket.socket]) -> None:
    """The leaf proxy's side of one channel: read the dial line, answer, echo what follows."""
    sock = sock_pair[0]
    loop = asyncio.get_running_loop()
    want = clusterdial.DialRequest.decode(await clusterdial.read_line(sock))
    await clusterdial.answer(sock, None if want.host == "leafnode" else f"no node {want.host}")
    while data := await loop.sock_recv(sock, 65536):
        await loop.sock_sendall(sock, b"leaf:" + data)
    sock.close()


async def _leaf_proxy(server: TunnelServer, root: Trust, leaf: Trust) -> TunnelClientConnection:
    """The leaf's proxy dialling the root's tunnel port with its own proxy certificate."""
    lproxy = _host(leaf, "leafproxy", "Proxy", cluster=LEAF)
    return await agent(root, server.port, lproxy.key, lproxy.cert, lproxy.uuid)


async def test_the_root_reaches_a_leaf_node_through_the_leafs_proxy(
        root_and_leaf: tuple[TunnelServer, Trust, Trust]) -> None:
    server, root, leaf = root_and_leaf
    conn = await _leaf_proxy(server, root, leaf)
    tasks: set[asyncio.Task[None]] = set()

    async def accept(orig_host: str, orig_port: int) -> SpliceTCPSession:
        splice = ChannelSplice()
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        tasks.add(asyncio.create_task(_dialler([ours])))
        await splice.attach(theirs)
        return SpliceTCPSession(splice)

    try:
        await conn.create_server(accept, *clusterdial.CLUSTER_LISTEN)
        await eventually(lambda: LEAF in server.clusters, "the leaf's tunnel")
        sock = await server.dial_cluster(LEAF, "leafnode", 3022, ("192.0.2.1", 5000))
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, b"ping")
        assert await asyncio.wait_for(loop.sock_recv(sock, 100), WAIT) == b"leaf:ping"
        sock.close()
        with pytest.raises(ConnectionProblem, match="no node ghost"):
            await server.dial_cluster(LEAF, "ghost", 3022)
    finally:
        conn.close()
        for task in tasks:
            task.cancel()


async def test_a_leafs_tunnel_reaches_nothing_of_the_root(
        root_and_leaf: tuple[TunnelServer, Trust, Trust]) -> None:
    server, root, leaf = root_and_leaf
    conn = await _leaf_proxy(server, root, leaf)
    try:
        for target in (AUTH_TARGET, ("some-node-uuid", PEER_PORT)):
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.create_connection(asyncssh.SSHTCPSession, *target)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.create_server(lambda *_: None, *NODE_LISTEN)  # not one of our nodes
        assert server.snapshot() == []
    finally:
        conn.close()
    # A leaf node (not its proxy) cannot tunnel at all.
    lnode = _host(leaf, "leafnode", "Node", cluster=LEAF)
    with pytest.raises(asyncssh.PermissionDenied):
        await agent(root, server.port, lnode.key, lnode.cert, lnode.uuid)
