"""A node ends the access of deleted and locked users, and of users whose roles no longer admit
them, within seconds, live sessions included.

A real auth server serves its API on loopback; the node polls its revocation list as the daemon
does (`teleport.service.revocations`), faster here so the test stays short.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncssh
import pytest
from aiohttp import web

from teleport.auth.access import LIST_REUSE_SECONDS
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.events.emitter import CLIENT_DISCONNECT, MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.service.revocations import RevocationWatch
from teleport.srv import NodeServer
from teleport.types.locks import Lock, LockSpec, LockTarget
from teleport.types.resource import Metadata
from teleport.types.resources import LoginStatus, User, UserSpec
from teleport.types.roles import Role
from teleport.utils.clock import RealClock
from tests.integration.auth_api import serve_auth_api
from tests.integration.srv.sshenv import read_until

POLL = 0.2
#: How long a revoked user's session may outlive the revocation (a few polls).
CUT_WITHIN = 5.0


def _me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@dataclass
class Creds:
    key: asyncssh.SSHKey
    cert: asyncssh.SSHCertificate


@dataclass
class Cluster:
    auth: AuthServer
    runner: web.AppRunner
    node: NodeServer
    watch: RevocationWatch
    emitter: MemoryEmitter
    host_cas: list[str]

    async def login(self, name: str) -> Creds:
        """Create user name if needed and issue a `tsh login` certificate for the OS login."""
        try:
            user = await self.auth.accounts.get_user(name)
        except Exception:
            user = await self.auth.accounts.upsert_user(User(metadata=Metadata(name=name), spec=UserSpec(
                roles=["access"], traits={"logins": [_me()]})))
        key = sshkeys.generate_private_key()
        certs = await self.auth.certs.issue_user_certs(
            user, sshkeys.public_key_of(key),
            tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()), timedelta(hours=1))
        return Creds(asyncssh.import_private_key(key), asyncssh.import_certificate(certs.ssh_cert))

    async def connect(self, creds: Creds) -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(
            "127.0.0.1", self.node.port, username=_me(), client_keys=[(creds.key, creds.cert)],
            known_hosts=([], [asyncssh.import_public_key(k) for k in self.host_cas], []),
            agent_path=None, config=None, preferred_auth=["publickey"])

    async def lock(self, name: str, **status: Any) -> None:
        user = await self.auth.accounts.get_user(name)
        await self.auth.accounts.upsert_user(user.model_copy(update={
            "spec": user.spec.model_copy(update={"status": LoginStatus(**status)})}))

    async def polled(self) -> None:
        """Wait until the node has fetched a list the auth server built after this call."""
        await asyncio.sleep(LIST_REUSE_SECONDS)
        for _ in range(2):
            await self.watch_refreshed.wait()
            self.watch_refreshed.clear()

    watch_refreshed: asyncio.Event


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    clock = RealClock()
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name="revoke.test"))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    host_key = sshkeys.generate_private_key()
    tls_key = tlskeys.generate_tls_key()
    certs = await auth.certs.issue_host_certs(
        host_uuid="node-1", nodename="node1", system_role="Node",
        ssh_public_key=sshkeys.public_key_of(host_key),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=["127.0.0.1"])
    ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                       [c.encode() for c in certs.tls_ca_certs])
    client = AuthClient([addr], ctx, timeout=5, cluster=auth.cluster_name)
    refreshed = asyncio.Event()

    class Watch(RevocationWatch):
        async def refresh(self) -> bool:
            try:
                return await super().refresh()
            finally:
                refreshed.set()

    watch = Watch(client, clock, interval=POLL)
    emitter = MemoryEmitter()
    node = NodeServer(host_private_key=host_key, host_cert=certs.ssh_cert,
                      trusted_user_cas=lambda: certs.user_ca_keys, cluster_name=auth.cluster_name,
                      server_id="node-1", nodename="node1", labels=lambda: {"env": "staging"},
                      emitter=emitter, proxy_addr=lambda: "", revoked=watch.node_check("node-1"),
                      roles=lambda: watch.roles)
    watch.enforce_on(node)
    async with client, node:
        await node.start("127.0.0.1", 0)
        task = asyncio.create_task(watch.run())
        try:
            yield Cluster(auth, runner, node, watch, emitter, certs.host_ca_keys, refreshed)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await runner.cleanup()


async def _shell(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHClientProcess[str]:
    proc = await conn.create_process(term_type="xterm", env={"PS1": "$ "})
    proc.stdin.write("echo ready\n")
    await read_until(proc, "ready")
    return proc


async def _cut(conn: asyncssh.SSHClientConnection, proc: asyncssh.SSHClientProcess[str]) -> float:
    """Return how long it took the node to end a live session and its connection."""
    start = time.monotonic()
    await asyncio.wait_for(proc.wait_closed(), CUT_WITHIN)
    await asyncio.wait_for(conn.wait_closed(), CUT_WITHIN)
    return time.monotonic() - start


async def test_deleting_a_user_ends_their_live_session_and_refuses_them(cluster: Cluster) -> None:
    alice = await cluster.login("alice")
    bob = await cluster.login("bob")
    async with await cluster.connect(alice) as conn, await cluster.connect(bob) as bob_conn:
        proc = await _shell(conn)
        bob_proc = await _shell(bob_conn)
        await cluster.auth.accounts.delete_user("alice")
        assert await _cut(conn, proc) < CUT_WITHIN
        # Nobody else is touched.
        bob_proc.stdin.write("echo still-here\n")
        await read_until(bob_proc, "still-here")
    disconnect, = cluster.emitter.of_type(CLIENT_DISCONNECT)
    assert disconnect["user"] == "alice" and "deleted" in disconnect["reason"]
    with pytest.raises(asyncssh.PermissionDenied):
        await cluster.connect(alice)
    refused = [e for e in cluster.emitter.of_type("auth") if "access revoked" in e["error"]]
    assert refused and all(e["user"] == "alice" for e in refused)

    # An alice created again logs in afresh; the old certificate stays dead.
    await asyncio.sleep(1.1)  # certificates have one-second resolution
    new_alice = await cluster.login("alice")
    await cluster.polled()
    async with await cluster.connect(new_alice) as conn:
        assert (await conn.run("echo hi", check=True)).stdout == "hi\n"
    with pytest.raises(asyncssh.PermissionDenied):
        await cluster.connect(alice)


async def test_locking_a_user_ends_their_session_until_unlocked(cluster: Cluster) -> None:
    carol = await cluster.login("carol")
    async with await cluster.connect(carol) as conn:
        proc = await _shell(conn)
        await cluster.lock("carol", is_locked=True, locked_message="on leave")
        assert await _cut(conn, proc) < CUT_WITHIN
    disconnect, = cluster.emitter.of_type(CLIENT_DISCONNECT)
    assert "locked" in disconnect["reason"] and "on leave" in disconnect["reason"]
    with pytest.raises(asyncssh.PermissionDenied):
        await cluster.connect(carol)
    await cluster.lock("carol", is_locked=False)
    await cluster.polled()
    async with await cluster.connect(carol) as conn:
        assert (await conn.run("echo back", check=True)).stdout == "back\n"


async def test_node_keeps_the_last_list_while_auth_is_down(cluster: Cluster) -> None:
    alice = await cluster.login("alice")
    bob = await cluster.login("bob")
    await cluster.auth.accounts.delete_user("alice")
    await cluster.polled()
    await cluster.runner.cleanup()  # the auth server goes away
    await cluster.polled()
    assert cluster.watch.outage
    async with await cluster.connect(bob) as conn:
        assert (await conn.run("echo up", check=True)).stdout == "up\n"
    with pytest.raises(asyncssh.PermissionDenied):
        await cluster.connect(alice)


async def _save_role(cluster: Cluster, name: str, spec: dict[str, Any]) -> None:
    role = Role.model_validate({"kind": "role", "version": "v5", "metadata": {"name": name},
                                "spec": spec})
    await cluster.auth.resources.save_role(role, actor="admin", overwrite=True)


async def _login_with(cluster: Cluster, name: str, roles: list[str]) -> Creds:
    await cluster.auth.accounts.upsert_user(User(metadata=Metadata(name=name), spec=UserSpec(
        roles=roles, traits={"logins": [_me()]})))
    return await cluster.login(name)


async def test_a_role_change_ends_sessions_it_no_longer_admits_and_refuses_new_ones(
        cluster: Cluster) -> None:
    staging = {"allow": {"logins": ["{{internal.logins}}"], "node_labels": {"env": "staging"}}}
    await _save_role(cluster, "dev", staging)
    await cluster.polled()
    dave = await _login_with(cluster, "dave", ["dev"])
    async with await cluster.connect(dave) as conn:
        proc = await _shell(conn)
        await _save_role(cluster, "dev", {"allow": {**staging["allow"], "node_labels": {"env": "prod"}}})
        assert await _cut(conn, proc) < CUT_WITHIN  # the same certificate, judged anew
    disconnect, = cluster.emitter.of_type(CLIENT_DISCONNECT)
    assert disconnect["user"] == "dave" and "(roles: dev)" in disconnect["reason"]
    with pytest.raises(asyncssh.PermissionDenied):
        await cluster.connect(dave)
    refused = [e for e in cluster.emitter.of_type("auth") if e["user"] == "dave"]
    assert refused and f"no role allows login '{_me()}' on node 'node1' (roles: dev)" in \
        refused[-1]["error"]
    await _save_role(cluster, "dev", staging)
    await cluster.polled()
    async with await cluster.connect(dave) as conn:
        assert (await conn.run("echo back", check=True)).stdout == "back\n"


async def test_a_roles_idle_timeout_hangs_up_an_idle_session(cluster: Cluster) -> None:
    await _save_role(cluster, "impatient", {
        "options": {"client_idle_timeout": "1s"},
        "allow": {"logins": ["{{internal.logins}}"], "node_labels": {"*": "*"}}})
    await cluster.polled()
    erin = await _login_with(cluster, "erin", ["impatient"])
    frank = await cluster.login("frank")  # access: no idle limit
    async with await cluster.connect(erin) as conn, await cluster.connect(frank) as other:
        proc = await _shell(conn)
        await _shell(other)
        assert await _cut(conn, proc) < CUT_WITHIN
        assert not other.is_closed()
    disconnect, = cluster.emitter.of_type(CLIENT_DISCONNECT)
    assert disconnect["user"] == "erin" and "idle timeout of 1s" in disconnect["reason"]


async def test_a_node_lock_ends_every_session_on_the_node_and_refuses_new_ones(
        cluster: Cluster) -> None:
    alice = await cluster.login("alice")
    async with await cluster.connect(alice) as conn:
        proc = await _shell(conn)
        lock = Lock(metadata=Metadata(name="maint"), spec=LockSpec(
            target=LockTarget(node="node-1"), message="disk swap"))
        await cluster.auth.resources.save_lock(lock, actor="admin", overwrite=False)
        assert await _cut(conn, proc) < CUT_WITHIN
    disconnect, = cluster.emitter.of_type(CLIENT_DISCONNECT)
    assert "lock targeting node=node-1 is in force: disk swap" in disconnect["reason"]
    with pytest.raises(asyncssh.PermissionDenied):
        await cluster.connect(await cluster.login("bob"))
    await cluster.auth.resources.delete_lock("maint", actor="admin")
    await cluster.polled()
    async with await cluster.connect(alice) as conn:
        assert (await conn.run("echo open", check=True)).stdout == "open\n"
