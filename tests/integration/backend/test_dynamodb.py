"""The DynamoDB backend against moto's server: the conformance suite, plus what only a table
shared by several auth servers can get wrong (each other's writes and expiries, resuming from
the change log, a server that restarts empty, settings and endpoints that cannot work)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from teleport.backend.base import Event, EventType, Item, Watcher, range_end
from teleport.backend.conformance import CHECKS, EXPIRY_EVENT_CHECKS, next_event, run_check
from teleport.backend.dynamodb import DynamoBackend, DynamoSettings
from teleport.config import parse_file_config
from teleport.errors import BadParameter, ConnectionProblem, LimitExceeded
from teleport.service.storage import open_backend
from teleport.utils.clock import FakeClock
from tests.cloud_servers import MotoServer
from tests.ports import refused_port

BIN = Path(sys.executable).parent

_names = itertools.count()


pytestmark = pytest.mark.usefixtures("aws_credentials")


@pytest.fixture
def server(moto_server: MotoServer) -> MotoServer:
    return moto_server


@pytest.fixture
def settings(server: MotoServer) -> DynamoSettings:
    """A fresh table per test, so tests never see each other's keys."""
    return DynamoSettings(table_name=f"state-{time.time_ns()}-{next(_names)}",
                          endpoint=server.url)


@pytest.mark.parametrize("check", [*CHECKS, *EXPIRY_EVENT_CHECKS])
async def test_conformance(check: str, settings: DynamoSettings) -> None:
    await run_check(check, lambda clock: DynamoBackend.open(settings, clock))


async def _events(events: AsyncIterator[Event], count: int) -> list[tuple[EventType, bytes, bytes]]:
    got = [await next_event(events) for _ in range(count)]
    return [(e.type, e.item.key, e.item.value) for e in got]


async def _watching(backend: DynamoBackend, prefix: bytes) -> tuple[Watcher, AsyncIterator[Event]]:
    watcher = await backend.watch([prefix])
    events = aiter(watcher)
    assert (await next_event(events)).type is EventType.INIT
    return watcher, events


async def test_the_table_is_made_with_its_stream_and_ttl(
        server: MotoServer, settings: DynamoSettings) -> None:
    async with await DynamoBackend.open(settings):
        pass
    client = server.client("dynamodb")
    table = client.describe_table(TableName=settings.table_name)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["StreamSpecification"] == {"StreamEnabled": True,
                                            "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [
        ("partition", "HASH"), ("key", "RANGE")]
    ttl = client.describe_time_to_live(TableName=settings.table_name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}
    backups = client.describe_continuous_backups(TableName=settings.table_name)
    pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert pitr["PointInTimeRecoveryStatus"] == "DISABLED"


async def test_provisioned_billing_and_continuous_backups(
        server: MotoServer, settings: DynamoSettings) -> None:
    settings = dataclasses.replace(settings, billing_mode="provisioned", read_capacity_units=3,
                                   write_capacity_units=4, continuous_backups=True)
    async with await DynamoBackend.open(settings) as backend:
        await backend.put(Item(b"/a", b"1"))
    client = server.client("dynamodb")
    table = client.describe_table(TableName=settings.table_name)["Table"]
    throughput = table["ProvisionedThroughput"]
    assert (throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"]) == (3, 4)
    backups = client.describe_continuous_backups(TableName=settings.table_name)
    pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"


def _create_table(server: MotoServer, name: str, key: str, stream: bool) -> None:
    spec: dict[str, Any] = {}
    if stream:
        spec["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}
    server.client("dynamodb").create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "partition", "AttributeType": "S"},
                              {"AttributeName": key, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "partition", "KeyType": "HASH"},
                   {"AttributeName": key, "KeyType": "RANGE"}], **spec)


async def test_an_existing_table_without_a_stream_gets_one(
        server: MotoServer, settings: DynamoSettings) -> None:
    _create_table(server, settings.table_name, "key", stream=False)
    async with await DynamoBackend.open(settings) as backend:
        watcher, events = await _watching(backend, b"/")
        await backend.put(Item(b"/a", b"1"))
        assert await _events(events, 1) == [(EventType.PUT, b"/a", b"1")]
        await watcher.close()


@pytest.mark.parametrize("key, stream, expected", [
    ("id", False, "is not a teleport backend table"),
    ("key", True, "streams KEYS_ONLY; teleport needs NEW_AND_OLD_IMAGES"),
])
async def test_a_table_that_does_not_fit_is_refused_in_one_line(
        server: MotoServer, settings: DynamoSettings, key: str, stream: bool,
        expected: str) -> None:
    _create_table(server, settings.table_name, key, stream)
    with pytest.raises(BadParameter, match=expected) as caught:
        await DynamoBackend.open(settings)
    assert repr(settings.table_name) in str(caught.value) and "\n" not in str(caught.value)


async def test_auth_servers_starting_together_make_one_table_and_one_history(
        settings: DynamoSettings) -> None:
    backends = await asyncio.gather(*(DynamoBackend.open(settings) for _ in range(3)))
    try:
        assert len({b.store_id for b in backends}) == 1
        await backends[0].create(Item(b"/once", b"1"))
        assert (await backends[2].get(b"/once")).value == b"1"
    finally:
        for backend in backends:
            await backend.close()


async def test_two_backends_on_one_table_watch_each_other(settings: DynamoSettings) -> None:
    """What lets several auth servers share a table: a write through one reaches the other."""
    async with await DynamoBackend.open(settings) as one, \
            await DynamoBackend.open(settings) as two:
        assert one.store_id == two.store_id
        watcher, events = await _watching(two, b"/roles/")
        stored = await one.put(Item(b"/roles/admin", b"v1"))
        await one.delete(b"/roles/admin")
        put = await next_event(events)
        assert (put.type, put.item) == (EventType.PUT, stored)
        assert (await next_event(events)).type is EventType.DELETE
        await watcher.close()
        assert await two.get_range(b"/", range_end(b"/")) == []


async def test_writers_on_two_backends_take_turns_and_every_watcher_sees_one_order(
        settings: DynamoSettings) -> None:
    """Each write finds the revision counter moved by the other auth server: it is read and
    checked again, no update is lost, and both watchers see the same events in revision order.

    Turns, not a race: moto runs requests in parallel threads and undoes a cancelled
    transaction by putting back a copy of the whole table, which can drop a transaction
    committed meanwhile. It also stops showing new stream records to the iterators it had
    handed out, which the feed notices and repairs from the change log."""
    async with await DynamoBackend.open(settings) as one, \
            await DynamoBackend.open(settings) as two:
        await one.put(Item(b"/c/n", b"0"))
        streams = [await _watching(b, b"/c/") for b in (one, two)]
        for n in range(1, 13):
            backend = (one, two)[n % 2]
            current = await backend.get(b"/c/n")
            await backend.compare_and_swap(current, Item(b"/c/n", b"%d" % (int(current.value) + 1)))
        assert (await one.get(b"/c/n")).value == b"12"
        seen = []
        for watcher, events in streams:
            got = [await next_event(events) for _ in range(12)]
            assert [e.item.value for e in got] == [b"%d" % n for n in range(1, 13)]
            revisions = [int(e.item.revision) for e in got]
            assert revisions == sorted(set(revisions))
            seen.append(revisions)
            await watcher.close()
        assert seen[0] == seen[1]


async def test_resume_is_served_by_any_backend_on_the_table_until_pruned(
        server: MotoServer, settings: DynamoSettings) -> None:
    """A revision from one auth server resumes at another, from the change log; once the log
    rows are gone (TTL), the watch is refused and the reader re-reads."""
    async with await DynamoBackend.open(settings) as first, \
            await DynamoBackend.open(settings) as second:
        seen = await first.put(Item(b"/a/1", b"seen"))
        await first.put(Item(b"/b/1", b"another prefix"))
        await first.put(Item(b"/a/2", b"missed"))
        await first.delete(b"/a/1")
        async with await second.watch([b"/a/"], since=seen.revision) as watcher:
            events = aiter(watcher)
            assert await _events(events, 3) == [
                (EventType.INIT, b"", b""), (EventType.PUT, b"/a/2", b"missed"),
                (EventType.DELETE, b"/a/1", b"")]
            await first.put(Item(b"/a/3", b"live"))
            assert await _events(events, 1) == [(EventType.PUT, b"/a/3", b"live")]
        client = server.client("dynamodb")
        logged = client.query(
            TableName=settings.table_name, KeyConditionExpression="#p = :p",
            ExpressionAttributeNames={"#p": "partition"},
            ExpressionAttributeValues={":p": {"S": "teleport.log"}})["Items"]
        client.delete_item(TableName=settings.table_name,
                           Key={"partition": logged[1]["partition"], "key": logged[1]["key"]})
        with pytest.raises(LimitExceeded, match="no longer in"):
            await second.watch([b"/a/"], since=seen.revision)


async def test_expiry_written_by_another_auth_server_is_announced(
        settings: DynamoSettings) -> None:
    """The auth server that wrote an expiring item is gone: another one announces it."""
    clock = FakeClock()
    async with await DynamoBackend.open(settings, clock) as watching:
        watcher, events = await _watching(watching, b"/e/")
        async with await DynamoBackend.open(settings, clock) as writing:
            await writing.put(Item(b"/e/session", b"s", clock.now() + timedelta(seconds=30)))
            assert (await next_event(events)).type is EventType.PUT
        clock.advance(timedelta(seconds=30))
        assert await _events(events, 1) == [(EventType.DELETE, b"/e/session", b"")]
        await watcher.close()


async def test_expiry_of_items_written_before_open_is_announced(settings: DynamoSettings) -> None:
    clock = FakeClock()
    async with await DynamoBackend.open(settings, clock) as writing:
        await writing.put(Item(b"/e/node", b"n", clock.now() + timedelta(seconds=30)))
        await writing.put(Item(b"/e/forever", b"f"))
    async with await DynamoBackend.open(settings, clock) as later:
        watcher, events = await _watching(later, b"/e/")
        clock.advance(timedelta(seconds=30))
        assert await _events(events, 1) == [(EventType.DELETE, b"/e/node", b"")]
        await watcher.close()


async def test_a_keep_alive_through_another_auth_server_is_honoured(
        settings: DynamoSettings) -> None:
    """keep_alive makes no event, so the watching auth server still expects the old expiry:
    it reads the item before deleting it, and waits for the new expiry."""
    clock = FakeClock()
    async with await DynamoBackend.open(settings, clock) as watching, \
            await DynamoBackend.open(settings, clock) as writing:
        watcher, events = await _watching(watching, b"/k/")
        await writing.put(Item(b"/k/lease", b"l", clock.now() + timedelta(seconds=10)))
        assert (await next_event(events)).type is EventType.PUT
        await writing.keep_alive(b"/k/lease", clock.now() + timedelta(seconds=60))
        await writing.close()
        clock.advance(timedelta(seconds=10))
        await asyncio.sleep(2.5)  # two sweeps: the old expiry is due, the item is read
        assert (await watching.get(b"/k/lease")).value == b"l"
        clock.advance(timedelta(seconds=50))
        assert await _events(events, 1) == [(EventType.DELETE, b"/k/lease", b"")]
        await watcher.close()


async def test_a_server_that_restarts_empty_ends_watchers_and_the_table_is_made_again(
        server: MotoServer, settings: DynamoSettings) -> None:
    """moto keeps nothing across a restart, as if the table were deleted: watchers end with
    LimitExceeded (they must re-read), calls name the missing table in one line, and once the
    table is made again (by an auth server starting) the running backend follows the new one."""
    async with await DynamoBackend.open(settings) as backend:
        watcher, events = await _watching(backend, b"/r/")
        old_store = backend.store_id
        await backend.put(Item(b"/r/a", b"before"))
        assert await _events(events, 1) == [(EventType.PUT, b"/r/a", b"before")]
        await asyncio.to_thread(server.restart)
        with pytest.raises(LimitExceeded, match="the table is gone"):
            await asyncio.wait_for(anext(events), 30)
        with pytest.raises(ConnectionProblem) as caught:
            await backend.get(b"/r/a")
        message = str(caught.value)
        assert message == f"DynamoDB table {settings.table_name!r} does not exist"
        async with await DynamoBackend.open(settings) as again:
            assert again.store_id != old_store
            deadline = time.monotonic() + 20
            while backend.store_id != again.store_id:
                assert time.monotonic() < deadline, "the backend did not follow the new table"
                await asyncio.sleep(0.2)
            watcher, events = await _watching(backend, b"/r/")
            await again.put(Item(b"/r/b", b"after"))
            await backend.put(Item(b"/r/c", b"own"))
            assert await _events(events, 2) == [(EventType.PUT, b"/r/b", b"after"),
                                                (EventType.PUT, b"/r/c", b"own")]
            assert [i.key for i in await backend.get_range(b"/r/", range_end(b"/r/"))] == [
                b"/r/b", b"/r/c"]
            await watcher.close()


async def test_unreachable_endpoint_is_one_line_naming_the_table() -> None:
    with refused_port() as port:
        started = time.monotonic()
        with pytest.raises(ConnectionProblem) as caught:
            await DynamoBackend.open(DynamoSettings("teleport-state",
                                                    endpoint=f"http://127.0.0.1:{port}"))
    assert time.monotonic() - started < 15
    message = str(caught.value)
    assert "DynamoDB table 'teleport-state'" in message and f"127.0.0.1:{port}" in message
    assert "\n" not in message


@pytest.mark.parametrize("changes, expected", [
    ({"table_name": "ab"}, "table_name 'ab' must be 3 to 255"),
    ({"table_name": "a/b"}, "table_name 'a/b' must be 3 to 255"),
    ({"billing_mode": "free"}, "billing_mode 'free' must be pay_per_request or provisioned"),
    ({"read_capacity_units": 0}, "read_capacity_units must be at least 1"),
    ({"endpoint": "127.0.0.1:8000"}, "endpoint '127.0.0.1:8000' must be an http:// or https://"),
    ({"endpoint": None, "region": None}, "no AWS region"),
])
async def test_bad_settings_are_one_line_before_connecting(
        monkeypatch: pytest.MonkeyPatch, settings: DynamoSettings, changes: dict[str, Any],
        expected: str) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(BadParameter) as caught:
        await DynamoBackend.open(dataclasses.replace(settings, **changes))
    assert expected in str(caught.value) and "\n" not in str(caught.value)


async def test_what_dynamodb_cannot_store_is_refused_before_writing(
        settings: DynamoSettings) -> None:
    async with await DynamoBackend.open(settings) as backend:
        with pytest.raises(BadParameter, match="DynamoDB stores at most"):
            await backend.put(Item(b"/big", b"x" * 400_000))
        with pytest.raises(BadParameter, match="longer than DynamoDB allows"):
            await backend.put(Item(b"/" + b"k" * 1100, b"v"))
        assert await backend.get_range(b"/", range_end(b"/")) == []
        big = await backend.put(Item(b"/big", b"x" * 300_000))
        assert (await backend.get(b"/big")).value == big.value


async def test_storage_config_opens_dynamodb(server: MotoServer, settings: DynamoSettings,
                                             tmp_path: Path) -> None:
    config = parse_file_config(
        "teleport:\n  storage:\n    type: dynamodb\n"
        f"    table_name: {settings.table_name}\n    endpoint: {server.url}\n"
        "    region: eu-west-1\n    continuous_backups: yes\n", "teleport.yaml")
    async with await open_backend(config.teleport.storage, tmp_path, FakeClock()) as backend:
        assert isinstance(backend, DynamoBackend)
        await backend.put(Item(b"/a", b"1"))
        assert backend.table.db.meta.region_name == "eu-west-1"


def test_teleport_start_refuses_firestore_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "teleport.yaml"
    config.write_text(f"teleport:\n  data_dir: {tmp_path / 'data'}\n  storage:\n"
                      "    type: firestore\n    project_id: p\n"
                      "auth_service:\n  listen_addr: 127.0.0.1:0\n"
                      "ssh_service:\n  enabled: no\nproxy_service:\n  enabled: no\n")
    out = subprocess.run([str(BIN / "teleport"), "start", "-c", str(config)], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Firestore is not supported yet" in lines[0], out.stderr
