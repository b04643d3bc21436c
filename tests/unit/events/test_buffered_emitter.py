"""The buffered emitter: emit() never waits for the auth server, and no event is lost or reordered."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from teleport.errors import AccessDenied, ConnectionProblem
from teleport.events import emitter as ev
from teleport.events.buffered import OFFSET_FILE, SPOOL_FILE, BufferedEmitter
from teleport.metrics import AUDIT_DROPPED, REGISTRY


class AuthSink:
    """Stands in for the auth API's emit: up, down (refuses connections) or hanging (blackholed)."""

    def __init__(self, mode: str = "up") -> None:
        self.mode = mode
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self._released = asyncio.Event()
        self.refuse: set[str] = set()

    def set(self, mode: str) -> None:
        self.mode = mode
        if mode != "hang":
            self._released.set()
            self._released = asyncio.Event()

    async def emit(self, event: Mapping[str, Any]) -> None:
        self.attempts += 1
        while self.mode == "hang":
            await self._released.wait()
        if self.mode == "down":
            raise ConnectionProblem("cannot reach the auth server: connection refused")
        if event.get("n") in self.refuse:
            raise AccessDenied("no")
        self.received.append(dict(event))

    def numbers(self) -> list[Any]:
        return [e["n"] for e in self.received]


def _event(n: Any) -> dict[str, Any]:
    return ev.make_event(ev.EXEC, n=n, command="true")


def _spooled(folder: Path) -> list[Any]:
    """Return the numbers of the events waiting in the spool (after the delivered offset)."""
    path = folder / SPOOL_FILE
    record = (folder / OFFSET_FILE).read_text().split()
    offset = int(record[1]) if record else 0
    return [json.loads(line)["n"] for line in path.read_bytes()[offset:].splitlines()]


async def _until(check: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _fast(sink: AuthSink, folder: Path, **kw: Any) -> BufferedEmitter:
    return BufferedEmitter(sink, folder, min_retry=0.01, max_retry=0.05, close_grace=0.3, **kw)


async def test_emit_returns_at_once_while_the_auth_server_hangs(tmp_path: Path) -> None:
    sink = AuthSink("hang")
    async with _fast(sink, tmp_path / "spool") as emitter:
        started = time.monotonic()
        for n in range(5):
            await emitter.emit(_event(n))
        assert time.monotonic() - started < 0.1
        assert emitter.pending == 5 and sink.received == []
        sink.set("up")
        await _until(lambda: len(sink.received) == 5)
    assert sink.numbers() == [0, 1, 2, 3, 4]
    assert sink.received[0]["command"] == "true"


async def test_unreachable_auth_spools_to_a_private_file_then_flushes_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "log" / "upload" / "events"
    sink = AuthSink("down")
    async with _fast(sink, folder) as emitter:
        for n in range(3):
            await emitter.emit(_event(n))
        await _until(lambda: sink.attempts >= 1 and _spooled(folder) == [0, 1, 2])
        await emitter.emit(_event(3))  # while spooling, new events go after the spooled ones
        assert _spooled(folder) == [0, 1, 2, 3]
        assert stat.S_IMODE((folder / SPOOL_FILE).stat().st_mode) == 0o600
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "log").stat().st_mode) == 0o700
        sink.set("up")
        await _until(lambda: len(sink.received) == 4)
        await emitter.emit(_event(4))
        await _until(lambda: len(sink.received) == 5)
    assert sink.numbers() == [0, 1, 2, 3, 4]
    assert (folder / SPOOL_FILE).stat().st_size == 0


async def test_spooled_and_queued_events_survive_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    # A blackholed auth server: event 0 is out for delivery, 1 queued, when the process stops.
    hanging = AuthSink("hang")
    before = time.monotonic()
    async with _fast(hanging, folder) as emitter:
        await emitter.emit(_event(0))
        await emitter.emit(_event(1))
        await _until(lambda: hanging.attempts >= 1)
    assert time.monotonic() - before < 1.5, "close waits a short grace, not for the auth server"
    assert _spooled(folder) == [0, 1]
    # Restarted while the auth server refuses connections: new events go after the spooled ones.
    async with _fast(AuthSink("down"), folder) as emitter:
        await emitter.emit(_event(2))
    assert _spooled(folder) == [0, 1, 2]

    up = AuthSink("up")
    async with _fast(up, folder):
        await _until(lambda: len(up.received) >= 3)
    assert up.numbers() == [0, 1, 2]
    assert _spooled(folder) == []


async def test_restart_in_the_middle_of_a_flush_sends_no_event_twice(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    async with _fast(AuthSink("down"), folder) as emitter:
        for n in range(40):
            await emitter.emit(_event(n))
        await _until(lambda: len(_spooled(folder)) == 40)
    # Small enough that delivering compacts the file (the offset then names the new file).
    size = (folder / SPOOL_FILE).stat().st_size
    first = AuthSink("up")
    emitter = _fast(first, folder, max_spool_bytes=size)
    async with emitter:
        await _until(lambda: len(first.received) >= 25)
        first.set("down")
    rest = AuthSink("up")
    async with _fast(rest, folder):
        await _until(lambda: len(first.received) + len(rest.received) == 40)
    assert first.numbers() + rest.numbers() == list(range(40))


async def test_a_full_spool_drops_new_events_counts_them_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "spool"
    sink = AuthSink("down")
    line = len(json.dumps(_event(0), separators=(",", ":"))) + 1
    dropped_before = REGISTRY.get_sample_value("teleport_audit_events_dropped_total",
                                               {"component": "test-full"}) or 0.0
    async with _fast(sink, folder, max_spool_bytes=line * 5 + 10, component="test-full") as emitter:
        await emitter.emit(_event(0))
        await _until(lambda: _spooled(folder) == [0])
        caplog.clear()
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="teleport.audit"):
            for n in range(1, 20):
                await emitter.emit(_event(n))
        assert time.monotonic() - started < 0.5
        assert _spooled(folder) == [0, 1, 2, 3, 4]
        full = [r for r in caplog.records if "is full" in r.getMessage()]
        assert len(full) == 1
        assert AUDIT_DROPPED.labels("test-full")._value.get() - dropped_before == 15
        sink.set("up")
        await _until(lambda: len(sink.received) == 5)
    assert sink.numbers() == [0, 1, 2, 3, 4]


async def test_a_full_queue_spills_to_the_spool_in_order_without_duplicates(tmp_path: Path) -> None:
    sink = AuthSink("hang")
    async with _fast(sink, tmp_path / "spool", max_queue=3) as emitter:
        for n in range(10):
            await emitter.emit(_event(n))
        assert emitter.pending == 10
        sink.set("up")  # the event that was out for delivery arrives: it must not come again
        await _until(lambda: len(sink.received) >= 10)
        await asyncio.sleep(0.1)
    assert sink.numbers() == list(range(10))


async def test_an_event_the_auth_server_refuses_is_dropped_and_the_rest_delivered(
        tmp_path: Path) -> None:
    sink = AuthSink("up")
    sink.refuse = {1}
    async with _fast(sink, tmp_path / "spool") as emitter:
        for n in range(3):
            await emitter.emit(_event(n))
        await _until(lambda: len(sink.received) == 2)
    assert sink.numbers() == [0, 2]
