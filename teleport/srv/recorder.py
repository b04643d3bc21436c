"""Record interactive sessions on the node, spool them on disk, and upload them to the auth server.

Each session with a terminal is written, as it happens, to
`data_dir/log/upload/sessions/default/<sid>.{chunks,events}.gz` (see
`teleport.events.recording`). When the session ends, the uploader sends both files to the auth
server and deletes them once it has acknowledged. If the auth server cannot be reached the files
stay and are retried, also after a restart (a recording cut short by a crash is uploaded as it
is: replay stops at the damage). Uploads are idempotent, so a retry never stores a session twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from teleport.errors import TeleportError
from teleport.events import recording as rec
from teleport.utils.clock import Clock, RealClock
from teleport.utils.fs import ensure_private_dir

log = logging.getLogger("teleport.node")

#: Written out at least this often, so a crash loses at most this much of a session.
FLUSH_SECONDS = 0.5
#: Pending output above which the writer is woken early, bounding what waits in memory.
FLUSH_BYTES = 256 * 1024
#: How long to wait before retrying uploads after the auth server could not be reached.
RETRY_SECONDS = 5.0
#: How often to re-read `session_recording` from the auth server while idle.
REFRESH_SECONDS = 60.0
OFF = "off"


class RecordingSink(Protocol):
    """What the uploader needs from the auth client."""

    async def ping(self) -> dict[str, Any]: ...

    async def upload_recording(self, sid: str, parts: dict[str, Path]) -> bool: ...


class SessionRecorder:
    """Capture one session's output, input and resizes with timing, written by a background task."""

    def __init__(self, owner: Recordings, sid: str, start: Mapping[str, Any]) -> None:
        self.owner = owner
        self.sid = sid
        self._start = dict(start)
        self._t0 = asyncio.get_running_loop().time()
        self._pending: list[tuple[str, int, Any]] = []
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._writer: rec.RecordingWriter | None = None
        self._task = asyncio.ensure_future(self._pump())

    def _ms(self) -> int:
        return int((asyncio.get_running_loop().time() - self._t0) * 1000)

    def _add(self, kind: str, payload: Any, size: int = 0) -> None:
        if self._closing:
            return
        self._pending.append((kind, self._ms(), payload))
        self._pending_bytes += size
        if self._pending_bytes >= FLUSH_BYTES:
            self._wake.set()

    def output(self, data: bytes) -> None:
        self._add(rec.PRINT, data, len(data))

    def input(self, data: bytes) -> None:
        self._add(rec.INPUT, data, len(data))

    def resize(self, cols: int, rows: int) -> None:
        self._add(rec.RESIZE, (cols, rows))

    async def _pump(self) -> None:
        """Write pending records out every FLUSH_SECONDS or FLUSH_BYTES, until closed."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_SECONDS)
            self._wake.clear()
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            if batch or self._writer is None:
                await asyncio.to_thread(self._write, batch)
            if self._closing and not self._pending:
                return

    def _write(self, batch: list[tuple[str, int, Any]]) -> None:
        if self._writer is None:
            self._writer = rec.RecordingWriter(self.owner.spool, self.sid, self._start)
        for kind, ms, payload in batch:
            if kind == rec.RESIZE:
                self._writer.resize(ms, *payload)
            else:
                self._writer.data(kind, ms, payload)
        self._writer.flush()

    async def close(self) -> None:
        """Finish the files and hand them to the uploader."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        try:
            await self._task
            if self._writer is not None:
                end = self.owner.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                await asyncio.to_thread(self._writer.close, self._ms(), end)
        except OSError as err:
            log.warning("recording of session %s is incomplete: %s", self.sid, err)
        finally:
            self.owner.finished(self)


class Recordings:
    """Start recorders for this node's sessions and upload finished recordings, retrying."""

    def __init__(self, spool: Path, sink: RecordingSink, *, clock: Clock | None = None,
                 retry_seconds: float = RETRY_SECONDS, records_in: str = "node") -> None:
        self.spool = ensure_private_dir(spool)
        self.sink = sink
        self.clock = clock or RealClock()
        self.retry_seconds = retry_seconds
        #: Recording unless the auth server says `off`: when unsure, keep the evidence.
        self.mode = "node"
        #: The `session_recording` mode in which this host records: `node`, or `proxy` at proxies.
        self.records_in = records_in
        self.active: dict[str, SessionRecorder] = {}
        self._wake = asyncio.Event()

    def start(self, sid: str, **meta: Any) -> SessionRecorder | None:
        """Begin recording a session, or return None when recording is off or done elsewhere."""
        if self.mode != self.records_in:
            return None
        recorder = SessionRecorder(self, rec.check_sid(sid), {
            "namespace": "default", "time": self.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            **meta})
        self.active[sid] = recorder
        return recorder

    def finished(self, recorder: SessionRecorder) -> None:
        self.active.pop(recorder.sid, None)
        self._wake.set()

    def spooled(self) -> list[str]:
        """Return the sessions whose finished (or abandoned) recordings wait for upload."""
        sids = []
        for path in sorted(self.spool.glob(f"*{rec.EVENTS_SUFFIX}")):
            sid = path.name.removesuffix(rec.EVENTS_SUFFIX)
            if sid not in self.active:
                sids.append(sid)
        return sids

    async def upload_spooled(self) -> bool:
        """Upload every waiting recording; return False if the auth server could not take them."""
        for sid in self.spooled():
            chunks, events = rec.paths(self.spool, sid)
            parts = {"chunks": chunks, "events": events}
            try:
                await self.sink.upload_recording(sid, parts)
            except TeleportError as err:
                log.warning("cannot upload recording of session %s yet: %s", sid, err)
                return False
            for path in (events, chunks):
                path.unlink(missing_ok=True)
            log.info("uploaded recording of session %s", sid)
        return True

    async def refresh_mode(self) -> None:
        """Learn `auth_service.session_recording`; keep the last known mode if unreachable."""
        with contextlib.suppress(TeleportError):
            self.mode = str((await self.sink.ping()).get("session_recording") or "node")

    async def run(self) -> None:
        """Upload whenever a session ends, and retry until the auth server takes everything."""
        while True:
            self._wake.clear()
            await self.refresh_mode()
            delay = REFRESH_SECONDS if await self.upload_spooled() else self.retry_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def close(self) -> None:
        """Finish every open recording so it is complete on disk for the next upload."""
        for recorder in list(self.active.values()):
            await recorder.close()
