"""`tsh` keeps freed buffers' pages: bulk-sized buffers allocated and freed over and over
(what each SSH packet costs) fault no fresh pages in once the heap has grown."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: Frees and reallocates 256 KiB and 512 KiB buffers, as a bulk upload did; prints the page
#: faults of the last 200 rounds. Without fixed thresholds glibc unmapped or trimmed them
#: every round: 44,800 faults here.
PROBE = textwrap.dedent("""
    import resource, sys
    {setup}
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def churn(rounds):
        before = faults()
        for _ in range(rounds):
            a = bytes(256 * 1024); b = bytes(256 * 1024); c = a + b
            del a, b, c
        return faults() - before
    churn(10)
    print(churn(200))
""")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


def _faults(setup: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return int(out.split()[-1])


def test_the_probe_sees_glibc_give_pages_back_by_default() -> None:
    assert _faults("") > 10_000


def test_keep_freed_memory_stops_the_faults() -> None:
    setup = "from teleport.sshutils import heap; assert heap.keep_freed_memory()"
    assert _faults(setup) < 1_000


def test_tsh_ssh_stack_keeps_freed_memory() -> None:
    """`tsh ssh` and `tsh scp` load asyncssh through `sshstack.load()`."""
    assert _faults("from teleport.client import sshstack; sshstack.load()") < 1_000
