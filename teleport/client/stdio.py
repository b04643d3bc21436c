"""Copy the local terminal or pipes to and from a remote process.

Done by hand rather than with asyncssh's `redirect`, because uvloop cannot watch a tty (or
/dev/null) as a pipe: it aborts or drops reads when stdin and stdout are one terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat

import asyncssh

from teleport.sshutils import fdio

CHUNK = 65536
#: What one read of a piped stdin takes, from a pipe widened to `fdio.PIPE_SIZE`: with the
#: default 64 KiB pipe the writer (`tar`, `head`) blocked every 64 KiB and each read woke us,
#: and every wake-up is a loop turn, a write into the channel and a socket write (issue 20).
STDIN_READ = 256 * 1024


async def feed_stdin(fd: int, writer: asyncssh.SSHWriter[bytes]) -> None:
    """Send fd's bytes to the remote stdin with backpressure, then EOF."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        mode = 0
    if stat.S_ISREG(mode):
        while data := os.read(fd, STDIN_READ):
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0)
    elif stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd):
        if stat.S_ISFIFO(mode):
            fdio.widen_pipe(fd)
        loop = asyncio.get_running_loop()
        was_blocking = os.get_blocking(fd)
        os.set_blocking(fd, False)
        try:
            while True:
                try:
                    data = os.read(fd, STDIN_READ)
                except BlockingIOError:
                    # Watched only while empty: a busy pipe is read without an epoll change.
                    await _readable(loop, fd)
                    continue
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                await asyncio.sleep(0)  # let the packets of this read leave (batchwrite)
        finally:
            os.set_blocking(fd, was_blocking)
    # /dev/null and anything else unreadable: end of input right away.
    with contextlib.suppress(OSError, asyncssh.Error):
        writer.write_eof()


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready = loop.create_future()
    loop.add_reader(fd, ready.set_result, None)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def copy_out(reader: asyncssh.SSHReader[bytes], fd: int) -> None:
    """Write everything the remote side sends on one stream to a local fd."""
    while data := await reader.read(CHUNK):
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                await asyncio.sleep(0.005)
