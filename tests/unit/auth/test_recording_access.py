"""Who may play a stored recording: its owner and roles allowing session read (no network)."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path

import pytest

from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied
from teleport.events.emitter import MemoryEmitter
from teleport.rbac.subject import Caller, Subject
from teleport.utils.clock import FakeClock


@pytest.fixture
async def auth(tmp_path: Path) -> AuthServer:
    clock = FakeClock()
    server = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock, AuthSettings(
        cluster_name="example.com", recordings_dir=tmp_path / "sessions"))
    await server.init()
    return server


def _stored_recording(folder: Path, user: str) -> str:
    """Write a finished recording of user's session where the auth server keeps them."""
    sid = str(uuid.uuid4())
    events = [{"event": "session.start", "ms": 0, "version": 1, "sid": sid, "user": user,
               "login": "root", "server_id": "node-a", "server_hostname": "node-a",
               "namespace": "default", "size": "80:25", "time": "2026-01-01T00:00:00Z"},
              {"event": "print", "ms": 1, "offset": 0, "bytes": 6},
              {"event": "session.end", "ms": 2, "time": "2026-01-01T00:00:01Z"}]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{sid}.chunks.gz").write_bytes(gzip.compress(b"hello\n"))
    (folder / f"{sid}.events.gz").write_bytes(
        gzip.compress(b"".join(json.dumps(e).encode() + b"\n" for e in events)))
    return sid


async def test_only_the_owner_and_roles_allowing_session_read_may_play(
        auth: AuthServer, tmp_path: Path) -> None:
    async def user(name: str, *roles: str) -> Subject:
        return Subject.user(name, roles, await auth.resources.roleset(roles, {}))

    sid = _stored_recording(tmp_path / "sessions", "alice")
    await auth.sessions.check_play(sid, await user("alice"))
    await auth.sessions.check_play(sid, await user("root-admin", "admin"))
    await auth.sessions.check_play(sid, await user("ann", "auditor"))
    await auth.sessions.check_play(sid, Subject(Caller.ADMIN, "tctl"))
    with pytest.raises(AccessDenied, match="only 'alice' and roles allowing session read"):
        await auth.sessions.check_play(sid, await user("mallory", "access", "editor"))
    with pytest.raises(AccessDenied):  # a host is not a viewer, whatever its name
        await auth.sessions.check_play(sid, Subject(Caller.NODE, "alice"))
