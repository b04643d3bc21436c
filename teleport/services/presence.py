"""Nodes and proxies that announced themselves recently; entries expire with their TTL.

Host names are claimed, one host UUID per name, for as long as the claiming host keeps
announcing itself: a host cannot announce, or join under, a name another live host uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from datetime import datetime, timedelta

from teleport.backend.base import Backend, Item, key, range_end
from teleport.errors import AlreadyExists, BadParameter, NotFound
from teleport.services.claims import claim
from teleport.services.store import ResourceStore
from teleport.types.resource import format_time
from teleport.types.resources import Server

#: How long a host name this process wrote or read is trusted for that host's keep-alives. A
#: name changes only with a whole announcement, which updates it here when this process takes
#: it; one taken by another auth server sharing the backend is seen within this time.
HOSTNAME_MEMORY = timedelta(minutes=2)


class ServerStore(ResourceStore[Server]):
    """Host records, whose expiry is the stored item's: a keep-alive moves the item's expiry
    and leaves the value (and the `expires` written in it) as the last full heartbeat sent it.

    Remembers the host name of each record it wrote or read for a keep-alive (for
    HOSTNAME_MEMORY), so a keep-alive needs no read to find the host name claim to extend."""

    def __init__(self, backend: Backend, *prefix: str, noun: str) -> None:
        super().__init__(backend, Server, *prefix, noun=noun)
        #: host UUID -> (host name, when learned), oldest first.
        self._hostnames: OrderedDict[str, tuple[str, datetime]] = OrderedDict()

    def _decode(self, item: Item) -> Server:
        if item.expires is None:
            return super()._decode(item)
        # The item's expiry goes in before validation: one model, not a copy of a frozen one.
        record = json.loads(item.value)
        record.setdefault("metadata", {})["expires"] = format_time(item.expires)
        return self.model.model_validate(record)

    async def put(self, resource: Server) -> Server:
        stored = await super().put(resource)
        self.learn_hostname(resource.metadata.name, resource.spec.hostname)
        return stored

    def learn_hostname(self, host_uuid: str, hostname: str) -> None:
        """Remember the host name host_uuid's stored record carries; forget the stale ones."""
        now = self.backend.clock.now()
        self._hostnames[host_uuid] = (hostname, now)
        self._hostnames.move_to_end(host_uuid)
        self._forget_stale(now)

    def known_hostname(self, host_uuid: str) -> str | None:
        """The host name learned for host_uuid within HOSTNAME_MEMORY, or None."""
        now = self.backend.clock.now()
        self._forget_stale(now)
        known = self._hostnames.get(host_uuid)
        return None if known is None else known[0]

    def forget_hostname(self, host_uuid: str) -> None:
        self._hostnames.pop(host_uuid, None)

    def _forget_stale(self, now: datetime) -> None:
        while self._hostnames:
            _, (_, learned) = next(iter(self._hostnames.items()))
            if now - learned < HOSTNAME_MEMORY:
                return
            self._hostnames.popitem(last=False)

    async def list_json(self, now: datetime) -> bytes:
        """Return the live records as one JSON array, for an answer that only relays them.

        They were validated when written and are relayed as stored, with the item's expiry:
        decoding 10,000 models to encode them again was most of a listing's time. The array is
        built on a worker thread: on the loop's, 10,000 records held every heartbeat ~0.1 s.
        """
        start = key(*self.prefix) + b"/"
        items = await self.backend.get_range(start, range_end(start))
        return await asyncio.to_thread(_live_array, items, now)


def _live_array(items: list[Item], now: datetime) -> bytes:
    """The JSON array of the items' records that have not expired, each with its expiry."""
    records = []
    for item in items:
        if item.expires is not None and item.expires <= now:
            continue
        record = json.loads(item.value)
        if item.expires is not None:
            record.setdefault("metadata", {})["expires"] = format_time(item.expires)
        records.append(record)
    return json.dumps(records).encode()


class PresenceService:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.nodes = ServerStore(backend, "namespaces", "default", "nodes", noun="node")
        self.proxies = ServerStore(backend, "proxies", noun="proxy")
        self.auth_servers = ServerStore(backend, "authservers", noun="auth server")

    def store(self, kind: str) -> ServerStore:
        """Return the store for `node`, `proxy` or `auth_server` records."""
        stores = {"node": self.nodes, "proxy": self.proxies, "auth_server": self.auth_servers}
        if kind not in stores:
            raise BadParameter(f"unknown server kind {kind!r}")
        return stores[kind]

    async def keep_alive(self, kind: str, host_uuid: str, expires: datetime) -> None:
        """Move a live host record's expiry and its host name claim's, rewriting neither.

        Two small writes instead of a read-check-swap of the claim and a new record: no new
        revision and no watch event, since nothing a watcher keeps changed (the backend
        announces the record's deletion at its new expiry). NotFound when the record or its
        claim is gone (expired, `tctl rm`): the host then sends its record whole again.
        """
        store = self.store(kind)
        hostname = store.known_hostname(host_uuid)
        if hostname is None:
            try:
                item = await self.backend.get(store.key(host_uuid))
            except NotFound:
                raise NotFound(f"{store.noun} {host_uuid!r} not found") from None
            # Only the name is needed, from a record validated when it was written: plain
            # JSON is a fraction of the cost of decoding the model.
            hostname = str(json.loads(item.value).get("spec", {}).get("hostname", ""))
            store.learn_hostname(host_uuid, hostname)
        # One request for both: one group commit, one fsync, no task per key on the loop.
        keys = [store.key(host_uuid)] + ([self._name_key(hostname)] if hostname else [])
        try:
            await self.backend.keep_alive_all(keys, expires)
        except NotFound:
            store.forget_hostname(host_uuid)
            raise NotFound(f"the record or host name claim of {kind} {host_uuid!r} is "
                           "gone: send the whole record") from None

    @staticmethod
    def _name_key(hostname: str) -> bytes:
        # Hashed: a name is the host's to choose, and may hold any character, `/` included.
        return key("hostnames", hashlib.sha256(hostname.lower().encode()).hexdigest())

    async def hostname_owner(self, hostname: str) -> str | None:
        """Return the UUID of the live host that uses hostname, or None."""
        try:
            return (await self.backend.get(self._name_key(hostname))).value.decode()
        except NotFound:
            return None

    async def claim_hostname(self, hostname: str, host_uuid: str, expires: datetime | None) -> None:
        """Claim hostname for host_uuid until expires; AlreadyExists if another host has it."""
        item = Item(self._name_key(hostname), host_uuid.encode(), expires)
        # Three tries: a claim expiring or released meanwhile is looked at again.
        await claim(self.backend, item, host_uuid, lambda i: i.value.decode(errors="replace"),
                    refuse=lambda holder: AlreadyExists(
                        f"host name {hostname!r} is in use by host {holder}"),
                    busy=f"host name {hostname!r} is changing hands, try again", attempts=3)

    async def release_hostname(self, hostname: str, host_uuid: str) -> None:
        """Give up a name host_uuid announced before, unless another host holds it now."""
        if await self.hostname_owner(hostname) == host_uuid:
            try:
                await self.backend.delete(self._name_key(hostname))
            except NotFound:
                pass
