"""The `dir` audit log: one JSON-lines file a day under `data_dir/log/`, fsynced per event."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from teleport.errors import ConnectionProblem
from teleport.utils.clock import Clock, RealClock
from teleport.utils.fs import ensure_private_dir

FILE_MODE = 0o640


def day_file_name(when: datetime) -> str:
    """Name the day's file as the manual's listing does: `2017-02-01.00:00:00.log`."""
    return f"{when.astimezone(timezone.utc):%Y-%m-%d}.00:00:00.log"


class FileLog:
    """An Emitter that appends each event as one line and fsyncs before acknowledging."""

    def __init__(self, folder: Path, clock: Clock | None = None) -> None:
        self.folder = ensure_private_dir(folder)
        self.clock = clock or RealClock()
        self._lock = asyncio.Lock()

    async def emit(self, event: Mapping[str, Any]) -> None:
        # json.dumps escapes newlines and quotes, so a user-supplied field cannot forge a line.
        line = json.dumps(dict(event), separators=(",", ":"), default=str) + "\n"
        path = self.folder / day_file_name(self.clock.now())
        async with self._lock:
            try:
                await asyncio.to_thread(_append, path, line.encode())
            except OSError as err:
                raise ConnectionProblem(f"cannot write audit log {path}: {err.strerror}") from None

    def read_day(self, when: datetime) -> list[dict[str, Any]]:
        """Return the events of one day, for search and tests."""
        path = self.folder / day_file_name(when)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
