"""Build the audit log from `audit_events_uri`: every sink gets every event, the first is searched."""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from teleport.errors import BadParameter, ConnectionProblem, TeleportError
from teleport.events.buffered import BufferedEmitter
from teleport.events.emitter import Emitter
from teleport.events.filelog import FileLog, encode_line
from teleport.events.objectstore import SCHEMES as OBJECT_SCHEMES
from teleport.events.objectstore import ObjectStore, open_object_store
from teleport.events.search import EventPage, EventQuery, SearchableLog
from teleport.metrics import AUDIT_FAILURES
from teleport.utils.clock import Clock

SCHEMES = ("file", "stdout", "dynamodb", "postgresql")
#: Where events for a sink that is not the first wait while it is down (one folder per URI).
SPOOL_FOLDER = "spool"


class AuditLog(Emitter, SearchableLog, Protocol):
    """A sink that can also be searched: what the first `audit_events_uri` must be."""


class StdoutSink:
    """Print each event as one JSON line on standard output, for log shippers reading it."""

    async def emit(self, event: Mapping[str, Any]) -> None:
        try:
            sys.stdout.write(encode_line(event))
            sys.stdout.flush()
        except (OSError, ValueError) as err:
            raise ConnectionProblem(f"cannot write audit event to stdout: {err}") from None


class FanOut:
    """An Emitter that writes each event to every sink and searches the first one.

    An async context manager: it starts the senders of buffered sinks and, on exit, closes
    every sink that holds connections or spool files.
    """

    def __init__(self, primary: AuditLog, others: Sequence[Emitter] = ()) -> None:
        self.primary = primary
        self.sinks: list[Emitter] = [primary, *others]

    async def __aenter__(self) -> FanOut:
        for sink in self.sinks:
            if isinstance(sink, BufferedEmitter):
                await sink.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sink in self.sinks:
            # A buffered sink first gives its pending events a grace, then its store goes.
            for part in (sink, sink.sink) if isinstance(sink, BufferedEmitter) else (sink,):
                close = getattr(part, "close", None)
                if close is not None:
                    with contextlib.suppress(TeleportError, OSError):
                        await close()

    async def emit(self, event: Mapping[str, Any]) -> None:
        # Every sink gets its chance even when one fails; the event is acknowledged only if all took it.
        problems = []
        for sink in self.sinks:
            try:
                await sink.emit(event)
            except TeleportError as err:
                problems.append(str(err))
        if problems:
            AUDIT_FAILURES.inc()
            raise ConnectionProblem("; ".join(problems))

    async def search(self, query: EventQuery) -> EventPage:
        """Search the first sink, the one `audit_events_uri` lists first."""
        return await self.primary.search(query)


async def build_audit_log(uris: Sequence[str], data_dir: Path, clock: Clock, *,
                          region: str | None = None) -> FanOut:
    """Open every sink `audit_events_uri` names, refusing bad ones at start; none means data_dir/log.

    The first is written before an event is acknowledged and is the one searched. The others
    are each fed by a bounded emitter with its own spool under `data_dir/log/spool`: one that
    is down holds nothing up, and catches up in order when it returns, also after a restart.
    """
    if not uris:
        return FanOut(FileLog(data_dir / "log", clock))
    for uri in uris:  # every URI checked before any store is reached
        _check(uri, region)
    primary = await _open(uris[0], clock, region)
    if not isinstance(primary, SearchableLog):
        raise BadParameter(f"audit_events_uri {uris[0]!r}: the first URI is the one searched, "
                           "so it must be a file://, dynamodb:// or postgresql:// URI")
    others: list[Emitter] = []
    try:
        for uri in uris[1:]:
            sink = _OpenedLater(uri, clock, region)
            tag = hashlib.sha256(uri.encode()).hexdigest()[:16]
            others.append(BufferedEmitter(sink, data_dir / "log" / SPOOL_FOLDER / tag,
                                          component=f"audit {urlsplit(uri).scheme} {tag[:6]}",
                                          target=_shown(uri)))
    except BaseException:
        await FanOut(primary, others).__aexit__(None, None, None)
        raise
    return FanOut(primary, others)


def sessions_dir(uri: str | None, data_dir: Path) -> Path:
    """Return where the auth server keeps recordings: `audit_sessions_uri` (file://) or data_dir.

    With an object store (s3://, gs://) this folder stages what the server received until the
    store has it (`teleport.events.shared_recordings`).
    """
    if not uri or urlsplit(uri).scheme in OBJECT_SCHEMES:
        return data_dir / "log" / "sessions" / "default"
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise BadParameter(f"audit_sessions_uri {uri!r}: unsupported scheme, use file:///path, "
                           "s3://bucket/prefix or gs://bucket/prefix")
    if parts.netloc or not parts.path.startswith("/") or parts.query:
        raise BadParameter(f"audit_sessions_uri {uri!r}: a file:// URI needs an absolute path, "
                           "e.g. file:///var/lib/teleport/recordings")
    return Path(parts.path) / "default"


def sessions_store(uri: str | None, *, region: str | None = None,
                   credentials_path: Path | None = None) -> ObjectStore | None:
    """Return the object store `audit_sessions_uri` names (s3://, gs://), None for the others."""
    if not uri or urlsplit(uri).scheme not in OBJECT_SCHEMES:
        return None
    return open_object_store(uri, region=region, credentials_path=credentials_path)


def _check(uri: str, region: str | None) -> None:
    """Refuse a URI no sink takes, or takes as written, before any store is reached."""
    scheme = urlsplit(uri).scheme
    if scheme == "firestore":
        raise BadParameter(f"audit_events_uri {uri!r}: Firestore is not supported yet, use "
                           "dynamodb://, postgresql:// or file://")
    if scheme == "dynamodb":
        from teleport.events import dynamoevents

        dynamoevents.parse_uri(uri, region)
    elif scheme in ("postgresql", "postgres"):
        from teleport.events import pgevents

        pgevents.parse_uri(uri)
    elif scheme not in SCHEMES:
        raise BadParameter(f"audit_events_uri {uri!r}: unsupported scheme, use one of "
                           + ", ".join(f"{s}://" for s in SCHEMES))
    parts = urlsplit(uri)
    if scheme == "stdout" and (parts.netloc or parts.path or parts.query):
        raise BadParameter(f"audit_events_uri {uri!r}: write it as stdout://")
    if scheme == "file" and (parts.netloc or not parts.path.startswith("/") or parts.query):
        raise BadParameter(f"audit_events_uri {uri!r}: a file:// URI needs an absolute path, "
                           "e.g. file:///var/lib/teleport/audit/events")


class _OpenedLater:
    """A sink that is not the first, opened on its first event: one that is down when the
    auth server starts holds nothing up, and its bounded emitter retries until it opens."""

    def __init__(self, uri: str, clock: Clock, region: str | None) -> None:
        self.uri = uri
        self._open = lambda: _open(uri, clock, region)
        self._sink: Emitter | None = None

    async def emit(self, event: Mapping[str, Any]) -> None:
        if self._sink is None:
            try:
                self._sink = await self._open()
            except TeleportError as err:  # its URI was checked: what failed may come back
                raise ConnectionProblem(str(err)) from None
        await self._sink.emit(event)


def _shown(uri: str) -> str:
    """The URI for messages: no password, no query (which may name key files)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{parts.path}"

    async def close(self) -> None:
        close = getattr(self._sink, "close", None)
        if close is not None:
            await close()


async def _open(uri: str, clock: Clock, region: str | None) -> Emitter:
    parts = urlsplit(uri)
    if parts.scheme == "dynamodb":
        from teleport.events.dynamoevents import DynamoEvents

        return await DynamoEvents.open(uri, region=region)
    if parts.scheme in ("postgresql", "postgres"):
        from teleport.events.pgevents import PostgresEvents

        return await PostgresEvents.open(uri, clock=clock)
    if parts.scheme == "stdout":
        return StdoutSink()
    try:
        return FileLog(Path(parts.path), clock)
    except OSError as err:
        raise BadParameter(f"audit_events_uri {uri!r}: cannot create {parts.path}: {err.strerror}") from None
