"""Recordings on the auth server: `data_dir/log/sessions/default/<sid>.{chunks,events}.gz`.

Uploads arrive as streams into hidden temp files and are committed by renaming both files, so
a reader sees a recording whole or not at all, and uploading the same session twice stores it
once. Files are 0640 in 0700 folders. Nothing here holds a whole recording in memory.

An upload is bound to the host that sends its first part (a `.<sid>.owner` file): another
host's parts and commit are refused. A recording is capped in size (both parts together) and
an upload that stalls is dropped; either way its partial files are removed at once. Partial
files left by uploads that never completed are removed once they are `stale_after` old, when
the store opens and then at most every `SWEEP_SECONDS` while uploads arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from teleport.errors import AccessDenied, BadParameter, LimitExceeded, NotFound, TeleportError
from teleport.events import recording as rec
from teleport.utils.fs import ensure_private_dir

PARTS = {"chunks": rec.CHUNKS_SUFFIX, "events": rec.EVENTS_SUFFIX}
#: Events handed from the reading thread to the event loop at a time.
REPLAY_BATCH = 256
#: Largest recording (both compressed parts) a host may upload: hours of busy terminal output.
MAX_RECORDING_BYTES = 1 << 30
#: An upload that sends nothing for this long is dropped.
UPLOAD_IDLE_SECONDS = 60.0
#: Partial uploads untouched for this long belong to hosts that gave up; they are removed.
UPLOAD_STALE_AFTER = timedelta(hours=3)
#: How often arriving uploads trigger a sweep of stale partial files.
SWEEP_SECONDS = 600.0
_UPLOAD_SUFFIX = ".upload"
_OWNER_SUFFIX = ".owner"


class RecordingTooLarge(LimitExceeded):
    """An upload went over the size cap: 413, not the 429 of a rate limit."""

    http_status = 413


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

    def __init__(self, folder: Path, *, max_bytes: int = MAX_RECORDING_BYTES,
                 idle_seconds: float = UPLOAD_IDLE_SECONDS,
                 stale_after: timedelta = UPLOAD_STALE_AFTER) -> None:
        self.folder = ensure_private_dir(folder)
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self.stale_after = stale_after
        self._summaries: dict[str, tuple[float, RecordingSummary]] = {}
        self._last_sweep = 0.0
        self.sweep()

    def _temp(self, sid: str, part: str, uploader: str) -> Path:
        if part not in PARTS:
            raise BadParameter(f"unknown recording part {part!r}")
        tag = "".join(c for c in uploader if c.isalnum() or c == "-")[:64]
        return self.folder / f".{rec.check_sid(sid)}{PARTS[part]}.{tag}{_UPLOAD_SUFFIX}"

    def _owner_file(self, sid: str) -> Path:
        return self.folder / f".{rec.check_sid(sid)}{_OWNER_SUFFIX}"

    def sweep(self) -> int:
        """Remove partial uploads untouched for `stale_after`; return how many files went."""
        self._last_sweep = time.monotonic()
        cutoff = time.time() - self.stale_after.total_seconds()
        removed = 0
        for path in self.folder.iterdir():
            name = path.name
            if not name.startswith(".") or not name.endswith((_UPLOAD_SUFFIX, _OWNER_SUFFIX)):
                continue
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def _claim(self, sid: str, uploader: str) -> None:
        """Bind the upload of sid to its first uploader; refuse any other host."""
        owner_file = self._owner_file(sid)
        # Written aside and linked into place, so the claim appears with its owner in it: both
        # parts of a sync upload arrive at once, and neither may read a half-written claim.
        draft = owner_file.with_name(f"{owner_file.name}.{uuid.uuid4().hex}{_UPLOAD_SUFFIX}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, rec.FILE_MODE)
        try:
            rec.write_all(fd, uploader.encode())
        finally:
            os.close(fd)
        try:
            os.link(draft, owner_file)
        except FileExistsError:
            owner = owner_file.read_text(encoding="utf-8", errors="replace")
            if owner != uploader:
                raise AccessDenied(f"session {sid} is being uploaded by another host") from None
            os.utime(owner_file)  # an upload in progress is not stale
        finally:
            draft.unlink()

    def _check_owner(self, sid: str, uploader: str) -> None:
        try:
            owner = self._owner_file(sid).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise BadParameter(f"recording {sid} is incomplete: upload both parts first") from None
        if owner != uploader:
            raise AccessDenied(f"session {sid} is being uploaded by another host")

    def _discard(self, sid: str, uploader: str) -> None:
        """Remove an upload's partial files and release its claim."""
        for part in PARTS:
            with contextlib.suppress(FileNotFoundError):
                self._temp(sid, part, uploader).unlink()
        with contextlib.suppress(FileNotFoundError):
            self._owner_file(sid).unlink()

    def exists(self, sid: str) -> bool:
        """Tell whether the recording is in this folder."""
        chunks, events = rec.paths(self.folder, sid)
        return chunks.exists() and events.exists()

    async def stored(self, sid: str) -> bool:
        """Tell whether the recording is stored, so a host need not upload it again."""
        return self.exists(sid)

    async def receive(self, sid: str, part: str, uploader: str,
                      pieces: AsyncIterator[bytes]) -> None:
        """Spool one uploaded part into its temp file, piece by piece, within the size cap.

        Over the cap (413) or idle too long, both parts are removed and the claim released.
        """
        temp = self._temp(sid, part, uploader)
        if time.monotonic() - self._last_sweep > SWEEP_SECONDS:
            await asyncio.to_thread(self.sweep)
        await asyncio.to_thread(self._claim, sid, uploader)
        others = sum(self._size(self._temp(sid, p, uploader)) for p in PARTS if p != part)
        try:
            fd = await asyncio.to_thread(os.open, temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                         rec.FILE_MODE)
        except BaseException:
            self._discard(sid, uploader)
            raise
        received = 0
        try:
            stream = aiter(pieces)
            while True:
                try:
                    async with asyncio.timeout(self.idle_seconds):
                        piece = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise LimitExceeded(f"upload of session {sid} stalled for "
                                        f"{self.idle_seconds:g}s") from None
                received += len(piece)
                if others + received > self.max_bytes:
                    raise RecordingTooLarge(
                        f"recording {sid} is larger than the {self.max_bytes} bytes allowed")
                await asyncio.to_thread(rec.write_all, fd, piece)
            await asyncio.to_thread(os.fsync, fd)
        except BaseException:
            os.close(fd)
            self._discard(sid, uploader)
            raise
        os.close(fd)

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    async def commit(self, sid: str, uploader: str, server_id: str | None = None) -> bool:
        """Move both uploaded parts into place; return False when the session was already stored.

        Only the host that sent the first part may commit. With server_id (a node uploading),
        the recording must be of a session on that server: a node records only its own.
        """
        temps = [self._temp(sid, part, uploader) for part in PARTS]
        if self.exists(sid):
            for temp in temps:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
            with contextlib.suppress(AccessDenied, BadParameter):
                self._check_owner(sid, uploader)
                self._owner_file(sid).unlink(missing_ok=True)
            return False
        self._check_owner(sid, uploader)
        missing = [t.name for t in temps if not t.exists()]
        if missing:
            raise BadParameter(f"recording {sid} is incomplete: upload both parts first")
        if server_id is not None:
            recorded_on = await asyncio.to_thread(_recorded_on, temps[1])
            if recorded_on is not None and recorded_on != server_id:
                self._discard(sid, uploader)
                raise AccessDenied(f"recording {sid} is of a session on another server")
        chunks, events = rec.paths(self.folder, sid)
        # Events last: a recording counts as stored once its events file exists.
        os.replace(temps[0], chunks)
        os.replace(temps[1], events)
        self._owner_file(sid).unlink(missing_ok=True)
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
        summary = await asyncio.to_thread(summarize, sid, rec.read_file(events))
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

    def open_local(self, sid: str) -> tuple[Iterator[bytes], Iterator[bytes]] | None:
        """Open a stored recording's events and chunks for reading, or None if it is not here.

        Both files are opened at once, so a reader keeps them even if they are moved away
        meanwhile (a shared store's shipper removes them once uploaded).
        """
        chunks, events = rec.paths(self.folder, sid)
        try:
            events_file = open(events, "rb")  # noqa: SIM115 (closed by its reader)
        except FileNotFoundError:
            return None
        try:
            chunks_file = open(chunks, "rb")  # noqa: SIM115
        except FileNotFoundError:
            chunks_file = None
        return _pieces(events_file), _pieces(chunks_file)

    async def open_recording(self, sid: str) -> tuple[Iterator[bytes], Iterator[bytes]]:
        """Open a recording's events and chunks streams; NotFound if there is none."""
        opened = await asyncio.to_thread(self.open_local, sid)
        if opened is None:
            raise NotFound(f"session recording {sid} not found")
        return opened

    async def replay(self, sid: str) -> AsyncIterator[bytes]:
        """Stream the recording as wire lines, ending with a damage marker if it is damaged."""
        lines = wire_lines(*await self.open_recording(sid))
        try:
            while batch := await asyncio.to_thread(_next_batch, lines):
                yield b"".join(batch)
        finally:
            lines.close()


def wire_lines(events: Iterator[bytes], chunks: Iterator[bytes]) -> Generator[bytes, None, None]:
    """Replay a recording's two streams as wire lines, ending with a marker if damaged.

    A store that fails mid-stream (a shared store gone away) also ends the replay with the
    marker, naming the problem: the lines already sent cannot be taken back.
    """
    try:
        ended = False
        for event in rec.replay(events, chunks):
            ended = event["event"] == rec.END
            yield rec.to_wire_line(event)
        if not ended:
            raise rec.RecordingDamaged("the recording stops before the session ended")
    except TeleportError as err:
        yield rec.to_wire_line({"event": rec.DAMAGED, "error": str(err)})
    finally:
        for stream in (events, chunks):
            if isinstance(stream, Generator):
                stream.close()


def _pieces(file: BinaryIO | None) -> Generator[bytes, None, None]:
    """Yield an open file in pieces and close it (nothing for None: a recording with no output)."""
    if file is None:
        return
    with file:
        while piece := file.read(rec.READ_SIZE):
            yield piece


def _next_batch(lines: Iterator[bytes]) -> list[bytes]:
    batch = []
    for line in lines:
        batch.append(line)
        if len(batch) >= REPLAY_BATCH:
            break
    return batch


def _recorded_on(path: Path) -> str | None:
    """Return the server_id the recording's first event names; None if no event is readable."""
    try:
        first = next(rec.events(rec.read_file(path)), None)
    except rec.RecordingDamaged:
        return None
    if first is None:
        return None
    return str(first.get("server_id", "")) if first["event"] == rec.START else ""


def summarize(sid: str, events: Iterable[bytes]) -> RecordingSummary:
    """Describe a recording from its compressed events stream (blocking: run it in a thread)."""
    start: dict[str, Any] = {}
    last_ms, complete = 0, False
    try:
        for index, event in enumerate(rec.events(events)):
            if event["event"] == rec.START and index == 0:  # describes the session only first
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

