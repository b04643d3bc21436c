"""What every searchable audit log must do, whatever stores it (day files, PostgreSQL, DynamoDB).

A test module subclasses `AuditLogConformance` and defines the `open_log` fixture: an async
factory that opens the log under test, empty. Each check emits events with their own `time`
(as the auth server stamps them) and searches them back through `search()` only, as
`GET /v1/events` does; the page cursor is opaque to the checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import pytest

from teleport.errors import BadParameter
from teleport.events import emitter as ev
from teleport.events.search import EventQuery
from teleport.utils.clock import FakeClock

START = datetime(2017, 2, 1, 22, 0, tzinfo=timezone.utc)


class SearchableEmitter(Protocol):
    async def emit(self, event: dict[str, Any]) -> None: ...

    async def search(self, query: EventQuery) -> Any: ...


OpenLog = Callable[[], Awaitable[SearchableEmitter]]


async def fill(log: SearchableEmitter, count: int = 30,
               step: timedelta = timedelta(minutes=10)) -> list[dict[str, Any]]:
    """Write count events, alternating types and users, spanning a midnight; return them."""
    clock = FakeClock(START)
    written = []
    for i in range(count):
        event = ev.make_event(ev.EXEC if i % 2 else ev.SESSION_START, clock,
                              user="joe" if i % 3 else "ann", command=f"cmd {i}")
        await log.emit(event)
        written.append(event)
        clock.advance(step)
    return written


async def every_page(log: SearchableEmitter, query: EventQuery) -> list[dict[str, Any]]:
    """Walk every page of query, checking each page respects the limit."""
    events: list[dict[str, Any]] = []
    key = ""
    while True:
        page = await log.search(replace(query, start_key=key))
        assert len(page.events) <= query.limit
        events += page.events
        if not (key := page.next_key):
            return events


def q(since: datetime = START, until: datetime = START + timedelta(days=1),
      **kw: Any) -> EventQuery:
    return EventQuery(since=since, until=until, **kw)


class AuditLogConformance:
    """The checks; a subclass provides the `open_log` fixture."""

    async def test_range_crosses_midnight_oldest_first(self, open_log: OpenLog) -> None:
        log = await open_log()
        written = await fill(log)
        since, until = START + timedelta(minutes=100), START + timedelta(minutes=150)
        found = (await log.search(q(since, until))).events
        assert [e["command"] for e in found] == [f"cmd {i}" for i in range(10, 16)]
        assert (await log.search(q())).events == written

    async def test_events_of_the_same_instant_keep_their_order(self, open_log: OpenLog) -> None:
        log = await open_log()
        clock = FakeClock(START)
        same = [ev.make_event(ev.EXEC, clock, user="joe", command=str(i))
                for i in range(12)]
        for event in same:
            await log.emit(event)
        assert await every_page(log, q(limit=5)) == same
        assert await every_page(log, q(limit=5, newest_first=True)) == same[::-1]

    async def test_type_and_user_filters(self, open_log: OpenLog) -> None:
        log = await open_log()
        written = await fill(log)
        execs = (await log.search(q(types=frozenset({ev.EXEC})))).events
        assert execs == [e for e in written if e["event"] == ev.EXEC]
        anns = (await log.search(q(types=frozenset({ev.EXEC, ev.SESSION_START}),
                                   user="ann"))).events
        assert anns == [e for e in written if e["user"] == "ann"]
        assert (await log.search(q(user="nobody"))).events == []

    @pytest.mark.parametrize("limit", [1, 4, 7, 30])
    async def test_paging_returns_each_event_once_in_order(self, open_log: OpenLog,
                                                           limit: int) -> None:
        log = await open_log()
        written = await fill(log)
        assert await every_page(log, q(limit=limit)) == written
        assert await every_page(log, q(limit=limit, user="joe")) == \
            [e for e in written if e["user"] == "joe"]
        assert await every_page(log, q(limit=limit, newest_first=True)) == written[::-1]

    async def test_a_cursor_stays_valid_while_events_arrive(self, open_log: OpenLog) -> None:
        log = await open_log()
        await fill(log, count=4, step=timedelta(minutes=1))
        first = await log.search(q(limit=3))
        late = ev.make_event(ev.RESIZE, FakeClock(START + timedelta(minutes=30)), user="joe")
        await log.emit(late)
        rest = await log.search(q(limit=3, start_key=first.next_key))
        assert [e["command"] for e in first.events] == ["cmd 0", "cmd 1", "cmd 2"]
        assert rest.events[-1] == late and len(rest.events) == 2 and rest.next_key == ""

    async def test_newest_first_cursor_ignores_later_events(self, open_log: OpenLog) -> None:
        log = await open_log()
        await fill(log, count=4, step=timedelta(minutes=1))
        first = await log.search(q(limit=2, newest_first=True))
        await log.emit(ev.make_event(ev.RESIZE, FakeClock(START + timedelta(minutes=30)),
                                     user="joe"))
        rest = await log.search(q(limit=5, newest_first=True, start_key=first.next_key))
        assert [e["command"] for e in first.events + rest.events] == \
            [f"cmd {i}" for i in (3, 2, 1, 0)]

    async def test_free_text_matches_case_insensitively(self, open_log: OpenLog) -> None:
        log = await open_log()
        written = await fill(log)
        clock = FakeClock(START + timedelta(minutes=5))
        special = ev.make_event(ev.EXEC, clock, user="zoë", command='echo "Grüße"')
        await log.emit(special)
        assert await every_page(log, q(text="CMD 1", limit=2)) == \
            [e for e in written if e["command"].startswith("cmd 1")]
        assert await every_page(log, q(text='"user":"ANN"', limit=3, newest_first=True)) == \
            [e for e in written if e["user"] == "ann"][::-1]
        assert (await log.search(q(text="grüße"))).events == [special]
        assert (await log.search(q(text="no such thing"))).events == []

    async def test_events_come_back_as_they_went_in(self, open_log: OpenLog) -> None:
        log = await open_log()
        event = ev.make_event(ev.SESSION_START, FakeClock(START), user="joe",
                              addr_remote="10.0.0.1:5000", size="80:24",
                              labels={"env": "prod", "ünï": "cödé"}, count=3, ok=True,
                              nothing=None, ratio=0.5, argv=["a", "b"])
        await log.emit(event)
        assert (await log.search(q())).events == [event]

    async def test_a_cursor_that_is_not_the_logs_own_is_refused(self, open_log: OpenLog) -> None:
        log = await open_log()
        await fill(log, count=2)
        with pytest.raises(BadParameter, match="invalid start key"):
            await log.search(q(start_key="not-a-cursor"))
