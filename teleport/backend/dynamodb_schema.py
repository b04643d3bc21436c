"""How the DynamoDB backend lays out one table: items, the revision counter and the change log.

Every row shares the table's hash key `partition`; the range key `key` is a string. Three
partitions:

- DATA: one row per item, keyed by the item's key read as Latin-1, so that DynamoDB's (and
  moto's) string order is the keys' byte order; value, revision, expiry in microseconds and
  `expires`, the same expiry in whole seconds for DynamoDB's TTL.
- META: the revision counter. Every write transaction moves `serial` on by one under a
  condition on its old value, so writers are serialised and `revision` (the last one handed
  out) only grows, without gaps.
- LOG: one row per transaction that changed items, keyed by its last revision (zero-padded),
  holding its events and the revision before them. Watchers read these rows from the stream,
  repair gaps from them and resume from them; TTL deletes them after LOG_RETENTION (late).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from teleport.backend.base import Event, EventType, Item
from teleport.backend.fanout import show_key
from teleport.errors import BadParameter

PARTITION, KEY = "partition", "key"
VALUE, REVISION, EXPIRES_US = "value", "revision", "expires_us"
#: The TTL attribute: epoch seconds, at or after the item's expiry.
EXPIRES = "expires"
SERIAL, STORE, PREV, EVENTS, TYPE = "serial", "store", "prev", "events", "type"

DATA = "teleport"
META = "teleport.meta"
LOG = "teleport.log"
COUNTER_KEY = "revision"

#: How long LOG rows are kept for watchers that resume or repair (DynamoDB's TTL is later).
LOG_RETENTION = timedelta(hours=1)
#: Longest key, in UTF-8 bytes of its Latin-1 reading (DynamoDB's range key limit).
MAX_KEY_BYTES = 1024
#: Longest key plus value: the item and its LOG row must each stay under DynamoDB's 400 KB.
MAX_ITEM_BYTES = 380 * 1024
#: Names every expression uses (several are DynamoDB reserved words).
NAMES = {f"#{n}": n for n in (PARTITION, KEY, VALUE, REVISION, EXPIRES_US, EXPIRES, SERIAL)}

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def to_us(when: datetime) -> int:
    return (when - _EPOCH) // _MICROSECOND


def from_us(us: int) -> datetime:
    return _EPOCH + us * _MICROSECOND


def encode_key(key: bytes) -> str:
    """Latin-1 maps each byte to the code point of the same value: order is kept."""
    return key.decode("latin-1")


def decode_key(text: str) -> bytes:
    return text.encode("latin-1")


def check_size(item: Item) -> None:
    """Refuse before writing what DynamoDB would refuse in the middle of a transaction."""
    if len(encode_key(item.key).encode()) > MAX_KEY_BYTES:
        raise BadParameter(f"key {show_key(item.key)[:60]}... is longer than DynamoDB allows "
                           f"({MAX_KEY_BYTES} bytes)")
    if len(item.key) + len(item.value) > MAX_ITEM_BYTES:
        raise BadParameter(f"value of {show_key(item.key)} is {len(item.value)} bytes; DynamoDB "
                           f"stores at most {MAX_ITEM_BYTES} bytes of key and value")


def row_key(partition: str, key: str) -> dict[str, Any]:
    return {PARTITION: {"S": partition}, KEY: {"S": key}}


def log_key(revision: int) -> str:
    return f"{revision:020d}"


def item_row(item: Item) -> dict[str, Any]:
    """The DATA row of an item whose revision is set."""
    row = {**row_key(DATA, encode_key(item.key)), VALUE: {"B": item.value},
           REVISION: {"N": item.revision}}
    if item.expires is not None:
        us = to_us(item.expires)
        row[EXPIRES_US] = {"N": str(us)}
        row[EXPIRES] = {"N": str(math.ceil(us / 1_000_000))}
    return row


def decode_item(row: dict[str, Any]) -> Item:
    expires = row.get(EXPIRES_US)
    return Item(decode_key(row[KEY]["S"]), bytes(row[VALUE]["B"]),
                None if expires is None else from_us(int(expires["N"])), row[REVISION]["N"])


def truncated(when: datetime | None) -> datetime | None:
    """An expiry as it reads back: whole microseconds, in UTC."""
    return None if when is None else from_us(to_us(when))


# --- the change log ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LogEntry:
    """One committed transaction's events: revisions prev+1 .. last."""

    prev: int
    last: int
    events: tuple[Event, ...]


def log_row(prev: int, events: list[Event]) -> dict[str, Any]:
    last = int(events[-1].item.revision)
    encoded = []
    for event in events:
        fields: dict[str, Any] = {TYPE: {"S": event.type.value}, KEY: {"S": encode_key(event.item.key)},
                                  REVISION: {"N": event.item.revision}}
        if event.type is EventType.PUT:
            fields[VALUE] = {"B": event.item.value}
            if event.item.expires is not None:
                fields[EXPIRES_US] = {"N": str(to_us(event.item.expires))}
        encoded.append({"M": fields})
    expires = int(time.time() + LOG_RETENTION.total_seconds())
    return {**row_key(LOG, log_key(last)), PREV: {"N": str(prev)}, EVENTS: {"L": encoded},
            EXPIRES: {"N": str(expires)}}


def decode_log(row: dict[str, Any]) -> LogEntry:
    events = []
    for entry in row[EVENTS]["L"]:
        fields = entry["M"]
        key, revision = decode_key(fields[KEY]["S"]), fields[REVISION]["N"]
        if fields[TYPE]["S"] == EventType.PUT.value:
            expires = fields.get(EXPIRES_US)
            events.append(Event(EventType.PUT, Item(
                key, bytes(fields[VALUE]["B"]),
                None if expires is None else from_us(int(expires["N"])), revision)))
        else:
            events.append(Event(EventType.DELETE, Item(key, b"", None, revision)))
    return LogEntry(int(row[PREV]["N"]), int(row[KEY]["S"]), tuple(events))
