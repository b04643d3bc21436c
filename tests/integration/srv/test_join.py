"""Joining a live terminal session on the node: shared output and input, owner and roles whose
join_sessions allow it only."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncssh
import pytest

from teleport.api.auth_models import AnnouncedSession
from teleport.events.emitter import SESSION_END, SESSION_JOIN, SESSION_LEAVE, MemoryEmitter
from teleport.keys.ssh import generate_private_key, public_key_of, sign_user_cert
from teleport.srv import NodeServer
from teleport.srv.party import JOIN_ENV
from teleport.types.presets import PRESETS
from tests.integration.srv.sshenv import Trust, make_node, read_until

Process = asyncssh.SSHClientProcess[str]


class FakeRegistry:
    """Record what the node announces, as the auth server would store it."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()

    async def announce_session(self, sid: str, session: AnnouncedSession) -> None:
        self.sessions[sid] = {"sid": sid, **session.model_dump()}
        self.changed.set()

    async def end_session(self, sid: str) -> None:
        self.sessions.pop(sid, None)
        self.changed.set()

    async def until(self, check: Any) -> None:
        while not check():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


@pytest.fixture
async def node(trust: Trust, emitter: MemoryEmitter) -> AsyncIterator[NodeServer]:
    """A node judging joins with the preset roles, as fetched from the auth server."""
    async with make_node(trust, emitter, roles={r.metadata.name: r for r in PRESETS}) as server:
        await server.start("127.0.0.1", 0)
        yield server


async def _connect(trust: Trust, node: NodeServer, name: str, roles: list[str],
                   login: str = "root") -> asyncssh.SSHClientConnection:
    """Connect as a user whose certificate carries the given roles."""
    key = generate_private_key()
    now = datetime.now(timezone.utc)
    cert = sign_user_cert(trust.user_ca, public_key_of(key), key_id=name, principals=[login],
                          valid_after=now - timedelta(minutes=1), valid_before=now + timedelta(hours=1),
                          roles=roles, traits={"logins": [login]})
    return await asyncssh.connect(
        "127.0.0.1", node.port, username=login, agent_path=None, config=None,
        client_keys=[(asyncssh.import_private_key(key), asyncssh.import_certificate(cert))],
        known_hosts=([], [asyncssh.import_public_key(public_key_of(trust.host_ca))], []),
        preferred_auth=["publickey"])


async def _owner_shell(conn: asyncssh.SSHClientConnection) -> tuple[Process, str]:
    proc = await conn.create_process(term_type="xterm", term_size=(80, 25))
    proc.stdin.write("echo SID=$SSH_SESSION_ID.\n")
    seen = ""
    while (match := re.search(r"SID=([0-9a-f-]{36})\.", seen)) is None:
        seen += await read_until(proc, ".")
    return proc, match.group(1)


async def _join(conn: asyncssh.SSHClientConnection, sid: str) -> Process:
    return await conn.create_process(term_type="xterm", term_size=(80, 25), env={JOIN_ENV: sid})


async def test_admin_joins_and_both_share_the_terminal(trust: Trust, node: NodeServer,
                                                       emitter: MemoryEmitter) -> None:
    registry = FakeRegistry()
    node.registry = registry
    async with await _connect(trust, node, "alice", ["access"]) as owner_conn, \
            await _connect(trust, node, "bob", ["admin"]) as admin_conn:
        owner, sid = await _owner_shell(owner_conn)
        await registry.until(lambda: sid in registry.sessions)
        assert registry.sessions[sid]["user"] == "alice"

        joiner = await _join(admin_conn, sid)
        await registry.until(lambda: registry.sessions[sid]["parties"] == ["alice", "bob"])
        owner.stdin.write("echo from-owner-$((40+2))\n")
        await read_until(joiner, "from-owner-42")
        joiner.stdin.write("echo from-joiner-$((50+5))\n")
        await read_until(owner, "from-joiner-55")

        owner.stdin.write("exit 3\n")
        await asyncio.wait_for(owner.wait_closed(), 10)
        await asyncio.wait_for(joiner.wait_closed(), 10)
        assert owner.exit_status == 3 and joiner.exit_status == 3
        await registry.until(lambda: sid not in registry.sessions)

    join, = emitter.of_type(SESSION_JOIN)
    leave, = emitter.of_type(SESSION_LEAVE)
    assert join["user"] == leave["user"] == "bob" and join["sid"] == leave["sid"] == sid
    assert join["login"] == "root" and join["server_id"] == node.server_id
    types = [e["event"] for e in emitter.events if e.get("sid") == sid]
    assert types.index(SESSION_LEAVE) < types.index(SESSION_END)
    assert sid not in node.live


async def test_owner_may_rejoin_and_leave_without_ending_it(trust: Trust, node: NodeServer,
                                                            emitter: MemoryEmitter) -> None:
    registry = FakeRegistry()
    node.registry = registry
    async with await _connect(trust, node, "alice", ["access"]) as first, \
            await _connect(trust, node, "alice", ["access"]) as second:
        owner, sid = await _owner_shell(first)
        joiner = await _join(second, sid)
        owner.stdin.write("echo both-$((1+1))\n")
        await read_until(joiner, "both-2")
        await registry.until(lambda: registry.sessions.get(sid, {}).get("parties") == ["alice", "alice"])
        second.close()
        await second.wait_closed()
        await registry.until(lambda: registry.sessions[sid]["parties"] == ["alice"])
        owner.stdin.write("echo still-$((2+2))\n")
        await read_until(owner, "still-4")
        owner.stdin.write("exit\n")
        await asyncio.wait_for(owner.wait_closed(), 10)
    leave, = emitter.of_type(SESSION_LEAVE)
    assert leave["user"] == "alice" and leave["sid"] == sid


async def test_other_users_and_unknown_sessions_are_refused(trust: Trust, node: NodeServer,
                                                           emitter: MemoryEmitter) -> None:
    async with await _connect(trust, node, "alice", ["access"]) as owner_conn, \
            await _connect(trust, node, "eve", ["access"]) as eve_conn:
        owner, sid = await _owner_shell(owner_conn)
        refused = await _join(eve_conn, sid)
        await asyncio.wait_for(refused.wait_closed(), 10)
        assert refused.exit_status == 1
        assert "no role of 'eve' allows joining alice's session" in await refused.stderr.read()
        refusal, = [e for e in emitter.of_type("auth") if e["user"] == "eve"]
        assert not refusal["success"] and "(allow.join_sessions)" in refusal["error"]

        missing = await _join(eve_conn, "00000000-0000-4000-8000-000000000000")
        await asyncio.wait_for(missing.wait_closed(), 10)
        assert missing.exit_status == 1
        assert "is not running on this node" in await missing.stderr.read()

        owner.stdin.write("echo alone-$((3+3))\n")
        assert "alone-6" in await read_until(owner, "alone-6")
        owner.stdin.write("exit\n")
        await asyncio.wait_for(owner.wait_closed(), 10)
    assert emitter.of_type(SESSION_JOIN) == []
