"""A host's keep-alives over one websocket to the auth server, as Teleport's stream of them.

Each keep-alive is a `ServerKeepAlive` message answered in turn with `{}` or the error
(`{"error": {"code", "message"}}`, NotFound when the record is gone). One request per
heartbeat cost the auth server more than the keep-alive itself: each idle keep-alive connection
held its last request's objects until the next one, ~300,000 objects at 10,000 nodes that every
collection of the young or middle generation walked (0.25-0.4 s pauses every 20-40 s).
"""

from __future__ import annotations

import asyncio
import json

from teleport.api.http import TRANSPORT_ERRORS, HTTPClient, one_line
from teleport.api.websocket import WebSocket
from teleport.errors import ConnectionProblem, from_wire

#: The auth API's route (`teleport.auth.api.keep_alive_stream`).
STREAM_PATH = "/v1/servers/keepalive/stream"


class _Ended(ConnectionProblem):
    """The stream was closed or broken (not slow)."""


class KeepAlives:
    """The stream: opened at the first keep-alive and again after any failure or refusal; one
    keep-alive at a time (a process's node and proxy heartbeats share it)."""

    def __init__(self, http: HTTPClient, timeout: float) -> None:
        self._http = http
        self._timeout = timeout
        self._ws: WebSocket | None = None
        self._lock = asyncio.Lock()

    async def send(self, beat: str) -> None:
        """Send one keep-alive (JSON) and wait for its answer; raise the server's error, or
        ConnectionProblem when the stream broke (the next keep-alive opens another)."""
        async with self._lock:
            kept = self._ws is not None
            try:
                answer = await self._exchange(beat)
            except _Ended:
                if not kept:
                    raise
                # The kept stream had ended (a restarted auth server, a failover): once more
                # on a new one, as a keep-alive moved twice to the same expiry is one.
                answer = await self._exchange(beat)
        if answer == "{}":
            return
        try:
            err = json.loads(answer)["error"]
            code, message = str(err["code"]), str(err["message"])
        except (ValueError, TypeError, KeyError):
            raise ConnectionProblem(f"the {self._http.peer} answered a keep-alive with "
                                    f"{answer[:160]!r}") from None
        raise from_wire(code, one_line(message))

    async def _exchange(self, beat: str) -> str:
        """Send beat on the stream (opened if none) and return the answer; keep the stream
        only after a `{}` (a refusal ends it at the server)."""
        ws, self._ws = self._ws, None
        if ws is None:
            ws = await self._http.websocket(STREAM_PATH)
        try:
            async with asyncio.timeout(self._timeout):
                await ws.send(beat)
                answer = await ws.receive()
        except TRANSPORT_ERRORS as exc:
            ws.abort()
            problem = f"the keep-alive stream to the {self._http.peer} broke: {one_line(exc)}"
            if isinstance(exc, TimeoutError):  # a slow server: no second try to load it more
                raise ConnectionProblem(problem) from None
            raise _Ended(problem) from None
        except BaseException:  # cancelled mid-exchange: its answer would come to the next
            ws.abort()
            raise
        if answer == "{}":
            self._ws = ws
        else:
            ws.abort()
        return answer

    def reset(self) -> None:
        """Drop the stream (new credentials: the next keep-alive opens one with them)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.abort()
