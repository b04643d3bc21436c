"""Search the `dir` audit log: stream day files oldest first, filter, and page with a cursor.

Results come oldest first, in the order the auth server wrote them: day files are append-only,
so a cursor of (day, byte offset) stays valid while new events arrive, and each page reads only
the lines it returns plus the ones it filters out, never whole days into memory.
"""

from __future__ import annotations

import json
import logging
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
# Node clocks drift from the auth server's, which picks the file: an event stamped just before
# midnight may sit in the next day's file, so search looks one day beyond each end.
_SKEW_DAYS = timedelta(days=1)


@dataclass(frozen=True)
class EventQuery:
    """What to look for: a time range (inclusive), optional types and user, one page's size."""

    since: datetime
    until: datetime
    types: frozenset[str] = field(default_factory=frozenset)
    user: str = ""
    limit: int = DEFAULT_LIMIT
    start_key: str = ""

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise BadParameter("search times need a time zone")
        if self.since > self.until:
            raise BadParameter("the start of the search range is after its end")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadParameter(f"limit must be between 1 and {MAX_LIMIT}")
        if self.start_key and not _CURSOR.match(self.start_key):
            raise BadParameter(f"invalid start key {self.start_key!r}")

    def matches(self, event: dict[str, Any]) -> bool:
        """Tell whether one parsed event falls in this query."""
        if self.types and event.get("event") not in self.types:
            return False
        if self.user and event.get("user") != self.user:
            return False
        when = event_time(event)
        return when is not None and self.since <= when <= self.until


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


def _parse_cursor(key: str) -> tuple[date | None, int]:
    if not key:
        return None, 0
    m = _CURSOR.match(key)
    try:
        assert m is not None  # EventQuery checked the shape
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
