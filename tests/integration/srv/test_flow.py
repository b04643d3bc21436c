"""Flow control: big transfers through a session keep the node's memory flat.

The node runs in this test process, so its RSS is ours; OpenSSH is the client, in another
process. The consumers start late (`sleep 1`), so without backpressure the node would have to
buffer everything the fast side sent meanwhile.
"""

from __future__ import annotations

import asyncio
import shlex

import asyncssh

from teleport.srv import NodeServer
from teleport.srv.session import EXIT_DRAIN_SECONDS, SEND_HIGH_WATER
from teleport.sshutils.fdio import PIPE_READ_SIZE
from tests.integration.srv.sshenv import Trust, peak_rss_while

SIZE = 200 * 1024 * 1024
MAX_GROWTH = 64 * 1024 * 1024


async def _shell(command: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_shell(command, stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return proc.returncode, out


async def test_upload_through_slow_child_stays_bounded(trust: Trust, node: NodeServer) -> None:
    alice = trust.user(["root"])
    ssh = shlex.join(trust.ssh(alice, node.port, "root", "sleep 1; wc -c"))
    (_, out), growth = await peak_rss_while(_shell(f"head -c {SIZE} /dev/zero | {ssh}"))
    assert int(out) == SIZE
    assert growth < MAX_GROWTH, f"node RSS grew by {growth >> 20} MiB"


async def test_download_to_slow_client_stays_bounded(trust: Trust, node: NodeServer) -> None:
    alice = trust.user(["root"])
    ssh = shlex.join(trust.ssh(alice, node.port, "root", f"head -c {SIZE} /dev/zero"))
    (_, out), growth = await peak_rss_while(_shell(f"{ssh} | (sleep 1; wc -c)"))
    assert int(out) == SIZE
    assert growth < MAX_GROWTH, f"node RSS grew by {growth >> 20} MiB"



async def test_output_tail_waits_for_a_paused_client(trust: Trust, node: NodeServer) -> None:
    """The command exits while its last bytes are still in our pipe, held back by the client.

    The size fills the client's window, our send buffer (paused after one more read past the
    high-water mark) and part of the child's 1 MiB pipe, so the tail is in the pipe when `head`
    exits.
    """
    size = 2 * 1024 * 1024 + SEND_HIGH_WATER + PIPE_READ_SIZE + 32 * 1024
    received = 0

    class PausedClient(asyncssh.SSHClientSession[bytes]):
        def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
            chan.pause_reading()
            asyncio.get_running_loop().call_later(EXIT_DRAIN_SECONDS * 2, chan.resume_reading)

        def data_received(self, data: bytes, datatype: int | None) -> None:
            nonlocal received
            received += len(data)

    async with await trust.connect(trust.user(["root"]), node.port, "root") as conn:
        chan, _ = await conn.create_session(PausedClient, f"head -c {size} /dev/zero",
                                            encoding=None)
        await chan.wait_closed()
    assert received == size
