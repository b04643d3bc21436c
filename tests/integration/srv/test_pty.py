"""Interactive sessions on a real PTY, and sessions as another OS user."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import asyncssh
import pytest

from teleport.events.emitter import RESIZE, SESSION_END, SESSION_START, MemoryEmitter
from teleport.srv import NodeServer
from tests.integration.srv.sshenv import Trust, is_root, read_until, run


async def test_interactive_shell_with_resize(trust: Trust, node: NodeServer,
                                             emitter: MemoryEmitter) -> None:
    alice = trust.user(["root"])
    async with await trust.connect(alice, node.port, "root") as conn:
        proc = await conn.create_process(term_type="xterm", term_size=(80, 25),
                                         env={"PS1": "$ "})
        proc.stdin.write("stty size; echo TERM=$TERM tty=$SSH_TTY\n")
        seen = await read_until(proc, "tty=/dev/")
        assert "25 80" in seen and "TERM=xterm" in seen
        proc.change_terminal_size(120, 40)
        proc.stdin.write("stty size\n")
        await read_until(proc, "40 120")
        proc.stdin.write("exit 3\n")
        await asyncio.wait_for(proc.wait_closed(), 10)
        assert proc.exit_status == 3

    start, = emitter.of_type(SESSION_START)
    end, = emitter.of_type(SESSION_END)
    resize, = emitter.of_type(RESIZE)
    assert start["size"] == "80:25" and resize["size"] == "120:40"
    assert start["sid"] == end["sid"] == resize["sid"]
    assert start["user"] == "alice" and start["login"] == "root"


async def test_openssh_tty_exec(trust: Trust, node: NodeServer) -> None:
    alice = trust.user(["root"])
    rc, out, _ = await run(trust.ssh(alice, node.port, "root", "-tt", "tty; exit 7"))
    assert rc == 7
    assert out.startswith("/dev/pts/")


async def test_pty_refused_without_permit_pty(trust: Trust, node: NodeServer) -> None:
    alice = trust.user(["root"], pty=False)
    async with await trust.connect(alice, node.port, "root") as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process("tty", term_type="xterm", request_pty="force")


@pytest.fixture
def os_user() -> Iterator[str]:
    """A throwaway OS account, removed afterwards."""
    if not is_root() or shutil.which("useradd") is None:
        pytest.skip("creating OS users needs root and useradd")
    name = f"tp{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--groups", "users", name],
                   check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "--remove", "--force", name], capture_output=True)


async def test_runs_as_the_os_login(trust: Trust, node: NodeServer, os_user: str) -> None:
    bob = trust.user([os_user], name="bob")
    script = "id -un; id -Gn; pwd; echo $HOME $USER; stat -c %U $(tty)"
    rc, out, err = await run(trust.ssh(bob, node.port, os_user, "-tt", script))
    assert rc == 0, err
    name, groups, cwd, env, tty_owner = out.replace("\r", "").splitlines()[:5]
    assert name == os_user
    assert "users" in groups.split()
    assert cwd == f"/home/{os_user}"
    assert env == f"/home/{os_user} {os_user}"
    assert tty_owner == os_user
