"""Record interactive sessions on the node, spool them on disk, and upload them to the auth server.

Each session with a terminal is written, as it happens, to
`data_dir/log/upload/sessions/default/<sid>.{chunks,events}.gz` (see
`teleport.events.recording`). When the session ends, the uploader sends both files to the auth
server and deletes them once it has acknowledged. If the auth server cannot be reached the files
stay and are retried, also after a restart (a recording cut short by a crash is uploaded as it
is: replay stops at the damage). Uploads are idempotent, so a retry never stores a session twice.

In the sync modes (`node-sync`, `proxy-sync`) nothing is spooled: the same two gzip streams go
to the auth server as they are written, over two streaming uploads that stay open for the whole
session, and are committed when it ends. As in Teleport, a session that cannot be recorded
does not go on: if the auth server cannot be reached or the stream breaks, the session is ended
with the reason (`on_failure`), and what was sent is discarded by the auth server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from teleport.api.auth_models import PingAnswer
from teleport.config.modes import Recorder, SessionRecording, parse_mode, records_at, streams
from teleport.errors import TeleportError
from teleport.events import recording as rec
from teleport.sshutils.monitor import SessionPolicy, for_host
from teleport.utils.clock import Clock, RealClock
from teleport.utils.fs import ensure_private_dir
from teleport.utils.supervisor import Supervisor
from teleport.utils.waits import wait_event

log = logging.getLogger("teleport.node")

#: Written out at least this often, so a crash loses at most this much of a session.
FLUSH_SECONDS = 0.5
#: Pending output above which the writer is woken early, bounding what waits in memory.
FLUSH_BYTES = 256 * 1024
#: How long to wait before retrying uploads after the auth server could not be reached.
RETRY_SECONDS = 5.0
#: How often to re-read `session_recording` from the auth server while idle.
REFRESH_SECONDS = 60.0
#: A sync stream sends at least this often, well inside the auth server's 60 s stall limit.
STREAM_KEEPALIVE_SECONDS = 15.0
#: The two streams of a recording, in the auth API's names.
PARTS = ("chunks", "events")
#: What a session is told when it cannot be recorded (the reason follows).
FailureCallback = Callable[[str], None]


class RecordingSink(Protocol):
    """What the uploader needs from the auth client."""

    async def ping(self) -> PingAnswer: ...

    async def upload_recording(self, sid: str, parts: dict[str, Path]) -> bool: ...

    async def stream_recording_part(self, sid: str, part: str,
                                    pieces: AsyncIterator[bytes]) -> None: ...

    async def complete_recording(self, sid: str) -> bool: ...


class _LiveUpload:
    """Send one recording to the auth server as it is written: two open uploads, then a commit."""

    def __init__(self, owner: Recordings, sid: str, on_failure: FailureCallback | None) -> None:
        self.owner = owner
        self.sid = sid
        self.on_failure = on_failure
        self.failed: str | None = None
        self._queues: dict[str, asyncio.Queue[bytes | None]] = {p: asyncio.Queue() for p in PARTS}
        self._task = owner.tasks.spawn(self._run(), f"stream recording {sid}")

    def send(self, chunks: bytes, events: bytes) -> None:
        for part, data in zip(PARTS, (chunks, events), strict=True):
            if data:
                self._queues[part].put_nowait(data)

    async def _body(self, part: str) -> AsyncIterator[bytes]:
        queue = self._queues[part]
        while (piece := await queue.get()) is not None:
            yield piece

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for part in PARTS:
                    group.create_task(
                        self.owner.sink.stream_recording_part(self.sid, part, self._body(part)))
            await self.owner.sink.complete_recording(self.sid)
        except* TeleportError as errors:
            self._fail(str(errors.exceptions[0]))

    def _fail(self, problem: str) -> None:
        self.failed = f"session recording failed: {problem}"
        log.error("session %s: %s", self.sid, self.failed)
        if self.on_failure is not None:
            self.on_failure(self.failed)

    async def finish(self) -> None:
        """End both streams and wait for the commit (or the failure)."""
        for queue in self._queues.values():
            queue.put_nowait(None)
        if self._task is not None:
            await asyncio.wait([self._task])


class SessionRecorder:
    """Capture one session's output, input and resizes with timing, written by a background task."""

    def __init__(self, owner: Recordings, sid: str, start: Mapping[str, Any],
                 on_failure: FailureCallback | None = None) -> None:
        self.owner = owner
        self.sid = sid
        self._start = dict(start)
        #: The sync modes' upload; None spools to disk for the uploader.
        self._live = _LiveUpload(owner, sid, on_failure) if streams(owner.mode) else None
        self._sent = asyncio.get_running_loop().time()
        self._t0 = asyncio.get_running_loop().time()
        self._pending: list[tuple[str, int, Any]] = []
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._writer: rec.RecordingWriter | None = None
        self._task = owner.tasks.spawn(self._pump(), f"record {sid}")

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
            await wait_event(self._wake, FLUSH_SECONDS)
            self._wake.clear()
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            keepalive = self._live is not None and \
                asyncio.get_running_loop().time() - self._sent >= STREAM_KEEPALIVE_SECONDS
            if batch or self._writer is None or keepalive:
                await asyncio.to_thread(self._write, batch)
                self._send()
            if self._closing and not self._pending:
                return

    def _send(self) -> None:
        """Hand what was just written to the sync upload, if this recording streams."""
        if self._live is not None and self._writer is not None:
            self._live.send(*self._writer.take())
            self._sent = asyncio.get_running_loop().time()

    def _write(self, batch: list[tuple[str, int, Any]]) -> None:
        if self._writer is None:
            folder = None if self._live is not None else self.owner.spool
            self._writer = rec.RecordingWriter(folder, self.sid, self._start)
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
            if self._task is not None:
                await self._task
            if self._writer is not None:
                end = self.owner.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                await asyncio.to_thread(self._writer.close, self._ms(), end)
                self._send()
        except OSError as err:
            log.warning("recording of session %s is incomplete: %s", self.sid, err)
        finally:
            if self._live is not None:
                await self._live.finish()
            self.owner.finished(self)


class Recordings:
    """Start recorders for this node's sessions and upload finished recordings, retrying.

    An async context manager: it owns the recorders' writer tasks.
    """

    def __init__(self, spool: Path, sink: RecordingSink, *, clock: Clock | None = None,
                 retry_seconds: float = RETRY_SECONDS, records_in: Recorder = "node") -> None:
        self.spool = ensure_private_dir(spool)
        self.sink = sink
        self.clock = clock or RealClock()
        self.retry_seconds = retry_seconds
        #: Recording unless the auth server says `off`: when unsure, keep the evidence.
        self.mode = SessionRecording.NODE
        #: When sessions end although their user has access, as the auth server last said.
        self.policy = SessionPolicy()
        #: The `session_recording` mode in which this host records: `node`, or `proxy` at proxies.
        self.records_in = records_in
        self.active: dict[str, SessionRecorder] = {}
        self._wake = asyncio.Event()
        self.tasks = Supervisor("session recordings")

    async def __aenter__(self) -> Recordings:
        await self.tasks.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self, sid: str, on_failure: FailureCallback | None = None,
              **meta: Any) -> SessionRecorder | None:
        """Begin recording a session, or return None when recording is off or done elsewhere.

        In a sync mode, on_failure is called with the reason if the recording cannot reach the
        auth server: the caller ends the session.
        """
        if records_at(self.mode) != self.records_in:
            return None
        recorder = SessionRecorder(self, rec.check_sid(sid), {
            "namespace": "default", "time": self.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            **meta}, on_failure)
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
        """Learn `session_recording` and the session policy; keep the last known if unreachable."""
        with contextlib.suppress(TeleportError):
            answer = await self.sink.ping()
            self.mode = parse_mode(answer.session_recording)
            self.policy = SessionPolicy.from_ping(answer)

    def session_policy(self) -> SessionPolicy:
        """Return what this host enforces of the policy (see `teleport.sshutils.monitor`)."""
        return for_host(self.policy, self.mode, self.records_in)

    async def run(self) -> None:
        """Upload whenever a session ends, and retry until the auth server takes everything."""
        while True:
            self._wake.clear()
            await self.refresh_mode()
            delay = REFRESH_SECONDS if await self.upload_spooled() else self.retry_seconds
            await wait_event(self._wake, delay)

    async def close(self) -> None:
        """Finish every open recording so it is complete on disk for the next upload."""
        for recorder in list(self.active.values()):
            await recorder.close()
        await self.tasks.close()
