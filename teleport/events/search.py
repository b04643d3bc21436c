"""Search the `dir` audit log: stream day files in order, filter, and page with a cursor.

Results come oldest first, in the order the auth server wrote them (`tctl`), or newest first
(the web UI's audit page): day files are append-only, so a cursor of (day, byte offset) stays
valid while new events arrive, and each page reads only the lines it returns plus the ones it
filters out, never whole days into memory (newest first reads each file backwards in chunks).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from teleport.errors import BadParameter

log = logging.getLogger("teleport.audit")

#: Every day file ends like the manual's listing: `2017-02-01.00:00:00.log`.
DAY_FILE_SUFFIX = ".00:00:00.log"
_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})" + re.escape(DAY_FILE_SUFFIX) + "$")
_CURSOR = re.compile(r"^(\d{4}-\d{2}-\d{2}):(\d+)$")
DEFAULT_LIMIT = 500
MAX_LIMIT = 10_000
#: The longest cursor a page may hand back (a store's key, encoded).
MAX_START_KEY = 1024
#: Free text is matched against every event it reaches; a short bound keeps that cheap.
MAX_TEXT = 256
#: How much of a day file one backward read takes.
_CHUNK = 64 * 1024
# Node clocks drift from the auth server's, which picks the file: an event stamped just before
# midnight may sit in the next day's file, so search looks one day beyond each end.
_SKEW_DAYS = timedelta(days=1)


@dataclass(frozen=True)
class EventQuery:
    """What to look for: a time range (inclusive), optional types, user and free text, one
    page's size and its order."""

    since: datetime
    until: datetime
    types: frozenset[str] = field(default_factory=frozenset)
    user: str = ""
    limit: int = DEFAULT_LIMIT
    start_key: str = ""
    #: A case-insensitive substring of the event's JSON (as a browser's `JSON.stringify` shows it).
    text: str = ""
    #: Newest first instead of oldest first; a page's `next_key` is only valid in its own order.
    newest_first: bool = False

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise BadParameter("search times need a time zone")
        if self.since > self.until:
            raise BadParameter("the start of the search range is after its end")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadParameter(f"limit must be between 1 and {MAX_LIMIT}")
        # Each log reads its own cursors (a day file's offset, a table's key); bound them here.
        if len(self.start_key) > MAX_START_KEY or not self.start_key.isprintable():
            raise BadParameter(f"invalid start key {self.start_key[:64]!r}")
        if len(self.text) > MAX_TEXT:
            raise BadParameter(f"the search text is longer than {MAX_TEXT} characters")

    def matches(self, event: dict[str, Any]) -> bool:
        """Tell whether one parsed event falls in this query."""
        if self.types and event.get("event") not in self.types:
            return False
        if self.user and event.get("user") != self.user:
            return False
        when = event_time(event)
        if when is None or not self.since <= when <= self.until:
            return False
        return not self.text or self.text.casefold() in event_text(event).casefold()


@dataclass(frozen=True)
class EventPage:
    """One page of events, oldest first; pass next_key back for the next page ("" = done)."""

    events: list[dict[str, Any]]
    next_key: str


@runtime_checkable
class SearchableLog(Protocol):
    async def search(self, query: EventQuery) -> EventPage:
        """Return one page of events matching query."""
        ...


def event_time(event: dict[str, Any]) -> datetime | None:
    """Parse an event's `time`; None for events without a usable one, which search skips."""
    value = event.get("time")
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def event_text(event: dict[str, Any]) -> str:
    """Return an event's JSON as the audit page shows it: compact, characters unescaped."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)


def day_of_file(name: str) -> date | None:
    """Return the day a file name stands for, or None for anything else in the folder."""
    m = _DAY_FILE.match(name)
    if not m:
        return None
    try:
        return date.fromisoformat(m.group(1))
    except ValueError:
        return None


def search_folder(folder: Path, query: EventQuery) -> EventPage:
    """Read one page of matching events from the day files in folder (blocking: run in a thread)."""
    if query.newest_first:
        return _search_backward(folder, query)
    first, last = query.since.date() - _SKEW_DAYS, query.until.date() + _SKEW_DAYS
    start_day, start_offset = _parse_cursor(query.start_key)
    found: list[dict[str, Any]] = []
    for day, path in _day_files(folder):
        if not first <= day <= last or (start_day and day < start_day):
            continue
        offset = start_offset if day == start_day else 0
        for event, end in _read_from(path, offset):
            if query.matches(event):
                found.append(event)
                if len(found) == query.limit:
                    return EventPage(found, f"{day.isoformat()}:{end}")
    return EventPage(found, "")


def _search_backward(folder: Path, query: EventQuery) -> EventPage:
    """Read one page newest first; the cursor is where the last returned line starts."""
    first, last = query.since.date() - _SKEW_DAYS, query.until.date() + _SKEW_DAYS
    start_day, start_offset = _parse_cursor(query.start_key)
    found: list[dict[str, Any]] = []
    for day, path in reversed(_day_files(folder)):
        if not first <= day <= last or (start_day and day > start_day):
            continue
        end = start_offset if day == start_day else None
        for event, start in _read_backward(path, end):
            if query.matches(event):
                found.append(event)
                if len(found) == query.limit:
                    return EventPage(found, f"{day.isoformat()}:{start}")
    return EventPage(found, "")


def _parse_cursor(key: str) -> tuple[date | None, int]:
    if not key:
        return None, 0
    m = _CURSOR.match(key)
    try:
        if m is None:
            raise ValueError(key)
        return date.fromisoformat(m.group(1)), int(m.group(2))
    except ValueError:
        raise BadParameter(f"invalid start key {key!r}") from None


def _day_files(folder: Path) -> list[tuple[date, Path]]:
    try:
        names = [entry.name for entry in folder.iterdir() if entry.is_file()]
    except FileNotFoundError:
        return []
    days = [(day, folder / name) for name in names if (day := day_of_file(name)) is not None]
    return sorted(days)


def _read_from(path: Path, offset: int) -> Iterator[tuple[dict[str, Any], int]]:
    """Yield each complete event line from offset on, with the offset just past it."""
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            if not line.endswith(b"\n"):
                return  # being written right now: the next page will see it whole
            offset += len(line)
            try:
                event = json.loads(line)
            except ValueError:
                log.warning("skipping a corrupt line in %s at byte %d", path, offset - len(line))
                continue
            if isinstance(event, dict):
                yield event, offset


def _read_backward(path: Path, end: int | None) -> Iterator[tuple[dict[str, Any], int]]:
    """Yield each complete event line before offset end (None: the file's end), last first,
    with the offset where it starts. A line still being written at the end is left out."""
    with open(path, "rb") as f:
        complete = end is not None  # a cursor always sits at the start of a line
        pos = end if end is not None else f.seek(0, os.SEEK_END)
        buf = b""  # the bytes from pos on that are not yet yielded
        while pos > 0 or buf:
            if pos > 0:
                start = max(0, pos - _CHUNK)
                f.seek(start)
                buf = f.read(pos - start) + buf
                pos = start
            if not complete:
                cut = buf.rfind(b"\n")
                if cut < 0:
                    if pos == 0:
                        return
                    continue
                buf, complete = buf[:cut + 1], True
            while buf:
                # The last line's start is known once a newline (or the file's start) precedes it.
                newline = buf.rfind(b"\n", 0, len(buf) - 1)
                if newline < 0 and pos > 0:
                    break
                line, buf = buf[newline + 1:], buf[:newline + 1]
                try:
                    event = json.loads(line)
                except ValueError:
                    log.warning("skipping a corrupt line in %s at byte %d", path,
                                pos + newline + 1)
                    continue
                if isinstance(event, dict):
                    yield event, pos + newline + 1
