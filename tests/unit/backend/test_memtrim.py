"""Memory a burst left free goes back to the OS once the burst is over (issue 20: auth RSS
within 10% of before, ten minutes after 10,000 nodes stop)."""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path

import pytest

from teleport.backend import sqlite as sqlite_backend
from teleport.backend.base import Item
from teleport.backend.memtrim import (
    REMEMBER,
    LoadDropTrimmer,
    release_after_load,
    release_free_memory,
)
from teleport.utils.clock import FakeClock
from tests.unit.backend.test_sqlite_group_commit import sqlite_memory_used


def _rss_mib() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc")
def test_free_heap_pages_go_back_to_the_os() -> None:
    # Blocks above pymalloc's 512 bytes come from glibc's heap; one kept in fifty pins its top.
    blobs = [bytes(2000) for _ in range(60_000)]
    kept = blobs[::50]
    del blobs
    before = _rss_mib()
    if not release_free_memory():
        pytest.skip("not glibc")
    assert _rss_mib() < before - 60, (before, _rss_mib())
    assert len(kept) == 1200


def test_trims_only_after_the_activity_drops() -> None:
    trimmer = LoadDropTrimmer()
    total = 0
    assert not trimmer.due(total)  # nothing written since the store opened
    for _ in range(5):  # steady load: nothing to give back
        total += 1000
        assert not trimmer.due(total)
    total += 600  # not half yet
    assert not trimmer.due(total)
    total += 400
    assert trimmer.due(total)
    trims = [trimmer.due(total) for _ in range(REMEMBER + 2)]  # idle from now on
    # Idle periods go on trimming while the busy ones are remembered, then stop.
    assert trims[:REMEMBER - 2] == [True] * (REMEMBER - 2) and trims[-2:] == [False, False]


def test_a_burst_within_the_first_period_is_remembered() -> None:
    # The bench's whole load at 1,000 nodes fell within the sweeper's first minute: counted
    # from the store's opening, that minute is the busy one and the idle ones after it trim.
    trimmer = LoadDropTrimmer()
    assert not trimmer.due(9509)
    assert trimmer.due(9574)
    assert trimmer.trims == 1


def test_a_process_that_never_was_busy_never_trims() -> None:
    trimmer = LoadDropTrimmer()
    assert not any(trimmer.due(0) for _ in range(20))


async def test_the_sqlite_sweeper_trims_once_the_writes_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_backend, "PURGE_INTERVAL", 0.01)
    monkeypatch.setattr(sqlite_backend, "TRIM_PERIOD", 0.1)
    backend = await sqlite_backend.SqliteBackend.open(tmp_path / "kv.db", FakeClock())
    try:
        await asyncio.sleep(0.35)  # idle from the start: nothing was ever busy
        assert backend.trimmer.trims == 0
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.35
        while loop.time() < end:  # a burst of writes over a few periods
            await asyncio.gather(*(backend.put(Item(f"/k/{i}".encode(), b"v")) for i in range(50)))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if backend.trimmer.trims:
                break
        assert backend.trimmer.trims >= 1
    finally:
        await backend.close()


async def test_the_sqlite_sweeper_trims_after_a_burst_in_its_first_period(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_backend, "PURGE_INTERVAL", 0.01)
    monkeypatch.setattr(sqlite_backend, "TRIM_PERIOD", 0.5)
    backend = await sqlite_backend.SqliteBackend.open(tmp_path / "kv.db", FakeClock())
    try:
        # A burst right after opening, over well before the first period ends, then idle.
        await asyncio.gather(*(backend.put(Item(f"/k/{i}".encode(), b"v")) for i in range(200)))
        for _ in range(60):
            await asyncio.sleep(0.05)
            if backend.trimmer.trims:
                break
        assert backend.trimmer.trims >= 1
    finally:
        await backend.close()


async def test_the_trim_lets_sqlite_drop_the_pages_a_burst_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each connection caches up to 2 MB of pages; after a burst they held the heap's slabs
    long after it (2.2 MB at +10 min after 10,000 nodes). The trim lets them go."""
    monkeypatch.setattr(sqlite_backend, "PURGE_INTERVAL", 0.01)
    monkeypatch.setattr(sqlite_backend, "TRIM_PERIOD", 0.2)
    before = sqlite_memory_used()
    backend = await sqlite_backend.SqliteBackend.open(tmp_path / "kv.db", FakeClock())
    try:
        for start in range(0, 3000, 500):  # 4.5 MB of rows: both caches fill to their limit
            await asyncio.gather(*(backend.put(Item(f"/k/{i:05}".encode(), os.urandom(1500)))
                                   for i in range(start, start + 500)))
        assert len(await backend.get_range(b"/k/", b"/k0")) == 3000
        grown = sqlite_memory_used() - before
        assert grown > 3_000_000, grown
        for _ in range(100):
            await asyncio.sleep(0.05)
            if backend.trimmer.trims:
                break
        assert backend.trimmer.trims >= 1
        for _ in range(40):  # the release runs once the trim is counted
            if sqlite_memory_used() - before < grown / 4:
                break
            await asyncio.sleep(0.05)
        assert sqlite_memory_used() - before < grown / 4, (grown, sqlite_memory_used() - before)
    finally:
        await backend.close()


async def test_release_frees_cyclic_garbage_the_raised_thresholds_would_keep() -> None:
    """An exception kept in a list its own traceback's frame holds: freed only by the cyclic
    collector, which the auth server runs rarely."""
    class Marker:
        pass

    def failed_write() -> None:
        outcomes: list[object] = [Marker()]
        try:
            raise KeyError("already exists")
        except KeyError as err:
            outcomes.append(err)  # err -> traceback -> this frame -> outcomes -> err

    thresholds = gc.get_threshold()
    gc.disable()
    try:
        for _ in range(100):
            failed_write()
        assert sum(isinstance(o, Marker) for o in gc.get_objects()) == 100
        await release_after_load()
        assert sum(isinstance(o, Marker) for o in gc.get_objects()) == 0
    finally:
        gc.enable()
        gc.set_threshold(*thresholds)
