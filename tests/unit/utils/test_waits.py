"""`wait_event` keeps a cancellation that comes in the same turn as the event: with Python
3.11's `asyncio.wait_for` the waiting loop went on, and `teleport start` hung on SIGTERM."""

from __future__ import annotations

import asyncio

import pytest

from teleport.utils.waits import wait_event


async def test_a_loop_cancelled_as_its_event_is_set_ends() -> None:
    wake = asyncio.Event()
    turns = 0

    async def refresh_forever() -> None:  # as `service.trust.Trust.run`
        nonlocal turns
        while True:
            await wait_event(wake, 60)
            wake.clear()
            turns += 1

    task = asyncio.create_task(refresh_forever())
    await asyncio.sleep(0)  # waiting
    wake.set()  # a change arrives ...
    task.cancel()  # ... in the turn the process stops
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert task.cancelled()


async def test_it_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert not await wait_event(event, 0.01)
    event.set()
    assert await wait_event(event, 0.01)
