"""Every folder made under data_dir is 0700 (issue 9, finding 14c), the recording spool included.

`mkdir -p` made `data_dir/log` and `data_dir/log/upload` 0755 around the private spool, so any
local user could list which sessions a node was recording.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from teleport.api.auth_models import PingAnswer
from teleport.errors import ConnectionProblem
from teleport.events.filelog import FileLog
from teleport.events.sessions_store import SessionStore
from teleport.srv import NodeServer
from teleport.sshutils.recorder import Recordings
from tests.integration.srv.sshenv import Trust, read_until


class DownAuth:
    """An auth server that cannot be reached: recordings stay in the spool."""

    async def ping(self) -> PingAnswer:
        raise ConnectionProblem("auth server is down")

    async def upload_recording(self, sid: str, parts: dict[str, Path]) -> bool:
        raise ConnectionProblem("auth server is down")


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # the usual umask, under which mkdir -p makes 0755 folders
    try:
        yield
    finally:
        os.umask(old)


def _folder_modes(root: Path) -> dict[str, str]:
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    return {str(p.relative_to(root.parent)): oct(stat.S_IMODE(p.stat().st_mode)) for p in folders}


@pytest.fixture
async def exits() -> AsyncIterator[AsyncExitStack]:
    """Close what a test opened (the recordings own their writer tasks) when it ends."""
    async with AsyncExitStack() as stack:
        yield stack


@pytest.mark.usefixtures("umask_022")
async def test_folders_around_a_spooled_recording_are_private(exits: AsyncExitStack, trust: Trust, node: NodeServer,
                                                              tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    spool = data_dir / "log" / "upload" / "sessions" / "default"
    node.recordings = await exits.enter_async_context(Recordings(spool, DownAuth()))
    alice = trust.user(["root"])
    async with await trust.connect(alice, node.port, "root") as conn:
        proc = await conn.create_process(term_type="xterm", term_size=(80, 25))
        proc.stdin.write("echo recorded-done\n")
        await read_until(proc, "recorded-done")
        proc.stdin.write("exit\n")
        await asyncio.wait_for(proc.wait_closed(), 10)
    await node.recordings.close()
    assert list(spool.glob("*.events.gz")), "the session was spooled"
    modes = _folder_modes(data_dir)
    assert set(modes.values()) == {"0o700"}, modes


@pytest.mark.usefixtures("umask_022")
async def test_auth_log_folders_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    FileLog(data_dir / "log")
    SessionStore(data_dir / "log" / "sessions" / "default")
    modes = _folder_modes(data_dir)
    assert len(modes) == 4 and set(modes.values()) == {"0o700"}, modes
