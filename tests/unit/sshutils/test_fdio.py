"""The fd pumps hold a bounded amount and turn a hung-up PTY into end of file."""

from __future__ import annotations

import asyncio
import os

import pytest

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


async def test_writer_sends_one_turns_writes_together_at_its_end() -> None:
    """A channel hands over one packet at a time; the child gets them in one write a turn."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    writer = FdWriter(write_end, pause=lambda: None, resume=lambda: None)
    writer.write(b"first packet ")
    writer.write(b"second packet")
    with pytest.raises(BlockingIOError):
        os.read(read_end, 1 << 16)  # nothing yet: each write was a system call and a wake-up
    await asyncio.sleep(0)
    assert os.read(read_end, 1 << 16) == b"first packet second packet"
    writer.close()
    os.close(read_end)


async def test_writer_keeps_order_across_partial_writes() -> None:
    """Chunks larger than the pipe leave in pieces, resumed mid-chunk, in order."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    writer = FdWriter(write_end, pause=lambda: None, resume=lambda: None, limit=1 << 30)
    chunks = [os.urandom(size) for size in (100_000, 3, 70_000, 1, 250_000)]
    for chunk in chunks:
        writer.write(chunk)
    writer.close_when_drained()
    received = bytearray()

    async def read_to_end() -> None:
        while True:
            await asyncio.sleep(0)
            try:
                data = os.read(read_end, 1 << 20)
            except BlockingIOError:
                continue
            if not data:
                return
            received.extend(data)

    await asyncio.wait_for(read_to_end(), 10)
    assert bytes(received) == b"".join(chunks)
    os.close(read_end)
