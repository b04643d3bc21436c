"""Oversized terminals: a session releases what it opened, and window sizes are clamped.

A PTY request of 65,536 columns or more used to fail after openpty() and leak both descriptors,
so a user could exhaust the host's terminals; a later window change that large dropped the
connection. The node runs in this process, so /proc/self/fd counts its descriptors.
"""

from __future__ import annotations

import asyncio
import os
import pwd

import asyncssh

from teleport.srv import NodeServer
from tests.integration.srv.sshenv import Trust, read_until

HUGE = 70_000
ATTEMPTS = 10


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


async def _settled_fds(limit: int) -> int:
    """Return the descriptor count once the node has finished closing sessions (up to 5 s)."""
    for _ in range(50):
        count = _open_fds()
        if count <= limit:
            return count
        await asyncio.sleep(0.1)
    return _open_fds()


async def _huge_pty_session(trust: Trust, node: NodeServer) -> str:
    """Ask for a HUGE x HUGE terminal on a fresh connection; return what `stty size` said."""
    alice = trust.user([_me()])
    try:
        async with await trust.connect(alice, node.port, _me()) as conn:
            result = await asyncio.wait_for(
                conn.run("stty size", term_type="xterm", term_size=(HUGE, HUGE)), 10)
    except (asyncssh.Error, OSError) as err:
        return f"failed: {err}"
    return str(result.stdout).strip()


async def test_huge_pty_requests_leak_no_descriptors(trust: Trust, node: NodeServer) -> None:
    await _huge_pty_session(trust, node)  # warm up: first-use descriptors (epoll, caches)
    baseline = await _settled_fds(0)
    answers = [await _huge_pty_session(trust, node) for _ in range(ATTEMPTS)]
    after = await _settled_fds(baseline + 2)
    assert after <= baseline + 2, f"{after - baseline} descriptors leaked over {ATTEMPTS} sessions"
    # The terminal was clamped to what the kernel accepts instead of failing.
    assert answers == ["10000 10000"] * ATTEMPTS


async def test_huge_window_change_keeps_the_connection(trust: Trust, node: NodeServer) -> None:
    alice = trust.user([_me()])
    async with await trust.connect(alice, node.port, _me()) as conn:
        proc = await conn.create_process(term_type="xterm", term_size=(80, 24), env={"PS1": "$ "})
        proc.change_terminal_size(HUGE, HUGE)
        proc.stdin.write("stty size\n")
        await read_until(proc, "10000 10000")
        proc.change_terminal_size(0, 0)  # zero means "unknown": the defaults apply
        proc.stdin.write("stty size; exit 0\n")
        await read_until(proc, "24 80")
        await asyncio.wait_for(proc.wait_closed(), 10)
        assert proc.exit_status == 0
