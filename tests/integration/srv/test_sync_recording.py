"""`node-sync`: a real node streams the recording to the auth server's store while the session
runs, spools nothing, and ends a session it cannot record.

The auth side is a real `SessionStore` behind the two calls the recorder makes; the streams go
through its upload checks (claim, size cap, stall limit) as they would over the auth API.
"""

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


class StreamingAuth:
    """The auth calls a sync recorder makes, over a real store; can be taken down."""

    def __init__(self, folder: Path, mode: str) -> None:
        self.store = SessionStore(folder)
        self.folder = folder
        self.mode = mode
        self.down = False
        #: Set: streams in progress fail then (the auth server goes away mid-session).
        self.goes_down: asyncio.Event | None = None

    async def ping(self) -> PingAnswer:
        return PingAnswer(cluster_name="test", server_version="", session_recording=self.mode)

    async def upload_recording(self, sid: str, parts: dict[str, Path]) -> bool:
        raise AssertionError("a sync mode must not upload spooled files")

    async def stream_recording_part(self, sid: str, part: str,
                                    pieces: AsyncIterator[bytes]) -> None:
        if self.down:
            raise ConnectionProblem("cannot reach the auth server")
        if self.goes_down is not None:
            await self.goes_down.wait()
            raise ConnectionProblem("cannot reach the auth server")
        await self.store.receive(sid, part, "node", pieces)

    async def complete_recording(self, sid: str) -> bool:
        return await self.store.commit(sid, "node")

    def streamed_bytes(self) -> int:
        """Bytes of uploads in progress: what arrived before the session ended."""
        return sum(p.stat().st_size for p in self.folder.glob(".*.gz.*.upload"))


@pytest.fixture
async def exits() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def _replay(store: SessionStore, sid: str) -> list[dict[str, Any]]:
    data = b"".join([piece async for piece in store.replay(sid)])
    return [rec.from_wire_line(line) for line in data.splitlines()]


async def _recordings(exits: AsyncExitStack, node: NodeServer, spool: Path,
                      auth: StreamingAuth) -> None:
    node.recordings = await exits.enter_async_context(Recordings(spool, auth))
    await node.recordings.refresh_mode()


async def test_node_sync_streams_while_the_session_runs(
        exits: AsyncExitStack, trust: Trust, node: NodeServer, tmp_path: Path) -> None:
    auth = StreamingAuth(tmp_path / "sessions", "node-sync")
    spool = tmp_path / "upload"
    await _recordings(exits, node, spool, auth)
    alice = trust.user(["root"])
    async with await trust.connect(alice, node.port, "root") as conn:
        proc = await conn.create_process(term_type="xterm", term_size=(80, 25), env={"PS1": "$ "})
        proc.stdin.write("echo live-$((40+2))\n")
        await read_until(proc, "live-42")
        # Still running: the output is already at the auth server, and nothing is on the node.
        async with asyncio.timeout(10):
            while auth.streamed_bytes() == 0:  # noqa: ASYNC110 - the stream is being written
                await asyncio.sleep(0.05)
        assert list(spool.iterdir()) == []
        assert await auth.store.list() == []
        proc.stdin.write("exit\n")
        await asyncio.wait_for(proc.wait_closed(), 10)
    async with asyncio.timeout(10):
        while not await auth.store.list():  # noqa: ASYNC110 - committed when the session ends
            await asyncio.sleep(0.05)
    summary, = await auth.store.list()
    assert summary.user == "alice" and summary.complete
    events = await _replay(auth.store, summary.sid)
    assert events[0]["event"] == "session.start" and events[-1]["event"] == "session.end"
    assert b"live-42" in b"".join(e["data"] for e in events if e["event"] == "print")
    assert list(spool.iterdir()) == []


async def test_node_sync_ends_a_session_it_cannot_record(
        exits: AsyncExitStack, trust: Trust, node: NodeServer, tmp_path: Path) -> None:
    auth = StreamingAuth(tmp_path / "sessions", "node-sync")
    auth.down = True
    spool = tmp_path / "upload"
    await _recordings(exits, node, spool, auth)
    alice = trust.user(["root"])
    async with await trust.connect(alice, node.port, "root") as conn:
        proc = await conn.create_process(term_type="xterm", term_size=(80, 25))
        output = await asyncio.wait_for(proc.stdout.read(), 10)
        await asyncio.wait_for(proc.wait_closed(), 10)
    stderr = await proc.stderr.read()
    assert "session recording failed: cannot reach the auth server" in output + stderr
    assert list(spool.iterdir()) == [] and await auth.store.list() == []


async def test_a_session_that_ignores_its_hang_up_is_killed_when_it_cannot_be_recorded(
        exits: AsyncExitStack, trust: Trust, node: NodeServer, tmp_path: Path) -> None:
    auth = StreamingAuth(tmp_path / "sessions", "node-sync")
    auth.goes_down = asyncio.Event()
    await _recordings(exits, node, tmp_path / "upload", auth)
    alice = trust.user(["root"])
    async with await trust.connect(alice, node.port, "root") as conn:
        proc = await conn.create_process("trap '' HUP; echo armed; sleep 60",
                                         term_type="xterm", term_size=(80, 25))
        assert "armed" in await asyncio.wait_for(proc.stdout.readuntil("armed"), 10)
        auth.goes_down.set()  # the recording fails now, with SIGHUP ignored by the shell
        await asyncio.wait_for(proc.wait_closed(), 10)
    assert proc.exit_signal is not None and proc.exit_signal[0] == "KILL", proc.exit_signal
