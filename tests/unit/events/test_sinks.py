"""Building the audit log from `audit_events_uri`: every sink gets each event, the first is searched."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from teleport.errors import BadParameter, ConnectionProblem
from teleport.events import emitter as ev
from teleport.events.filelog import FileLog, day_file_name
from teleport.events.objectstore import GcsStore, S3Store
from teleport.events.search import EventQuery
from teleport.events.sinks import FanOut, StdoutSink, build_audit_log, sessions_dir, sessions_store
from teleport.utils.clock import FakeClock


def _query(clock: FakeClock) -> EventQuery:
    return EventQuery(since=clock.now() - timedelta(hours=1), until=clock.now() + timedelta(hours=1))


async def test_no_uri_means_the_dir_log_under_data_dir(tmp_path: Path) -> None:
    clock = FakeClock()
    audit = await build_audit_log([], tmp_path, clock)
    await audit.emit(ev.make_event(ev.USER_LOGIN, clock, user="joe", method="local"))
    assert (tmp_path / "log" / day_file_name(clock.now())).exists()
    assert [e["user"] for e in (await audit.search(_query(clock))).events] == ["joe"]


async def test_every_sink_gets_the_event_and_the_first_is_searched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    first, second = tmp_path / "audit" / "events", tmp_path / "copy"
    async with await build_audit_log([f"file://{first}", "stdout://", f"file://{second}"],
                                     tmp_path, clock) as audit:
        event = ev.make_event(ev.EXEC, clock, user="joe", command="ls")
        await audit.emit(event)
        # Acknowledged once the first has it; the others get it from their own senders.
        assert json.loads((first / day_file_name(clock.now())).read_text()) == event
        assert (await audit.search(_query(clock))).events == [event]
    assert json.loads(capsys.readouterr().out) == event
    assert json.loads((second / day_file_name(clock.now())).read_text()) == event
    assert not (tmp_path / "log" / day_file_name(clock.now())).exists()


async def test_a_sink_that_is_down_catches_up_in_order_without_holding_events_up(
        tmp_path: Path) -> None:
    """The second sink cannot be written (its folder is a file); events wait in its spool,
    the first sink takes each at once, and the second gets them all, in order, once it can."""
    clock = FakeClock()
    blocked = tmp_path / "copy"
    blocked.write_text("not a folder")
    uris = [f"file://{tmp_path}/events", f"file://{blocked}"]
    async with await build_audit_log(uris, tmp_path, clock) as audit:
        events = [ev.make_event(ev.EXEC, clock, user="joe", command=str(i)) for i in range(5)]
        for event in events:
            await asyncio.wait_for(audit.emit(event), 1)
        assert (await audit.search(_query(clock))).events == events
    spools = list((tmp_path / "log" / "spool").iterdir())
    assert len(spools) == 1 and (spools[0] / "events.jsonl").stat().st_size > 0
    blocked.unlink()
    async with await build_audit_log(uris, tmp_path, clock):  # a restart: the spool goes first
        for _ in range(50):
            if (blocked / day_file_name(clock.now())).exists():
                break
            await asyncio.sleep(0.1)
    lines = (blocked / day_file_name(clock.now())).read_text().splitlines()
    assert [json.loads(line) for line in lines] == events


@pytest.mark.parametrize(("uris", "message"), [
    (["firestore://events"], "'firestore://events': Firestore is not supported yet"),
    (["file:///ok", "s3://bucket/x"], "'s3://bucket/x': unsupported scheme, use one of file://"),
    (["file:///ok", "dynamodb://events?colour=red"], "dynamodb://events"),
    (["file://relative/path"], "needs an absolute path"),
    (["file:///ok", "file://relative/path"], "'file://relative/path': a file:// URI needs"),
    (["stdout://somewhere"], "write it as stdout://"),
    (["file:///ok", "stdout://somewhere"], "write it as stdout://"),
    (["stdout://", "file:///var/x"], "the first URI is the one searched"),
])
async def test_bad_uris_are_one_line_errors_naming_the_uri(tmp_path: Path, uris: list[str],
                                                           message: str) -> None:
    uris = [u.replace("file:///ok", f"file://{tmp_path}/ok") for u in uris]
    with pytest.raises(BadParameter, match=message) as err:
        await build_audit_log(uris, tmp_path, FakeClock())
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
    staging = tmp_path / "log" / "sessions" / "default"
    assert sessions_dir(None, tmp_path) == staging
    assert sessions_dir("file:///srv/recordings", tmp_path) == Path("/srv/recordings/default")
    # An object store's recordings are staged in the data dir until the store has them.
    assert sessions_dir("s3://bucket/records", tmp_path) == staging
    assert sessions_dir("gs://bucket/records", tmp_path) == staging
    for bad in ("ftp://bucket/path", "file://relative/path", "file:///x?y=1"):
        with pytest.raises(BadParameter, match="audit_sessions_uri"):
            sessions_dir(bad, tmp_path)


@pytest.mark.parametrize(("uri", "message"), [
    ("s3://", "name the bucket"),
    ("s3://bucket/records?colour=red", "unknown option 'colour'"),
    ("s3://bucket/records?acl=everyone", "acl 'everyone' is not a canned ACL"),
    ("s3://bucket/records?disablesse=perhaps", "disablesse must be true or false"),
    ("s3://bucket/records?endpoint=ftp://x", "must be an http:// or https:// URL"),
    ("gs://bucket/records?credentialsPath=/no/such/file", "cannot read credentials"),
    ("gs://bucket/records?region=x", "unknown option 'region'"),
])
def test_bad_object_store_uris_are_one_line_errors(uri: str, message: str) -> None:
    with pytest.raises(BadParameter, match=message) as err:
        sessions_store(uri, region="us-east-1")
    assert "\n" not in str(err.value)


def test_object_store_uris_as_teleport_takes_them() -> None:
    assert sessions_store(None) is None and sessions_store("file:///srv/x") is None
    s3 = sessions_store("s3://bucket/a/b?endpoint=http://127.0.0.1:9&region=eu-west-1"
                        "&sse_kms_key=key-1&acl=bucket-owner-full-control", region="us-east-1")
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.uri) == ("bucket", "a/b", "s3://bucket/a/b")
    assert s3.client.meta.region_name == "eu-west-1"  # the URI's region wins
    assert s3.extra == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "key-1",
                        "ACL": "bucket-owner-full-control"}
    plain = sessions_store("s3://bucket?disablesse=true", region="us-east-1")
    assert isinstance(plain, S3Store) and plain.extra == {} and plain.prefix == ""
    default = sessions_store("s3://bucket/x", region="us-east-1")
    assert isinstance(default, S3Store) and default.extra == {"ServerSideEncryption": "AES256"}
    assert isinstance(sessions_store("gs://bucket/records"), GcsStore)
