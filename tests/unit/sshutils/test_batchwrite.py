"""One socket write per loop turn: what asyncssh writes packet by packet leaves together."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from teleport.sshutils.batchwrite import BatchingTransport


class _Sink(asyncio.Protocol):
    pass


@pytest.fixture
async def pair() -> AsyncIterator[tuple[BatchingTransport, socket.socket]]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await asyncio.get_running_loop().create_connection(_Sink, sock=ours)
    yield BatchingTransport(transport), theirs  # type: ignore[arg-type]
    transport.close()
    theirs.close()


def _received(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


async def test_writes_of_one_turn_leave_together_at_its_end(
        pair: tuple[BatchingTransport, socket.socket]) -> None:
    batched, peer = pair
    batched.write(b"first packet ")
    batched.write(b"second packet")
    # A bare transport sends a write at once when nothing is queued: this one has sent nothing.
    assert _received(peer) == b""
    assert batched.get_write_buffer_size() == len(b"first packet second packet")
    await asyncio.sleep(0)
    assert _received(peer) == b"first packet second packet"
    assert batched.get_write_buffer_size() == 0


async def test_close_and_eof_send_what_was_written_first(
        pair: tuple[BatchingTransport, socket.socket]) -> None:
    batched, peer = pair
    batched.write(b"disconnect message")
    batched.write_eof()
    assert _received(peer) == b"disconnect message"
    assert _received(peer) == b""  # end of file after the data
    batched.close()


async def test_abort_still_sends_what_was_written_before_it(
        pair: tuple[BatchingTransport, socket.socket]) -> None:
    batched, peer = pair
    batched.write(b"bye")
    batched.abort()
    await asyncio.sleep(0)
    assert _received(peer) == b"bye"
