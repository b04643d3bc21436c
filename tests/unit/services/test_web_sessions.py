"""Web sessions in the backend: idle expiry, renewal capped at the certificates' end, logout.

Run on memory, one sqlite file and two connections to it (see conftest.py): a proxy's renewal
and another proxy's logout go through different auth servers sharing the store.
"""

from __future__ import annotations

import asyncio
import hmac
from datetime import datetime, timedelta

import pytest

from teleport.backend.base import key
from teleport.errors import AlreadyExists, NotFound
from teleport.services import web_sessions
from teleport.services.web_sessions import (
    IDLE_TIMEOUT,
    WebSessionRecord,
    WebSessionService,
    bearer_matches,
    new_secret,
)
from tests.unit.services.conftest import Shared

LIFETIME = timedelta(hours=12)


def _record(user: str, now: datetime, lifetime: timedelta = LIFETIME) -> WebSessionRecord:
    return WebSessionRecord(
        id=new_secret(), user=user, created=now, expires=now + lifetime,
        idle_expires=min(now + IDLE_TIMEOUT, now + lifetime), bearer_token=new_secret(),
        ssh_private_key="ssh key", ssh_cert="ssh cert", tls_private_key="tls key",
        tls_cert="tls cert", tls_ca_certs=["ca"], host_ca_keys=["host ca"], logins=[user],
        roles=["admin"])


async def test_a_session_is_stored_under_its_user_until_it_goes_idle(shared: Shared) -> None:
    first, second = WebSessionService(shared.first), WebSessionService(shared.second)
    now = shared.clock.now()
    record = await first.create(_record("joe", now))
    assert len(record.id) == 64 and len(record.bearer_token) == 64 and record.id != record.bearer_token
    # Another auth server on the same store serves it; the item expires when the session idles.
    assert await second.get("joe", record.id, now) == record
    item = await shared.second.get(key("web", "sessions", "joe", record.id))
    assert item.expires == record.idle_expires == now + IDLE_TIMEOUT
    with pytest.raises(NotFound):
        await second.get("ann", record.id, now)  # under another user's name: not there
    with pytest.raises(NotFound):
        await second.get("joe", "../" + record.id, now)
    with pytest.raises(AlreadyExists):
        await first.create(record)
    shared.clock.advance(IDLE_TIMEOUT)
    with pytest.raises(NotFound):
        await second.get("joe", record.id, shared.clock.now())


async def test_renewal_moves_the_idle_expiry_but_never_past_expires(shared: Shared) -> None:
    first, second = WebSessionService(shared.first), WebSessionService(shared.second)
    record = await first.create(_record("joe", shared.clock.now(), lifetime=timedelta(minutes=25)))
    shared.clock.advance(timedelta(minutes=8))
    renewed = await second.renew("joe", record.id, shared.clock.now())
    assert renewed.idle_expires == shared.clock.now() + IDLE_TIMEOUT
    assert renewed.expires == record.expires
    # Past its old idle time, the renewed session is still there, on either server.
    shared.clock.advance(timedelta(minutes=9))
    assert (await first.get("joe", record.id, shared.clock.now())).idle_expires == \
        renewed.idle_expires
    # Eight minutes before the end, a renewal reaches the end and no further.
    capped = await first.renew("joe", record.id, shared.clock.now())
    assert capped.idle_expires == record.expires
    item = await shared.first.get(key("web", "sessions", "joe", record.id))
    assert item.expires == record.expires
    shared.clock.advance(timedelta(minutes=8))
    for service in (first, second):
        with pytest.raises(NotFound):
            await service.renew("joe", record.id, shared.clock.now())
        with pytest.raises(NotFound):
            await service.get("joe", record.id, shared.clock.now())


async def test_logout_ends_one_session_and_delete_all_every_session_of_the_user(
        shared: Shared) -> None:
    first, second = WebSessionService(shared.first), WebSessionService(shared.second)
    now = shared.clock.now()
    joe = [await first.create(_record("joe", now)) for _ in range(3)]
    jo = await first.create(_record("jo", now))  # a prefix of joe's name
    joel = await first.create(_record("joel", now))
    await second.delete("joe", joe[0].id)
    await second.delete("joe", joe[0].id)  # logging out twice is fine
    with pytest.raises(NotFound):
        await first.get("joe", joe[0].id, now)
    assert [r.id for r in await first.list("joe", now)] == sorted(r.id for r in joe[1:])
    await second.delete_all("joe")
    assert await first.list("joe", now) == []
    for record in joe:
        with pytest.raises(NotFound):
            await first.renew("joe", record.id, now)
    assert await first.get("jo", jo.id, now) == jo
    assert await first.get("joel", joel.id, now) == joel


async def test_a_renewal_racing_a_logout_never_brings_the_session_back(shared: Shared) -> None:
    first, second = WebSessionService(shared.first), WebSessionService(shared.second)
    records = [await first.create(_record("joe", shared.clock.now())) for _ in range(10)]
    shared.clock.advance(timedelta(minutes=1))
    now = shared.clock.now()

    async def renew(record: WebSessionRecord) -> None:
        try:
            await first.renew("joe", record.id, now)
        except NotFound:
            pass

    await asyncio.gather(*(step for r in records
                           for step in (renew(r), second.delete("joe", r.id), renew(r))))
    assert await first.list("joe", now) == []
    assert await shared.first.get_range(key("web", "sessions", "joe"),
                                        key("web", "sessions", "joe") + b"\xff") == []


def test_the_bearer_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    record = _record("joe", datetime(2030, 1, 1).astimezone())
    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return constant_time(a, b)

    monkeypatch.setattr(web_sessions.hmac, "compare_digest", spy)
    assert bearer_matches(record.bearer_token, record.bearer_token)
    assert not bearer_matches(record.bearer_token, record.bearer_token[:-1] + "x")
    assert not bearer_matches(record.bearer_token, "")
    assert not bearer_matches(record.bearer_token, "jöe\udc00")  # not ASCII, not even UTF-8: no exception
    assert len(compared) == 4
    assert compared[0] == (record.bearer_token.encode(), record.bearer_token.encode())
