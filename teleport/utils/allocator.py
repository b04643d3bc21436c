"""Run the daemon on the C library's allocator, so that memory a burst of load used goes back.

CPython's own small-object allocator (pymalloc) takes memory from the OS in 1 MiB arenas and
gives an arena back only once every object in it is freed. After a burst (thousands of nodes
joining an auth server, each connection hundreds of small objects), the few objects that
outlive it (a cache entry, a name remembered for a while) are spread over most of the burst's
arenas and hold them all: at 5,000 nodes, 89 arenas beyond the 39 held before the load were
still held ten minutes after it, for about 1 MB of live objects in them. glibc's allocator
keeps small objects in its heap instead, whose free pages `malloc_trim` returns 4 KiB at a
time (`backend.memtrim` calls it once the load has dropped).

The allocator is chosen when the interpreter starts, by `PYTHONMALLOC`, so `teleport start`
executes itself again with it set: same process id, same open files, before anything is
listened on or written. A value the operator set (`pymalloc`, `debug`, ...) is kept.
"""

from __future__ import annotations

import os
import sys

ENV = "PYTHONMALLOC"
#: CPython's name for the C library's malloc, for objects of every size.
C_ALLOCATOR = "malloc"
#: Set with ENV by `exec_on_c_allocator`, so the new image can tell our setting from the operator's.
_MARK = "TELEPORT_EXECUTED_ON_C_ALLOCATOR"


def exec_on_c_allocator() -> None:
    """Execute this program again with `PYTHONMALLOC=malloc`, unless the operator set the
    variable or this is not glibc, whose `malloc_trim` is what makes the C allocator's heap
    give memory back.

    In the new image, both variables are taken out of the environment again: what the daemon
    starts (label commands, a successor at a graceful restart) inherits the operator's."""
    if os.environ.pop(_MARK, None) is not None:
        os.environ.pop(ENV, None)
        return
    if ENV in os.environ or not _is_glibc() or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              {**os.environ, ENV: C_ALLOCATOR, _MARK: "1"})


def _is_glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # not a glibc system
        return False


__all__ = ["C_ALLOCATOR", "ENV", "exec_on_c_allocator"]
