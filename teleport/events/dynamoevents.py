"""The `dynamodb://<table>` audit log: one item per event in a DynamoDB table, searched by day.

Each item holds the event's JSON as one string, so search hands back exactly what was emitted,
whatever its fields. A global secondary index partitions the items by the event's UTC day and
sorts them by a key of the event's time, an emit stamp and the item's id: a search queries the
days of its range one after another (a page fills across days), and the events of one instant
keep the order this process emitted them in. The page cursor is the last returned sort key, so
it stays valid while new events arrive. DynamoDB's TTL deletes each item a year after its event
(the manual's retention).

The table is made on first open (on-demand capacity); when two auth servers start at once, the
one that loses the race waits for the other's table. Every AWS call runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from teleport.errors import AlreadyExists, BadParameter, CompareFailed, ConnectionProblem, NotFound
from teleport.events.search import EventPage, EventQuery, event_time
from teleport.utils import aws
from teleport.utils.clock import Clock, RealClock

log = logging.getLogger("teleport.audit")

SCHEME = "dynamodb"
#: The manual's retention of audit events; DynamoDB's TTL deletes items after it.
RETENTION = timedelta(days=365)
INDEX = "timesearch"
# Attribute names of an item.
KEY = "EventID"
DAY = "CreatedAtDate"
SORT = "CreatedAtSort"
EVENT = "Event"
TYPE = "EventType"
USER = "EventUser"
EXPIRES = "Expires"
#: How long open() waits for a new table (and its index) to become ACTIVE.
ACTIVE_TIMEOUT = 300.0
_PARAMS = ("region", "endpoint", "use_fips_endpoint")
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_SORT = re.compile(r"^(\d{4}-\d{2}-\d{2})T\d{2}:\d{2}:\d{2}\.\d{6}Z#\d{20}#[0-9a-f]{32}$")
#: Items one query reads at most; filters run after DynamoDB counts them, so not the page size.
_MIN_READ, _MAX_READ = 100, 1000
#: DynamoDB's limit on the values of one IN filter; more types are filtered here only.
_MAX_IN = 100


def parse_uri(uri: str, region: str | None = None) -> tuple[str, str | None, str | None, bool]:
    """Return (table, region, endpoint, use_fips_endpoint) from a `dynamodb://` URI.

    The URI's region wins over region (the auth server's), which wins over the AWS chain's.
    """
    def bad(why: str) -> BadParameter:
        return BadParameter(f"audit_events_uri {uri!r}: {why}")

    parts = urlsplit(uri)
    if parts.scheme != SCHEME:
        raise bad("not a dynamodb:// URI")
    if not _TABLE.match(parts.netloc) or parts.path not in ("", "/") or parts.fragment:
        raise bad("use dynamodb://<table> (3-255 letters, digits, '_', '-', '.')")
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise bad("the query string is malformed") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in _PARAMS:
            raise bad(f"unknown parameter {name!r} (known: {', '.join(_PARAMS)})")
        if name in params:
            raise bad(f"parameter {name!r} is given twice")
        params[name] = value
    fips_text = params.get("use_fips_endpoint", "false").lower()
    if fips_text not in ("true", "false"):
        raise bad("use_fips_endpoint must be true or false")
    endpoint = params.get("endpoint") or None
    if endpoint is not None:
        target = urlsplit(endpoint)
        if target.scheme not in ("http", "https") or not target.hostname:
            raise bad("endpoint must be an http:// or https:// URL")
    return parts.netloc, params.get("region") or region or None, endpoint, fips_text == "true"


class DynamoEvents:
    """An audit log (emit, search, close) in one DynamoDB table."""

    def __init__(self, client: Any, table: str, clock: Clock | None = None) -> None:
        self.client = client
        self.table = table
        self.clock = clock or RealClock()
        self._what = f"DynamoDB table {table!r}"
        self._last_stamp = 0

    @classmethod
    async def open(cls, uri: str, *, region: str | None = None) -> Self:
        """Connect to the table uri names, making it (and its index and TTL) if missing."""
        table, region, endpoint, fips = parse_uri(uri, region)
        client = await asyncio.to_thread(aws.client, "dynamodb", region=region,
                                         endpoint=endpoint, fips=fips)
        events = cls(client, table)
        try:
            await events._ensure_table()
        except BaseException:
            await events.close()
            raise
        return events

    async def emit(self, event: Mapping[str, Any]) -> None:
        """Write one event; it is stored when this returns."""
        item = self.item(event)
        await asyncio.to_thread(self._put, item)

    async def search(self, query: EventQuery) -> EventPage:
        """Return one page of matching events, querying the days of the range in order."""
        after = _decode_cursor(query.start_key)
        return await asyncio.to_thread(self._search, query, after)

    async def close(self) -> None:
        self.client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # Writing.

    def item(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Return the table item of an event as emit() writes it (also for bulk loads)."""
        fields = dict(event)
        when = (event_time(fields) or self.clock.now()).astimezone(timezone.utc)
        # Taken here, on the event loop, so the stamps follow the order emit() was called in.
        self._last_stamp = max(self._last_stamp + 1, time.time_ns())
        key = uuid.uuid4().hex
        item: dict[str, Any] = {
            KEY: {"S": key},
            DAY: {"S": when.date().isoformat()},
            SORT: {"S": f"{_timestamp(when)}#{self._last_stamp:020d}#{key}"},
            EVENT: {"S": json.dumps(fields, separators=(",", ":"), default=str)},
            EXPIRES: {"N": str(int((when + RETENTION).timestamp()))},
        }
        for name, field in ((TYPE, "event"), (USER, "user")):
            value = fields.get(field)
            if isinstance(value, str) and value:
                item[name] = {"S": value}
        return item

    def _put(self, item: dict[str, Any]) -> None:
        try:
            with aws.errors(self._what):
                self.client.put_item(TableName=self.table, Item=item,
                                     ConditionExpression="attribute_not_exists(#k)",
                                     ExpressionAttributeNames={"#k": KEY})
        except CompareFailed:
            # Each emit has a fresh key, so the item is there only if botocore retried a write
            # whose first try landed although its answer was lost: the event is stored once.
            pass

    # Searching.

    def _search(self, query: EventQuery, after: str | None) -> EventPage:
        found: list[dict[str, Any]] = []
        with aws.errors(self._what):
            for item in self._items(query, after):
                try:
                    event = json.loads(item.get(EVENT, {}).get("S", ""))
                except ValueError:
                    log.warning("skipping a corrupt item %s in %s", item.get(KEY), self._what)
                    continue
                if isinstance(event, dict) and query.matches(event):
                    found.append(event)
                    if len(found) == query.limit:
                        return EventPage(found, _encode_cursor(item[SORT]["S"]))
        return EventPage(found, "")

    def _items(self, query: EventQuery, after: str | None) -> Iterator[dict[str, Any]]:
        """Yield the items of query's range in its order, from just past after (a sort key)."""
        since = query.since.astimezone(timezone.utc)
        until = query.until.astimezone(timezone.utc)
        low, high = _timestamp(since), _timestamp(until) + "~"  # '~' sorts after the stamp
        forward = not query.newest_first
        days = _days(since.date(), until.date(), forward)
        names = {"#d": DAY, "#s": SORT}
        values: dict[str, Any] = {}
        filters = []
        if query.types and len(query.types) <= _MAX_IN:
            names["#t"] = TYPE
            marks = []
            for i, kind in enumerate(sorted(query.types)):
                values[f":t{i}"] = {"S": kind}
                marks.append(f":t{i}")
            filters.append(f"#t IN ({', '.join(marks)})")
        if query.user:
            names["#u"] = USER
            values[":u"] = {"S": query.user}
            filters.append("#u = :u")
        for day in days:
            day_text = day.isoformat()
            if after is not None and (day_text < after[:10] if forward else day_text > after[:10]):
                continue
            cond_values = {":d": {"S": day_text}}
            if after is not None and after[:10] == day_text:
                condition = f"#d = :d AND #s {'>' if forward else '<'} :a"
                cond_values[":a"] = {"S": after}
            else:
                condition = "#d = :d AND #s BETWEEN :lo AND :hi"
                cond_values.update({":lo": {"S": low}, ":hi": {"S": high}})
            params: dict[str, Any] = {
                "TableName": self.table, "IndexName": INDEX, "ScanIndexForward": forward,
                "KeyConditionExpression": condition, "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": {**values, **cond_values},
                "Limit": min(_MAX_READ, max(_MIN_READ, query.limit)),
            }
            if filters:
                params["FilterExpression"] = " AND ".join(filters)
            while True:
                answer = self.client.query(**params)
                for item in answer.get("Items", []):
                    sort = item[SORT]["S"]
                    if sort > high if forward else sort < low:
                        break  # past the range's end: only a cursor's query reaches here
                    yield item
                else:
                    if (last := answer.get("LastEvaluatedKey")):
                        params["ExclusiveStartKey"] = last
                        continue
                break

    # Making the table.

    async def _ensure_table(self) -> None:
        try:
            await self._call("describe_table", TableName=self.table)
        except NotFound:
            log.info("creating DynamoDB audit table %r", self.table)
            try:
                await self._call("create_table", **_table_spec(self.table))
            except AlreadyExists:
                pass  # another auth server, started at the same time, made it: wait for it
        await self._wait_active()
        await self._ensure_ttl()

    async def _wait_active(self) -> None:
        deadline = time.monotonic() + ACTIVE_TIMEOUT
        delay = 0.2
        while True:
            table = (await self._call("describe_table", TableName=self.table))["Table"]
            status = table.get("TableStatus")
            indexes = {index.get("IndexName"): index
                       for index in table.get("GlobalSecondaryIndexes", [])}
            index = indexes.get(INDEX)
            if status in ("ACTIVE", "UPDATING"):
                if index is None or _key_schema(index) != [(DAY, "HASH"), (SORT, "RANGE")]:
                    raise BadParameter(f"{self._what} has no index {INDEX!r} on ({DAY}, {SORT}); "
                                       "it is not an audit events table")
                if index.get("IndexStatus", "ACTIVE") in ("ACTIVE", "UPDATING"):
                    return
            elif status != "CREATING":
                raise ConnectionProblem(f"{self._what} is {status}")
            if time.monotonic() > deadline:
                raise ConnectionProblem(f"{self._what} is not ACTIVE after {ACTIVE_TIMEOUT:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _ensure_ttl(self) -> None:
        await aws.ensure_ttl(self._call, self.table, EXPIRES, self._what,
                             f"audit events are not deleted after {RETENTION.days} days")

    async def _call(self, operation: str, **params: Any) -> Any:
        """Run one client call in a thread, raising our error kinds."""
        with aws.errors(self._what):
            return await asyncio.to_thread(getattr(self.client, operation), **params)


def _table_spec(table: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": name, "AttributeType": "S"}
                                 for name in (KEY, DAY, SORT)],
        "KeySchema": [{"AttributeName": KEY, "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [{
            "IndexName": INDEX,
            "KeySchema": [{"AttributeName": DAY, "KeyType": "HASH"},
                          {"AttributeName": SORT, "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
    }


def _key_schema(index: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(key.get("AttributeName"), key.get("KeyType")) for key in index.get("KeySchema", [])]


def _timestamp(when: datetime) -> str:
    """Return when (UTC) at fixed width, so that text order is time order."""
    return when.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _days(first: date, last: date, forward: bool) -> Iterator[date]:
    day, step = (first, timedelta(days=1)) if forward else (last, timedelta(days=-1))
    while first <= day <= last:
        yield day
        try:
            day += step
        except OverflowError:
            return


def _encode_cursor(sort: str) -> str:
    return base64.urlsafe_b64encode(sort.encode()).decode().rstrip("=")


def _decode_cursor(key: str) -> str | None:
    """Return the sort key a cursor holds, None for none; BadParameter for anything else."""
    if not key:
        return None
    try:
        sort = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode()
        m = _SORT.match(sort)
        if m is None:
            raise ValueError(sort)
        date.fromisoformat(m.group(1))
    except (ValueError, binascii.Error):
        raise BadParameter(f"invalid start key {key[:64]!r}") from None
    return sort
