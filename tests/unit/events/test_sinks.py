"""Building the audit log from `audit_events_uri`: every sink gets each event, the first is searched."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from teleport.errors import BadParameter, ConnectionProblem
from teleport.events import emitter as ev
from teleport.events.filelog import FileLog, day_file_name
from teleport.events.search import EventQuery
from teleport.events.sinks import FanOut, StdoutSink, build_audit_log, sessions_dir
from teleport.utils.clock import FakeClock


def _query(clock: FakeClock) -> EventQuery:
    return EventQuery(since=clock.now() - timedelta(hours=1), until=clock.now() + timedelta(hours=1))


async def test_no_uri_means_the_dir_log_under_data_dir(tmp_path: Path) -> None:
    clock = FakeClock()
    audit = build_audit_log([], tmp_path, clock)
    await audit.emit(ev.make_event(ev.USER_LOGIN, clock, user="joe", method="local"))
    assert (tmp_path / "log" / day_file_name(clock.now())).exists()
    assert [e["user"] for e in (await audit.search(_query(clock))).events] == ["joe"]


async def test_every_sink_gets_the_event_and_the_first_is_searched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    first, second = tmp_path / "audit" / "events", tmp_path / "copy"
    audit = build_audit_log([f"file://{first}", "stdout://", f"file://{second}"], tmp_path, clock)
    event = ev.make_event(ev.EXEC, clock, user="joe", command="ls")
    await audit.emit(event)
    assert json.loads(capsys.readouterr().out) == event
    for folder in (first, second):
        assert json.loads((folder / day_file_name(clock.now())).read_text()) == event
    assert not (tmp_path / "log").exists()
    assert (await audit.search(_query(clock))).events == [event]


@pytest.mark.parametrize(("uris", "message"), [
    (["dynamodb://events"], "'dynamodb://events': unsupported scheme, use one of file://, stdout://"),
    (["file:///ok", "s3://bucket/x"], "'s3://bucket/x': unsupported scheme"),
    (["file://relative/path"], "needs an absolute path"),
    (["stdout://somewhere"], "write it as stdout://"),
    (["stdout://", "file:///var/x"], "the first URI is the one searched"),
])
def test_bad_uris_are_one_line_errors_naming_the_uri(tmp_path: Path, uris: list[str], message: str) -> None:
    uris = [u.replace("file:///ok", f"file://{tmp_path}/ok") for u in uris]
    with pytest.raises(BadParameter, match=message) as err:
        build_audit_log(uris, tmp_path, FakeClock())
    assert "\n" not in str(err.value)


class _Broken:
    async def emit(self, event: Mapping[str, Any]) -> None:
        raise ConnectionProblem("sink is down")


async def test_a_failing_sink_does_not_starve_the_others(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    audit = FanOut(FileLog(tmp_path, clock), [_Broken(), StdoutSink()])
    with pytest.raises(ConnectionProblem, match="sink is down"):
        await audit.emit(ev.make_event(ev.RESIZE, clock, user="joe"))
    assert (tmp_path / day_file_name(clock.now())).exists()
    assert json.loads(capsys.readouterr().out)["event"] == "resize"


def test_sessions_dir_from_audit_sessions_uri(tmp_path: Path) -> None:
    assert sessions_dir(None, tmp_path) == tmp_path / "log" / "sessions" / "default"
    assert sessions_dir("file:///srv/recordings", tmp_path) == Path("/srv/recordings/default")
    for bad in ("s3://bucket/path", "file://relative/path", "file:///x?y=1"):
        with pytest.raises(BadParameter, match="audit_sessions_uri"):
            sessions_dir(bad, tmp_path)
