"""The DynamoDB backend's settings and its table: making it, and calls that raise our errors.

boto3 is blocking and imported lazily (teleport.utils.aws): every call here runs in a worker
thread, and a table that vanishes while in use is a ConnectionProblem (TableMissing), never a
NotFound a caller could take for a missing item.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from teleport.backend.dynamodb_schema import (
    COUNTER_KEY,
    EXPIRES,
    KEY,
    META,
    PARTITION,
    REVISION,
    SERIAL,
    STORE,
    row_key,
)
from teleport.errors import AlreadyExists, BadParameter, CompareFailed, ConnectionProblem
from teleport.metrics import BACKEND_LATENCY
from teleport.utils import aws

log = logging.getLogger("teleport.backend.dynamodb")

#: How long open() waits for a new table (or one whose stream is being turned on) to be ACTIVE.
ACTIVE_TIMEOUT = 300.0
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_NEEDS_NEW_IMAGE = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")

BillingMode = Literal["pay_per_request", "provisioned"]


@dataclass(frozen=True)
class DynamoSettings:
    """The manual's `storage` keys for `type: dynamodb`."""

    table_name: str
    #: None: the AWS chain's region (AWS_REGION, the shared config).
    region: str | None = None
    #: A DynamoDB-compatible server (its streams API at the same address); None: AWS.
    endpoint: str | None = None
    #: Turn on point-in-time recovery for the table.
    continuous_backups: bool = False
    #: How a table this backend creates is billed; an existing table is left as it is.
    billing_mode: BillingMode = "pay_per_request"
    read_capacity_units: int = 10
    write_capacity_units: int = 10

    def check(self) -> None:
        """Refuse settings that cannot work, naming the setting, before anything connects."""
        if not _TABLE_NAME.fullmatch(self.table_name):
            raise BadParameter(f"DynamoDB table_name {self.table_name!r} must be 3 to 255 "
                               "letters, digits, '_', '-' or '.'")
        if self.billing_mode not in ("pay_per_request", "provisioned"):
            raise BadParameter(f"DynamoDB billing_mode {self.billing_mode!r} must be "
                               "pay_per_request or provisioned")
        for name in ("read_capacity_units", "write_capacity_units"):
            if getattr(self, name) < 1:
                raise BadParameter(f"DynamoDB {name} must be at least 1")


class TableMissing(ConnectionProblem):
    """The table is not there (deleted, or a test server restarted empty)."""


class Cancelled(Exception):
    """A transaction was cancelled; codes holds DynamoDB's reason for each of its actions."""

    def __init__(self, codes: list[str]) -> None:
        super().__init__(", ".join(codes))
        self.codes = codes


@dataclass(frozen=True)
class Counter:
    serial: int
    revision: int
    store: str


class Table:
    """One DynamoDB table and its stream, reached through boto3 clients."""

    def __init__(self, settings: DynamoSettings, db: Any, streams: Any) -> None:
        self.settings = settings
        self.name = settings.table_name
        self.what = f"DynamoDB table {self.name!r}"
        self.db = db
        self.streams = streams

    @classmethod
    async def connect(cls, settings: DynamoSettings) -> Table:
        settings.check()

        def clients() -> tuple[Any, Any]:
            kw: dict[str, Any] = {"region": settings.region, "endpoint": settings.endpoint}
            return aws.client("dynamodb", **kw), aws.client("dynamodbstreams", **kw)

        return cls(settings, *await asyncio.to_thread(clients))

    def close(self) -> None:
        for made in (self.db, self.streams):
            made.close()

    # --- calls ----------------------------------------------------------------------------

    def call(self, operation: str, **params: Any) -> Any:
        """Call the table's API (blocking); raise our error kinds, Cancelled for a cancelled
        transaction, TableMissing when the table is not there."""
        return self._call(self.db, operation, params)

    def stream_call(self, operation: str, **params: Any) -> Any:
        return self._call(self.streams, operation, params)

    def _call(self, made: Any, operation: str, params: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            return getattr(made, operation)(**params)
        except Exception as err:
            from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

            if operation == "transact_write_items" and isinstance(
                    err, (ConnectionClosedError, ReadTimeoutError)):
                raise ConnectionProblem(f"{self.what} was lost while committing; the write may "
                                        f"or may not be stored: {err}") from None
            code = aws.error_code(err)
            if code == "TransactionCanceledException":
                reasons = getattr(err, "response", {}).get("CancellationReasons", [])
                raise Cancelled([str(r.get("Code", "None")) for r in reasons]) from None
            if code == "ResourceNotFoundException" and made is self.db:
                raise TableMissing(f"{self.what} does not exist") from None
            mapped = aws.map_error(err, self.what)
            if mapped is err:
                raise
            raise mapped from None
        finally:
            BACKEND_LATENCY.labels("dynamodb_" + operation).observe(time.perf_counter() - started)

    async def acall(self, operation: str, **params: Any) -> Any:
        return await asyncio.to_thread(self.call, operation, **params)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking function of several calls in one thread hop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def query(self, partition: str, low: str, high: str, *, limit: int = 0,
              live_after: int | None = None, projection: str | None = None) -> list[dict[str, Any]]:
        """Rows of partition with low <= key <= high in key order, all pages (blocking).

        live_after (microseconds) leaves out items expired by then; limit > 0 stops early."""
        params: dict[str, Any] = {
            "TableName": self.name, "ConsistentRead": True,
            "KeyConditionExpression": "#partition = :p AND #key BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#partition": PARTITION, "#key": KEY},
            "ExpressionAttributeValues": {":p": {"S": partition}, ":low": {"S": low},
                                          ":high": {"S": high}}}
        if live_after is not None:
            params["FilterExpression"] = "attribute_not_exists(#exp) OR #exp > :now"
            params["ExpressionAttributeNames"]["#exp"] = "expires_us"
            params["ExpressionAttributeValues"][":now"] = {"N": str(live_after)}
        if projection is not None:
            params["ProjectionExpression"] = projection
            params["ExpressionAttributeNames"].update(
                {f"#{n}": n for n in re.findall(r"#(\w+)", projection)})
        rows: list[dict[str, Any]] = []
        while True:
            if limit:
                params["Limit"] = min(1000, limit - len(rows) + 1)
            page = self.call("query", **params)
            rows.extend(page.get("Items", []))
            after = page.get("LastEvaluatedKey")
            if after is None or (limit and len(rows) > limit):
                return rows
            params["ExclusiveStartKey"] = after

    def batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Read up to 100 rows by key, strongly consistent (blocking)."""
        request = {self.name: {"Keys": keys, "ConsistentRead": True}}
        rows: list[dict[str, Any]] = []
        delay = 0.05
        while request:
            page = self.call("batch_get_item", RequestItems=request)
            rows.extend(page.get("Responses", {}).get(self.name, []))
            request = page.get("UnprocessedKeys") or {}
            if request:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        return rows

    # --- the revision counter ----------------------------------------------------------------

    def read_counter(self) -> Counter:
        """The counter as committed; made if missing (a new table, or one made again)."""
        for _ in range(2):
            row = self.call("get_item", TableName=self.name, Key=row_key(META, COUNTER_KEY),
                            ConsistentRead=True).get("Item")
            if row is not None:
                return Counter(int(row[SERIAL]["N"]), int(row[REVISION]["N"]), row[STORE]["S"])
            # Revisions start at the creation time in microseconds: a table made again never
            # hands out a revision its predecessor did, so an old one is refused, not misread.
            first = {**row_key(META, COUNTER_KEY), SERIAL: {"N": "0"},
                     REVISION: {"N": str(time.time_ns() // 1000)},
                     STORE: {"S": secrets.token_hex(8)}}
            try:
                self.call("put_item", TableName=self.name, Item=first,
                          ConditionExpression="attribute_not_exists(#key)",
                          ExpressionAttributeNames={"#key": KEY})
            except CompareFailed:
                pass  # another auth server made it first
        raise ConnectionProblem(f"{self.what}: cannot read the revision counter")

    # --- making the table --------------------------------------------------------------------

    async def ensure(self) -> None:
        """Make the table if missing; check its keys; turn on its stream, TTL and backups."""
        try:
            await self.acall("describe_table", TableName=self.name)
        except TableMissing:
            log.info("creating %s", self.what)
            try:
                await self.acall("create_table", **self._spec())
            except AlreadyExists:
                pass  # another auth server, started at the same time, is making it: wait for it
        table = await self._wait_active()
        keys = [(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])]
        types = {a["AttributeName"]: a["AttributeType"]
                 for a in table.get("AttributeDefinitions", [])}
        if keys != [(PARTITION, "HASH"), (KEY, "RANGE")] or {types.get(PARTITION),
                                                             types.get(KEY)} != {"S"}:
            raise BadParameter(f"{self.what} is not a teleport backend table: its key is "
                               f"{keys}, not [({PARTITION!r}, 'HASH'), ({KEY!r}, 'RANGE')]")
        stream = table.get("StreamSpecification") or {}
        if not stream.get("StreamEnabled"):
            log.info("turning on the stream of %s", self.what)
            try:
                await self.acall("update_table", TableName=self.name, StreamSpecification={
                    "StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
            except BadParameter:  # unless another auth server just did
                if not ((await self._wait_active()).get("StreamSpecification") or {}).get(
                        "StreamEnabled"):
                    raise
            await self._wait_active()
        elif stream.get("StreamViewType") not in _NEEDS_NEW_IMAGE:
            raise BadParameter(f"{self.what} streams {stream.get('StreamViewType')}; teleport "
                               "needs NEW_AND_OLD_IMAGES (or NEW_IMAGE)")
        await self._ensure_ttl()
        if self.settings.continuous_backups:
            await self.acall("update_continuous_backups", TableName=self.name,
                             PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})

    def _spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "TableName": self.name,
            "AttributeDefinitions": [{"AttributeName": PARTITION, "AttributeType": "S"},
                                     {"AttributeName": KEY, "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": PARTITION, "KeyType": "HASH"},
                          {"AttributeName": KEY, "KeyType": "RANGE"}],
            "StreamSpecification": {"StreamEnabled": True,
                                    "StreamViewType": "NEW_AND_OLD_IMAGES"},
        }
        if self.settings.billing_mode == "provisioned":
            spec["BillingMode"] = "PROVISIONED"
            spec["ProvisionedThroughput"] = {
                "ReadCapacityUnits": self.settings.read_capacity_units,
                "WriteCapacityUnits": self.settings.write_capacity_units}
        else:
            spec["BillingMode"] = "PAY_PER_REQUEST"
        return spec

    async def _wait_active(self) -> dict[str, Any]:
        deadline = time.monotonic() + ACTIVE_TIMEOUT
        delay = 0.2
        while True:
            table: dict[str, Any] = (await self.acall("describe_table",
                                                      TableName=self.name))["Table"]
            status = table.get("TableStatus")
            streaming = not (table.get("StreamSpecification") or {}).get("StreamEnabled") \
                or table.get("LatestStreamArn")
            if status in ("ACTIVE", "UPDATING") and streaming:
                return table
            if status not in ("CREATING", "UPDATING", "ACTIVE"):
                raise ConnectionProblem(f"{self.what} is {status}")
            if time.monotonic() > deadline:
                raise ConnectionProblem(f"{self.what} is not ACTIVE after {ACTIVE_TIMEOUT:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _ensure_ttl(self) -> None:
        await aws.ensure_ttl(self.acall, self.name, EXPIRES, self.what,
                             "expired items and old changes stay until deleted")
