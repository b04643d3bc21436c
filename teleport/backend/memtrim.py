"""Give memory back to the OS once a burst of load is over (issue 20: auth RSS after load).

At 5,000 nodes most of the auth server's RSS after the load is free space inside glibc's heap:
TLS connections (uvloop gives each its own 256 KiB read buffer from the C heap: 1,000 nodes grew
the heap to 319 MB, 294 MB of it free once they left), request buffers and rows freed in an
order that leaves a live chunk near the top, so the heap cannot shrink by itself.
`malloc_trim(0)` returns those free pages (glibc only; elsewhere it does nothing). It costs a
walk of the heap and the pages fault in again on the next burst, so it runs only when the
activity has dropped: at most once a period, while the period's count is at most half of the
busiest period within the last `remember` periods.
The store's sweeper drives it with its count of writes since the store opened: the first period
counts from zero, since a burst that starts and ends within it (a bench's whole load, or the
joins of a fleet) is a busy period like any other.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
from collections import deque

from teleport.utils import glibc

log = logging.getLogger("teleport.memtrim")

#: Periods (sweeper minutes) a busy period is remembered: trims go on this long after a drop,
#: while what the load left behind (hostname memory, resume history) is let go bit by bit.
REMEMBER = 10


_TRIM = glibc.function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS; False when this libc cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


async def release_after_load() -> bool:
    """Free the burst's cyclic garbage, then give the C heap's free pages back (`release_free_memory`,
    False when this libc cannot).

    The auth server raises the cyclic collector's thresholds (`auth.api.collect_less_often`), so
    once the load is gone a full collection may not come for hours; meanwhile what a burst left
    in cycles stays: every failed write (a hostname already reserved, at each node's join) keeps
    its exception, traceback and frames with their locals, about 900 tracebacks and 1,100
    frames after 1,000 nodes, spread over memory a trim cannot return. The collection runs on
    the loop's thread (finalizers of asyncio objects call into the loop), the trim on another:
    a trim of a 300 MiB heap takes ~70 ms and ctypes lets go of the GIL.
    """
    gc.collect()
    return await asyncio.get_running_loop().run_in_executor(None, release_free_memory)


class LoadDropTrimmer:
    """Decide, once a period, whether the activity dropped enough to give memory back."""

    def __init__(self, remember: int = REMEMBER) -> None:
        self._counts: deque[int] = deque(maxlen=remember)
        #: The running count at the end of the last period; it starts at zero with the store.
        self._last_total = 0
        #: Periods that called for a release (for tests and the log).
        self.trims = 0

    def due(self, total: int) -> bool:
        """Close a period whose running activity count (since the store opened) is now
        total; True if memory should be given back now."""
        count = total - self._last_total
        self._last_total = total
        peak = max(self._counts, default=0)
        self._counts.append(count)
        if peak == 0 or count * 2 > peak:
            return False
        self.trims += 1
        log.debug("activity fell from %d to %d a period: giving free memory back", peak, count)
        return True


__all__ = ["REMEMBER", "LoadDropTrimmer", "release_after_load", "release_free_memory"]
