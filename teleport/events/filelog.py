"""The `dir` audit log: one JSON-lines file a day under `data_dir/log/`, on disk before an emit
returns.

Emits that arrive while a write is in flight are written together by the next one, with one
fsync per file (group commit, backend.groupcommit): the promise is the same (an acknowledged
event is on disk), and a busy auth server pays one disk flush per batch instead of one per event.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from teleport.backend.groupcommit import GroupCommitter
from teleport.errors import ConnectionProblem
from teleport.events.search import DAY_FILE_SUFFIX, EventPage, EventQuery, event_time, search_folder
from teleport.utils.clock import Clock, RealClock
from teleport.utils.fs import ensure_private_dir

FILE_MODE = 0o640


def day_file_name(when: datetime) -> str:
    """Name the day's file as the manual's listing does: `2017-02-01.00:00:00.log`."""
    return f"{when.astimezone(timezone.utc):%Y-%m-%d}{DAY_FILE_SUFFIX}"


def encode_line(event: Mapping[str, Any]) -> str:
    """Encode one event as one line; JSON escapes newlines and quotes so no field can forge a line."""
    return json.dumps(dict(event), separators=(",", ":"), default=str) + "\n"


class FileLog:
    """An Emitter that appends each event as one line and fsyncs before acknowledging."""

    def __init__(self, folder: Path, clock: Clock | None = None) -> None:
        self.folder = ensure_private_dir(folder)
        self.clock = clock or RealClock()
        self._committer: GroupCommitter[tuple[Path, bytes], None] = GroupCommitter(
            _write_batch, name="audit log writer",
            closed=lambda: ConnectionProblem("the audit log was closed"))

    async def emit(self, event: Mapping[str, Any]) -> None:
        line = encode_line(event)
        # The day the event happened, which search looks in: a host's spooled event arrives late.
        path = self.folder / day_file_name(event_time(dict(event)) or self.clock.now())
        await self._committer.submit((path, line.encode()))

    async def search(self, query: EventQuery) -> EventPage:
        """Return one page of matching events, reading the day files off the event loop."""
        return await asyncio.to_thread(search_folder, self.folder, query)


async def _write_batch(batch: list[tuple[Path, bytes]]) -> list[None]:
    """Append a batch in arrival order, one write and fsync per day file, off the event loop."""
    files: dict[Path, list[bytes]] = {}
    for path, data in batch:
        files.setdefault(path, []).append(data)
    for path, lines in files.items():
        try:
            await asyncio.to_thread(_append, path, b"".join(lines))
        except OSError as err:
            raise ConnectionProblem(f"cannot write audit log {path}: {err.strerror}") from None
    return [None] * len(batch)


def _append(path: Path, data: bytes) -> None:
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:  # a new day file survives a crash only once its folder entry is on disk too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
