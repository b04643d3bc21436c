"""Non-blocking pumps between raw file descriptors (pipes, PTY masters) and SSH channels.

Both ends are flow-controlled: a reader stops reading its fd while the channel's send buffer is
full, and a writer holds at most `limit` bytes before it asks the channel to stop reading (which
also stops window adjusts, so the client stops sending). That bounds memory per session no matter
how fast one side produces. We use the loop's `add_reader`/`add_writer` directly rather than pipe
transports so that a PTY's EIO at hangup is an ordinary end of file on every event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
from collections.abc import Callable

from asyncssh.channel import SSHChannel

READ_SIZE = 64 * 1024
WRITE_LIMIT = 256 * 1024
#: Capacity asked for a child's output pipe, and what one read takes from it. With the default
#: 64 KiB pipe a bulk writer (`cat`, `head`) blocked every 64 KiB and each read woke us for a
#: quarter of this; fewer, larger reads mean fewer wake-ups and larger channel writes.
PIPE_SIZE = 1024 * 1024
PIPE_READ_SIZE = 256 * 1024
#: Chunks handed to one `writev`, well under any system's IOV_MAX (1,024 on Linux).
_IOV_BATCH = 64


def widen_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Ask for a larger pipe buffer; keep the default where refused (an unprivileged node over
    `/proc/sys/fs/pipe-user-pages-soft`, an older kernel)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


class FdReader:
    """Read an fd until end of file, handing each chunk to `on_data`, pausable."""

    def __init__(self, fd: int, on_data: Callable[[bytes], None],
                 read_size: int = READ_SIZE) -> None:
        self.fd = fd
        self._on_data = on_data
        self._read_size = read_size
        self._loop = asyncio.get_running_loop()
        self.paused = False
        #: Bytes read so far, to tell a quiet fd from one still flowing.
        self.total = 0
        self._watching = False
        self.done: asyncio.Future[None] = self._loop.create_future()

    def start(self) -> None:
        os.set_blocking(self.fd, False)
        self._watch(True)

    def pause(self) -> None:
        self.paused = True
        self._watch(False)

    def resume(self) -> None:
        self.paused = False
        self._watch(not self.done.done())

    def close(self) -> None:
        self._finish()

    def _watch(self, on: bool) -> None:
        if on and not self._watching and not self.paused:
            self._loop.add_reader(self.fd, self._read_once)
            self._watching = True
        elif not on and self._watching:
            self._loop.remove_reader(self.fd)
            self._watching = False

    def _read_once(self) -> None:
        try:
            data = os.read(self.fd, self._read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            # EIO is how a PTY master reports that every slave fd was closed.
            if err.errno not in (errno.EIO, errno.EBADF):
                raise
            data = b""
        if not data:
            self._finish()
            return
        self.total += len(data)
        self._on_data(data)

    def _finish(self) -> None:
        self._watch(False)
        if not self.done.done():
            self.done.set_result(None)


class FdWriter:
    """Write to an fd through a bounded buffer; `pause`/`resume` throttle the producer.

    What is written during one loop turn leaves in one `writev` at its end: a channel hands
    over one packet at a time, several per read of its socket, and a write each cost a system
    call and a wake-up of the reading child per packet (issue 20).
    """

    def __init__(self, fd: int, *, pause: Callable[[], None], resume: Callable[[], None],
                 close_fd: bool = True, limit: int = WRITE_LIMIT) -> None:
        self.fd = fd
        self._pause = pause
        self._resume = resume
        self._close_fd = close_fd
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._chunks: list[bytes | memoryview] = []
        self._size = 0
        self._paused = False
        self._scheduled = False
        self._watching = False
        self._closing = False
        self._closed = False
        os.set_blocking(fd, False)

    def write(self, data: bytes) -> None:
        if self._closed or self._closing or not data:
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._watching:
            pass  # the fd is full: its writer callback sends this too
        elif self._size > self._limit:
            self._flush()  # as much as the fd takes now, before deciding to pause
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        if self._size > self._limit and not self._paused:
            self._paused = True
            self._pause()

    def close_when_drained(self) -> None:
        """Close the fd once the buffer is written: the child sees end of file on stdin."""
        self._closing = True
        if not self._size:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._chunks.clear()
        self._size = 0
        if self._watching:
            self._loop.remove_writer(self.fd)
            self._watching = False
        if self._close_fd:
            os.close(self.fd)
        if self._paused:
            self._paused = False
            self._resume()

    def _flush(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        chunks = self._chunks
        try:
            while chunks:
                self._consume(os.writev(self.fd, chunks[:_IOV_BATCH]))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            # The child closed its stdin or exited: drop what it will never read.
            self.close()
            return
        if chunks and not self._watching:
            self._loop.add_writer(self.fd, self._flush)
            self._watching = True
        elif not chunks:
            if self._watching:
                self._loop.remove_writer(self.fd)
                self._watching = False
            if self._closing:
                self.close()
                return
        if self._paused and self._size <= self._limit // 2:
            self._paused = False
            self._resume()

    def _consume(self, written: int) -> None:
        """Drop the `written` bytes from the front of the chunks (the last one in part)."""
        self._size -= written
        chunks = self._chunks
        done = 0
        while done < len(chunks) and written >= len(chunks[done]):
            written -= len(chunks[done])
            done += 1
        del chunks[:done]
        if written:
            chunks[0] = memoryview(chunks[0])[written:]


class ChannelInput:
    """Pause and resume an asyncssh channel's input on behalf of a bounded consumer.

    asyncssh re-opens the client's full window whenever it delivers data it buffered while
    paused, even though more is still buffered. Pausing in the middle of its delivery loop
    therefore lets the client refill the window on every pause/resume cycle: we measured over
    100 MiB held in one channel during a 200 MiB upload. So the pause takes effect once
    asyncssh has handed over what it held (at most a window or two, still bounded).
    """

    def __init__(self, chan: SSHChannel[bytes]) -> None:
        self.chan = chan
        self.paused = False
        self._loop = asyncio.get_running_loop()

    def pause(self) -> None:
        self.paused = True
        self._loop.call_soon(self._apply)

    def resume(self) -> None:
        self.paused = False
        self.chan.resume_reading()

    def _apply(self) -> None:
        if self.paused:
            self.chan.pause_reading()
