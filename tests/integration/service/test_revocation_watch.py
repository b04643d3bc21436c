"""A node's revocation list follows a lock within a second through the watch stream, not the
poll: the poll here is a minute apart, so only the push can explain a refresh in time. A broken
stream is reopened, and logged once per outage."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from teleport.auth import api as auth_api
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.service.revocations import RevocationWatch
from teleport.types.locks import Lock, LockSpec, LockTarget
from teleport.types.resource import Metadata
from teleport.types.roles import Role
from teleport.utils.addr import HostPort
from teleport.utils.clock import RealClock

#: Far longer than any test here: a refresh in time came from the watch stream.
POLL = 60.0
PUSHED_WITHIN = 1.0


@dataclass
class Node:
    auth: AuthServer
    watch: RevocationWatch
    refreshes: list[float]
    port: int
    server_ctx: ssl.SSLContext
    runner: web.AppRunner

    async def serve(self) -> None:
        """(Re)start the auth API on the same port, as an auth server coming back does."""
        self.runner = await auth_api.serve(self.auth, self.server_ctx, "127.0.0.1", self.port)

    refreshed: asyncio.Event

    async def until(self, check: Callable[[], bool], within: float) -> None:
        """Wait until check holds after some refresh; fail after within seconds."""
        async with asyncio.timeout(within):
            while not check():
                self.refreshed.clear()
                await self.refreshed.wait()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    clock = RealClock()
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name="push.test", recordings_dir=tmp_path / "rec"))
    await auth.init()
    auth_key = tlskeys.generate_tls_key()
    auth_certs = await auth.certs.issue_host_certs(
        host_uuid="auth-1", nodename="auth", system_role="Auth",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(auth_key), addresses=["127.0.0.1"])
    server_ctx = tlsconfig.ssl_server_context(
        auth_certs.tls_cert.encode(), auth_key, [c.encode() for c in auth_certs.tls_ca_certs],
        require_client_cert=False)
    runner = await auth_api.serve(auth, server_ctx, "127.0.0.1", 0)
    port = runner.addresses[0][1]
    tls_key = tlskeys.generate_tls_key()
    certs = await auth.certs.issue_host_certs(
        host_uuid="node-1", nodename="node1", system_role="Node",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
    ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                       [c.encode() for c in certs.tls_ca_certs])
    refreshes: list[float] = []
    refreshed = asyncio.Event()

    class Watch(RevocationWatch):
        async def refresh(self) -> bool:
            done = await super().refresh()
            if done:
                refreshes.append(time.monotonic())
                refreshed.set()
            return done

    async with AuthClient([HostPort("127.0.0.1", port)], ctx, timeout=5,
                          cluster=auth.cluster_name) as client:
        watch = Watch(client, clock, interval=POLL)
        node = Node(auth, watch, refreshes, port, server_ctx, runner, refreshed)
        tasks = [asyncio.create_task(watch.run()), asyncio.create_task(watch.watch())]
        try:
            # The poll's first refresh, then the watch's on its init line.
            await node.until(lambda: len(refreshes) >= 2, 5)
            yield node
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await node.runner.cleanup()


def _lock(name: str, user: str) -> Lock:
    return Lock(metadata=Metadata(name=name), spec=LockSpec(target=LockTarget(user=user),
                                                            message="incident"))


async def test_a_lock_reaches_the_node_within_a_second_without_waiting_for_the_poll(
        node: Node) -> None:
    await node.auth.resources.save_lock(_lock("incident", "joe"), actor="admin", overwrite=False)
    await node.until(lambda: bool(node.watch.current.locks), PUSHED_WITHIN)
    assert [lock.metadata.name for lock in node.watch.current.locks] == ["incident"]
    # The role cache follows as fast: a role created now is known within the second.
    role = Role.model_validate({"kind": "role", "version": "v5", "metadata": {"name": "dev"},
                                "spec": {"allow": {"logins": ["ubuntu"]}}})
    await node.auth.resources.save_role(role, actor="admin", overwrite=False)
    await node.until(lambda: "dev" in (node.watch.roles or {}), PUSHED_WITHIN)


async def test_a_burst_of_changes_costs_few_refreshes_and_the_last_one_counts(node: Node) -> None:
    before = len(node.refreshes)
    for i in range(30):
        await node.auth.resources.save_lock(_lock(f"l{i}", "joe"), actor="admin",
                                            overwrite=False)
        await asyncio.sleep(0.01)
    # The refresh after the last change sees it.
    await node.until(lambda: len(node.watch.current.locks) == 30, 2)
    assert len(node.refreshes) - before <= 6  # ~0.3 s of changes, one refresh per 0.2 s


async def test_a_broken_stream_is_reopened_and_logged_once(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="teleport.revocations")
    await node.runner.cleanup()
    await asyncio.sleep(2.0)  # a few retries (0.5 s, 1 s, ...) against a closed port
    # A change while the node cannot hear: it is read when the stream is back.
    await node.auth.resources.save_lock(_lock("while-away", "joe"), actor="admin",
                                        overwrite=False)
    await node.serve()
    # The backoff had reached 2 s: the next try is at most 4 s away.
    await node.until(lambda: bool(node.watch.current.locks), 8)
    assert [lock.metadata.name for lock in node.watch.current.locks] == ["while-away"]
    broke = [r for r in caplog.records if "cannot watch" in r.getMessage()]
    back = [r for r in caplog.records if "watching the auth server for changes again" in
            r.getMessage()]
    assert len(broke) == 1 and len(back) == 1


async def test_a_ca_change_reaches_the_nodes_trust_within_a_second(node: Node) -> None:
    """The node re-reads its trusted CAs on the stream's word, not at its 30 s re-read."""
    woken = asyncio.Event()
    node.watch.on_ca_change(woken.set)
    await asyncio.sleep(0.2)  # a wake-up from the stream's opening is not the change's
    woken.clear()
    cas = node.auth.certs.cas
    ca = await cas.get("user", node.auth.cluster_name)
    await cas.store("user").put(ca)
    async with asyncio.timeout(PUSHED_WITHIN):
        await woken.wait()
