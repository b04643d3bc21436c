"""Build the audit log from `audit_events_uri`: every sink gets every event, the first is searched."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from teleport.errors import BadParameter, ConnectionProblem, TeleportError
from teleport.events.emitter import Emitter
from teleport.events.filelog import FileLog, encode_line
from teleport.events.search import EventPage, EventQuery, SearchableLog
from teleport.metrics import AUDIT_FAILURES
from teleport.utils.clock import Clock

SCHEMES = ("file", "stdout")


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
    """An Emitter that writes each event to every sink and searches the first one."""

    def __init__(self, primary: AuditLog, others: Sequence[Emitter] = ()) -> None:
        self.primary = primary
        self.sinks: list[Emitter] = [primary, *others]

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


def build_audit_log(uris: Sequence[str], data_dir: Path, clock: Clock) -> FanOut:
    """Open every sink `audit_events_uri` names, refusing bad ones at start; none means data_dir/log."""
    sinks = [_open(uri, clock) for uri in uris] or [FileLog(data_dir / "log", clock)]
    primary = sinks[0]
    if not isinstance(primary, FileLog):
        raise BadParameter(f"audit_events_uri {uris[0]!r}: the first URI is the one searched, "
                           "so it must be a file:// URI")
    return FanOut(primary, sinks[1:])


def sessions_dir(uri: str | None, data_dir: Path) -> Path:
    """Return where the auth server keeps recordings: `audit_sessions_uri` (file://) or data_dir."""
    if not uri:
        return data_dir / "log" / "sessions" / "default"
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise BadParameter(f"audit_sessions_uri {uri!r}: unsupported scheme, use file:///path "
                           "(S3 and GCS are not supported yet)")
    if parts.netloc or not parts.path.startswith("/") or parts.query:
        raise BadParameter(f"audit_sessions_uri {uri!r}: a file:// URI needs an absolute path, "
                           "e.g. file:///var/lib/teleport/recordings")
    return Path(parts.path) / "default"


def _open(uri: str, clock: Clock) -> Emitter:
    parts = urlsplit(uri)
    if parts.scheme == "stdout":
        if parts.netloc or parts.path or parts.query:
            raise BadParameter(f"audit_events_uri {uri!r}: write it as stdout://")
        return StdoutSink()
    if parts.scheme != "file":
        raise BadParameter(f"audit_events_uri {uri!r}: unsupported scheme, use one of "
                           + ", ".join(f"{s}://" for s in SCHEMES))
    if parts.netloc or not parts.path.startswith("/") or parts.query:
        raise BadParameter(f"audit_events_uri {uri!r}: a file:// URI needs an absolute path, "
                           "e.g. file:///var/lib/teleport/audit/events")
    try:
        return FileLog(Path(parts.path), clock)
    except OSError as err:
        raise BadParameter(f"audit_events_uri {uri!r}: cannot create {parts.path}: {err.strerror}") from None
