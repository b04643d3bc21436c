"""Children that change identity start without forking the node (teleport.srv.enter).

A user switch, a controlling terminal or PAM's attributes used to make Popen fork the node:
10-75 ms with the event loop and the GIL held for every such session, growing with the node's
memory. Now Popen always vforks and the child switches itself before exec.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time

import pytest

from teleport.srv.process import Child, ProcessAttrs, Pty, lookup_login

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching logins needs root")

#: A heap like a busy node's: a fork copies its page tables (~20 ms and more), vfork does not.
HEAP_BYTES = 512 << 20
#: Far above a vfork (under 1 ms, a few ms on a loaded machine), far below a fork of HEAP_BYTES.
SPAWN_BOUND_SECONDS = 0.010


def _nobody() -> str:
    try:
        return pwd.getpwuid(65534).pw_name
    except KeyError:
        pytest.skip("no account with uid 65534 (nobody)")


async def _run(argv: list[str], login: str, *, tty: bool = False,
               env: dict[str, str] | None = None,
               attrs: ProcessAttrs | None = None) -> tuple[float, int, bytes]:
    """Start argv as login; return (how long the start held us, exit code, output)."""
    os_login = lookup_login(login)
    pty = Pty(os_login, 80, 24) if tty else None
    out_r, out_w = os.pipe()
    ends = (pty.slave,) * 3 if pty is not None else (os.open(os.devnull, os.O_RDONLY), out_w,
                                                      out_w)
    try:
        start = time.perf_counter()
        child = Child(argv, executable=argv[0], login=os_login, env=env or {"PATH": "/usr/bin:/bin"},
                      stdin=ends[0], stdout=ends[1], stderr=ends[2], tty=tty, attrs=attrs)
        took = time.perf_counter() - start
    finally:
        os.close(out_w)
        if pty is not None:
            pty.close_slave()
        else:
            os.close(ends[0])
    code = await asyncio.wait_for(child.wait(), 30)
    source = pty.master if pty is not None else out_r
    output = b""
    try:
        while chunk := os.read(source, 65536):
            output += chunk
    except OSError:
        pass  # a PTY whose other end is gone reads EIO
    os.close(out_r)
    if pty is not None:
        pty.close()
    return took, code, output


async def test_a_child_for_another_login_starts_without_forking_a_large_node() -> None:
    heap = bytearray(HEAP_BYTES)
    for i in range(0, HEAP_BYTES, 4096):  # resident, as a node's heap is
        heap[i] = 1
    nobody = _nobody()
    took = [(await _run(["/bin/true"], nobody))[0] for _ in range(3)]
    tty = [(await _run(["/bin/true"], "root", tty=True))[0] for _ in range(3)]
    del heap
    assert min(took) < SPAWN_BOUND_SECONDS, took
    assert min(tty) < SPAWN_BOUND_SECONDS, tty


async def test_the_child_runs_as_the_login_with_its_groups_and_the_environment_given() -> None:
    nobody = lookup_login(_nobody())
    _, code, out = await _run(["/bin/sh", "-c", 'id -u; id -g; id -G; env; echo "$0"'],
                              nobody.name, env={"PATH": "/usr/bin:/bin", "KEEP": "1"})
    assert code == 0, out
    uid, gid, groups, *rest = out.decode().splitlines()
    assert (int(uid), int(gid)) == (nobody.uid, nobody.gid)
    assert {int(g) for g in groups.split()} == {*nobody.groups, nobody.gid}
    env = dict(line.split("=", 1) for line in rest[:-1] if "=" in line)
    # Python's locale coercion (C locale) must not leak LC_CTYPE into the shell.
    assert "LC_CTYPE" not in env and env["KEEP"] == "1", env
    assert rest[-1] == "/bin/sh"  # argv[0] as given, not the helper's


async def test_a_terminal_child_has_the_pty_as_its_controlling_terminal() -> None:
    _, code, out = await _run(["/bin/sh", "-c", "tty; : </dev/tty && echo ctty-ok"], _nobody(),
                              tty=True)
    assert code == 0, out
    assert b"/dev/pts/" in out and b"ctty-ok" in out, out


async def test_a_failed_start_says_why_on_the_sessions_stderr() -> None:
    _, code, out = await _run(["/nonexistent/shell"], _nobody())
    assert code == 1
    assert out.startswith(b"teleport: cannot start ") and b"No such file" in out, out
