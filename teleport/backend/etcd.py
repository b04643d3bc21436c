"""The etcd backend (`storage.type: etcd`), over etcd's v3 JSON gateway (see etcd_client).

Every key lives under the configured prefix. A stored value is a 12-byte envelope (a marker and
the expiry in microseconds) followed by the item's bytes unchanged, so the expiry round-trips
exactly while the value stays the same bytes as in sqlite. Reads drop items expired by the
injected clock, and an expiring write also attaches an etcd lease ending at the first whole
second after the expiry by that clock, so the server deletes the key and watchers see that as a
DELETE. Writes that expire in the same second share one lease: one grant a second instead of one
a write, and no lease left behind per overwrite (a lease nobody uses just runs out). An item's
revision is its etcd mod_revision: every conditional write (create, update, compare_and_swap,
delete, keep_alive) is a transaction comparing it, retried when another writer won the race.
keep_alive re-puts the value with a new lease, so unlike sqlite it changes the revision and
watchers see a PUT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from teleport.backend.base import Backend, Item, Watcher, range_end, revision_number
from teleport.backend.etcd_client import GatewayClient, b64, unb64
from teleport.backend.etcd_watch import EtcdWatcher
from teleport.backend.fanout import check_item, show_key
from teleport.errors import (
    AlreadyExists,
    BadParameter,
    CompareFailed,
    ConnectionProblem,
    LimitExceeded,
    NotFound,
)
from teleport.metrics import BACKEND_LATENCY
from teleport.utils.clock import Clock, RealClock

log = logging.getLogger("teleport.backend.etcd")

#: The manual's default for etcd_max_client_msg_size_bytes: 1.5 MiB server limit + gRPC overhead.
DEFAULT_MAX_CLIENT_MSG_SIZE = 2 * 1024 * 1024
#: Keys a range read asks for at once; later pages read the first page's revision.
RANGE_PAGE = 1000
#: The shortest lease asked for; etcd raises it to its own minimum (1.5 election timeouts).
MIN_LEASE_SECONDS = 1

_MAGIC = b"\x00tp1"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_DELETE = None  # what a change function returns to delete the key


@dataclass(frozen=True)
class EtcdSettings:
    """Where and how to reach etcd: the manual's `storage` keys for `type: etcd`."""

    peers: list[str]
    prefix: str = "/teleport/"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure: bool = False
    max_client_msg_size: int | None = None

    def check(self) -> None:
        """Refuse settings that cannot work, naming the setting, before anything connects."""
        if not self.peers:
            raise BadParameter("etcd peers: list at least one https://host:port URL")
        for peer in self.peers:
            parts = urlsplit(peer)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise BadParameter(f"etcd peers: {peer!r} is not an http:// or https:// URL")
        if not self.prefix.endswith("/"):
            raise BadParameter(f"etcd prefix {self.prefix!r} must end with '/'")
        for name in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise BadParameter(f"etcd {name} {str(path)!r} does not exist or is not a file")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise BadParameter("etcd tls_cert_file and tls_key_file must be set together")
        if bool(self.username) != (self.password is not None):
            raise BadParameter("etcd username and password_file must be set together")
        if self.max_client_msg_size is not None and self.max_client_msg_size <= 0:
            raise BadParameter(
                f"etcd_max_client_msg_size_bytes must be positive, not {self.max_client_msg_size}")

    def ssl_context(self) -> ssl.SSLContext | None:
        """Build the TLS settings for https peers (client certificate, CA, insecure)."""
        if all(urlsplit(p).scheme == "http" for p in self.peers):
            return None
        try:
            context = ssl.create_default_context(
                cafile=str(self.tls_ca_file) if self.tls_ca_file else None)
        except (OSError, ssl.SSLError) as err:
            raise BadParameter(f"etcd tls_ca_file {str(self.tls_ca_file)!r}: {err}") from None
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            try:
                context.load_cert_chain(str(self.tls_cert_file), str(self.tls_key_file))
            except (OSError, ssl.SSLError) as err:
                raise BadParameter(
                    f"etcd tls_cert_file {str(self.tls_cert_file)!r} and tls_key_file "
                    f"{str(self.tls_key_file)!r} are not a matching PEM pair: {err}") from None
        return context


def _to_us(when: datetime) -> int:
    return (when - _EPOCH) // _MICROSECOND


def wrap(item: Item) -> bytes:
    """Prefix the value with its expiry; the value's own bytes are kept as they are."""
    expires = -1 if item.expires is None else _to_us(item.expires)
    return _MAGIC + struct.pack(">q", expires) + item.value


def unwrap(raw: bytes) -> tuple[bytes, datetime | None]:
    """Split a stored value into the item's bytes and expiry (a foreign value has none)."""
    if len(raw) < 12 or not raw.startswith(_MAGIC):
        return raw, None
    (expires,) = struct.unpack(">q", raw[4:12])
    return raw[12:], None if expires < 0 else _EPOCH + expires * _MICROSECOND


class EtcdBackend(Backend):
    """Keep cluster state in etcd, shared by every auth server; open with EtcdBackend.open()."""

    def __init__(self, settings: EtcdSettings, client: GatewayClient, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._client = client
        self._root = settings.prefix.encode()
        self._limit = settings.max_client_msg_size or DEFAULT_MAX_CLIENT_MSG_SIZE
        self._watchers: dict[EtcdWatcher, None] = {}
        #: Leases by the epoch second they end at, shared by the writes expiring then.
        self._leases: dict[int, asyncio.Future[int]] = {}
        self._closed = False

    @classmethod
    async def open(cls, settings: EtcdSettings, clock: Clock | None = None) -> EtcdBackend:
        """Check the settings and that a peer answers (and accepts the login) within seconds."""
        settings.check()
        client = GatewayClient(list(settings.peers), settings.ssl_context(), settings.username,
                               settings.password, settings.prefix)
        backend = cls(settings, client, clock or RealClock())
        try:
            # One attempt per peer: a wrong address must fail the start fast, not retry.
            answer = await client.call("/v3/kv/range", {
                "key": b64(backend._root), "range_end": b64(range_end(backend._root)),
                "count_only": True}, retry=False)
        except BaseException:
            await client.session.close()
            raise
        # Revisions are the etcd cluster's: any backend on it and this prefix resumes them.
        cluster = answer.get("header", {}).get("cluster_id", "")
        backend.store_id = f"etcd-{cluster}{settings.prefix}"
        return backend

    # --- plumbing ---------------------------------------------------------------------------

    async def _call(self, path: str, body: dict[str, Any], *, idempotent: bool = True,
                    ) -> dict[str, Any]:
        if self._closed:
            raise ConnectionProblem("the etcd backend is closed")
        started = time.perf_counter()
        try:
            return await self._client.call(path, body, idempotent=idempotent)
        finally:
            BACKEND_LATENCY.labels("etcd_" + path.rsplit("/", 1)[-1]).observe(
                time.perf_counter() - started)

    def _full(self, key: bytes) -> bytes:
        return self._root + key

    def _item(self, kv: dict[str, Any]) -> Item:
        return self._decode(unb64(kv.get("key"))[len(self._root):], kv)

    @staticmethod
    def _decode(key: bytes, kv: dict[str, Any]) -> Item:
        value, expires = unwrap(unb64(kv.get("value")))
        return Item(key, value, expires, str(kv.get("mod_revision", "")))

    def _live(self, item: Item) -> bool:
        return item.expires is None or item.expires > self.clock.now()

    def _stored(self, item: Item, revision: Any) -> Item:
        """The item as a later read returns it (expiry in UTC, revision set)."""
        expires = None if item.expires is None else _EPOCH + _to_us(item.expires) * _MICROSECOND
        return dataclasses.replace(item, expires=expires, revision=str(revision))

    async def _put_request(self, item: Item) -> dict[str, Any]:
        """Encode a put with its lease, refusing one larger than etcd_max_client_msg_size_bytes
        before anything is sent."""
        value = wrap(item)
        size = len(self._root) + len(item.key) + len(value)
        if size > self._limit:
            raise LimitExceeded(
                f"value of {show_key(item.key)} is {size} bytes stored, more than "
                f"etcd_max_client_msg_size_bytes ({self._limit})")
        request = {"key": b64(self._full(item.key)), "value": b64(value)}
        lease = await self._lease(item)
        if lease:
            request["lease"] = str(lease)
        return request

    async def _lease(self, item: Item) -> int:
        """Return the lease for the item's expiry second (0 for an item that never expires),
        granting it on first use."""
        if item.expires is None:
            return 0
        now = self.clock.now().timestamp()
        end = max(math.ceil(item.expires.timestamp()), math.ceil(now) + MIN_LEASE_SECONDS)
        granted = self._leases.get(end)
        if granted is None or (granted.done() and granted.exception() is not None):
            for gone in [e for e in self._leases if e <= now]:
                del self._leases[gone]
            granted = self._leases[end] = asyncio.ensure_future(self._grant(end - now))
            granted.add_done_callback(lambda f: f.cancelled() or f.exception())
        return await asyncio.shield(granted)

    async def _grant(self, seconds: float) -> int:
        answer = await self._call("/v3/lease/grant", {"TTL": str(math.ceil(seconds))})
        return int(answer["ID"])

    async def _read_kv(self, key: bytes) -> dict[str, Any] | None:
        answer = await self._call("/v3/kv/range", {"key": b64(self._full(key))})
        kvs = answer.get("kvs") or []
        return kvs[0] if kvs else None

    async def _change(self, key: bytes, decide: Callable[[Item | None], Item | None]) -> Item:
        """Read key, let decide() say what to write (None: delete) or raise, then write it only if
        the key is unchanged since the read; loop when another writer got there first."""
        while True:
            kv = await self._read_kv(key)
            current = self._item(kv) if kv is not None else None
            replace = decide(current if current is not None and self._live(current) else None)
            full = b64(self._full(key))
            if kv is None:
                compare = {"target": "CREATE", "key": full, "create_revision": "0"}
            else:
                compare = {"target": "MOD", "key": full,
                           "mod_revision": str(kv.get("mod_revision", 0))}
            if replace is None:
                operation = {"request_delete_range": {"key": full}}
            else:
                operation = {"request_put": await self._put_request(replace)}
            answer = await self._call("/v3/kv/txn", {"compare": [compare],
                                                     "success": [operation]},
                                      idempotent=False)
            if answer.get("succeeded"):
                revision = answer.get("header", {}).get("revision", "")
                return self._stored(replace or Item(key, b""), revision)

    # --- the Backend interface -----------------------------------------------------------------

    async def get(self, key: bytes) -> Item:
        kv = await self._read_kv(key)
        item = self._item(kv) if kv is not None else None
        if item is None or not self._live(item):
            raise NotFound(f"key {show_key(key)} not found")
        return item

    async def get_range(self, start: bytes, end: bytes, limit: int = 0) -> list[Item]:
        if limit < 0:
            raise BadParameter(f"range limit must not be negative, got {limit}")
        items: list[Item] = []
        cursor, end_full, revision = self._full(start), self._full(end), ""
        while cursor < end_full:
            request = {"key": b64(cursor), "range_end": b64(end_full), "limit": str(RANGE_PAGE)}
            if revision:
                request["revision"] = revision
            answer = await self._call("/v3/kv/range", request)
            revision = revision or str(answer.get("header", {}).get("revision", ""))
            kvs = answer.get("kvs") or []
            items.extend(i for i in map(self._item, kvs) if self._live(i))
            if limit and len(items) >= limit:
                return items[:limit]
            if not answer.get("more") or not kvs:
                break
            cursor = unb64(kvs[-1].get("key")) + b"\x00"
        return items

    async def create(self, item: Item) -> Item:
        check_item(item)

        def decide(current: Item | None) -> Item:
            if current is not None:
                raise AlreadyExists(f"key {show_key(item.key)} already exists")
            return item
        return await self._change(item.key, decide)

    async def put(self, item: Item) -> Item:
        check_item(item)
        answer = await self._call("/v3/kv/put", await self._put_request(item))
        return self._stored(item, answer.get("header", {}).get("revision", ""))

    async def update(self, item: Item) -> Item:
        check_item(item)

        def decide(current: Item | None) -> Item:
            if current is None:
                raise NotFound(f"key {show_key(item.key)} not found")
            return item
        return await self._change(item.key, decide)

    async def compare_and_swap(self, expected: Item, replace: Item) -> Item:
        check_item(replace)
        if expected.key != replace.key:
            raise BadParameter(
                f"compare_and_swap keys differ: {show_key(expected.key)} and {show_key(replace.key)}")

        def decide(current: Item | None) -> Item:
            if current is None:
                raise NotFound(f"key {show_key(expected.key)} not found")
            if current.value != expected.value or (
                    expected.revision and expected.revision != current.revision):
                raise CompareFailed(f"key {show_key(expected.key)} has changed")
            return replace
        return await self._change(replace.key, decide)

    async def delete(self, key: bytes) -> None:
        def decide(current: Item | None) -> None:
            if current is None:
                raise NotFound(f"key {show_key(key)} not found")
            return _DELETE
        await self._change(key, decide)

    async def delete_range(self, start: bytes, end: bytes) -> None:
        if start < end:
            await self._call("/v3/kv/deleterange", {"key": b64(self._full(start)),
                                                    "range_end": b64(self._full(end))})

    async def keep_alive(self, key: bytes, expires: datetime) -> None:
        if expires.utcoffset() is None:
            raise BadParameter(f"expiry of {show_key(key)} must be timezone-aware")

        def decide(current: Item | None) -> Item:
            if current is None:
                raise NotFound(f"key {show_key(key)} not found")
            return dataclasses.replace(current, expires=expires)
        await self._change(key, decide)

    async def watch(self, prefixes: Sequence[bytes], since: str | None = None) -> Watcher:
        if self._closed:
            raise ConnectionProblem("the etcd backend is closed")
        start = None
        if since is not None:
            start = revision_number(since)
            if start < 1:
                raise LimitExceeded(f"revision {since!r} is not an etcd revision; read again")
            # etcd answers OUT_OF_RANGE (LimitExceeded) when it compacted that revision or never
            # reached it (a revision of another store): the caller then reads a snapshot.
            await self._call("/v3/kv/range", {"key": b64(self._root), "revision": str(start),
                                              "count_only": True})
        watcher = EtcdWatcher(self._client, self._root, prefixes, self._decode,
                              lambda w: self._watchers.pop(w, None))
        await watcher.start(start)
        self._watchers[watcher] = None
        return watcher

    async def close(self) -> None:
        """End every watcher, then the HTTP connections."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(w.close() for w in list(self._watchers)))
        await self._client.session.close()
