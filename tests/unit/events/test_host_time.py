"""An event a host spooled during an outage is stored and found under the time it happened."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from teleport.events import emitter as ev
from teleport.events.filelog import FileLog
from teleport.events.search import EventQuery
from teleport.utils.clock import FakeClock


async def test_an_event_two_days_late_is_found_by_a_search_for_its_day(tmp_path: Path) -> None:
    clock = FakeClock()
    happened = clock.now() - timedelta(days=2)
    report = {"event": ev.EXEC, "user": "joe", "time": happened.strftime(ev.TIME_FORMAT)}
    event = ev.from_host(report, "node-a", clock)
    log = FileLog(tmp_path, clock)
    await log.emit(event)
    page = await log.search(EventQuery(since=happened - timedelta(minutes=1),
                                       until=happened + timedelta(minutes=1)))
    assert page.events == [event]
    assert event["time"] == report["time"] and event["server_id"] == "node-a"
