"""Recordings in an object store that every auth server shares (`audit_sessions_uri: s3://...`).

A recording reaches the store in two steps, so that no failure on the way loses it:

    node spool --(auth API upload, retried)--> auth staging folder --(shipper, retried)--> store

The auth server takes an upload exactly as the `dir` store does (temp files, size cap, owner,
commit by rename into `data_dir/log/sessions/default`), so the node's copy is deleted only once
this server holds the recording on its own disk. The shipper then puts both objects (chunks
first, events last: a recording whose events object exists is whole) and removes the staged
files. While the store is down, staged recordings wait, and are shipped when it returns or
after a restart. A recording the store already holds is never replaced: the first one stored
is the evidence. Reads look in the staging folder first, then in the store, streaming from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from teleport.errors import ConnectionProblem, NotFound, TeleportError
from teleport.events import recording as rec
from teleport.events.objectstore import ObjectStore
from teleport.events.sessions_store import RecordingSummary, SessionStore, summarize
from teleport.utils.waits import wait_event

log = logging.getLogger("teleport.audit")

#: Longest wait between two tries while the store is unreachable.
MAX_RETRY_SECONDS = 30.0
#: How long a host asking whether a recording is stored waits for the store: it uploads
#: anyway when the store does not say (an outage must not hold the host's upload up).
STORED_CHECK_SECONDS = 3.0
#: How often the staging folder is looked at when nothing arrives (a file left by a crash).
IDLE_SECONDS = 60.0


def _names(sid: str) -> tuple[str, str]:
    return f"{sid}{rec.CHUNKS_SUFFIX}", f"{sid}{rec.EVENTS_SUFFIX}"


class SharedSessionStore(SessionStore):
    """Recordings of one namespace in an object store, staged in a local folder on the way."""

    def __init__(self, folder: Path, remote: ObjectStore, **limits: Any) -> None:
        super().__init__(folder, **limits)
        self.remote = remote
        self._remote_summaries: dict[str, RecordingSummary] = {}
        self._arrived = asyncio.Event()
        self._bucket_ready = False

    # --- staging to the store -----------------------------------------------------------------

    async def commit(self, sid: str, uploader: str, server_id: str | None = None) -> bool:
        stored = await super().commit(sid, uploader, server_id)
        self._arrived.set()
        return stored

    def staged(self) -> list[str]:
        """Return the sessions whose recordings are held here, not yet in the store."""
        return sorted(p.name.removesuffix(rec.EVENTS_SUFFIX) for p in self.folder.iterdir()
                      if p.name.endswith(rec.EVENTS_SUFFIX) and not p.name.startswith("."))

    def ship_one(self, sid: str) -> bool:
        """Put one staged recording in the store and remove it here; False if the store
        already had it (this copy is dropped). Blocking: run it in a thread."""
        if not self._bucket_ready:
            self.remote.ensure_bucket()
            self._bucket_ready = True
        chunks, events = rec.paths(self.folder, sid)
        chunks_name, events_name = _names(sid)
        shipped = not self.remote.exists(events_name)
        if shipped:
            if chunks.exists():
                self.remote.put_file(chunks_name, chunks)
            self.remote.put_file(events_name, events)
        # Events first: a reader that finds no events file here looks in the store.
        events.unlink(missing_ok=True)
        chunks.unlink(missing_ok=True)
        return shipped

    async def ship(self) -> None:
        """Run for as long as the server does: move staged recordings into the store, waiting
        and retrying while it cannot be reached."""
        delay, failing = 1.0, False
        while True:
            self._arrived.clear()
            try:
                for sid in await asyncio.to_thread(self.staged):
                    if await asyncio.to_thread(self.ship_one, sid):
                        log.info("recording of session %s stored in %s", sid, self.remote.uri)
                if failing:
                    log.warning("recordings reach %s again", self.remote.uri)
                delay, failing, wait = 1.0, False, IDLE_SECONDS
            except TeleportError as err:
                if not failing:
                    log.warning("cannot store recordings in %s yet (kept in %s, retrying): %s",
                                self.remote.uri, self.folder, err)
                failing, wait = True, delay
                delay = min(delay * 2, MAX_RETRY_SECONDS)
            await wait_event(self._arrived, wait)

    # --- reading from here or the store -------------------------------------------------------

    async def stored(self, sid: str) -> bool:
        if self.exists(sid):
            return True
        try:
            async with asyncio.timeout(STORED_CHECK_SECONDS):
                return await asyncio.to_thread(self.remote.exists, _names(sid)[1])
        except (ConnectionProblem, TimeoutError):
            return False  # unknown: the host uploads it, and the store keeps the first one

    async def summary(self, sid: str) -> RecordingSummary:
        with contextlib.suppress(NotFound):
            return await super().summary(sid)
        cached = self._remote_summaries.get(sid)
        if cached is None:  # objects never change: read once
            events = await asyncio.to_thread(self._read_remote, _names(sid)[1])
            cached = await asyncio.to_thread(summarize, sid, events)
            self._remote_summaries[sid] = cached
        return cached

    async def list(self) -> list[RecordingSummary]:
        found = {s.sid: s for s in await super().list()}
        names = await asyncio.to_thread(self.remote.names, rec.EVENTS_SUFFIX)
        for name in names:
            sid = name.removesuffix(rec.EVENTS_SUFFIX)
            if sid not in found:
                with contextlib.suppress(NotFound, rec.BadParameter):
                    found[sid] = await self.summary(rec.check_sid(sid))
        return sorted(found.values(), key=lambda s: (s.start, s.sid))

    async def open_recording(self, sid: str) -> tuple[Iterator[bytes], Iterator[bytes]]:
        local = await asyncio.to_thread(self.open_local, sid)
        if local is not None:
            return local
        chunks_name, events_name = _names(sid)
        events = await asyncio.to_thread(self._read_remote, events_name)
        return events, self._read_optional(chunks_name)

    def _read_remote(self, name: str) -> Iterator[bytes]:
        """Start reading an object, so a missing one fails here rather than mid-stream."""
        pieces = self.remote.read(name)
        try:
            first = next(pieces)
        except StopIteration:
            return iter(())
        except NotFound:
            raise NotFound(f"session recording {name.split('.')[0]} not found") from None
        return _chain(first, pieces)

    def _read_optional(self, name: str) -> Iterator[bytes]:
        """Read an object that may be absent (a session with no output has no chunks)."""
        try:
            yield from self.remote.read(name)
        except NotFound:
            return


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
