"""Interactive sessions are recorded on the node, spooled, and uploaded when the auth server answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from teleport.api.auth_models import PingAnswer
from teleport.errors import ConnectionProblem
from teleport.events import recording as rec
from teleport.events.sessions_store import SessionStore
from teleport.srv import NodeServer
from teleport.sshutils.recorder import Recordings
from tests.integration.srv.sshenv import Trust, read_until


class FakeAuth:
    """The two auth calls the uploader makes, over a real store; can be taken down."""

    def __init__(self, folder: Path, mode: str = "node") -> None:
        self.store = SessionStore(folder)
        self.mode = mode
        self.down = False
        self.uploads = 0

    async def ping(self) -> PingAnswer:
        if self.down:
            raise ConnectionProblem("auth server is down")
        return PingAnswer(cluster_name="test", server_version="", session_recording=self.mode)

    async def upload_recording(self, sid: str, parts: dict[str, Path]) -> bool:
        if self.down:
            raise ConnectionProblem("auth server is down")
        self.uploads += 1
        if self.store.exists(sid):
            return False
        for part, path in parts.items():
            await self.store.receive(sid, part, "node", _pieces(path))
        return await self.store.commit(sid, "node")


async def _pieces(path: Path) -> AsyncIterator[bytes]:
    yield path.read_bytes()


async def _session(trust: Trust, node: NodeServer, *lines: str) -> None:
    alice = trust.user(["root"])
    async with await trust.connect(alice, node.port, "root") as conn:
        proc = await conn.create_process(term_type="xterm", term_size=(80, 25), env={"PS1": "$ "})
        for line in lines:
            proc.stdin.write(line + "\n")
            await read_until(proc, line.split()[-1])
        proc.change_terminal_size(100, 30)
        proc.stdin.write("exit\n")
        await asyncio.wait_for(proc.wait_closed(), 10)


@pytest.fixture
async def spool(tmp_path: Path) -> Path:
    return tmp_path / "upload"


@pytest.fixture
async def exits() -> AsyncIterator[AsyncExitStack]:
    """Close what a test opened (the recordings own their writer tasks) when it ends."""
    async with AsyncExitStack() as stack:
        yield stack


async def _wait_for(predicate: Any) -> None:
    async with asyncio.timeout(10):
        while not predicate():  # noqa: ASYNC110 - polls files the uploader removes
            await asyncio.sleep(0.05)


async def _replay(store: SessionStore, sid: str) -> list[dict[str, Any]]:
    data = b"".join([piece async for piece in store.replay(sid)])
    return [rec.from_wire_line(line) for line in data.splitlines()]


async def test_session_is_recorded_and_uploaded(exits: AsyncExitStack, trust: Trust, node: NodeServer, spool: Path,
                                                tmp_path: Path) -> None:
    auth = FakeAuth(tmp_path / "sessions")
    node.recordings = await exits.enter_async_context(Recordings(spool, auth, retry_seconds=0.1))
    uploader = asyncio.ensure_future(node.recordings.run())
    try:
        await _session(trust, node, "echo one-done", "echo two-done")
        await _wait_for(lambda: auth.uploads == 1 and not any(spool.iterdir()))
    finally:
        uploader.cancel()
    summary, = await auth.store.list()
    assert summary.user == "alice" and summary.login == "root" and summary.complete
    events = await _replay(auth.store, summary.sid)
    output = b"".join(e["data"] for e in events if e["event"] == "print")
    typed = b"".join(e["data"] for e in events if e["event"] == "input")
    assert output.index(b"one-done") < output.index(b"two-done")
    assert typed.startswith(b"echo one-done\n")
    assert {"event": "resize", "size": "100:30"}.items() <= next(
        e for e in events if e["event"] == "resize").items()
    assert events[0]["size"] == "80:25" and events[-1]["event"] == "session.end"
    assert list(spool.iterdir()) == []


async def test_auth_down_spools_and_a_restarted_node_uploads_once(
        exits: AsyncExitStack, trust: Trust, node: NodeServer, spool: Path, tmp_path: Path) -> None:
    auth = FakeAuth(tmp_path / "sessions")
    auth.down = True
    node.recordings = await exits.enter_async_context(Recordings(spool, auth, retry_seconds=0.1))
    uploader = asyncio.ensure_future(node.recordings.run())
    try:
        await _session(trust, node, "echo spooled-done")
        await asyncio.sleep(0.3)
        assert auth.uploads == 0 and len(list(spool.glob("*.events.gz"))) == 1
    finally:
        uploader.cancel()
    # A restarted node finds the spooled recording and uploads it once the auth server is back.
    auth.down = False
    restarted = await exits.enter_async_context(Recordings(spool, auth))
    assert await restarted.upload_spooled()
    summary, = await auth.store.list()
    assert summary.complete
    # Uploading the same session again stores nothing new.
    assert not await auth.upload_recording(summary.sid, {})


async def test_recording_off_records_nothing(exits: AsyncExitStack, trust: Trust, node: NodeServer, spool: Path,
                                             tmp_path: Path) -> None:
    auth = FakeAuth(tmp_path / "sessions", mode="off")
    node.recordings = await exits.enter_async_context(Recordings(spool, auth))
    await node.recordings.refresh_mode()
    await _session(trust, node, "echo quiet-done")
    assert list(spool.iterdir()) == [] and not node.recordings.active


async def test_recording_at_the_proxy_records_nothing_on_the_node(
        exits: AsyncExitStack, trust: Trust, node: NodeServer, spool: Path, tmp_path: Path) -> None:
    auth = FakeAuth(tmp_path / "sessions", mode="proxy")
    node.recordings = await exits.enter_async_context(Recordings(spool, auth))
    await node.recordings.refresh_mode()
    await _session(trust, node, "echo elsewhere-done")
    assert list(spool.iterdir()) == [] and not node.recordings.active
