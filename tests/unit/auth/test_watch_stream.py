"""The client side of the watch stream: lines cut across pieces, and what ends a stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from teleport.api.auth_models import WatchEvent
from teleport.auth import client as auth_client
from teleport.auth.client import _watch_events
from teleport.errors import ConnectionProblem


async def _pieces(*pieces: bytes, then_wait: float = 0.0) -> AsyncGenerator[bytes]:
    for piece in pieces:
        yield piece
    await asyncio.sleep(then_wait)


async def _collect(pieces: AsyncGenerator[bytes], count: int) -> list[WatchEvent]:
    events = _watch_events(pieces)
    return [await anext(events) for _ in range(count)]


async def test_lines_split_across_pieces_are_put_back_together() -> None:
    events = await _collect(_pieces(b'{"type": "in', b'it"}\n{"type": "put", "kind": "lock", ',
                                    b'"name": "x"}\n{"type": "ping"}', b"\n"), 3)
    assert events == [WatchEvent(type="init"), WatchEvent(type="put", kind="lock", name="x"),
                      WatchEvent(type="ping")]


async def test_a_line_over_1_mib_is_a_protocol_error() -> None:
    """A host record or a CA's public keys fit many times over; a runaway line does not."""
    assert auth_client.MAX_WATCH_LINE == 1024 * 1024
    with pytest.raises(ConnectionProblem, match="over 1024 KiB"):
        await _collect(_pieces(b'{"type": "init"}\n', b"x" * (1024 * 1024 + 1)), 2)


async def test_a_line_that_is_not_an_event_is_a_protocol_error() -> None:
    with pytest.raises(ConnectionProblem, match="not a watch event"):
        await _collect(_pieces(b"<html>\n"), 1)


async def test_the_end_of_the_stream_is_a_connection_problem() -> None:
    with pytest.raises(ConnectionProblem, match="ended the watch stream"):
        await _collect(_pieces(b'{"type": "init"}\n'), 2)


async def test_silence_is_a_connection_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_client, "WATCH_SILENCE", 0.2)
    # Bytes keep coming, but never a whole line: that is silence too.
    async def drip() -> AsyncGenerator[bytes]:
        yield b'{"type": "init"}\n'
        while True:
            await asyncio.sleep(0.05)
            yield b" "

    with pytest.raises(ConnectionProblem, match="said nothing"):
        await _collect(drip(), 2)
