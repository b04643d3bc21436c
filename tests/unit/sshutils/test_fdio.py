"""The fd pumps hold a bounded amount and turn a hung-up PTY into end of file."""

from __future__ import annotations

import asyncio
import os

from teleport.sshutils.fdio import FdReader, FdWriter


async def test_writer_pauses_the_producer_until_the_pipe_drains() -> None:
    read_end, write_end = os.pipe()
    calls: list[str] = []
    writer = FdWriter(write_end, pause=lambda: calls.append("pause"),
                      resume=lambda: calls.append("resume"), limit=64 * 1024)
    writer.write(b"x" * (1024 * 1024))  # far more than the pipe and the limit hold
    assert calls == ["pause"]
    os.set_blocking(read_end, False)
    received = 0
    while received < 1024 * 1024:
        await asyncio.sleep(0)
        try:
            received += len(os.read(read_end, 1 << 20))
        except BlockingIOError:
            pass
    assert calls == ["pause", "resume"]
    writer.close_when_drained()
    assert os.read(read_end, 1) == b""  # the reader sees end of file
    os.close(read_end)


async def test_writer_drops_data_once_the_reader_is_gone() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    calls: list[str] = []
    writer = FdWriter(write_end, pause=lambda: calls.append("pause"),
                      resume=lambda: calls.append("resume"), limit=16)
    writer.write(b"too late for anyone to read")
    writer.write(b"more")
    assert calls == []


async def test_reader_treats_pty_hangup_as_end_of_file() -> None:
    master, slave = os.openpty()
    chunks: list[bytes] = []
    reader = FdReader(master, chunks.append)
    reader.start()
    os.write(slave, b"bye\n")
    os.close(slave)
    await asyncio.wait_for(reader.done, 5)
    assert b"".join(chunks).replace(b"\r", b"") == b"bye\n"
    os.close(master)
