"""Run the daemon on jemalloc, so that the memory a burst of load used goes back to the OS.

CPython's small-object allocator (pymalloc) takes memory in 1 MiB arenas and gives an arena back
only once every object in it is gone. After a burst (10,000 nodes joining an auth server, each
connection hundreds of small objects) the few objects that outlive it (a cached statement, a
set's grown table, a record kept for a while) are spread over most of the burst's arenas and
hold them all: ten minutes after such a load the auth server kept 271 MiB against 93 before,
while Python's live objects had not grown. jemalloc keeps small objects in slabs of a few pages
and returns free pages after a decay of seconds, by its own background thread.

The allocator is chosen when the process starts (`LD_PRELOAD` for the library,
`PYTHONMALLOC=malloc` so that Python's objects use it too), so `teleport start` executes itself
again with both set: same process id, same open files, before anything is listened on or
written. An operator who set either variable chose for themselves and is left alone; where
Debian's `libjemalloc2` is not installed the daemon stays on pymalloc.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

LIBRARY = "libjemalloc.so.2"
#: An operator who set either chose the allocator; the daemon then leaves both alone.
_CHOICES = ("LD_PRELOAD", "PYTHONMALLOC")
#: Set beside our variables: the names of those we set, for the new image to take out again.
_MARK = "TELEPORT_EXECUTED_ON_JEMALLOC"


def library_path() -> Path | None:
    """Where the dynamic linker would find jemalloc, looked up without running ldconfig."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for folder in (f"/usr/lib/{multiarch}", f"/lib/{multiarch}", "/usr/local/lib", "/usr/lib"):
        path = Path(folder) / LIBRARY
        if path.is_file():
            return path
    return None


def exec_on_jemalloc() -> None:
    """Execute this program again on jemalloc, unless this image already is that program,
    the operator chose an allocator, or jemalloc is not installed.

    In the new image our variables are taken out of the environment again: what the daemon
    starts (users' shells, label commands, a successor at a graceful restart) inherits the
    operator's environment, not our allocator. An operator's `MALLOC_CONF` (jemalloc's
    tuning) is kept and inherited."""
    ours = os.environ.pop(_MARK, None)
    if ours is not None:
        for name in ours.split(","):
            os.environ.pop(name, None)
        return
    if any(name in os.environ for name in _CHOICES) or not sys.executable:
        return
    library = library_path()
    if library is None:
        return
    added = {"LD_PRELOAD": str(library), "PYTHONMALLOC": "malloc"}
    if "MALLOC_CONF" not in os.environ:
        # The background thread returns freed pages after the decay (10 s) even while the
        # daemon allocates nothing; without it only allocating threads do that work.
        added["MALLOC_CONF"] = "background_thread:true"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              {**os.environ, **added, _MARK: ",".join(added)})


__all__ = ["LIBRARY", "exec_on_jemalloc", "library_path"]
