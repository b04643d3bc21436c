"""Search over generated day files: ranges across days, filters, paging with a cursor."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from teleport.errors import BadParameter
from teleport.events import emitter as ev
from teleport.events.filelog import FileLog, day_file_name
from teleport.events.search import EventQuery, search_folder
from teleport.utils.clock import FakeClock

START = datetime(2017, 2, 1, 22, 0, tzinfo=timezone.utc)


async def _fill(folder: Path, count: int = 30, step: timedelta = timedelta(minutes=10)) -> list[dict]:
    """Write count events, alternating types and users, spanning a midnight; return them."""
    clock = FakeClock(START)
    log = FileLog(folder, clock)
    written = []
    for i in range(count):
        event = ev.make_event(ev.EXEC if i % 2 else ev.SESSION_START, clock,
                              user="joe" if i % 3 else "ann", command=f"cmd {i}")
        await log.emit(event)
        written.append(event)
        clock.advance(step)
    return written


def _all(folder: Path, query: EventQuery) -> list[dict]:
    """Walk every page of query, checking each page respects the limit."""
    events, key = [], ""
    while True:
        page = search_folder(folder, EventQuery(**{**query.__dict__, "start_key": key}))
        assert len(page.events) <= query.limit
        events += page.events
        if not (key := page.next_key):
            return events


def _q(since: datetime = START, until: datetime = START + timedelta(days=1), **kw: object) -> EventQuery:
    return EventQuery(since=since, until=until, **kw)  # type: ignore[arg-type]


async def test_range_crosses_midnight_oldest_first(tmp_path: Path) -> None:
    written = await _fill(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2017-02-01.00:00:00.log",
                                                          "2017-02-02.00:00:00.log"]
    since, until = START + timedelta(minutes=100), START + timedelta(minutes=150)  # 23:40 - 00:30
    found = search_folder(tmp_path, _q(since, until)).events
    assert [e["command"] for e in found] == [f"cmd {i}" for i in range(10, 16)]
    assert search_folder(tmp_path, _q()).events == written


async def test_type_and_user_filters(tmp_path: Path) -> None:
    written = await _fill(tmp_path)
    execs = search_folder(tmp_path, _q(types=frozenset({ev.EXEC}))).events
    assert execs == [e for e in written if e["event"] == ev.EXEC]
    anns = search_folder(tmp_path, _q(types=frozenset({ev.EXEC, ev.SESSION_START}), user="ann")).events
    assert anns == [e for e in written if e["user"] == "ann"]
    assert search_folder(tmp_path, _q(user="nobody")).events == []


@pytest.mark.parametrize("limit", [1, 4, 7, 30])
async def test_paging_returns_each_event_once_in_order(tmp_path: Path, limit: int) -> None:
    written = await _fill(tmp_path)
    assert _all(tmp_path, _q(limit=limit)) == written
    assert _all(tmp_path, _q(limit=limit, user="joe")) == [e for e in written if e["user"] == "joe"]


async def test_a_cursor_stays_valid_while_events_are_appended(tmp_path: Path) -> None:
    await _fill(tmp_path, count=4, step=timedelta(minutes=1))
    first = search_folder(tmp_path, _q(limit=3))
    clock = FakeClock(START + timedelta(minutes=30))
    late = ev.make_event(ev.RESIZE, clock, user="joe")
    await FileLog(tmp_path, clock).emit(late)
    rest = search_folder(tmp_path, _q(limit=3, start_key=first.next_key))
    assert [e["command"] for e in first.events] == ["cmd 0", "cmd 1", "cmd 2"]
    assert rest.events[-1] == late and len(rest.events) == 2 and rest.next_key == ""


async def test_events_filed_on_the_neighbouring_day_are_found(tmp_path: Path) -> None:
    """A node's 23:59 event arrived after midnight (spooled, or its clock ran behind).

    It is filed under the day it happened, where a search for that day looks.
    """
    stamped = datetime(2017, 2, 1, 23, 59, tzinfo=timezone.utc)
    auth_clock = FakeClock(stamped + timedelta(minutes=3))
    event = ev.make_event(ev.EXEC, FakeClock(stamped), user="joe")
    await FileLog(tmp_path, auth_clock).emit(event)
    assert (tmp_path / "2017-02-01.00:00:00.log").exists()
    found = search_folder(tmp_path, _q(stamped - timedelta(hours=1), stamped + timedelta(seconds=1)))
    assert found.events == [event]


async def test_corrupt_and_half_written_lines_are_skipped(tmp_path: Path) -> None:
    written = await _fill(tmp_path, count=3, step=timedelta(minutes=1))
    day = tmp_path / day_file_name(START)
    lines = day.read_text().splitlines(keepends=True)
    day.write_text(lines[0] + "not json\n" + "[1, 2]\n" + lines[1] + lines[2] + '{"event": "ex')
    assert _all(tmp_path, _q(limit=1)) == written
    assert json.loads(lines[2]) == written[2]


@pytest.mark.parametrize("limit", [1, 4, 7, 30])
async def test_newest_first_pages_return_each_event_once_in_reverse(tmp_path: Path,
                                                                    limit: int) -> None:
    written = await _fill(tmp_path)
    assert _all(tmp_path, _q(limit=limit, newest_first=True)) == written[::-1]
    since, until = START + timedelta(minutes=100), START + timedelta(minutes=150)
    assert [e["command"] for e in _all(tmp_path, _q(since, until, limit=limit,
                                                    newest_first=True))] == \
        [f"cmd {i}" for i in range(15, 9, -1)]


async def test_newest_first_reads_long_files_backwards_in_chunks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from teleport.events import search

    monkeypatch.setattr(search, "_CHUNK", 7)  # shorter than every line: lines span chunks
    written = await _fill(tmp_path, count=12)
    assert _all(tmp_path, _q(limit=5, newest_first=True)) == written[::-1]


async def test_newest_first_skips_corrupt_and_half_written_lines(tmp_path: Path) -> None:
    written = await _fill(tmp_path, count=3, step=timedelta(minutes=1))
    day = tmp_path / day_file_name(START)
    lines = day.read_text().splitlines(keepends=True)
    day.write_text(lines[0] + "not json\n" + lines[1] + lines[2] + '{"event": "ex')
    assert _all(tmp_path, _q(limit=1, newest_first=True)) == written[::-1]


async def test_newest_first_cursor_ignores_events_appended_later(tmp_path: Path) -> None:
    await _fill(tmp_path, count=4, step=timedelta(minutes=1))
    first = search_folder(tmp_path, _q(limit=2, newest_first=True))
    await FileLog(tmp_path, FakeClock(START + timedelta(minutes=30))).emit(
        ev.make_event(ev.RESIZE, FakeClock(START + timedelta(minutes=30)), user="joe"))
    rest = search_folder(tmp_path, _q(limit=5, newest_first=True, start_key=first.next_key))
    assert [e["command"] for e in first.events + rest.events] == [f"cmd {i}" for i in (3, 2, 1, 0)]


async def test_free_text_matches_the_events_json_case_insensitively(tmp_path: Path) -> None:
    written = await _fill(tmp_path)
    clock = FakeClock(START + timedelta(minutes=5))
    special = ev.make_event(ev.EXEC, clock, user="zoë", command='echo "Grüße"')
    await FileLog(tmp_path, clock).emit(special)
    assert _all(tmp_path, _q(text="CMD 1", limit=2)) == \
        [e for e in written if e["command"].startswith("cmd 1")]
    assert _all(tmp_path, _q(text='"user":"ANN"', limit=3, newest_first=True)) == \
        [e for e in written if e["user"] == "ann"][::-1]
    assert search_folder(tmp_path, _q(text="grüße")).events == [special]
    assert search_folder(tmp_path, _q(text="ZOË")).events == [special]
    assert search_folder(tmp_path, _q(text="no such thing")).events == []


def test_files_that_are_not_day_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "sessions").mkdir()
    (tmp_path / "notes.txt").write_text("{}\n")
    (tmp_path / "2017-13-45.00:00:00.log").write_text("{}\n")
    assert search_folder(tmp_path, _q()).events == []
    assert search_folder(tmp_path / "missing", _q()).next_key == ""


@pytest.mark.parametrize(("kw", "message"), [
    ({"since": START + timedelta(hours=1), "until": START}, "after its end"),
    ({"limit": 0}, "limit must be between"),
    ({"limit": 10_001}, "limit must be between"),
    ({"start_key": "yesterday"}, "invalid start key"),
    ({"start_key": "2017-02-31:10"}, "invalid start key"),
    ({"since": START.replace(tzinfo=None)}, "time zone"),
    ({"text": "x" * 257}, "longer than 256"),
])
def test_bad_queries_are_refused(tmp_path: Path, kw: dict, message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        search_folder(tmp_path, _q(**kw))
