"""The `dir` audit log: day files named like the manual's, private modes, one line per event."""

from __future__ import annotations

import asyncio
import json
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

from teleport.errors import ConnectionProblem
from teleport.events import emitter as ev
from teleport.events.filelog import FileLog, day_file_name
from teleport.utils.clock import FakeClock

FORGED = 'ls\n{"event":"user.login","user":"admin","method":"local","success":true}\n"quoted"'


def test_day_file_names_follow_the_manual() -> None:
    assert day_file_name(datetime(2017, 2, 1, 23, 59, tzinfo=timezone.utc)) == "2017-02-01.00:00:00.log"
    later = datetime(2017, 2, 1, 20, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert day_file_name(later) == "2017-02-02.00:00:00.log"


async def test_events_land_in_the_day_of_the_clock_with_private_modes(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2017, 2, 1, 23, 59, 59, tzinfo=timezone.utc))
    log = FileLog(tmp_path / "log", clock)
    await log.emit(ev.make_event(ev.SESSION_START, clock, user="joe"))
    clock.advance(timedelta(seconds=2))
    await log.emit(ev.make_event(ev.SESSION_END, clock, user="joe"))
    names = sorted(p.name for p in (tmp_path / "log").iterdir())
    assert names == ["2017-02-01.00:00:00.log", "2017-02-02.00:00:00.log"]
    assert stat.S_IMODE((tmp_path / "log").stat().st_mode) == 0o700
    assert all(stat.S_IMODE((tmp_path / "log" / n).stat().st_mode) == 0o640 for n in names)


async def test_a_field_cannot_forge_a_line(tmp_path: Path) -> None:
    clock = FakeClock()
    log = FileLog(tmp_path, clock)
    event = ev.make_event(ev.EXEC, clock, user="joe", command=FORGED, exitCode=0, exitError="")
    await log.emit(event)
    lines = (tmp_path / day_file_name(clock.now())).read_bytes().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == event
    assert b"\\n{\\\"event\\\":\\\"user.login\\\"" in lines[0]


async def test_concurrent_events_are_each_on_disk_when_their_emit_returns(tmp_path: Path) -> None:
    """Emits that overlap are written together (one flush per batch), each whole, in the order
    they were emitted, and every one is in the file by the time its emit returns."""
    clock = FakeClock()
    log = FileLog(tmp_path, clock)
    path = tmp_path / day_file_name(clock.now())

    async def emit(n: int) -> None:
        await log.emit(ev.make_event(ev.EXEC, clock, user=f"u{n}", command="x" * n))
        assert f'"user":"u{n}"' in path.read_text()

    await asyncio.gather(*(emit(n) for n in range(300)))
    users = [json.loads(line)["user"] for line in path.read_text().splitlines()]
    assert users == [f"u{n}" for n in range(300)]


async def test_a_write_that_fails_fails_each_emit_of_its_batch(tmp_path: Path) -> None:
    clock = FakeClock()
    log = FileLog(tmp_path / "log", clock)
    (tmp_path / "log" / day_file_name(clock.now())).mkdir()  # the day file cannot be opened
    results = await asyncio.gather(*(log.emit(ev.make_event(ev.EXEC, clock, user=f"u{n}"))
                                     for n in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionProblem) and "cannot write audit log" in str(r)
               for r in results), results
