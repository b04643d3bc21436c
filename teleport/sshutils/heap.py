"""Keep freed buffers' pages in a bulk SSH client's heap (glibc), rather than fault them in again.

Bulk SSH in Python allocates and frees several buffers per packet (a read, the copies asyncssh
makes on the way to the cipher and back, the cipher's output), 32-256 KiB each. glibc serves
those above its mmap threshold with a fresh mapping it unmaps on free, and hands the top of the
heap back to the kernel once a little of it is free; the next buffer then faults its pages in,
zeroed, again. `tsh ssh` uploading 1 GiB took 1.39 million page faults (one per 4 KiB page
touched, five times over) and about 40% of its CPU; with fixed thresholds, 7,700 (start-up).
Fixed thresholds turn off glibc's own adjustment, so the freed memory a process keeps is bounded
by `TRIM_THRESHOLD`: fine for `tsh`, which lives for one command; the daemon does not call this
(its heap, grown once, stays, and it should give memory back after load).
"""

from __future__ import annotations

import ctypes

from teleport.utils import glibc

#: mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Buffers up to this size come from the heap, not from a mapping of their own.
MMAP_THRESHOLD = 4 * 1024 * 1024
#: Free memory at the top of the heap kept before any is given back.
TRIM_THRESHOLD = 32 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process; False where there is no glibc `mallopt`."""
    mallopt = glibc.function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
    if mallopt is None:
        return False
    # mallopt returns 1 on success; musl's is a stub that returns 0 and changes nothing.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                & mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]
