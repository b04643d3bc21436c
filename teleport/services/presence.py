"""Nodes and proxies that announced themselves recently; entries expire with their TTL.

Host names are claimed, one host UUID per name, for as long as the claiming host keeps
announcing itself: a host cannot announce, or join under, a name another live host uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime
from typing import Any

from teleport.backend.base import Backend, Item, key, range_end
from teleport.errors import AlreadyExists, BadParameter, NotFound
from teleport.services.claims import claim
from teleport.services.store import ResourceStore
from teleport.types.resource import format_time
from teleport.types.resources import Server


class ServerStore(ResourceStore[Server]):
    """Host records, whose expiry is the stored item's: a keep-alive moves the item's expiry
    and leaves the value (and the `expires` written in it) as the last full heartbeat sent it."""

    def _decode(self, item: Item) -> Server:
        server = super()._decode(item)
        if item.expires is not None and server.metadata.expires != item.expires:
            # Set in place: the record was just decoded and nobody else holds it yet, and two
            # `model_copy` calls tripled the cost of listing 10,000 nodes.
            object.__setattr__(server.metadata, "expires", item.expires)
            server.metadata.__pydantic_fields_set__.add("expires")
        return server

    async def list_json(self, now: datetime) -> list[dict[str, Any]]:
        """Return the live records as their JSON objects, for an answer that only relays them.

        They were validated when written and are relayed as stored, with the item's expiry:
        decoding 10,000 models to encode them again was most of a listing's time.
        """
        start = key(*self.prefix) + b"/"
        records = []
        for item in await self.backend.get_range(start, range_end(start)):
            if item.expires is not None and item.expires <= now:
                continue
            record = json.loads(item.value)
            if item.expires is not None:
                record.setdefault("metadata", {})["expires"] = format_time(item.expires)
            records.append(record)
        return records


class PresenceService:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.nodes = ServerStore(backend, Server, "namespaces", "default", "nodes", noun="node")
        self.proxies = ServerStore(backend, Server, "proxies", noun="proxy")
        self.auth_servers = ServerStore(backend, Server, "authservers", noun="auth server")

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
        try:
            item = await self.backend.get(store.key(host_uuid))
        except NotFound:
            raise NotFound(f"{store.noun} {host_uuid!r} not found") from None
        # Only the name is needed, from a record validated when it was written: plain JSON is
        # a fraction of the cost of decoding the model, twice a second per thousand nodes.
        hostname = json.loads(item.value).get("spec", {}).get("hostname", "")
        # Both at once: they share a group commit, so the heartbeat waits for one fsync.
        record, claim = await asyncio.gather(
            self.backend.keep_alive(item.key, expires),
            self.backend.keep_alive(self._name_key(hostname), expires) if hostname
            else asyncio.sleep(0), return_exceptions=True)
        for failed in (record, claim):
            if isinstance(failed, NotFound):
                raise NotFound(f"the record or host name claim of {kind} {host_uuid!r} is "
                               "gone: send the whole record") from None
            if isinstance(failed, BaseException):
                raise failed

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
