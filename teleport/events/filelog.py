"""The `dir` audit log: one JSON-lines file a day under `data_dir/log/`, on disk before an emit
returns.

Emits that arrive while a write is in flight are written together by the next one, with one
fsync per file (group commit): the promise is the same (an acknowledged event is on disk), and a
busy auth server pays one disk flush per batch instead of one per event.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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
        self._pending: list[tuple[Path, bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def emit(self, event: Mapping[str, Any]) -> None:
        line = encode_line(event)
        # The day the event happened, which search looks in: a host's spooled event arrives late.
        path = self.folder / day_file_name(event_time(dict(event)) or self.clock.now())
        written = asyncio.get_running_loop().create_future()
        self._pending.append((path, line.encode(), written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending(), name="audit log writer")
        await asyncio.shield(written)  # a cancelled emitter does not take the batch down

    async def _write_pending(self) -> None:
        """Write what is pending, one batch at a time in arrival order, until nothing is."""
        while self._pending:
            batch, self._pending = self._pending, []
            files: dict[Path, list[bytes]] = {}
            for path, data, _ in batch:
                files.setdefault(path, []).append(data)
            error: BaseException | None = None
            try:
                for path, lines in files.items():
                    try:
                        await asyncio.to_thread(_append, path, b"".join(lines))
                    except OSError as err:
                        raise ConnectionProblem(
                            f"cannot write audit log {path}: {err.strerror}") from None
            except BaseException as err:  # cancelled too: no emitter is left waiting
                error = err
            if error is not None and not isinstance(error, Exception):
                batch, self._pending = batch + self._pending, []
            for _, _, written in batch:
                if written.done():
                    continue
                if error is None:
                    written.set_result(None)
                else:
                    written.set_exception(error if isinstance(error, Exception)
                                          else ConnectionProblem("the audit log was closed"))
            if error is not None and not isinstance(error, Exception):
                raise error

    async def search(self, query: EventQuery) -> EventPage:
        """Return one page of matching events, reading the day files off the event loop."""
        return await asyncio.to_thread(search_folder, self.folder, query)


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
