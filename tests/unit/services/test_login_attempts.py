"""Failed logins counted by two auth servers at once: no failure lost, the lock at exactly max.

Service level, without passwords: tests/unit/auth/test_login_security.py drives whole auth
servers (bcrypt, one attempt per name at a time per server); here every step of every attempt
races, on memory, one sqlite file and two connections to it (see conftest.py).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from teleport.backend.base import key
from teleport.services.login_attempts import (
    Locked,
    LoginAttempts,
    LoginAttemptService,
    LoginPolicy,
)
from tests.unit.services.conftest import Shared

POLICY = LoginPolicy(max_attempts=5, window=timedelta(minutes=30),
                     lock_duration=timedelta(minutes=20))


def _servers(shared: Shared) -> list[LoginAttemptService]:
    return [LoginAttemptService(shared.first, POLICY), LoginAttemptService(shared.second, POLICY)]


async def _failed_attempt(service: LoginAttemptService, shared: Shared) -> str:
    """Reserve a slot and fail it; return 'failed', 'locked it', 'no slot' or 'locked'."""
    now = shared.clock.now()
    try:
        attempt = await service.reserve("joe", now)
    except Locked:
        return "locked"
    if attempt is None:
        return "no slot"
    return "locked it" if await service.fail("joe", attempt, now) is not None else "failed"


async def _stored(shared: Shared) -> LoginAttempts:
    item = await shared.first.get(key("user_secrets", "joe", "login_attempts"))
    return LoginAttempts.model_validate_json(item.value)


async def test_concurrent_failures_on_two_servers_are_all_counted(shared: Shared) -> None:
    servers = _servers(shared)
    below = POLICY.max_attempts - 1
    results = await asyncio.gather(*(_failed_attempt(servers[n % 2], shared)
                                     for n in range(below)))
    assert results == ["failed"] * below
    record = await _stored(shared)
    assert [a.pending for a in record.attempts] == [False] * below  # no lost update
    assert record.locked_until <= shared.clock.now()
    # One more failure, on either server, is the one that locks.
    assert await _failed_attempt(servers[1], shared) == "locked it"
    assert await _failed_attempt(servers[0], shared) == "locked"


async def test_the_lock_engages_at_exactly_max_failures_however_attempts_race(
        shared: Shared) -> None:
    servers = _servers(shared)
    results = await asyncio.gather(*(_failed_attempt(servers[n % 2], shared) for n in range(20)))
    # Exactly max_attempts slots were handed out: no more passwords would have been checked.
    assert results.count("failed") + results.count("locked it") == POLICY.max_attempts
    assert results.count("locked it") == 1
    assert set(results) <= {"failed", "locked it", "no slot", "locked"}
    for service in servers:
        with pytest.raises(Locked):
            await service.reserve("joe", shared.clock.now())
    shared.clock.advance(POLICY.lock_duration)
    assert await _failed_attempt(servers[0], shared) == "failed"
