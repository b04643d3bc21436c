"""Auth API route streaming changes of locks, roles and users to nodes and proxies, so a lock or a
role change reaches every node within a second instead of at its next poll
(`teleport.service.revocations` keeps the poll as the backstop).

The stream is NDJSON: `{"type": "init"}` once the backend watch is in place (nothing after it is
missed), then `{"type": "put"|"delete", "kind": ..., "name": ...}` per change, and `{"type":
"ping"}` while nothing changes. Lines carry names only: a node re-reads what it needs through the
routes it already polls, so no secret or password hash travels here. A user's deletion is
announced by its tombstone too, and a user's lock is a put of the user.
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
from teleport.backend.base import Event, EventType, Watcher, key
from teleport.errors import BadParameter, LimitExceeded
from teleport.services.store import ResourceStore

log = logging.getLogger("teleport.auth.watch")
#: A line at least this often, so a client notices a dead connection (it gives up after 45 s).
PING_INTERVAL = 15.0
#: How often a quiet stream checks that its client is still there (aiohttp does not tell a
#: handler whose request has no body; a write would, but only at the next ping).
GONE_CHECK = 0.5


@dataclass(frozen=True)
class _Source:
    """A backend prefix whose changes are announced as changes of `kind`."""

    prefix: bytes
    kind: str
    #: Deletion tombstones: their put is the user's deletion; their expiry announces nothing.
    tombstone: bool = False


def _under(store: ResourceStore[Any]) -> bytes:
    return key(*store.prefix) + b"/"


#: The kinds one may watch, and where their changes happen in the backend.
WATCH_KINDS: dict[str, Callable[[AuthServer], list[_Source]]] = {
    "lock": lambda auth: [_Source(_under(auth.resources.locks.locks), "lock")],
    "role": lambda auth: [_Source(_under(auth.resources.roles.roles), "role")],
    "user": lambda auth: [_Source(_under(auth.accounts.users.users), "user"),
                          _Source(access.TOMBSTONE_PREFIX, "user", tombstone=True)],
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


def _line(event: Event, sources: list[_Source]) -> dict[str, str] | None:
    """Translate a backend event into a stream line, or None when it announces nothing."""
    if event.type is EventType.INIT:
        return {"type": "init"}
    for source in sources:
        if event.item.key.startswith(source.prefix):
            name = event.item.key[len(source.prefix):].decode(errors="replace")
            if source.tombstone:
                return {"type": "delete", "kind": source.kind, "name": name} \
                    if event.type is EventType.PUT else None
            return {"type": event.type.value, "kind": source.kind, "name": name}
    return None


@route("GET", "/v1/watch", [NODE, PROXY])
async def watch(call: Call) -> Any:
    """Stream the names of changed locks, roles and users until the client or the server goes."""
    sources = [s for kind in parse_kinds(call.request.query.get("kinds", ""))
               for s in WATCH_KINDS[kind](call.auth)]
    watcher = await call.auth.backend.watch([s.prefix for s in sources])
    streams = _open.setdefault(call.request.app, set())
    streams.add(watcher)
    try:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                               "Cache-Control": "no-store"})
        await response.prepare(call.request)
        try:
            await _pump(call, watcher, sources, response)
            await response.write_eof()
        except ConnectionError as err:  # the client went away mid-write
            log.debug("watch stream of %s ended: %s", call.identity.username, err)
        return response
    finally:
        streams.discard(watcher)
        await watcher.close()


async def _pump(call: Call, watcher: Watcher, sources: list[_Source],
                response: web.StreamResponse) -> None:
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
                line = _line(event, sources)
                if line is None:
                    continue
                if line["type"] != "init":
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


async def _write(response: web.StreamResponse, line: dict[str, str]) -> None:
    await response.write(json.dumps(line).encode() + b"\n")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _end_streams(app: web.Application) -> None:
    """End every open stream, so shutting the API down does not wait for watchers."""
    for watcher in list(_open.get(app, ())):
        await watcher.close()


ON_SHUTDOWN.append(_end_streams)
