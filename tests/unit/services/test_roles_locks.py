"""The role and lock stores on the memory backend: keys, missing roles, locks that run out."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from teleport.backend.base import key
from teleport.backend.memory import MemoryBackend
from teleport.errors import AlreadyExists, BadParameter, NotFound
from teleport.services.locks import LockService
from teleport.services.roles import RoleService
from teleport.types.locks import Lock
from teleport.types.roles import Role
from teleport.utils.clock import FakeClock

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _role(name: str) -> Role:
    return Role.model_validate({"kind": "role", "version": "v5", "metadata": {"name": name},
                                "spec": {"allow": {"logins": ["ubuntu"]}}})


def _lock(name: str, expires: datetime | None) -> Lock:
    return Lock.model_validate({"kind": "lock", "version": "v2",
                                "metadata": {"name": name, "expires": expires},
                                "spec": {"target": {"user": "joe"}, "expires": expires}})


async def test_roles_live_under_their_own_prefix_and_missing_ones_are_named() -> None:
    backend = MemoryBackend(FakeClock(NOW))
    roles = RoleService(backend)
    await roles.roles.create(_role("dev"))
    assert (await backend.get(key("roles", "dev"))).value
    with pytest.raises(AlreadyExists):
        await roles.roles.create(_role("dev"))
    assert list(await roles.by_name()) == ["dev"]
    await roles.require(["dev", "dev"])
    with pytest.raises(BadParameter, match='role "ops" does not exist'):
        await roles.require(["dev", "ops"])
    await roles.roles.delete("dev")
    with pytest.raises(NotFound, match="role 'dev' not found"):
        await roles.roles.get("dev")


async def test_a_lock_is_in_force_until_it_expires_then_the_backend_drops_it() -> None:
    clock = FakeClock(NOW)
    locks = LockService(MemoryBackend(clock))
    await locks.locks.create(_lock("for-good", None))
    await locks.locks.create(_lock("an-hour", NOW + timedelta(hours=1)))
    assert (await locks.locks.get("for-good")).spec.target.user == "joe"
    assert sorted(lk.metadata.name for lk in await locks.in_force(clock.now())) == \
        ["an-hour", "for-good"]
    clock.advance(timedelta(hours=1, seconds=1))
    assert [lk.metadata.name for lk in await locks.in_force(clock.now())] == ["for-good"]
    assert [lk.metadata.name for lk in await locks.locks.list()] == ["for-good"]
