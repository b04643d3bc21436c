"""Auth API route streaming changes to nodes and proxies: locks, roles and users, so a lock or a
role change reaches every node within a second instead of at its next poll
(`teleport.service.revocations` keeps the poll as the backstop), and the hosts and CA public keys
the proxy's cache (`teleport.cache`) keeps.

The stream is NDJSON. It opens with a snapshot: a `{"type": "put", "kind", "name"}` line per
resource of the kinds asked for as it is now, then `{"type": "init"}`, then a `put` or `delete`
line per change, in order, and `{"type": "ping"}` while nothing changes. The backend watch is in
place (its INIT seen) before the snapshot is read, so no change between the two is missed; one
may arrive twice (in the snapshot and as a change), which a follower applies idempotently.

`init` and every change carry `revision`, an opaque cursor (the backend's store and revision).
A client that lost its stream watches again with `since` set to the last cursor it applied: when
the backend still has the history after it (any auth server on a shared etcd or PostgreSQL; the
same process for sqlite), the stream opens with `{"type": "init", "resumed": true}` and replays
the changes instead of a snapshot; otherwise it opens with a snapshot as usual.

Locks, roles and users carry names only: a node re-reads what it needs through the routes it
already polls, so no secret or password hash travels here. A user's deletion is announced by its
tombstone too, and a user's lock is a put of the user. Hosts (`node`, `proxy`, `auth_server`)
carry the record (`resource`), and `cert_authority` its public keys only (`sub_kind` is the CA
type, `name` its cluster): both are readable by every node and proxy through their own routes,
which is who may watch. An expired host record is a delete.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from teleport.auth import access
from teleport.auth.api import NODE, ON_SHUTDOWN, PROXY, Call, route
from teleport.auth.server import AuthServer
from teleport.backend.base import (
    Backend,
    Event,
    EventType,
    Watcher,
    key,
    range_end,
    revision_number,
)
from teleport.errors import BadParameter, LimitExceeded, TeleportError
from teleport.services.store import ResourceStore
from teleport.types.codec import to_dict
from teleport.types.resource import format_time
from teleport.types.resources import CertAuthority, Server

log = logging.getLogger("teleport.auth.watch")
#: A line at least this often, so a client notices a dead connection (it gives up after 45 s).
PING_INTERVAL = 15.0
#: How often a quiet stream checks that its client is still there (aiohttp does not tell a
#: handler whose request has no body; a write would, but only at the next ping).
GONE_CHECK = 0.5


Line = dict[str, Any]


@dataclass(frozen=True)
class _Source:
    """A backend prefix whose changes are announced as changes of `kind`."""

    prefix: bytes
    kind: str
    #: Deletion tombstones: their put is the user's deletion; their expiry announces nothing.
    tombstone: bool = False
    #: What a put line carries besides the name, from the stored value (None: the name only).
    content: Callable[[bytes], Line] | None = None
    sub_kind: str = ""
    #: A change here changes the revocation list, which is built afresh once one is announced.
    revokes: bool = False


def _under(store: ResourceStore[Any]) -> bytes:
    return key(*store.prefix) + b"/"


def _server(value: bytes) -> Line:
    return to_dict(Server.model_validate_json(value))


def _public_ca(value: bytes) -> Line:
    """Return a CA as `GET /v1/authorities` hands it out: never a private key on the wire."""
    return to_dict(CertAuthority.model_validate_json(value).without_secrets())


def _hosts(kind: str) -> Callable[[AuthServer], list[_Source]]:
    return lambda auth: [_Source(_under(auth.hosts.presence.store(kind)), kind, content=_server)]


def _authorities(auth: AuthServer) -> list[_Source]:
    return [_Source(_under(auth.certs.cas.store(t)), "cert_authority", content=_public_ca,
                    sub_kind=t) for t in ("user", "host", "tls")]


#: The kinds one may watch, and where their changes happen in the backend.
WATCH_KINDS: dict[str, Callable[[AuthServer], list[_Source]]] = {
    "lock": lambda auth: [_Source(_under(auth.resources.locks.locks), "lock", revokes=True)],
    "role": lambda auth: [_Source(_under(auth.resources.roles.roles), "role", revokes=True)],
    "user": lambda auth: [_Source(_under(auth.accounts.users.users), "user", revokes=True),
                          _Source(access.TOMBSTONE_PREFIX, "user", tombstone=True, revokes=True)],
    "node": _hosts("node"),
    "proxy": _hosts("proxy"),
    "auth_server": _hosts("auth_server"),
    "cert_authority": _authorities,
}

# Open streams per application, ended when it shuts down (aiohttp would wait for them).
_open: weakref.WeakKeyDictionary[web.Application, set[Watcher]] = weakref.WeakKeyDictionary()


def parse_kinds(query: str) -> list[str]:
    """Return the kinds named in `kinds=a,b`, refusing unknown ones by name."""
    kinds = list(dict.fromkeys(k.strip() for k in query.split(",") if k.strip()))
    known = ", ".join(sorted(WATCH_KINDS))
    if not kinds:
        raise BadParameter(f"kinds is required: a comma-separated list of {known}")
    unknown = [k for k in kinds if k not in WATCH_KINDS]
    if unknown:
        raise BadParameter(f"cannot watch kind {', '.join(map(repr, unknown))}: "
                           f"the kinds to watch are {known}")
    return kinds


def _source(event: Event, sources: list[_Source]) -> _Source | None:
    return next((s for s in sources if event.item.key.startswith(s.prefix)), None)


def _line(event: Event, source: _Source) -> Line | None:
    """Translate a backend event into a stream line, or None when it announces nothing."""
    name = event.item.key[len(source.prefix):].decode(errors="replace")
    if source.tombstone:
        return {"type": "delete", "kind": source.kind, "name": name} \
            if event.type is EventType.PUT else None
    line: Line = {"type": event.type.value, "kind": source.kind, "name": name}
    if source.sub_kind:
        line["sub_kind"] = source.sub_kind
    if source.content is not None and event.type is EventType.PUT:
        try:
            line["resource"] = source.content(event.item.value)
            if source.content is _server and event.item.expires is not None:
                # A keep-alive moves the item's expiry, not the `expires` in its value.
                line["resource"]["metadata"]["expires"] = format_time(event.item.expires)
        except ValueError as err:  # one unreadable record must not end everyone's stream
            log.warning("not announcing an unreadable %s %r: %s", source.kind, name,
                        str(err).splitlines()[0])
            return None
    return line


async def _snapshot(backend: Backend, sources: list[_Source]) -> list[Line]:
    """Return a put line for every resource of the sources as stored now."""
    lines = []
    for source in sources:
        if source.tombstone:  # a deletion is news, not state
            continue
        for item in await backend.get_range(source.prefix, range_end(source.prefix)):
            line = _line(Event(EventType.PUT, item), source)
            if line is not None:
                lines.append(line)
    return lines


@route("GET", "/v1/watch", [NODE, PROXY])
async def watch(call: Call) -> Any:
    """Stream the resources of the kinds asked for, then their changes, until the client or
    the server goes."""
    sources = [s for kind in parse_kinds(call.request.query.get("kinds", ""))
               for s in WATCH_KINDS[kind](call.auth)]
    backend = call.auth.backend
    prefixes = [s.prefix for s in sources]
    watcher = await _resume(backend, prefixes, call.request.query.get("since", ""))
    resumed = watcher is not None
    if watcher is None:
        watcher = await backend.watch(prefixes)
    streams = _open.setdefault(call.request.app, set())
    streams.add(watcher)
    try:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                               "Cache-Control": "no-store"})
        await response.prepare(call.request)
        try:
            await _pump(call, watcher, sources, response, resumed)
            await response.write_eof()
        except ConnectionError as err:  # the client went away mid-write
            log.debug("watch stream of %s ended: %s", call.identity.username, err)
        return response
    finally:
        streams.discard(watcher)
        await watcher.close()


async def _resume(backend: Backend, prefixes: list[bytes], since: str) -> Watcher | None:
    """Watch from the client's cursor, or return None when the backend cannot (another store's
    cursor, history gone): the client then gets a snapshot.

    A cursor is the revision of the last line the client applied; that revision's other events
    (a transaction's deletes share one) may not have reached it, so they are all sent again.
    """
    store, _, revision = since.rpartition(":")
    number = revision_number(revision)
    if number < 1 or store != backend.store_id:
        return None
    try:
        return await backend.watch(prefixes, since=str(number - 1))
    except LimitExceeded as err:
        log.debug("cannot resume a watch stream, sending a snapshot: %s", err)
        return None


def _cursor(backend: Backend, revision: str) -> str:
    """The opaque position a client hands back as `since` to resume after this line."""
    return f"{backend.store_id}:{revision}" if revision and backend.store_id else ""


async def _pump(call: Call, watcher: Watcher, sources: list[_Source],
                response: web.StreamResponse, resumed: bool) -> None:
    """Copy events to the client, with pings, until the watcher ends or the client is gone."""
    events = aiter(watcher)
    pending = asyncio.ensure_future(_next(events))
    last_line = time.monotonic()
    try:
        while True:
            await asyncio.wait({pending}, timeout=GONE_CHECK)
            if pending.done():
                event = pending.result()
                if event is None:  # the watcher was closed (server shutdown) or fell behind
                    return
                pending = asyncio.ensure_future(_next(events))
                if event.type is EventType.INIT and resumed:
                    # Changes since the client's cursor follow: its copy stands, no snapshot.
                    await _write(response, {"type": "init", "resumed": True})
                    last_line = time.monotonic()
                    continue
                if event.type is EventType.INIT:
                    # The watch is in place: what is stored now, then every change after it.
                    if not await _send_snapshot(call, sources, response, event.item.revision):
                        return
                    last_line = time.monotonic()
                    continue
                source = _source(event, sources)
                line = None if source is None else _line(event, source)
                if source is None or line is None:
                    continue
                if cursor := _cursor(call.auth.backend, event.item.revision):
                    line["revision"] = cursor
                if source.revokes:
                    # Whoever this line makes refresh must get a list that has the change.
                    access.forget_revocations(call.auth.accounts, (event.type, event.item.key,
                                                                   event.item.revision))
                await _write(response, line)
                last_line = time.monotonic()
            elif _client_gone(call.request):
                return
            elif time.monotonic() - last_line >= PING_INTERVAL:
                await _write(response, {"type": "ping"})
                last_line = time.monotonic()
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)


async def _send_snapshot(call: Call, sources: list[_Source], response: web.StreamResponse,
                         revision: str) -> bool:
    """Send a put line for every stored resource, then the init line; False if the snapshot
    could not be read (the client watches again and gets a new one).

    Its own frame, so the snapshot is freed once sent: kept as a local of the stream's loop,
    it lived as long as the stream, and records read during a burst pinned memory the burst
    had otherwise given back (issue 20: auth RSS after load).
    """
    try:
        snapshot = await _snapshot(call.auth.backend, sources)
    except TeleportError as err:
        log.warning("ending a watch stream: cannot read its snapshot: %s", err)
        return False
    for entry in snapshot:
        await _write(response, entry)
    init: Line = {"type": "init"}
    if cursor := _cursor(call.auth.backend, revision):
        init["revision"] = cursor
    await _write(response, init)
    return True


async def _next(events: AsyncIterator[Event]) -> Event | None:
    """Return the next event, or None at the end; a reader that fell behind is ended too, and
    its client re-reads everything when it watches again."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None
    except LimitExceeded as err:
        log.info("ending a watch stream: %s", err)
        return None


async def _write(response: web.StreamResponse, line: Line) -> None:
    await response.write(json.dumps(line).encode() + b"\n")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _end_streams(app: web.Application) -> None:
    """End every open stream, so shutting the API down does not wait for watchers."""
    for watcher in list(_open.get(app, ())):
        await watcher.close()


ON_SHUTDOWN.append(_end_streams)
