"""Recordings on the auth server: `data_dir/log/sessions/default/<sid>.{chunks,events}.gz`.

Uploads arrive as streams into hidden temp files and are committed by renaming both files, so
a reader sees a recording whole or not at all, and uploading the same session twice stores it
once. Files are 0640 in 0700 folders. Nothing here holds a whole recording in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from teleport.errors import BadParameter, NotFound
from teleport.events import recording as rec
from teleport.utils.fs import ensure_private_dir

PARTS = {"chunks": rec.CHUNKS_SUFFIX, "events": rec.EVENTS_SUFFIX}
#: Events handed from the reading thread to the event loop at a time.
REPLAY_BATCH = 256


@dataclass(frozen=True)
class RecordingSummary:
    """One line of `tsh recordings ls`."""

    sid: str
    user: str
    login: str
    server_id: str
    server_hostname: str
    start: str
    duration_ms: int
    complete: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class SessionStore:
    """Store, list and stream the recordings of one namespace."""

    def __init__(self, folder: Path) -> None:
        self.folder = ensure_private_dir(folder)
        self._summaries: dict[str, tuple[float, RecordingSummary]] = {}

    def _temp(self, sid: str, part: str, uploader: str) -> Path:
        if part not in PARTS:
            raise BadParameter(f"unknown recording part {part!r}")
        tag = "".join(c for c in uploader if c.isalnum() or c == "-")[:64]
        return self.folder / f".{rec.check_sid(sid)}{PARTS[part]}.{tag}.upload"

    def exists(self, sid: str) -> bool:
        chunks, events = rec.paths(self.folder, sid)
        return chunks.exists() and events.exists()

    async def receive(self, sid: str, part: str, uploader: str,
                      pieces: AsyncIterator[bytes]) -> None:
        """Spool one uploaded part into its temp file, piece by piece."""
        temp = self._temp(sid, part, uploader)
        fd = await asyncio.to_thread(os.open, temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                     rec.FILE_MODE)
        try:
            async for piece in pieces:
                await asyncio.to_thread(rec.write_all, fd, piece)
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)

    async def commit(self, sid: str, uploader: str) -> bool:
        """Move both uploaded parts into place; return False when the session was already stored."""
        temps = [self._temp(sid, part, uploader) for part in PARTS]
        if self.exists(sid):
            for temp in temps:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
            return False
        missing = [t.name for t in temps if not t.exists()]
        if missing:
            raise BadParameter(f"recording {sid} is incomplete: upload both parts first")
        chunks, events = rec.paths(self.folder, sid)
        # Events last: a recording counts as stored once its events file exists.
        os.replace(temps[0], chunks)
        os.replace(temps[1], events)
        return True

    async def summary(self, sid: str) -> RecordingSummary:
        """Describe a stored recording, reading its events file once per change."""
        _, events = rec.paths(self.folder, sid)
        try:
            mtime = events.stat().st_mtime
        except FileNotFoundError:
            raise NotFound(f"session recording {sid} not found") from None
        cached = self._summaries.get(sid)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        summary = await asyncio.to_thread(_summarize, sid, events)
        self._summaries[sid] = (mtime, summary)
        return summary

    async def list(self) -> list[RecordingSummary]:
        """Describe every stored recording, oldest first."""
        sids = [p.name.removesuffix(rec.EVENTS_SUFFIX) for p in self.folder.iterdir()
                if p.name.endswith(rec.EVENTS_SUFFIX) and not p.name.startswith(".")]
        found = []
        for sid in sids:
            with contextlib.suppress(NotFound, BadParameter):
                found.append(await self.summary(sid))
        return sorted(found, key=lambda s: (s.start, s.sid))

    async def replay(self, sid: str) -> AsyncIterator[bytes]:
        """Stream the recording as wire lines, ending with a damage marker if it is damaged."""
        chunks, events = rec.paths(self.folder, sid)
        if not events.exists():
            raise NotFound(f"session recording {sid} not found")
        lines = _wire_lines(events, chunks)
        try:
            while batch := await asyncio.to_thread(_next_batch, lines):
                yield b"".join(batch)
        finally:
            lines.close()


def _wire_lines(events: Path, chunks: Path) -> Generator[bytes, None, None]:
    try:
        ended = False
        for event in rec.replay(rec.read_file(events), _read_or_nothing(chunks)):
            ended = event["event"] == rec.END
            yield rec.to_wire_line(event)
        if not ended:
            raise rec.RecordingDamaged("the recording stops before the session ended")
    except rec.RecordingDamaged as err:
        yield rec.to_wire_line({"event": rec.DAMAGED, "error": str(err)})


def _read_or_nothing(path: Path) -> Iterator[bytes]:
    if path.exists():
        yield from rec.read_file(path)


def _next_batch(lines: Iterator[bytes]) -> list[bytes]:
    batch = []
    for line in lines:
        batch.append(line)
        if len(batch) >= REPLAY_BATCH:
            break
    return batch


def _summarize(sid: str, path: Path) -> RecordingSummary:
    start: dict[str, Any] = {}
    last_ms, complete = 0, False
    try:
        for event in rec.events(rec.read_file(path)):
            if event["event"] == rec.START:
                start = event
            last_ms = max(last_ms, int(event.get("ms", 0)))
            complete = event["event"] == rec.END
    except rec.RecordingDamaged:
        complete = False
    return RecordingSummary(
        sid=sid, user=str(start.get("user", "")), login=str(start.get("login", "")),
        server_id=str(start.get("server_id", "")),
        server_hostname=str(start.get("server_hostname", "")),
        start=str(start.get("time", "")), duration_ms=last_ms, complete=complete)


def format_duration_ms(ms: int) -> str:
    """Show a duration as `1h2m3s` / `4m5s` / `6s` for listings."""
    total = int(timedelta(milliseconds=ms).total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"

