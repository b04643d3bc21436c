"""Auth API route for a host's keep-alives over one websocket (`auth.client_keepalive`), as
Teleport's stream of them.

Each text message is a `ServerKeepAlive`, answered in turn with `{}` or the error (NotFound
when the record is gone: the host then sends it whole with `PUT /v1/servers`). The caller is
authorized once, when the stream opens, as every request of a connection is by its one
certificate; each keep-alive is checked as `PUT /v1/servers/keepalive` checks it, and a refusal
(another host's record) is audited and ends the stream. One request per heartbeat cost more
than the keep-alive: aiohttp keeps an idle connection's last request alive until the next one,
~300,000 objects at 10,000 nodes for the collector to walk.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

from aiohttp import WSMsgType, web

from teleport.api import httpserver
from teleport.api.presence_models import ServerKeepAlive
from teleport.auth.api import NODE, ON_SHUTDOWN, PROXY, Call, audit_refusal, route
from teleport.errors import AccessDenied, BadParameter, TeleportError, to_wire
from teleport.rbac import rules

#: A keep-alive is a few fields.
MAX_MESSAGE = 4096
#: A stream without a message for this long is pinged, and closed without a pong: a host that
#: vanished without closing its connection does not keep it open.
PING_AFTER = 30.0

#: The open streams of each API (a process may serve several: tests).
_open: weakref.WeakKeyDictionary[web.Application, weakref.WeakSet[web.WebSocketResponse]] = (
    weakref.WeakKeyDictionary())


@route("GET", "/v1/servers/keepalive/stream", [NODE, PROXY])
async def keep_alive_stream(call: Call) -> Any:
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=PING_AFTER)
    await ws.prepare(call.request)
    _open.setdefault(call.request.app, weakref.WeakSet()).add(ws)
    async for message in ws:
        if message.type is WSMsgType.ERROR:  # too big, or broken: aiohttp closes it
            break
        try:
            beat = _keep_alive(message.type, message.data)
            rules.check_announces_itself(call.subject, beat.kind, beat.name)
            await call.auth.hosts.keep_alive_server(beat.kind, beat.name, beat.expires)
        except AccessDenied as err:
            await audit_refusal(call.auth, call.identity.username, call.request, err)
            await ws.send_str(json.dumps(to_wire(err)))
            break
        except TeleportError as err:
            await ws.send_str(json.dumps(to_wire(err)))
        else:
            await ws.send_str("{}")
    await ws.close()
    return ws


def _keep_alive(kind: WSMsgType, data: Any) -> ServerKeepAlive:
    """The keep-alive a message carries; BadParameter for anything else."""
    if kind is not WSMsgType.TEXT:
        raise BadParameter("a keep-alive is a JSON text message")
    try:
        body = json.loads(data)
    except ValueError:
        raise BadParameter("a keep-alive is a JSON text message") from None
    if not isinstance(body, dict):
        raise BadParameter("a keep-alive is a JSON object")
    return httpserver.parse_model(ServerKeepAlive, body)


async def _end_streams(app: web.Application) -> None:
    """Close every open stream, so shutting the API down does not wait for hosts."""
    for ws in list(_open.get(app, ())):
        await ws.close()


ON_SHUTDOWN.append(_end_streams)
