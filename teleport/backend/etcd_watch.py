"""One etcd watch per Watcher, resumed from the last delivered revision after a connection loss.

The watch covers the smallest key range holding every prefix and is filtered here, so events of
several prefixes arrive in one revision order. INIT is queued only once etcd confirmed the watch,
so nothing written after INIT is missed. When the connection drops, the watcher reconnects (to
any peer) asking for the revision after the last one it saw; if etcd compacted that history the
stream raises LimitExceeded and the reader re-reads and watches again, never a silent gap.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from teleport.backend.base import Event, EventType, Item, range_end
from teleport.backend.etcd_client import (
    DIAL_TIMEOUT,
    MAX_WATCH_LINE,
    UNAUTHENTICATED,
    EtcdError,
    GatewayClient,
    Unreachable,
    b64,
    describe,
    parse_answer,
    unb64,
)
from teleport.backend.fanout import WATCH_BUFFER, QueuedWatcher, init_event
from teleport.errors import AccessDenied, ConnectionProblem, LimitExceeded, TeleportError

log = logging.getLogger("teleport.backend.etcd")

#: Seconds between reconnect attempts, growing to the second value.
_BACKOFF = (0.1, 1.0)

#: Turns an etcd kv (JSON) of a PUT into our item, key already without the backend prefix.
ItemDecoder = Callable[[bytes, dict[str, Any]], Item]


class _Lost(Exception):
    """The stream ended without the watcher being closed; reconnect."""


class EtcdWatcher(QueuedWatcher):
    """Events under some prefixes from one etcd watch stream; see the module docstring."""

    def __init__(self, client: GatewayClient, root: bytes, prefixes: Sequence[bytes],
                 decode: ItemDecoder, on_close: Callable[[EtcdWatcher], None],
                 capacity: int = WATCH_BUFFER) -> None:
        super().__init__(prefixes, capacity)
        self._client = client
        self._root = root
        self._decode = decode
        self._on_close = on_close
        self._task: asyncio.Task[None] | None = None
        #: The revision of the last event delivered (or known to have nothing for us).
        self.revision = 0

    def _range(self) -> tuple[bytes, bytes]:
        if not self._prefixes or b"" in self._prefixes:
            return self._root, range_end(self._root)
        return (self._root + min(self._prefixes),
                self._root + max(range_end(p) for p in self._prefixes))

    async def start(self, since: int | None = None) -> None:
        """Establish the etcd watch (after revision since, if given), then queue INIT and follow
        the stream in a task."""
        first = None if since is None else since + 1
        try:
            response, created = await self._connect(first)
        except ConnectionProblem:
            response, created = await self._connect(first)  # once more, e.g. after a new login
        self.revision = created if since is None else since
        self._events.append(init_event(self.revision))
        self._task = asyncio.get_running_loop().create_task(
            self._follow(response), name="etcd watch")

    async def _connect(self, start: int | None) -> tuple[aiohttp.ClientResponse, int]:
        """Open the stream on the first peer that answers; return it and the created revision."""
        low, high = self._range()
        request: dict[str, Any] = {"key": b64(low), "range_end": b64(high),
                                   "progress_notify": True}
        if start is not None:
            request["start_revision"] = str(start)
        errors: dict[str, str] = {}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=DIAL_TIMEOUT,
                                        sock_read=None)
        for url in self._client.peer_order():
            try:
                headers = await self._client.auth_headers(url)
                response = await self._client.session.post(
                    url + "/v3/watch", json={"create_request": request}, headers=headers,
                    timeout=timeout)
            except (TimeoutError, aiohttp.ClientError, OSError) as err:
                errors[url] = describe(err)
                continue
            except Unreachable as err:
                errors[url] = err.reason
                continue
            try:
                while True:
                    result = await self._read_result(url, response)
                    if result.get("created"):
                        break
                self._client.mark_good(url)
                return response, int(result.get("header", {}).get("revision", 0))
            except _Lost as err:
                response.close()
                errors[url] = str(err)
            except BaseException:
                response.close()
                raise
        raise self._client.unreachable(errors)

    async def _read_result(self, url: str, response: aiohttp.ClientResponse) -> dict[str, Any]:
        """Read the next stream message; raise _Lost at a broken or ended stream."""
        try:
            line = await response.content.readuntil(b"\n", max_size=MAX_WATCH_LINE)
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise _Lost(describe(err)) from None
        except ValueError:
            raise LimitExceeded("an etcd watch message is larger than "
                                f"{MAX_WATCH_LINE} bytes") from None
        if not line.strip():
            raise _Lost("the server ended the watch stream")
        try:
            data = parse_answer(url, response.status, line)
        except EtcdError as err:
            if err.grpc_code == UNAUTHENTICATED:  # a stale token: the next attempt logs in
                self._client.forget_token(url)
                raise _Lost(str(err)) from None
            mapped = self._client.map_error(err)
            if isinstance(mapped, AccessDenied | LimitExceeded):
                raise mapped from None
            raise _Lost(str(err)) from None  # "transport is closing" and the like
        except Unreachable as err:
            raise _Lost(err.reason) from None
        result = data.get("result")
        if not isinstance(result, dict):
            raise _Lost(f"unexpected watch message: {json.dumps(data)[:200]}")
        if result.get("canceled"):
            if result.get("compact_revision"):
                raise LimitExceeded(
                    f"etcd watcher fell behind: revision {self.revision + 1} was compacted "
                    f"(history starts at {result['compact_revision']}); read again and watch "
                    "again")
            raise _Lost(f"etcd canceled the watch: {result.get('cancel_reason', '')}")
        return result

    async def _follow(self, response: aiohttp.ClientResponse | None) -> None:
        """Deliver events; reconnect after a loss until closed or an error ends the stream."""
        delay = _BACKOFF[0]
        lost_since = False
        error: TeleportError | None = None
        try:
            while True:
                if response is None:
                    try:
                        response, _ = await self._connect(self.revision + 1)
                    except ConnectionProblem as err:
                        if not lost_since:
                            log.warning("etcd watch lost, reconnecting: %s", err)
                            lost_since = True
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, _BACKOFF[1])
                        continue
                    if lost_since:
                        log.info("etcd watch resumed at revision %d", self.revision + 1)
                    lost_since, delay = False, _BACKOFF[0]
                url = str(response.url.origin())
                try:
                    while True:
                        self._apply(await self._read_result(url, response))
                except _Lost as err:
                    if not lost_since:
                        log.warning("etcd watch lost, reconnecting: %s", err)
                        lost_since = True
                finally:
                    response.close()
                    response = None
        except TeleportError as err:
            error = err
        finally:
            if response is not None:
                response.close()
            self._end(error)

    def _apply(self, result: dict[str, Any]) -> None:
        """Queue one message's events and remember how far the stream got."""
        events = result.get("events") or []
        if not events:
            if not result.get("created"):  # a progress notice: nothing for us up to here
                self.revision = max(self.revision, int(result.get("header", {}).get(
                    "revision", 0)))
            return
        for raw in events:
            kv = raw.get("kv", {})
            revision = int(kv.get("mod_revision", 0))
            key = unb64(kv.get("key"))[len(self._root):]
            if self.wants(key):
                if raw.get("type") == "DELETE":
                    self._queue(Event(EventType.DELETE, Item(key, b"", None, str(revision))))
                else:
                    self._queue(Event(EventType.PUT, self._decode(key, kv)))
            self.revision = max(self.revision, revision)

    async def close(self) -> None:
        """End the stream now, dropping undelivered events; the reader gets StopAsyncIteration."""
        self._on_close(self)
        self._end(drop=True)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
