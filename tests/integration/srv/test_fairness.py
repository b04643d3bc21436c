"""Fairness: one busy or stalled session must not hold up other users of the same node.

The node runs in this test process on its event loop; asyncssh clients share that loop, as
other users' connections share a node's. Bounds are generous: this is about "completes while
the flood runs", not about how fast.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from dataclasses import replace

from teleport.srv import NodeServer
from teleport.srv.process import _already, lookup_login
from tests.integration.srv.sshenv import Trust, UserCreds

#: A short command on another connection (handshake, login, exec) must finish within this.
BOUND_SECONDS = 10.0
#: The flood must really have been flowing meanwhile.
MIN_FLOODED = 4 * 1024 * 1024


async def _short_command(trust: Trust, node: NodeServer, creds: UserCreds) -> float:
    start = time.monotonic()
    async with await trust.connect(creds, node.port, "root") as conn:
        result = await conn.run("echo ok", check=True)
    assert result.stdout == "ok\n"
    return time.monotonic() - start


async def test_flooding_session_does_not_stall_a_short_command(trust: Trust,
                                                               node: NodeServer) -> None:
    alice, bob = trust.user(["root"]), trust.user(["root"], name="bob")
    flooded = 0
    flowing = asyncio.Event()
    async with await trust.connect(alice, node.port, "root") as flood_conn:
        proc = await flood_conn.create_process("cat /dev/zero", encoding=None)

        async def drain() -> None:
            nonlocal flooded
            while chunk := await proc.stdout.read(1 << 20):
                flooded += len(chunk)
                if flooded >= MIN_FLOODED:
                    flowing.set()

        reader = asyncio.ensure_future(drain())
        try:
            await asyncio.wait_for(flowing.wait(), BOUND_SECONDS)  # flooding before bob starts
            before = flooded
            took = [await asyncio.wait_for(_short_command(trust, node, bob), BOUND_SECONDS)
                    for _ in range(3)]
            assert flooded > before, "the flood stopped while the short commands ran"
        finally:
            proc.kill()
            reader.cancel()
    assert max(took) < BOUND_SECONDS, took


async def test_stalled_session_does_not_stall_a_short_command(trust: Trust,
                                                              node: NodeServer) -> None:
    """A client that stops reading: its output is paused, nobody else waits for it."""
    alice, bob = trust.user(["root"]), trust.user(["root"], name="bob")
    async with await trust.connect(alice, node.port, "root") as stalled:
        proc = await stalled.create_process("cat /dev/zero", encoding=None)
        await proc.stdout.read(1)  # started; from now on nobody reads
        await asyncio.sleep(0.5)  # its window and the node's send buffer fill up
        took = await asyncio.wait_for(_short_command(trust, node, bob), BOUND_SECONDS)
        proc.kill()
    assert took < BOUND_SECONDS


async def test_stalled_handshakes_do_not_stall_a_short_command(trust: Trust,
                                                                node: NodeServer) -> None:
    """Clients that stop mid-handshake (banner sent, no key exchange) hold nobody up: each is
    only a connection waiting for bytes, and they take no more than their source's tokens."""
    bob = trust.user(["root"], name="bob")
    stalled = []
    try:
        for _ in range(8):
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            writer.write(b"SSH-2.0-stalled\r\n")
            stalled.append((reader, writer))
        await asyncio.sleep(0.2)  # the node has answered them and waits for their KEXINIT
        took = await asyncio.wait_for(_short_command(trust, node, bob), BOUND_SECONDS)
        assert all(not r.at_eof() for r, _ in stalled), "a stalled client was dropped"
    finally:
        for _, writer in stalled:
            writer.close()
    assert took < BOUND_SECONDS


async def test_login_keeps_the_listener_options(trust: Trust, node: NodeServer) -> None:
    """asyncssh would rebuild the options in its thread pool on every login (for sshd_config
    `Match` blocks, which we do not load): a thread hand-off per connection, for nothing."""
    alice = trust.user(["root"])
    async with await trust.connect(alice, node.port, "root") as conn:
        await conn.run("true", check=True)
        (server,) = node.connections
        assert server.conn is not None
        assert server.conn._options is node._options  # noqa: SLF001 - asyncssh keeps them here


def test_child_of_the_nodes_own_login_needs_no_identity_switch() -> None:
    """Then the shell is exec'd directly, without teleport.srv.enter's start in the child."""
    me = lookup_login(pwd.getpwuid(os.geteuid()).pw_name)
    assert _already(me)
    assert not _already(replace(me, gid=me.gid + 1, groups=(*me.groups, me.gid + 1)))
    assert not _already(replace(me, groups=(*me.groups, max(me.groups) + 1)))
    assert not _already(replace(me, uid=me.uid + 1))
