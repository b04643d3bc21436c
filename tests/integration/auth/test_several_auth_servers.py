"""Several auth servers on one backend (the manual's "High Availability"): any of them serves any
call with what another one just wrote, and starting them at once creates one cluster.

Two (or three) `AuthServer`s share one MemoryBackend, whose watch is shared in process as an
etcd or PostgreSQL watch is across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import pyotp
import pytest

from teleport.auth import access
from teleport.auth.logins import INVALID_LOGIN
from teleport.auth.resources import fresh_name
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.base import key, range_end
from teleport.backend.memory import MemoryBackend
from teleport.config import StaticToken
from teleport.errors import AccessDenied
from teleport.events.emitter import MemoryEmitter
from teleport.keys.pin import ca_pin
from teleport.types.locks import Lock, LockSpec, LockTarget
from teleport.types.presets import PRESETS
from teleport.types.resource import Metadata
from teleport.types.resources import User, UserSpec
from teleport.types.roles import Role
from teleport.utils.clock import FakeClock

SETTINGS = AuthSettings(cluster_name="ha.test",
                        static_tokens=(StaticToken(roles=frozenset({"node"}), token="ha-static-token"),))


def _servers(backend: MemoryBackend, clock: FakeClock, count: int = 2) -> list[AuthServer]:
    """count auth servers with identical settings on one backend."""
    return [AuthServer(backend, MemoryEmitter(), clock, SETTINGS) for _ in range(count)]


@pytest.fixture
async def pair() -> AsyncIterator[tuple[AuthServer, AuthServer]]:
    """Auth servers A and B, started one after the other, each following the backend's changes."""
    clock = FakeClock(datetime.now(timezone.utc))
    a, b = _servers(MemoryBackend(clock), clock)
    await a.init()
    await b.init()
    followers = [asyncio.create_task(s.follow_changes()) for s in (a, b)]
    await asyncio.sleep(0.05)  # both watches in place
    try:
        yield a, b
    finally:
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)


async def test_auth_servers_starting_at_once_make_one_cluster() -> None:
    clock = FakeClock(datetime.now(timezone.utc))
    backend = MemoryBackend(clock)
    servers = _servers(backend, clock, 3)
    await asyncio.gather(*(s.init() for s in servers))
    assert {s.cluster_name for s in servers} == {"ha.test"}
    # One CA of each type, the one every server signs with: the same pin everywhere.
    stored = await backend.get_range(key("authorities"), range_end(key("authorities")))
    assert sorted(item.key for item in stored) == sorted(
        key("authorities", t, "ha.test") for t in ("user", "host", "tls"))
    for ca_type in ("user", "host", "tls"):
        cas = [await s.certs.get_ca(ca_type) for s in servers]
        assert all(ca == cas[0] for ca in cas), ca_type
    pins = {ca_pin((await s.certs.get_ca("tls")).trusted_tls_certs()[0].encode()) for s in servers}
    assert len(pins) == 1
    # One of each preset role, and the static token is the config's, listed once, not stored.
    roles = await servers[1].resources.list_roles()
    assert sorted(r.metadata.name for r in roles) == sorted(p.metadata.name for p in PRESETS)
    for server in servers:
        tokens = (await server.hosts.list_tokens())[0]
        assert [t.metadata.name for t in tokens] == ["ha-static-token"]
    assert await backend.get_range(key("tokens"), range_end(key("tokens"))) == []
    # A later start (a restart, a third server) changes nothing that exists.
    before = {item.key: item.revision for item in stored}
    late = _servers(backend, clock, 1)[0]
    await late.init()
    after = await backend.get_range(key("authorities"), range_end(key("authorities")))
    assert {item.key: item.revision for item in after} == before


async def test_users_roles_and_locks_written_through_a_are_served_by_b(
        pair: tuple[AuthServer, AuthServer]) -> None:
    a, b = pair
    user = await a.accounts.upsert_user(User(metadata=Metadata(name="ann"),
                                             spec=UserSpec(roles=["access"],
                                                           traits={"logins": ["ann"]})))
    assert (await b.accounts.get_user("ann")).spec.roles == ["access"]
    assert (await b.resources.roleset(["access"], user.spec.traits)).logins() == ["ann"]

    role = Role.model_validate({"kind": "role", "version": "v5", "metadata": {"name": "ops"},
                                "spec": {"allow": {"logins": ["ops"]}}})
    await a.resources.save_role(role, actor="admin", overwrite=False)
    assert (await b.resources.roleset(["ops"])).logins() == ["ops"]

    lock = Lock(metadata=Metadata(name=fresh_name()),
                spec=LockSpec(target=LockTarget(user="ann"), message="on leave"))
    await a.resources.save_lock(lock, actor="admin", overwrite=False)
    with pytest.raises(AccessDenied, match="on leave"):
        await access.check_user(b.accounts, "ann", datetime.now(timezone.utc))
    await a.resources.delete_lock(lock.metadata.name, actor="admin")
    await access.check_user(b.accounts, "ann", datetime.now(timezone.utc))


async def _eventually(check: object, seconds: float) -> None:
    """Poll an async predicate for up to seconds (well under the list's reuse time)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        if await check():  # type: ignore[operator]
            return
        assert asyncio.get_running_loop().time() < deadline, "not seen in time"
        await asyncio.sleep(0.02)


async def test_revocation_list_of_b_follows_a_lock_written_through_a(
        pair: tuple[AuthServer, AuthServer]) -> None:
    """B reuses its list for a second (nodes poll it); a lock written through A must not wait
    for that: the next list B hands out has it, as does one after a deletion through A."""
    a, b = pair
    await a.accounts.upsert_user(User(metadata=Metadata(name="bob"),
                                      spec=UserSpec(roles=["access"])))
    assert (await access.list_revocations(b.accounts)).locks == []  # B's list, now reused
    lock = Lock(metadata=Metadata(name=fresh_name()),
                spec=LockSpec(target=LockTarget(role="access"), message="incident"))
    await a.resources.save_lock(lock, actor="admin", overwrite=False)

    async def b_has_lock() -> bool:
        return [x.metadata.name for x in (await access.list_revocations(b.accounts)).locks] \
            == [lock.metadata.name]

    await _eventually(b_has_lock, access.LIST_REUSE_SECONDS / 2)

    await a.accounts.delete_user("bob", actor="admin")

    async def b_has_deletion() -> bool:
        return any(u.user == "bob" for u in (await access.list_revocations(b.accounts)).users)

    await _eventually(b_has_deletion, access.LIST_REUSE_SECONDS / 2)


async def test_a_ca_replaced_through_a_signs_on_b_at_once(
        pair: tuple[AuthServer, AuthServer]) -> None:
    """CAs are read on every use, never kept from the start (a rotation through one server)."""
    a, b = pair
    other = _servers(MemoryBackend(a.clock), a.clock, 1)[0]  # a cluster of the same name
    await other.init()
    new_ca = await other.certs.get_ca("user", with_secrets=True)
    assert new_ca != await b.certs.get_ca("user", with_secrets=True)
    await a.certs.cas.store("user").put(new_ca)
    assert await b.certs.get_ca("user", with_secrets=True) == new_ca


async def test_failed_logins_on_two_servers_share_one_lockout(
        pair: tuple[AuthServer, AuthServer]) -> None:
    """Wrong passwords sent to A and B at once: five are checked in all, not five each, and
    then the right one is refused on either server."""
    a, b = pair
    token = (await a.accounts.create_user_signup("cy", ["cy"], [], "admin")).metadata.name
    totp = pyotp.TOTP((await a.accounts.get_signup_info(token)).otp_secret)
    await a.accounts.complete_signup(token, "correct horse", totp.at(a.clock.now()))

    async def attempt(server: AuthServer, password: str) -> str:
        try:
            await server.logins.authenticate("cy", password, "000000")
        except AccessDenied as err:
            return str(err)
        return "ok"

    results = await asyncio.gather(*(attempt(s, f"wrong password {i}")
                                     for i in range(5) for s in (a, b)))
    checked = [r for r in results if r == INVALID_LOGIN]
    assert len(checked) == 5, results
    assert all("locked" in r or "at once" in r for r in results if r != INVALID_LOGIN), results
    for server in (a, b):
        result = await attempt(server, "correct horse")
        assert "locked" in result, result


async def test_follower_ends_with_its_task_and_survives_a_closed_backend() -> None:
    clock = FakeClock(datetime.now(timezone.utc))
    backend = MemoryBackend(clock)
    server = _servers(backend, clock, 1)[0]
    await server.init()
    task = asyncio.create_task(server.follow_changes())
    await asyncio.sleep(0.05)
    await backend.close()  # watch ends, watching again fails: it retries, never raises
    await asyncio.sleep(0.3)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
