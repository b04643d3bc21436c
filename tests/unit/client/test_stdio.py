"""`tsh ssh` feeds a piped stdin to the remote command from a widened pipe, all of it, then EOF."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from collections.abc import AsyncIterator

import asyncssh
import pytest

from teleport.client import stdio
from teleport.sshutils.fdio import PIPE_SIZE

SIZE = 3 * 1024 * 1024 + 7


async def _count(process: asyncssh.SSHServerProcess[bytes]) -> None:
    size = 0
    while data := await process.stdin.read(1 << 20):
        size += len(data)
    process.stdout.write(str(size).encode())
    process.exit(0)


class _Anyone(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False


@pytest.fixture
async def conn() -> AsyncIterator[asyncssh.SSHClientConnection]:
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        server_factory=_Anyone, process_factory=_count, encoding=None)
    async with asyncssh.connect("127.0.0.1", server.get_port(), known_hosts=None,
                                username="alice", client_keys=[], agent_path=None,
                                config=None) as client:
        yield client
    server.close()
    await server.wait_closed()


async def test_piped_stdin_arrives_whole_from_a_widened_pipe(
        conn: asyncssh.SSHClientConnection) -> None:
    process = await conn.create_process("count", encoding=None)
    read_end, write_end = os.pipe()

    def produce() -> None:
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(os.urandom(SIZE))

    writer = threading.Thread(target=produce)
    writer.start()
    try:
        feeding = asyncio.ensure_future(stdio.feed_stdin(read_end, process.stdin))
        await asyncio.sleep(0)
        # The writer can run 1 MiB ahead: each read then takes up to STDIN_READ, not 64 KiB.
        assert fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) == PIPE_SIZE
        await feeding
        assert int(await process.stdout.read()) == SIZE  # answered at EOF: write_eof was sent
        assert os.get_blocking(read_end)  # left as it was found
    finally:
        writer.join()
        os.close(read_end)
