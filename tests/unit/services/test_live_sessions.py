"""Live sessions: bound to the node that announced them, refreshed and ended without lost writes.

Every test runs on memory, one sqlite file, and two connections to one sqlite file (two auth
servers sharing storage); see conftest.py.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import pytest

from teleport.backend.base import key
from teleport.errors import AccessDenied, NotFound
from teleport.services.live_sessions import LiveSession, LiveSessionService
from tests.unit.services.conftest import Shared

TTL = timedelta(seconds=90)
ROUNDS = 20


def _session(sid: str, server_id: str, parties: list[str] | None = None) -> LiveSession:
    return LiveSession(sid=sid, user="alice", login="root", server_id=server_id,
                       server_hostname=f"host-{server_id}", created="2026-01-01T00:00:00Z",
                       parties=parties if parties is not None else ["alice"])


async def _outcome(call: object) -> str:
    """Return 'ok' or the refusal's kind and message."""
    assert asyncio.iscoroutine(call)
    try:
        await call
    except (AccessDenied, NotFound) as err:
        return f"{type(err).__name__}: {err}"
    return "ok"


def _until(shared: Shared) -> datetime:
    return shared.clock.now() + TTL


async def test_announced_session_is_listed_refreshed_and_ended(shared: Shared) -> None:
    sessions = LiveSessionService(shared.first)
    record = _session("s1", "node-a")
    await sessions.announce(record, _until(shared))
    assert await sessions.list(shared.clock.now()) == [record]
    joined = _session("s1", "node-a", ["alice", "bob"])
    await sessions.announce(joined, _until(shared))
    # Another auth server sharing the storage sees the same session.
    assert await LiveSessionService(shared.second).list(shared.clock.now()) == [joined]
    await sessions.end("s1", "node-a")
    assert await sessions.list(shared.clock.now()) == []
    await sessions.end("s1", "node-a")  # ending twice is harmless


async def test_stored_json_stays_what_the_auth_server_wrote_before(shared: Shared) -> None:
    await LiveSessionService(shared.first).announce(_session("s1", "node-a"), _until(shared))
    stored = json.loads((await shared.second.get(key("sessions", "active", "s1"))).value)
    assert stored == {"sid": "s1", "user": "alice", "login": "root", "server_id": "node-a",
                      "server_hostname": "host-node-a", "created": "2026-01-01T00:00:00Z",
                      "parties": ["alice"]}


async def test_two_nodes_announcing_one_session_at_once_leave_exactly_one_owner(
        shared: Shared) -> None:
    a, b = LiveSessionService(shared.first), LiveSessionService(shared.second)
    for n in range(ROUNDS):
        sid = f"race-{n}"
        results = await asyncio.gather(
            _outcome(a.announce(_session(sid, "node-a"), _until(shared))),
            _outcome(b.announce(_session(sid, "node-b"), _until(shared))))
        assert sorted(results) == sorted(
            ["ok", f"AccessDenied: session {sid} belongs to another node"]), results
        winner = "node-a" if results[0] == "ok" else "node-b"
        [stored] = [s for s in await a.list(shared.clock.now()) if s.sid == sid]
        assert stored.server_id == winner
        # The loser can neither overwrite nor end it afterwards.
        loser, service = ("node-b", b) if winner == "node-a" else ("node-a", a)
        with pytest.raises(AccessDenied):
            await service.announce(_session(sid, loser, ["mallory"]), _until(shared))
        assert [s for s in await b.list(shared.clock.now()) if s.sid == sid] == [stored]


async def test_concurrent_refreshes_by_the_owner_all_succeed(shared: Shared) -> None:
    a, b = LiveSessionService(shared.first), LiveSessionService(shared.second)
    await a.announce(_session("s1", "node-a"), _until(shared))
    written = [_session("s1", "node-a", ["alice", f"guest-{n}"]) for n in range(10)]
    # The node's refreshes reach both auth servers, all at once.
    results = await asyncio.gather(*(
        _outcome((a if n % 2 else b).announce(record, _until(shared)))
        for n, record in enumerate(written)))
    assert results == ["ok"] * len(written)  # none lost to CompareFailed
    [stored] = await a.list(shared.clock.now())
    assert stored in written


async def test_another_node_cannot_end_a_session(shared: Shared) -> None:
    a, b = LiveSessionService(shared.first), LiveSessionService(shared.second)
    record = _session("s1", "node-a")
    await a.announce(record, _until(shared))
    with pytest.raises(AccessDenied, match="session s1 belongs to another node"):
        await b.end("s1", "node-b")
    assert await b.list(shared.clock.now()) == [record]


async def test_a_refresh_after_the_end_is_refused_and_resurrects_nothing(shared: Shared) -> None:
    a, b = LiveSessionService(shared.first), LiveSessionService(shared.second)
    await a.announce(_session("s1", "node-a"), _until(shared))
    await a.end("s1", "node-a")
    with pytest.raises(NotFound, match="session s1 has ended"):
        await b.announce(_session("s1", "node-a", ["alice", "late"]), _until(shared))
    assert await a.list(shared.clock.now()) == []


async def test_a_refresh_racing_the_end_resurrects_nothing(shared: Shared) -> None:
    a, b = LiveSessionService(shared.first), LiveSessionService(shared.second)

    async def later(steps: int, call: object) -> str:
        for _ in range(steps):
            await asyncio.sleep(0)
        return await _outcome(call)

    for n in range(ROUNDS):
        sid = f"end-{n}"
        await a.announce(_session(sid, "node-a"), _until(shared))
        # Each round starts the two a different number of loop steps apart, so the end lands
        # between every pair of the refresh's steps.
        refreshed, ended = await asyncio.gather(
            later(n % 4, b.announce(_session(sid, "node-a", ["alice", "bob"]), _until(shared))),
            later(n // 4 % 4, a.end(sid, "node-a")))
        assert refreshed in ("ok", f"NotFound: session {sid} has ended")
        assert ended == "ok"
        assert await a.list(shared.clock.now()) == [], f"round {n}: {refreshed}"


async def test_expired_sessions_are_not_listed(shared: Shared) -> None:
    sessions = LiveSessionService(shared.first)
    now = shared.clock.now()
    await sessions.announce(_session("old", "node-a"), now + timedelta(seconds=30))
    await sessions.announce(_session("new", "node-a"), now + timedelta(seconds=120))
    assert [s.sid for s in await sessions.list(now)] == ["new", "old"]  # by created, then sid
    # A node that crashed stops refreshing: its session goes once its TTL passes.
    assert [s.sid for s in await sessions.list(now + timedelta(seconds=60))] == ["new"]
    shared.clock.advance(timedelta(seconds=60))
    assert [s.sid for s in await sessions.list(shared.clock.now())] == ["new"]
