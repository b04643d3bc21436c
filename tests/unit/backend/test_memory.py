"""The memory backend against the shared conformance suite, plus its watch-buffer limit."""

from __future__ import annotations

import asyncio

import pytest

from teleport.backend.base import Event, EventType, Item
from teleport.backend.conformance import CHECKS, EXPIRY_EVENT_CHECKS, run_check
from teleport.backend.fanout import RESUME_HISTORY, WATCH_BUFFER, EventFanout
from teleport.backend.memory import MemoryBackend
from teleport.errors import ConnectionProblem, LimitExceeded


@pytest.mark.parametrize("check", [*CHECKS, *EXPIRY_EVENT_CHECKS])
async def test_conformance(check: str) -> None:
    await run_check(check, MemoryBackend)


async def test_watcher_that_falls_behind_is_told_to_resync() -> None:
    backend = MemoryBackend()
    watcher = await backend.watch([b"/"])
    for n in range(WATCH_BUFFER):
        await backend.put(Item(b"/k/%d" % n, b"v"))
    events = aiter(watcher)
    with pytest.raises(LimitExceeded, match="watch again"):
        await anext(events)
    # Writers are not slowed down or failed by a lagging reader.
    assert (await backend.get(b"/k/0")).value == b"v"
    await backend.close()


async def test_resume_from_before_the_kept_history_is_refused() -> None:
    """Only the last RESUME_HISTORY events are kept; an older revision means read a snapshot."""
    backend = MemoryBackend()
    old = await backend.put(Item(b"/k/old", b"v"))
    for n in range(RESUME_HISTORY + 1):
        await backend.put(Item(b"/k/%d" % n, b"v"))
    with pytest.raises(LimitExceeded, match="recent history"):
        await backend.watch([b"/k/"], since=old.revision)
    newest = await backend.put(Item(b"/k/new", b"v"))
    async with await backend.watch([b"/k/"], since=str(int(newest.revision) - 1)) as watcher:
        events = aiter(watcher)
        assert [(await anext(events)).type for _ in range(2)] == [EventType.INIT, EventType.PUT]
    await backend.close()


async def test_calls_after_close_fail() -> None:
    backend = MemoryBackend()
    await backend.close()
    with pytest.raises(ConnectionProblem):
        await backend.get(b"/a")


async def test_kept_events_are_forgotten_after_their_age() -> None:
    """An idle server drops a burst's events after RESUME_AGE (here 50 ms), not never: a
    watcher resuming from before them reads a snapshot, one resuming from after goes on."""
    fanout = EventFanout(history=100, max_age=0.05)
    fanout.emit([Event(EventType.PUT, Item(b"/k/1", b"v", None, "1"))])
    fanout.watch([b"/k/"], since="0").stop()  # kept: resumable
    await asyncio.sleep(0.06)
    fanout.prune()  # the sqlite backend's sweeper does this every second
    with pytest.raises(LimitExceeded, match="recent history"):
        fanout.watch([b"/k/"], since="0")
    fanout.watch([b"/k/"], since="1").stop()
