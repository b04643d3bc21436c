"""Group commit in the sqlite backend: one transaction for writes that arrive together, with
each one's own outcome, commit-order events, and nothing acknowledged that is not on disk."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from teleport.backend import sqlite
from teleport.backend.base import Event, EventType, Item
from teleport.backend.conformance import next_event
from teleport.backend.sqlite import SqliteBackend
from teleport.errors import AlreadyExists, CompareFailed, NotFound
from teleport.metrics import REGISTRY

WRITERS = 200


def commits() -> float:
    return REGISTRY.get_sample_value("teleport_backend_commits_total", {"backend": "sqlite"}) or 0.0


async def test_concurrent_puts_share_a_few_transactions(tmp_path: Path) -> None:
    async with await SqliteBackend.open(tmp_path / "sqlite.db") as backend:
        before = commits()
        stored = await asyncio.gather(*(backend.put(Item(f"/n/{i}".encode(), b"up"))
                                        for i in range(WRITERS)))
        used = commits() - before
        # Without grouping each put is its own transaction (and fsync): WRITERS of them.
        assert 1 <= used <= WRITERS // 20, used
        # Revisions follow arrival order: the queue is committed in order.
        revisions = [int(item.revision) for item in stored]
        assert revisions == sorted(revisions) and len(set(revisions)) == WRITERS


async def test_a_refused_write_fails_alone_in_its_group(tmp_path: Path) -> None:
    async with await SqliteBackend.open(tmp_path / "sqlite.db") as backend:
        await backend.put(Item(b"/taken", b"old"))
        async with await backend.watch([b"/"]) as watcher:
            events = aiter(watcher)
            await next_event(events)
            before = commits()
            outcomes = await asyncio.gather(
                backend.put(Item(b"/a", b"1")),
                backend.create(Item(b"/taken", b"new")),
                backend.compare_and_swap(Item(b"/taken", b"wrong"), Item(b"/taken", b"new")),
                backend.update(Item(b"/missing", b"x")),
                backend.delete(b"/missing"),
                backend.put(Item(b"/b", b"2")),
                return_exceptions=True)
            assert commits() - before == 1  # all six were in the same transaction
            kinds = [type(o) for o in outcomes]
            assert kinds == [Item, AlreadyExists, CompareFailed, NotFound, NotFound, Item]
            got = [await next_event(events) for _ in range(2)]
        assert [(e.type, e.item.key) for e in got] == [(EventType.PUT, b"/a"),
                                                      (EventType.PUT, b"/b")]
        assert (await backend.get(b"/taken")).value == b"old"
        assert [i.key for i in await backend.get_range(b"/", b"0")] == [b"/a", b"/b", b"/taken"]


async def test_watchers_see_every_group_in_commit_order(tmp_path: Path) -> None:
    async with await SqliteBackend.open(tmp_path / "sqlite.db") as backend:
        async with await backend.watch([b"/k"]) as watcher:
            events = aiter(watcher)
            await next_event(events)

            async def writer(n: int) -> list[Item]:
                return [await backend.put(Item(b"/k", f"{n}.{i}".encode())) for i in range(20)]

            stored = sum(await asyncio.gather(*(writer(n) for n in range(10))), [])
            seen: list[Event] = [await next_event(events) for _ in stored]
        # One event per write, none lost or repeated, in revision (commit) order.
        assert [int(e.item.revision) for e in seen] == sorted({int(i.revision) for i in stored})
        assert seen[-1].item.value == (await backend.get(b"/k")).value


async def test_writes_queued_before_close_are_committed(tmp_path: Path) -> None:
    path = tmp_path / "sqlite.db"
    backend = await SqliteBackend.open(path)
    puts = [asyncio.create_task(backend.put(Item(b"/q/first", b"v")))]
    for _ in range(3):
        await asyncio.sleep(0)  # its group is on its way to disk
    puts += [asyncio.create_task(backend.put(Item(f"/q/{i}".encode(), b"v"))) for i in range(50)]
    await asyncio.sleep(0)  # these wait for the next group
    await backend.close()
    assert all(isinstance(p.result(), Item) for p in puts)
    async with await SqliteBackend.open(path) as backend:
        assert len(await backend.get_range(b"/q/", b"/q0")) == 51


async def test_a_cancelled_writer_does_not_undo_its_write(tmp_path: Path) -> None:
    async with await SqliteBackend.open(tmp_path / "sqlite.db") as backend:
        put = asyncio.create_task(backend.put(Item(b"/c", b"kept")))
        await asyncio.sleep(0)
        put.cancel()
        await backend.put(Item(b"/after", b"x"))  # committed after the cancelled one's group
        assert (await backend.get(b"/c")).value == b"kept"


async def test_an_acknowledged_group_survives_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "sqlite.db"
    script = (
        "import asyncio, os, signal, sys\n"
        "from pathlib import Path\n"
        "from teleport.backend.base import Item\n"
        "from teleport.backend.sqlite import SqliteBackend\n"
        "async def main():\n"
        "    backend = await SqliteBackend.open(Path(sys.argv[1]))\n"
        f"    await asyncio.gather(*(backend.put(Item(b'/acked/%d' % i, b'yes'))"
        f" for i in range({WRITERS})))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(path))
    assert await proc.wait() == -9
    async with await SqliteBackend.open(path) as backend:
        assert len(await backend.get_range(b"/acked/", b"/acked0")) == WRITERS


async def test_keep_alives_in_a_group_share_one_statement(tmp_path: Path) -> None:
    """Each sqlite statement (and row) hands the GIL back and forth with the event loop: a
    group's keep-alives are one UPDATE, without a savepoint or a RETURNING each, and each still
    gets its own outcome, in order with the group's other writes."""
    async with await SqliteBackend.open(tmp_path / "sqlite.db") as backend:
        soon = datetime.now(timezone.utc) + timedelta(minutes=1)
        await asyncio.gather(*(backend.put(Item(f"/h/{i}".encode(), b"v", soon))
                               for i in range(WRITERS)))
        statements: list[str] = []
        await backend._run(backend._conn.set_trace_callback, statements.append)  # its thread
        later = soon + timedelta(minutes=5)
        outcomes = await asyncio.gather(
            *(backend.keep_alive(f"/h/{i}".encode(), later) for i in range(WRITERS)),
            backend.keep_alive(b"/h/missing", later),
            backend.delete(b"/h/0"),
            backend.keep_alive(b"/h/0", later),  # after its delete, in the same group
            backend.put(Item(b"/h/new", b"v", soon)),
            backend.keep_alive(b"/h/new", later),  # after its put
            return_exceptions=True)
        await backend._run(backend._conn.set_trace_callback, None)
        assert outcomes[:WRITERS] == [None] * WRITERS
        assert [type(o) for o in outcomes[WRITERS:]] == [NotFound, type(None), NotFound, Item,
                                                       type(None)]
        savepoints = [s for s in statements if s.startswith("SAVEPOINT")]
        assert len(savepoints) == 2, len(savepoints)  # the delete's and the put's only
        updates = [s for s in statements if s.startswith("UPDATE kv SET expires")]
        assert len(updates) <= 3, len(updates)  # a run of keep-alives at a time, not one each
        assert not [s for s in updates if "RETURNING" in s]
        items = await backend.get_range(b"/h/", b"/h0")
        assert len(items) == WRITERS and all(i.expires == later for i in items)


async def test_a_commit_does_not_wait_for_a_read_in_progress(tmp_path: Path) -> None:
    """Reads have their own connection and thread: a listing of every node held all
    heartbeats' commits behind it. Reads still see every acknowledged write."""
    async with await SqliteBackend.open(tmp_path / "sqlite.db") as backend:
        reading = threading.Event()
        slow = backend._reader_executor.submit(reading.wait, 10)  # a long read, in progress
        try:
            stored = await asyncio.wait_for(backend.put(Item(b"/w", b"v")), 5)
        finally:
            reading.set()
        assert slow.result(5)
        assert await backend.get(b"/w") == stored


async def test_keep_alives_under_load_gather_and_other_writes_do_not_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit each made a keep-alive cost a transaction, an fsync and a trip to the writer's
    thread: keep-alives right after a commit wait for the lease period (LEASE_PATIENCE, long
    here) and share one. Any other write neither waits nor lets them wait."""
    monkeypatch.setattr(sqlite, "LEASE_PATIENCE", 0.5)
    async with await SqliteBackend.open(tmp_path / "sqlite.db") as backend:
        loop = asyncio.get_running_loop()
        soon = datetime.now(timezone.utc) + timedelta(minutes=1)
        for name in (b"/h/a", b"/h/b"):
            await backend.put(Item(name, b"v", soon))
        later = soon + timedelta(minutes=5)
        await asyncio.sleep(0.5)  # no commit within the period: the store is idle
        started = loop.time()
        await backend.keep_alive(b"/h/a", later)  # at once
        assert loop.time() - started < 0.25
        before = commits()
        beats = []
        for _ in range(4):  # heartbeats arriving apart, within the period
            beats.append(asyncio.create_task(backend.keep_alive(b"/h/b", later)))
            await asyncio.sleep(0.01)
        await asyncio.gather(*beats)
        assert commits() - before == 1  # one each without patience
        assert loop.time() - started >= 0.45
        await backend.keep_alive(b"/h/a", later)  # a commit has just started
        beat = asyncio.create_task(backend.keep_alive(b"/h/b", later))
        await asyncio.sleep(0.01)
        started, before = loop.time(), commits()
        await backend.put(Item(b"/h/c", b"v"))
        await beat  # it went with the put
        assert loop.time() - started < 0.25 and commits() - before == 1
        assert all(i.expires == later for i in await backend.get_range(b"/h/a", b"/h/c"))


def sqlite_memory_used() -> int:
    """Bytes the sqlite library holds now, in this process (every connection)."""
    lib = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return int(lib.sqlite3_memory_used())


async def test_keep_alive_groups_of_every_size_leave_little_compiled(tmp_path: Path) -> None:
    """sqlite compiles a statement per distinct text and each connection keeps the last 128:
    a keep-alive statement sized to its group kept a program per group size seen (5.4 MB for
    the groups here, 38 MB for 117 sizes of up to 2,000 keys) long after the burst. Groups of
    1 to 300 keep-alives leave less than 1 MB compiled."""
    async with await SqliteBackend.open(tmp_path / "sqlite.db") as backend:
        soon = datetime.now(timezone.utc) + timedelta(minutes=1)
        await asyncio.gather(*(backend.put(Item(f"/h/{i}".encode(), b"v", soon))
                               for i in range(300)))
        before = sqlite_memory_used()
        assert before > 0  # the library the backend uses is the one measured
        for size in range(300, 0, -3):
            later = soon + timedelta(seconds=size)
            assert await asyncio.gather(
                *(backend.keep_alive(f"/h/{i}".encode(), later) for i in range(size))) == [
                    None] * size
        grown = sqlite_memory_used() - before
        assert grown < 1_000_000, f"sqlite holds {grown:,} bytes more after the keep-alives"
        # A group over EXTEND_CHUNK keys, one of them gone: each still gets its own outcome.
        later = soon + timedelta(hours=1)
        outcomes = await asyncio.gather(
            *(backend.keep_alive(f"/h/{i}".encode(), later) for i in range(300)),
            backend.keep_alive(b"/h/missing", later), return_exceptions=True)
        assert outcomes[:300] == [None] * 300 and isinstance(outcomes[300], NotFound)
        assert {i.expires for i in await backend.get_range(b"/h/", b"/h0")} == {later}
