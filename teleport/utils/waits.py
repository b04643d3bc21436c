"""Waiting for an event with a time limit, without losing a cancellation.

Python 3.11's `asyncio.wait_for` returns the awaited result when the waiting task is cancelled
in the same turn of the loop as the event is set (CPython gh-86296, fixed in 3.12): the task
goes on as if it had never been cancelled. A supervised loop that waited so at shutdown never
ended, and `teleport start` hung on SIGTERM (the proxy's CA refresh, woken by the watch stream's
reconnection as the process stopped). `asyncio.timeout` keeps the cancellation.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until event is set or `seconds` have passed; return whether it is set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
