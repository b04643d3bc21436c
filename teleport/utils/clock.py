"""The injectable clock: everything with a TTL takes one so tests can move time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol

from teleport.errors import BadParameter


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current time, timezone-aware UTC."""
        ...


class RealClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=timezone.utc)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(value: str, name: str) -> datetime:
    """Read an RFC 3339 time with its zone (a query's `from`, `to`), or say which one is wrong."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadParameter(f"{name} must be an RFC 3339 time, not {value!r}") from None
    if when.tzinfo is None:
        raise BadParameter(f"{name} needs a time zone, e.g. {value}Z")
    return when
