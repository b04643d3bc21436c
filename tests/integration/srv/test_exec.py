"""Commands on the node: output, exit codes and signals, stdin, environment, audit."""

from __future__ import annotations

import asyncio
import os

import pytest

from teleport.events.emitter import EXEC, MemoryEmitter
from teleport.srv import NodeServer, process
from tests.integration.srv.sshenv import CLUSTER, Trust, make_node, run


async def test_openssh_exec_output_and_exit_codes(trust: Trust, node: NodeServer,
                                                  emitter: MemoryEmitter) -> None:
    alice = trust.user(["root"])
    rc, out, _ = await run(trust.ssh(alice, node.port, "root", "echo hello"))
    assert (rc, out) == (0, "hello\n")
    rc, _, _ = await run(trust.ssh(alice, node.port, "root", "false"))
    assert rc == 1
    rc, _, _ = await run(trust.ssh(alice, node.port, "root", "exit 42"))
    assert rc == 42

    events = emitter.of_type(EXEC)
    assert [(e["command"], e["exitCode"], e["exitError"]) for e in events] == [
        ("echo hello", 0, ""), ("false", 1, "exit status 1"), ("exit 42", 42, "exit status 42")]
    first = events[0]
    assert first["user"] == "alice" and first["login"] == "root"
    assert first["namespace"] == "default" and first["server_id"] == node.server_id
    assert first["server_labels"] == {"env": "test"}
    assert first["addr.local"] == f"127.0.0.1:{node.port}"
    assert first["addr.remote"].startswith("127.0.0.1:") and first["sid"]
    assert "size" not in first


async def test_asyncssh_stdin_stderr_and_signal(trust: Trust, node: NodeServer) -> None:
    alice = trust.user(["root"])
    async with await trust.connect(alice, node.port, "root") as conn:
        result = await conn.run("cat; echo oops >&2", input="line one\nline two\n")
        assert result.stdout == "line one\nline two\n"
        assert result.stderr == "oops\n"
        assert result.exit_status == 0

        result = await conn.run("kill -TERM $$")
        assert result.exit_signal is not None and result.exit_signal[0] == "TERM"

        proc = await conn.create_process("read line; echo got $line")
        proc.stdin.write("hi\n")
        assert (await proc.stdout.readline()) == "got hi\n"
        await proc.wait()


async def test_session_environment(trust: Trust, node: NodeServer) -> None:
    alice = trust.user(["root"])
    async with await trust.connect(alice, node.port, "root") as conn:
        result = await conn.run("env", env={"LANG": "C.UTF-8", "LC_TIME": "C", "EVIL": "1"})
    env = dict(line.split("=", 1) for line in str(result.stdout).splitlines() if "=" in line)
    assert env["USER"] == env["LOGNAME"] == "root"
    assert env["HOME"] == "/root" and env["SHELL"]
    assert "/usr/bin" in env["PATH"]
    assert env["SSH_TELEPORT_USER"] == "alice"
    assert env["SSH_TELEPORT_HOST_UUID"] == node.server_id
    assert env["SSH_TELEPORT_CLUSTER_NAME"] == CLUSTER
    assert env["SSH_SESSION_WEBPROXY_ADDR"] == "proxy.example.com:3080"
    assert len(env["SSH_SESSION_ID"]) == 36
    assert env["SSH_CONNECTION"].split()[2:] == ["127.0.0.1", str(node.port)]
    assert env["SSH_CLIENT"].split()[2] == str(node.port)
    assert env["LANG"] == "C.UTF-8" and env["LC_TIME"] == "C"
    assert "EVIL" not in env and "SSH_TTY" not in env and "TERM" not in env


async def test_unknown_os_user_is_a_clear_error(trust: Trust, node: NodeServer) -> None:
    ghost = trust.user(["nosuchuser-tp"])
    rc, _, err = await run(trust.ssh(ghost, node.port, "nosuchuser-tp", "true"))
    assert rc == 1
    assert "cannot run as nosuchuser-tp: no such user on this node" in err


async def test_other_login_refused_when_not_root(trust: Trust, node: NodeServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    alice = trust.user(["root"])
    monkeypatch.setattr(process.os, "geteuid", lambda: 4242)
    async with await trust.connect(alice, node.port, "root") as conn:
        result = await conn.run("true")
    assert result.exit_status == 1
    assert "teleport: cannot run as root: node is not running as root" in str(result.stderr)


async def test_close_ends_sessions(trust: Trust, emitter: MemoryEmitter) -> None:
    alice = trust.user(["root"])
    node = make_node(trust, emitter)
    await node.start("127.0.0.1", 0)
    try:
        conn = await trust.connect(alice, node.port, "root")
        proc = await conn.create_process("echo $$; exec sleep 300")
        pid = int(await proc.stdout.readline())
        os.kill(pid, 0)
    finally:
        await node.close()
    await asyncio.wait_for(conn.wait_closed(), 5)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not node.children
