"""The sqlite backend against the shared conformance suite, plus what only a file can get wrong."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import stat
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from teleport.backend import sqlite as sqlite_module
from teleport.backend.base import EventType, Item
from teleport.backend.conformance import CHECKS, EXPIRY_EVENT_CHECKS, next_event, run_check
from teleport.backend.sqlite import SqliteBackend
from teleport.errors import BadParameter, ConnectionProblem
from teleport.utils.clock import FakeClock


@pytest.mark.parametrize("check", [*CHECKS, *EXPIRY_EVENT_CHECKS])
async def test_conformance(check: str, tmp_path: Path) -> None:
    await run_check(check, lambda clock: SqliteBackend.open(tmp_path / "sqlite.db", clock))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_data_and_revisions_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sqlite.db"
    clock = FakeClock()
    async with await SqliteBackend.open(path, clock) as backend:
        first = await backend.put(Item(b"/a", b"\x00kept", clock.now() + timedelta(hours=1)))
        await backend.put(Item(b"/b", b"gone"))
        await backend.delete(b"/b")
    async with await SqliteBackend.open(path, clock) as backend:
        assert await backend.get(b"/a") == first
        assert [i.key for i in await backend.get_range(b"/", b"0")] == [b"/a"]
        # The revision counter persists, so a revision seen before a restart never comes back.
        assert int((await backend.put(Item(b"/c", b"new"))).revision) > int(first.revision)


async def test_acknowledged_write_survives_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "sqlite.db"
    script = (
        "import asyncio, os, signal, sys\n"
        "from pathlib import Path\n"
        "from teleport.backend.base import Item\n"
        "from teleport.backend.sqlite import SqliteBackend\n"
        "async def main():\n"
        "    backend = await SqliteBackend.open(Path(sys.argv[1]))\n"
        "    await backend.put(Item(b'/acked', b'yes'))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(path))
    assert await proc.wait() == -9
    async with await SqliteBackend.open(path) as backend:
        assert (await backend.get(b"/acked")).value == b"yes"


async def test_folder_is_0700_and_files_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "data" / "backend" / "sqlite.db"
    async with await SqliteBackend.open(path) as backend:
        await backend.put(Item(b"/a", b"secret"))
        assert _mode(path.parent) == 0o700
        for name in ("sqlite.db", "sqlite.db-wal", "sqlite.db-shm"):
            assert _mode(path.parent / name) == 0o600, name


async def test_loose_existing_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "sqlite.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    async with await SqliteBackend.open(path):
        assert _mode(path) == 0o600


async def test_path_under_a_regular_file_is_a_bad_parameter(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    path = blocker / "backend" / "sqlite.db"
    with pytest.raises(BadParameter, match=re.escape(str(path))):
        await SqliteBackend.open(path)


async def test_corrupt_file_is_a_bad_parameter_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "sqlite.db"
    path.write_bytes(b"this is not a database, " * 200)
    with pytest.raises(BadParameter, match=f"{re.escape(str(path))}.*corrupt"):
        await SqliteBackend.open(path)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sqlite.db"
    async with await SqliteBackend.open(path):
        pass
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(BadParameter, match="schema version 99"):
        await SqliteBackend.open(path)


async def test_locked_database_is_a_connection_problem_and_reads_go_on(tmp_path: Path) -> None:
    path = tmp_path / "sqlite.db"
    async with await SqliteBackend.open(path, lock_timeout=0.05) as backend:
        await backend.put(Item(b"/a", b"1"))
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(ConnectionProblem, match=f"{re.escape(str(path))} is locked"):
                await backend.put(Item(b"/a", b"2"))
            assert (await backend.get(b"/a")).value == b"1"
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert (await backend.put(Item(b"/a", b"2"))).value == b"2"


async def test_expiry_is_announced_without_any_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "PURGE_INTERVAL", 0.01)
    clock = FakeClock()
    async with await SqliteBackend.open(tmp_path / "sqlite.db", clock) as backend:
        async with await backend.watch([b"/"]) as watcher:
            events = aiter(watcher)
            await next_event(events)
            await backend.put(Item(b"/t", b"v", clock.now() + timedelta(seconds=1)))
            assert (await next_event(events)).type is EventType.PUT
            clock.advance(timedelta(seconds=1))
            gone = await next_event(events)
            assert (gone.type, gone.item.key) == (EventType.DELETE, b"/t")


async def test_close_stops_the_worker_and_later_calls_fail(tmp_path: Path) -> None:
    backend = await SqliteBackend.open(tmp_path / "sqlite.db")
    await backend.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("sqlite-backend")]
    with pytest.raises(ConnectionProblem, match="closed"):
        await backend.get(b"/a")
