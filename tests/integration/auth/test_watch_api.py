"""The auth API's watch stream (`GET /v1/watch`): nodes and proxies learn of a lock, role or user
change as it happens, by name only, over the real API on mutual TLS."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from teleport.api.auth_models import WatchEvent
from teleport.auth import passwords
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.base import Item
from teleport.backend.fanout import RESUME_HISTORY
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied, BadParameter, ConnectionProblem
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.types.locks import Lock, LockSpec, LockTarget
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec, User, UserSpec
from teleport.types.roles import Role
from teleport.utils.addr import HostPort
from teleport.utils.clock import RealClock
from tests.integration.auth_api import serve_auth_api

#: A change must reach a watcher within this many seconds.
WITHIN = 1.0


@dataclass
class Api:
    auth: AuthServer
    runner: web.AppRunner
    addr: HostPort
    cas: list[bytes]

    async def host(self, role: str = "Node") -> AuthClient:
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid="node-1", nodename="node1", system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        return self._client(certs.tls_cert, tls_key)

    async def user(self, name: str) -> AuthClient:
        user = await self.auth.accounts.upsert_user(User(metadata=Metadata(name=name), spec=UserSpec(
            roles=["admin"], traits={"logins": [name]})))
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_user_certs(
            user, sshkeys.public_key_of(sshkeys.generate_private_key()),
            tlskeys.tls_public_key_pem(tls_key), timedelta(hours=1))
        return self._client(certs.tls_cert, tls_key)

    def _client(self, cert: str, tls_key: bytes) -> AuthClient:
        ctx = tlsconfig.ssl_client_context(cert.encode(), tls_key, self.cas)
        return AuthClient([self.addr], ctx, timeout=5, cluster=self.auth.cluster_name)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    clock = RealClock()
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name="watch.test", recordings_dir=tmp_path / "rec"))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    cas = [c.encode() for c in (await auth.certs.get_ca("tls")).trusted_tls_certs()]
    try:
        yield Api(auth, runner, addr, cas)
    finally:
        await runner.cleanup()


def _role(name: str) -> Role:
    return Role.model_validate({"kind": "role", "version": "v5", "metadata": {"name": name},
                                "spec": {"allow": {"logins": ["ubuntu"]}}})


def _lock(name: str, user: str) -> Lock:
    return Lock(metadata=Metadata(name=name), spec=LockSpec(target=LockTarget(user=user)))


async def _next(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(anext(events), WITHIN)


async def _synced(events: AsyncIterator[WatchEvent]) -> list[WatchEvent]:
    """Read the stream's snapshot up to its `init`, and return it."""
    snapshot = []
    while (event := await _next(events)).type != "init":
        snapshot.append(event)
    return snapshot


def _line(event: WatchEvent) -> WatchEvent:
    """The line without its cursor, which the resume tests check."""
    return event.model_copy(update={"revision": ""})


def _watch_tasks() -> list[asyncio.Task[object]]:
    """Tasks the watch route started (its reader of backend events)."""
    return [t for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "cr_code", None) is not None
            and t.get_coro().cr_code.co_filename.endswith("api_watch.py")]  # type: ignore[union-attr]


async def test_changes_arrive_by_name_within_a_second(api: Api) -> None:
    async with await api.host("Node") as node:
        events = node.watch(["lock", "role", "user"])
        await _synced(events)
        await api.auth.resources.save_role(_role("dev"), actor="admin", overwrite=False)
        assert _line(await _next(events)) == WatchEvent(type="put", kind="role", name="dev")
        await api.auth.resources.save_lock(_lock("maint", "alice"), actor="admin", overwrite=False)
        assert _line(await _next(events)) == WatchEvent(type="put", kind="lock", name="maint")
        await api.auth.resources.delete_lock("maint", actor="admin")
        assert _line(await _next(events)) == WatchEvent(type="delete", kind="lock", name="maint")
        await api.auth.accounts.upsert_user(User(metadata=Metadata(name="bob"),
                                                 spec=UserSpec(roles=["access"])))
        assert _line(await _next(events)) == WatchEvent(type="put", kind="user", name="bob")
        await events.aclose()  # type: ignore[attr-defined]


async def test_a_proxy_may_watch_and_only_the_kinds_asked_for_arrive(api: Api) -> None:
    async with await api.host("Proxy") as proxy:
        events = proxy.watch(["lock"])
        await _synced(events)
        await api.auth.resources.save_role(_role("dev"), actor="admin", overwrite=False)
        await api.auth.resources.save_lock(_lock("maint", "alice"), actor="admin", overwrite=False)
        assert _line(await _next(events)) == WatchEvent(type="put", kind="lock", name="maint")
        await events.aclose()  # type: ignore[attr-defined]


async def test_lines_carry_names_only_never_secrets(api: Api) -> None:
    """A user's deletion and lock arrive, but no password hash, OTP secret or user content."""
    await api.auth.accounts.upsert_user(User(metadata=Metadata(name="carol"),
                                             spec=UserSpec(roles=["access"])))
    tls_key = tlskeys.generate_tls_key()
    certs = await api.auth.certs.issue_host_certs(
        host_uuid="node-1", nodename="node1", system_role="Node",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
    ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key, api.cas)
    hashed = passwords.hash_password("correct horse battery")
    lines: list[dict[str, str]] = []
    async with aiohttp.ClientSession() as http, http.get(
            f"https://{api.addr}/v1/watch?kinds=lock,role,user", ssl=ctx,
            server_hostname=AuthClient([api.addr], ctx, cluster="watch.test").server_name) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-ndjson"

        async def line() -> dict[str, str]:
            """The next line, less its cursor."""
            raw = await asyncio.wait_for(resp.content.readline(), WITHIN)
            assert hashed not in raw
            lines.append(json.loads(raw))
            return {k: v for k, v in lines[-1].items() if k != "revision"}

        # The snapshot names what exists now: the preset roles and carol.
        while (await line())["type"] != "init":
            pass
        assert {"type": "put", "kind": "user", "name": "carol"} in lines
        assert {"type": "put", "kind": "role", "name": "access"} in lines
        await api.auth.accounts.users.set_password_hash("carol", hashed)
        user = await api.auth.accounts.get_user("carol")
        await api.auth.accounts.upsert_user(user.model_copy(update={"spec": user.spec.model_copy(
            update={"status": user.spec.status.model_copy(update={"is_locked": True})})}))
        assert await line() == {"type": "put", "kind": "user", "name": "carol"}
        await api.auth.accounts.delete_user("carol")
        assert await line() == {"type": "delete", "kind": "user", "name": "carol"}
    assert all(set(entry) <= {"type", "kind", "name", "revision"} for entry in lines)


async def test_a_user_may_not_watch(api: Api) -> None:
    async with await api.user("alice") as alice:
        with pytest.raises(AccessDenied):
            await anext(alice.watch(["lock"]))


async def test_an_unknown_kind_is_a_400_naming_it(api: Api) -> None:
    async with await api.host() as node:
        with pytest.raises(BadParameter, match="'secrets'"):
            await anext(node.watch(["lock", "secrets"]))


async def test_a_client_that_goes_leaves_nothing_running(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with await api.host() as node:
        events = node.watch(["lock"])
        await _synced(events)
        assert _watch_tasks()
        await events.aclose()  # type: ignore[attr-defined]
    for _ in range(60):  # the server looks for a gone client every 0.5 s
        if not _watch_tasks():
            break
        await asyncio.sleep(0.05)
    assert not _watch_tasks()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_shutting_the_server_down_ends_the_stream_at_once(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with await api.host() as node:
        events = node.watch(["lock"])
        await _synced(events)
        start = time.monotonic()
        await api.runner.cleanup()
        assert time.monotonic() - start < 3  # aiohttp would wait 60 s for a handler
        with pytest.raises(ConnectionProblem):
            await asyncio.wait_for(anext(events), WITHIN)
    assert not _watch_tasks()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_an_expired_lock_is_announced_as_deleted(api: Api) -> None:
    async with await api.host() as node:
        events = node.watch(["lock"])
        await _synced(events)
        lock = _lock("brief", "alice").model_copy(update={"spec": LockSpec(
            target=LockTarget(user="alice"),
            expires=datetime.now(timezone.utc) + timedelta(seconds=0.3))})
        await api.auth.resources.save_lock(lock, actor="admin", overwrite=False)
        assert _line(await _next(events)) == WatchEvent(type="put", kind="lock", name="brief")
        await asyncio.sleep(0.4)
        await api.auth.resources.locks.locks.list()  # the memory backend expires on access
        assert _line(await _next(events)) == WatchEvent(type="delete", kind="lock", name="brief")
        await events.aclose()  # type: ignore[attr-defined]


async def test_hosts_and_cas_arrive_whole_with_public_keys_only(api: Api) -> None:
    """What a cache needs: the snapshot, then each record as it changes; a CA never with a
    private key."""
    await api.auth.hosts.upsert_server(_node("alpha"))
    async with await api.host("Proxy") as proxy:
        events = proxy.watch(["node", "cert_authority"])
        snapshot = await _synced(events)
        assert [(e.kind, e.name) for e in snapshot if e.kind == "node"] == [("node", "alpha")]
        node = next(e for e in snapshot if e.kind == "node")
        assert node.resource is not None and node.resource["spec"]["hostname"] == "alpha"
        cas = {e.sub_kind: e for e in snapshot if e.kind == "cert_authority"}
        assert set(cas) == {"user", "host", "tls"}
        assert {e.name for e in cas.values()} == {"watch.test"}
        for ca_type, event in cas.items():
            stored = await api.auth.certs.get_ca(ca_type, with_secrets=True)
            secrets = [k.private_key for k in stored.spec.active_keys.ssh] + \
                [k.key for k in stored.spec.active_keys.tls]
            assert secrets and all(secret not in json.dumps(event.resource) for secret in secrets)
            assert "PRIVATE KEY" not in json.dumps(event.resource)
        await api.auth.hosts.upsert_server(_node("beta"))
        put = await _next(events)
        assert (put.type, put.kind, put.name) == ("put", "node", "beta")
        await api.auth.hosts.presence.nodes.delete("alpha")
        assert _line(await _next(events)) == WatchEvent(type="delete", kind="node", name="alpha")
        await events.aclose()  # type: ignore[attr-defined]


async def test_an_open_stream_keeps_no_copy_of_its_snapshot(api: Api) -> None:
    """Once sent, the snapshot is the client's: a stream that stays open (a proxy's, for days)
    holds none of the lines it sent, which pinned memory a burst of nodes had left (issue 20)."""
    for n in range(50):
        await api.auth.hosts.upsert_server(_node(f"node-{n}"))
    async with await api.host("Proxy") as proxy:
        events = proxy.watch(["node"])
        assert len(await _synced(events)) == 50
        gc.collect()
        kept = [o for o in gc.get_objects()
                if isinstance(o, dict) and o.get("type") == "put" and o.get("kind") == "node"]
        assert kept == []
        await api.auth.hosts.upsert_server(_node("late"))
        assert (await _next(events)).name == "late"  # the stream is still open and serving
        await events.aclose()  # type: ignore[attr-defined]


async def test_a_change_between_the_watch_and_the_snapshot_is_not_missed(api: Api) -> None:
    """The stream takes the backend watch before it reads the snapshot: a node announced while
    the stream opens is in the snapshot or arrives as a change, never lost."""
    async with await api.host("Proxy") as proxy:
        for attempt in range(20):
            name = f"racer-{attempt}"
            events = proxy.watch(["node"])
            announced = asyncio.ensure_future(api.auth.hosts.upsert_server(_node(name)))
            seen = {e.name for e in await _synced(events)}
            await announced
            if name not in seen:
                assert (await _next(events)).name == name
            await events.aclose()  # type: ignore[attr-defined]


def _node(name: str) -> Server:
    return Server(kind="node", metadata=Metadata(
        name=name, expires=datetime.now(timezone.utc) + timedelta(minutes=1)),
        spec=ServerSpec(addr="127.0.0.1:3022", hostname=name))


async def test_a_stream_resumed_from_its_cursor_sends_only_what_was_missed(api: Api) -> None:
    """Watching again with `since` set to the last revision applied: `init` comes resumed, with
    no snapshot, then exactly the changes made meanwhile, in order."""
    await api.auth.hosts.upsert_server(_node("alpha"))
    async with await api.host("Proxy") as proxy:
        events = proxy.watch(["node", "lock"])
        assert [e.name for e in await _synced(events)] == ["alpha"]
        await api.auth.hosts.upsert_server(_node("beta"))
        seen = await _next(events)
        assert seen.name == "beta" and seen.revision
        await events.aclose()  # type: ignore[attr-defined]
        # Missed while away: a node joins, one leaves, a lock is placed; a role is not watched.
        await api.auth.hosts.upsert_server(_node("gamma"))
        await api.auth.hosts.presence.nodes.delete("alpha")
        await api.auth.resources.save_role(_role("dev"), actor="admin", overwrite=False)
        await api.auth.resources.save_lock(_lock("maint", "alice"), actor="admin", overwrite=False)
        await api.auth.hosts.upsert_server(_node("last"))
        events = proxy.watch(["node", "lock"], since=seen.revision)
        init = await _next(events)
        assert (init.type, init.resumed) == ("init", True)
        missed = []
        while not missed or missed[-1].name != "last":
            missed.append(await _next(events))
        # The cursor's own revision comes again (harmless: lines are applied idempotently).
        assert [(e.type, e.kind, e.name) for e in missed] == [
            ("put", "node", "beta"), ("put", "node", "gamma"), ("delete", "node", "alpha"),
            ("put", "lock", "maint"), ("put", "node", "last")]
        revisions = [e.revision for e in missed]
        assert all(revisions) and len(set(revisions)) == len(revisions)
        await events.aclose()  # type: ignore[attr-defined]


async def test_a_fresh_streams_init_carries_a_cursor_that_resumes(api: Api) -> None:
    async with await api.host("Node") as node:
        events = node.watch(["role"])
        await _synced(events)
        await events.aclose()  # type: ignore[attr-defined]
        events = node.watch(["role"])
        while (init := await _next(events)).type != "init":
            pass
        await events.aclose()  # type: ignore[attr-defined]
        assert init.revision and not init.resumed
        await api.auth.resources.save_role(_role("dev"), actor="admin", overwrite=False)
        events = node.watch(["role"], since=init.revision)
        assert (await _next(events)).resumed
        # At most the cursor's own revision again (what init reflected), then the change.
        lines = [await _next(events)]
        if lines[0].name != "dev":
            lines.append(await _next(events))
        assert _line(lines[-1]) == WatchEvent(type="put", kind="role", name="dev")
        await events.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("since", ["another-store:3", "garbage", ":", "memory:", "x:" + "9" * 5000,
                                   "x:\u0661\u0662"])
async def test_a_cursor_the_store_cannot_resume_gets_a_snapshot(api: Api, since: str) -> None:
    """A cursor of another store (a restarted sqlite auth server, a migrated cluster) or one
    that is not a cursor at all: a snapshot, as a fresh watcher gets."""
    await api.auth.resources.save_role(_role("dev"), actor="admin", overwrite=False)
    async with await api.host("Node") as node:
        events = node.watch(["role"], since=since)
        assert "dev" in [e.name for e in await _synced(events)]
        await events.aclose()  # type: ignore[attr-defined]


async def test_a_cursor_older_than_the_kept_history_gets_a_snapshot(api: Api) -> None:
    await api.auth.resources.save_role(_role("dev"), actor="admin", overwrite=False)
    async with await api.host("Node") as node:
        events = node.watch(["role"])
        await _synced(events)
        await api.auth.resources.save_role(_role("ops"), actor="admin", overwrite=False)
        cursor = (await _next(events)).revision
        await events.aclose()  # type: ignore[attr-defined]
        for n in range(RESUME_HISTORY):
            await api.auth.backend.put(Item(b"/elsewhere/%d" % n, b"x"))
        events = node.watch(["role"], since=cursor)
        assert {"dev", "ops"} <= {e.name for e in await _synced(events)}
        await events.aclose()  # type: ignore[attr-defined]
