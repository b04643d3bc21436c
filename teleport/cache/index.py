"""Index the cache's server records by every name a user may give a host, so routing a
connection is a few dictionary lookups, not a scan of every node (10,000 on a large cluster).

A user names a node by its UUID (the record's name), its hostname, or its address (`ssh -J proxy
10.0.0.5`). Hostnames and addresses may repeat: a lookup answers every record that carries one,
and the resolver (`teleport.service.resolve`) decides what to do with several. Nodes reached over a
reverse tunnel have no address to be named by.
"""

from __future__ import annotations

from collections.abc import Iterable

from teleport.errors import BadParameter
from teleport.types.resources import Server
from teleport.utils.addr import HostPort, parse_addr

#: The port of a node's address when it names none (the node's SSH port).
NODE_PORT = 3022


class ServerIndex:
    """One kind's records by name, with lookups by hostname and by address host.

    Kept up to date one put or delete at a time, as the watch stream's changes arrive; a
    heartbeat of a known record keeps its place in `values()` (the snapshot's order).
    """

    def __init__(self, servers: Iterable[Server] = ()) -> None:
        self._by_name: dict[str, Server] = {}
        self._by_hostname: dict[str, dict[str, Server]] = {}
        #: Records dialled over TCP by their address's host; the parsed address by name.
        self._by_host: dict[str, dict[str, Server]] = {}
        self._addrs: dict[str, HostPort] = {}
        for server in servers:
            self.put(server)

    def __len__(self) -> int:
        return len(self._by_name)

    def values(self) -> list[Server]:
        """Return every record (a new list: the index changes as the stream goes on)."""
        return list(self._by_name.values())

    def get(self, name: str) -> Server | None:
        return self._by_name.get(name)

    def put(self, server: Server) -> None:
        """Add a record or replace the one of the same name (its hostname or address may differ)."""
        name = server.metadata.name
        old = self._by_name.get(name)
        if old is not None:
            self._unindex(old)
        self._by_name[name] = server
        self._by_hostname.setdefault(server.spec.hostname, {})[name] = server
        addr = _dialled_addr(server)
        if addr is not None:
            self._addrs[name] = addr
            self._by_host.setdefault(addr.host, {})[name] = server

    def delete(self, name: str) -> None:
        """Drop a record (one already gone changes nothing)."""
        old = self._by_name.pop(name, None)
        if old is not None:
            self._unindex(old)

    def named(self, name: str) -> list[Server]:
        """Return the records whose UUID or hostname is name, each once."""
        matches = dict(self._by_hostname.get(name, {}))
        if (server := self._by_name.get(name)) is not None:
            matches[name] = server
        return list(matches.values())

    def at(self, host: str, port: int | None = None) -> list[Server]:
        """Return the records dialled over TCP at host (and port, when given)."""
        matches = self._by_host.get(host, {})
        return [s for name, s in matches.items()
                if port is None or self._addrs[name].port == port]

    def _unindex(self, server: Server) -> None:
        name = server.metadata.name
        _discard(self._by_hostname, server.spec.hostname, name)
        addr = self._addrs.pop(name, None)
        if addr is not None:
            _discard(self._by_host, addr.host, name)


def _dialled_addr(server: Server) -> HostPort | None:
    """The address a record is dialled at, or None: tunnelled, or an address nobody can dial."""
    if server.spec.use_tunnel:
        return None
    try:
        return parse_addr(server.spec.addr, NODE_PORT)
    except BadParameter:
        return None


def _discard(index: dict[str, dict[str, Server]], key: str, name: str) -> None:
    names = index.get(key)
    if names is not None:
        names.pop(name, None)
        if not names:
            del index[key]
