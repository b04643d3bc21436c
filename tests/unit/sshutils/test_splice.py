"""The proxy's splice hands the TCP side one send per loop turn, not one per channel packet."""

from __future__ import annotations

import asyncio
import socket

import pytest

from teleport.sshutils.splice import ChannelSplice


async def test_channel_packets_of_one_turn_leave_in_one_send() -> None:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    splice = ChannelSplice()
    await splice.attach(ours)
    splice.channel_data(b"first packet ")
    splice.channel_data(b"second packet")
    with pytest.raises(BlockingIOError):
        theirs.recv(1 << 16)  # each packet was a send() and a segment on its own
    await asyncio.sleep(0)
    assert theirs.recv(1 << 16) == b"first packet second packet"
    splice.channel_closed()
    await asyncio.sleep(0)
    assert theirs.recv(1 << 16) == b""  # closing sent what was written first
    theirs.close()
