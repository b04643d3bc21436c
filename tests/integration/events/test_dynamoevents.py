"""The DynamoDB audit log against moto's server: the conformance checks every searchable log
passes, plus what only a shared networked table can get wrong (making it, racing to make it,
an outage, bad URIs)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from teleport.errors import BadParameter, ConnectionProblem
from teleport.events import emitter as ev
from teleport.events.dynamoevents import EXPIRES, INDEX, RETENTION, DynamoEvents, parse_uri
from teleport.utils.clock import FakeClock
from tests.audit_conformance import START, AuditLogConformance, OpenLog, q
from tests.cloud_servers import MotoServer

_names = itertools.count()


pytestmark = pytest.mark.usefixtures("aws_credentials")


@pytest.fixture
def server(moto_server: MotoServer) -> MotoServer:
    return moto_server


@pytest.fixture
def table() -> str:
    return f"audit-{time.time_ns()}-{next(_names)}"


@pytest.fixture
async def opened() -> AsyncIterator[list[DynamoEvents]]:
    logs: list[DynamoEvents] = []
    yield logs
    for log in logs:
        await log.close()


def uri(server: MotoServer, table: str) -> str:
    return f"dynamodb://{table}?endpoint={server.url}"


class TestDynamoEvents(AuditLogConformance):
    @pytest.fixture
    def open_log(self, server: MotoServer, table: str, opened: list[DynamoEvents]) -> OpenLog:
        async def open_() -> DynamoEvents:
            log = await DynamoEvents.open(uri(server, table))
            opened.append(log)
            return log
        return open_


async def test_the_table_has_the_day_index_and_ttl(server: MotoServer, table: str) -> None:
    async with await DynamoEvents.open(uri(server, table)) as log:
        event = ev.make_event(ev.EXEC, FakeClock(START), user="joe")
        await log.emit(event)
    client = server.client("dynamodb")
    described = client.describe_table(TableName=table)["Table"]
    assert described["TableStatus"] == "ACTIVE"
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    index = {i["IndexName"]: i for i in described["GlobalSecondaryIndexes"]}[INDEX]
    assert [k["KeyType"] for k in index["KeySchema"]] == ["HASH", "RANGE"]
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": EXPIRES}
    items = client.scan(TableName=table)["Items"]
    assert len(items) == 1
    day = items[0][index["KeySchema"][0]["AttributeName"]]["S"]
    assert day == START.date().isoformat()
    assert int(items[0][EXPIRES]["N"]) == int((START + RETENTION).timestamp())


async def test_reopening_finds_the_events_already_there(server: MotoServer, table: str) -> None:
    event = ev.make_event(ev.EXEC, FakeClock(START), user="joe")
    async with await DynamoEvents.open(uri(server, table)) as log:
        await log.emit(event)
    async with await DynamoEvents.open(uri(server, table)) as log:
        assert (await log.search(q())).events == [event]
        later = ev.make_event(ev.EXEC, FakeClock(START), user="ann")
        await log.emit(later)
        assert (await log.search(q())).events == [event, later]


async def test_auth_servers_starting_at_once_share_one_new_table(
        server: MotoServer, table: str, opened: list[DynamoEvents]) -> None:
    logs = await asyncio.gather(*(DynamoEvents.open(uri(server, table)) for _ in range(4)))
    opened.extend(logs)
    events = []
    for i, log in enumerate(logs):
        event = ev.make_event(ev.EXEC, FakeClock(START), user="joe", command=str(i))
        await log.emit(event)
        events.append(event)
    for log in logs:
        assert (await log.search(q())).events == events


async def test_losing_the_race_to_make_the_table_waits_for_it(
        server: MotoServer, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other auth server's create lands between this one's describe and create."""
    client = server.client("dynamodb")
    real = DynamoEvents._call

    async def racing(self: DynamoEvents, operation: str, **params: Any) -> Any:
        if operation == "create_table":
            client.create_table(**params)  # the other server wins
        return await real(self, operation, **params)

    monkeypatch.setattr(DynamoEvents, "_call", racing)
    async with await DynamoEvents.open(uri(server, table)) as log:
        await log.emit(ev.make_event(ev.EXEC, FakeClock(START), user="joe"))
        assert len((await log.search(q())).events) == 1


async def test_a_table_of_another_shape_is_refused(server: MotoServer, table: str) -> None:
    server.client("dynamodb").create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "HashKey", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "HashKey", "KeyType": "HASH"}])
    with pytest.raises(BadParameter, match=f"{table}.*not an audit events table"):
        await DynamoEvents.open(uri(server, table))


async def test_an_unreachable_store_fails_an_emit_quickly_in_one_line(
        tmp_path: Path, table: str) -> None:
    with MotoServer(tmp_path / "moto.log") as own:
        log = await DynamoEvents.open(uri(own, table))
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionProblem) as raised:
            await log.emit(ev.make_event(ev.EXEC, FakeClock(START), user="joe"))
        assert time.monotonic() - started < 5
        message = str(raised.value)
        assert "\n" not in message and repr(table) in message
        with pytest.raises(ConnectionProblem, match=table):
            await log.search(q())
    finally:
        await log.close()


async def test_opening_an_unreachable_store_fails_in_one_line(table: str) -> None:
    with pytest.raises(ConnectionProblem, match=f"DynamoDB table '{table}'"):
        await DynamoEvents.open(f"dynamodb://{table}?endpoint=http://127.0.0.1:9&region=x-1")


@pytest.mark.parametrize("bad, why", [
    ("dynamodb://", "use dynamodb://<table>"),
    ("dynamodb://ab", "use dynamodb://<table>"),
    ("dynamodb://events/sub", "use dynamodb://<table>"),
    ("dynamodb://user@events", "use dynamodb://<table>"),
    ("dynamodb://events?bucket=x", "unknown parameter 'bucket'"),
    ("dynamodb://events?region=a&region=b", "given twice"),
    ("dynamodb://events?use_fips_endpoint=yes", "true or false"),
    ("dynamodb://events?endpoint=127.0.0.1:8000", "http:// or https://"),
    ("dynamodb://events?endpoint=ftp://host", "http:// or https://"),
    ("dynamodb://events?region=us%20east", "region"),
    ("s3://events", "not a dynamodb:// URI"),
])
async def test_bad_uris_are_refused_in_one_line(bad: str, why: str) -> None:
    with pytest.raises(BadParameter) as raised:
        await DynamoEvents.open(bad)
    message = str(raised.value)
    assert why in message and "\n" not in message
    if "region" not in why:
        assert repr(bad) in message


def test_uri_forms() -> None:
    assert parse_uri("dynamodb://events") == ("events", None, None, False)
    assert parse_uri("dynamodb://events", "eu-west-1") == ("events", "eu-west-1", None, False)
    assert parse_uri("dynamodb://events/?region=us-west-2&use_fips_endpoint=TRUE",
                     "eu-west-1") == ("events", "us-west-2", None, True)
    assert parse_uri("dynamodb://Audit.Events_1?endpoint=http://127.0.0.1:4566") == \
        ("Audit.Events_1", None, "http://127.0.0.1:4566", False)


async def test_no_region_anywhere_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(BadParameter, match="no AWS region"):
        await DynamoEvents.open("dynamodb://events")


async def test_the_auth_servers_region_is_used_unless_the_uri_names_one(
        server: MotoServer, table: str, opened: list[DynamoEvents]) -> None:
    one = await DynamoEvents.open(uri(server, table), region="eu-west-1")
    two = await DynamoEvents.open(uri(server, table) + "&region=us-west-2", region="eu-west-1")
    opened += [one, two]
    assert one.client.meta.region_name == "eu-west-1"
    assert two.client.meta.region_name == "us-west-2"


async def test_a_page_fills_across_many_empty_days(server: MotoServer, table: str,
                                                   opened: list[DynamoEvents]) -> None:
    log = await DynamoEvents.open(uri(server, table))
    opened.append(log)
    written = []
    for days in (0, 9, 20):
        event = ev.make_event(ev.EXEC, FakeClock(START + timedelta(days=days)), user="joe")
        await log.emit(event)
        written.append(event)
    page = await log.search(q(until=START + timedelta(days=30), limit=2))
    assert page.events == written[:2] and page.next_key
    rest = await log.search(q(until=START + timedelta(days=30), limit=2,
                              start_key=page.next_key))
    assert rest.events == written[2:] and rest.next_key == ""


def test_importing_the_module_does_not_import_boto3() -> None:
    import subprocess
    import sys
    code = "import sys, teleport.events.dynamoevents; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
