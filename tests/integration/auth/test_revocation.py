"""The auth API checks the user behind a certificate on every call (finding 5).

A certificate lives up to 30 hours; deleting, locking or demoting its user must take effect at
once: the stored user decides, not the roles the certificate remembers.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from teleport.api.auth_models import AnnouncedSession
from teleport.auth.access import Revocations, fetch_revocations
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.types.resource import Metadata
from teleport.types.resources import LoginStatus, Server, ServerSpec, User, UserSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api


@dataclass
class Api:
    auth: AuthServer
    addr: HostPort
    clock: FakeClock

    async def _client(self, cert: str, tls_key: bytes) -> AuthClient:
        ours = (await self.auth.certs.get_ca("tls")).trusted_tls_certs()
        ctx = tlsconfig.ssl_client_context(cert.encode(), tls_key, [c.encode() for c in ours])
        return AuthClient([self.addr], ctx, timeout=10, cluster=self.auth.cluster_name)

    async def host(self, role: str, host_uuid: str) -> AuthClient:
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid=host_uuid, nodename=host_uuid, system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        return await self._client(certs.tls_cert, tls_key)

    async def user(self, name: str, roles: list[str], **spec: Any) -> AuthClient:
        """Create (or replace) user name and return a client holding a fresh `tsh login` cert."""
        user = await self.auth.accounts.upsert_user(User(metadata=Metadata(name=name), spec=UserSpec(
            roles=roles, traits={"logins": [name]}, **spec)))
        return await self.login(user)

    async def login(self, user: User) -> AuthClient:
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_user_certs(
            user, sshkeys.public_key_of(sshkeys.generate_private_key()),
            tlskeys.tls_public_key_pem(tls_key), timedelta(hours=12))
        return await self._client(certs.tls_cert, tls_key)

    async def update(self, name: str, **spec: Any) -> None:
        user = await self.auth.accounts.get_user(name)
        await self.auth.accounts.upsert_user(user.model_copy(update={
            "spec": user.spec.model_copy(update=spec)}))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    clock = FakeClock(datetime.now(timezone.utc))
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name="revoke.test", recordings_dir=tmp_path / "rec"))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    try:
        yield Api(auth, addr, clock)
    finally:
        await runner.cleanup()


async def _announce_bobs_session(api: Api) -> str:
    sid = str(uuid.uuid4())
    async with await api.host("Node", "node-1") as node:
        await node.upsert_server(Server(kind="node", metadata=Metadata(name="node-1"),
                                        spec=ServerSpec(addr="127.0.0.1:3022", hostname="node-1")))
        await node.announce_session(sid, AnnouncedSession(
            user="bob", login="bob", server_hostname="node-1", created="2026-01-01T00:00:00Z",
            parties=["bob"]))
    return sid


async def test_deleted_admin_can_no_longer_list_recordings_or_live_sessions(api: Api) -> None:
    sid = await _announce_bobs_session(api)
    async with await api.user("alice", ["admin"]) as alice:
        assert [s.sid for s in await alice.list_active_sessions()] == [sid]
        assert await alice.list_recordings() == []
        await api.auth.accounts.delete_user("alice")
        with pytest.raises(AccessDenied, match="no longer exists"):
            await alice.list_active_sessions()
        with pytest.raises(AccessDenied, match="no longer exists"):
            await alice.list_recordings()
        with pytest.raises(AccessDenied, match="no longer exists"):
            await anext(alice.stream_recording(sid))
        with pytest.raises(AccessDenied):
            await alice.list_servers("node")


async def test_a_user_created_again_does_not_revive_old_certificates(api: Api) -> None:
    old = await api.user("alice", ["admin"])
    async with old:
        await old.ping()
        await api.auth.accounts.delete_user("alice")
        api.clock.advance(timedelta(seconds=5))
        async with await api.user("alice", ["access"]) as new:
            await new.ping()
            with pytest.raises(AccessDenied, match="deleted after this certificate was issued"):
                await old.list_active_sessions()


@pytest.mark.parametrize("lock", [
    {"is_locked": True},  # no lock_expires: locked until an admin unlocks
    {"is_locked": True, "lock_expires": "future"},
])
async def test_locked_user_is_refused(api: Api, lock: dict[str, Any]) -> None:
    await _announce_bobs_session(api)
    async with await api.user("alice", ["admin"]) as alice:
        assert len(await alice.list_active_sessions()) == 1
        if lock.get("lock_expires") == "future":
            lock = {**lock, "lock_expires": api.clock.now() + timedelta(minutes=20)}
        await api.update("alice", status=LoginStatus(**lock, locked_message="locked by admin"))
        with pytest.raises(AccessDenied, match="is locked"):
            await alice.list_active_sessions()
        with pytest.raises(AccessDenied, match="is locked"):
            await alice.list_recordings()
        if "lock_expires" in lock:
            api.clock.advance(timedelta(minutes=21))  # the lock ran out
            assert await alice.list_recordings() == []


async def test_expired_user_is_refused(api: Api) -> None:
    async with await api.user("alice", ["admin"]) as alice:
        await api.update("alice", expires=api.clock.now() - timedelta(seconds=1))
        with pytest.raises(AccessDenied, match="expired"):
            await alice.list_recordings()


async def test_roles_are_the_stored_ones_not_the_certificates(api: Api) -> None:
    sid = await _announce_bobs_session(api)
    async with await api.user("alice", ["admin"]) as alice:
        assert [s.sid for s in await alice.list_active_sessions()] == [sid]
        await api.update("alice", roles=["access"])  # demoted: only her own sessions now
        assert await alice.list_active_sessions() == []


async def test_proxy_cannot_act_for_a_deleted_or_locked_user(api: Api) -> None:
    sid = await _announce_bobs_session(api)
    await api.user("alice", ["admin"])
    await api.user("carol", ["admin"])
    async with await api.host("Proxy", "proxy-1") as proxy:
        assert len(await proxy.list_active_sessions("alice")) == 1
        await api.auth.accounts.delete_user("alice")
        await api.update("carol", status=LoginStatus(is_locked=True))
        for user in ("alice", "carol"):
            with pytest.raises(AccessDenied):
                await proxy.list_active_sessions(user)
            with pytest.raises(AccessDenied):
                await proxy.list_recordings(user)
            with pytest.raises(AccessDenied):
                await anext(proxy.stream_recording(sid, user))


async def test_nodes_and_proxies_read_the_revocation_list(api: Api) -> None:
    alice = await api.user("alice", ["admin"])
    await api.user("carol", ["access"])
    await api.user("dave", ["access"])
    await api.auth.accounts.delete_user("alice")
    await api.update("carol", status=LoginStatus(is_locked=True, locked_message="on leave"))
    async with await api.host("Node", "node-1") as node, alice:
        revoked = await fetch_revocations(node)
        assert isinstance(revoked, Revocations)
        now = api.clock.now()
        earlier = now - timedelta(hours=1)
        assert revoked.refusal("alice", earlier, now) == "user 'alice' was deleted"
        assert revoked.refusal("alice", now + timedelta(seconds=5), now) is None  # a new alice
        assert "locked: on leave" in (revoked.refusal("carol", earlier, now) or "")
        assert revoked.refusal("dave", earlier, now) is None
        with pytest.raises(AccessDenied):  # users may not read it
            await fetch_revocations(alice)


async def test_failed_logins_lock_logins_but_not_certificates_already_issued(api: Api) -> None:
    """Otherwise anyone could cut a user's sessions by failing five logins in their name."""
    async with await api.user("alice", ["admin"]) as alice:
        for _ in range(5):
            with pytest.raises(AccessDenied):
                await api.auth.logins.authenticate("alice", "wrong password", "000000")
        assert (await api.auth.accounts.get_user("alice")).spec.status.is_locked
        assert await alice.list_recordings() == []
    async with await api.host("Node", "node-1") as node:
        revoked = await fetch_revocations(node)
        assert revoked.refusal("alice", api.clock.now(), api.clock.now()) is None


async def test_recording_proxy_gets_no_copy_of_a_revoked_users_certificate(api: Api) -> None:
    user = await api.auth.accounts.upsert_user(User(metadata=Metadata(name="alice"), spec=UserSpec(
        roles=["access"], traits={"logins": ["root"]})))
    public = sshkeys.public_key_of(sshkeys.generate_private_key())
    issued = await api.auth.certs.issue_user_certs(
        user, public, tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()), timedelta(hours=8))
    async with await api.host("Proxy", "proxy-1") as proxy:
        assert await proxy.user_cert_for_proxy(issued.ssh_cert, public)
        await api.update("alice", status=LoginStatus(is_locked=True))
        with pytest.raises(AccessDenied, match="is locked"):
            await proxy.user_cert_for_proxy(issued.ssh_cert, public)
        await api.auth.accounts.delete_user("alice")
        api.clock.advance(timedelta(seconds=5))
        await api.user("alice", ["access"])  # created again: the old certificate stays dead
        with pytest.raises(AccessDenied, match="deleted after this certificate"):
            await proxy.user_cert_for_proxy(issued.ssh_cert, public)
