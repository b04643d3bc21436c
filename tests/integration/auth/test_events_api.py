"""Searching the audit log over the auth API: admins page through events, others are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest.mock import ANY

import pytest

from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied, BadParameter
from teleport.events import emitter as ev
from teleport.events.sinks import FanOut, build_audit_log
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.types.resource import Metadata
from teleport.types.resources import User, UserSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api


@dataclass
class Api:
    auth: AuthServer
    addr: HostPort
    audit: FanOut
    clock: FakeClock

    async def client(self, role: str) -> AuthClient:
        """Return a client holding a fresh identity of role (a system role, or "" for a user)."""
        tls_key = tlskeys.generate_tls_key()
        ssh_key = sshkeys.public_key_of(sshkeys.generate_private_key())
        if role:
            certs = await self.auth.certs.issue_host_certs(
                host_uuid=f"{role}-1", nodename="host", system_role=role, ssh_public_key=ssh_key,
                tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        else:
            # 54 h: still valid now although the clock started at 23:00 one or two days ago.
            certs = await self.auth.certs.issue_user_certs(User(metadata=Metadata(name="joe")), ssh_key,
                                                     tlskeys.tls_public_key_pem(tls_key),
                                                     timedelta(hours=54))
        ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                           [c.encode() for c in certs.tls_ca_certs])
        return AuthClient([self.addr], ctx, timeout=10, cluster=self.auth.cluster_name)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    # The clock starts yesterday at 23:00 so events straddle a midnight; the auth server stamps
    # the events hosts send with it.
    now = datetime.now(timezone.utc)
    start = (now - timedelta(days=1)).replace(hour=23, minute=0)
    if start + timedelta(hours=3) > now:  # just after midnight: the events must be in the past
        start -= timedelta(days=1)
    clock = FakeClock(start)
    audit = await build_audit_log([f"file://{tmp_path}/events"], tmp_path, clock)
    auth = AuthServer(MemoryBackend(clock), audit, clock, AuthSettings(cluster_name="events.test"))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    try:
        yield Api(auth, addr, audit, clock)
    finally:
        await runner.cleanup()


async def _emit_night(api: Api) -> list[dict]:
    """Emit 12 events ten minutes apart, from 23:00 into the next day, as a node would."""
    written = []
    async with await api.client("Node") as node:
        for i in range(12):
            event = ev.make_event(ev.EXEC if i % 2 else ev.SESSION_START, api.clock,
                                  user="joe" if i % 3 else "ann", login="root", command=f"cmd {i}")
            await node.emit(event)
            # The auth server gives each event a fresh id (and its own time, the same here).
            written.append({**event, "server_id": "Node-1", "uid": ANY})
            api.clock.advance(timedelta(minutes=10))
    return written


async def test_admin_pages_through_events_across_midnight(api: Api) -> None:
    written = await _emit_night(api)
    since, until = api.clock.now() - timedelta(hours=3), api.clock.now()
    async with await api.client("Admin") as admin:
        events, key = [], ""
        while True:
            page, key = await admin.search_events(since, until, [], "", 5, key)
            assert len(page) <= 5
            events += page
            if not key:
                break
        assert events == written
        joe_execs, key = await admin.search_events(since, until, [ev.EXEC], "joe", 100)
        assert joe_execs == [e for e in written if e["event"] == ev.EXEC and e["user"] == "joe"]
        assert key == ""
        both, _ = await admin.search_events(since, until, [ev.EXEC, ev.SESSION_START], "ann", 100)
        assert both == [e for e in written if e["user"] == "ann"]
        late, _ = await admin.search_events(until - timedelta(minutes=35), until, [], "", 100)
        assert [e["command"] for e in late] == ["cmd 9", "cmd 10", "cmd 11"]


@pytest.mark.parametrize("role", ["Node", "Proxy", ""])
async def test_non_admins_cannot_search(api: Api, role: str) -> None:
    if not role:  # a user as stored now, without the admin role
        await api.auth.accounts.upsert_user(
            User(metadata=Metadata(name="joe"), spec=UserSpec(roles=["access"])), actor="admin")
    async with await api.client(role) as caller:
        with pytest.raises(AccessDenied, match="no role allows list on 'event'" if not role else "may not GET /v1/events"):
            await caller.search_events(api.clock.now() - timedelta(hours=1), api.clock.now(), [], "", 10)
    now = api.clock.now()
    async with await api.client("Admin") as admin:
        refusals, _ = await admin.search_events(now - timedelta(hours=1), now, [ev.AUTH], "", 10)
    assert any(("no role allows list on 'event'" if not role else "/v1/events") in e["error"]
               for e in refusals)


async def test_bad_search_parameters_are_bad_parameter(api: Api) -> None:
    now = api.clock.now()
    async with await api.client("Admin") as admin:
        with pytest.raises(BadParameter, match="after its end"):
            await admin.search_events(now, now - timedelta(hours=1), [], "", 10)
        with pytest.raises(BadParameter, match="invalid start key"):
            await admin.search_events(now - timedelta(hours=1), now, [], "", 10, "garbage")
        with pytest.raises(BadParameter, match="limit must be"):
            await admin.call("GET", "/v1/events?from=2017-01-01T00:00:00Z&to=2017-01-02T00:00:00Z&limit=-3")
        with pytest.raises(BadParameter, match="from must be an RFC 3339 time"):
            await admin.call("GET", "/v1/events?from=yesterday&to=2017-01-02T00:00:00Z")
