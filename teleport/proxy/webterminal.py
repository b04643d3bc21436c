"""The web terminal: a browser's websocket on one side, the user's SSH session on a node on the other.

The proxy reaches the node exactly as `tsh ssh` does, with the web session's certificate: an SSH
connection into this proxy's own SSH server (over a socket pair, with the browser's address as
the client's), then a second one to the node inside a `direct-tcpip` channel. So the proxy's
checks, routing (reverse tunnels, peers), recording mode and the node's audit (`session.start`,
`session.join`) are the ones every SSH user gets; nothing here decides access.

Wire protocol of the websocket (the page's side is `teleport/web/static`): the first client
message is text `{"token": <bearer>}`; then binary frames are terminal bytes both ways, client
text `{"type": "resize", "cols", "rows"}` resizes, and the server sends text `{"type":
"session", ...}` once connected, `{"type": "exit", "status"}` when the shell ends, `{"type":
"error", "message"}` when it cannot connect. Flow control is end to end: output is read from the
node only as fast as the websocket drains, and input waits for the SSH window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncssh
from aiohttp import WSMsgType, web

from teleport.api.auth_models import WebSession
from teleport.api.constants import SESSION_ENV
from teleport.config import sshalgos
from teleport.config.sshalgos import SSHAlgorithms
from teleport.sshutils import hop
from teleport.sshutils.terminal import clamp_term_size

log = logging.getLogger("teleport.proxy")

#: Serve an SSH connection accepted elsewhere: the proxy SSH server's `serve_socket`.
ServeSSH = Callable[[socket.socket, tuple[str, int]], Awaitable[None]]
NODE_PORT = 3022
TERM_TYPE = "xterm-256color"
#: How long the page has to send its token after the upgrade.
TOKEN_WAIT = 10.0
#: The largest message a page may send: a paste of this size is one message.
MAX_MESSAGE = 1024 * 1024
READ_SIZE = 64 * 1024
#: Close codes: the token is missing or wrong; the node could not be reached.
CLOSE_UNAUTHORIZED = 4401
CLOSE_FAILED = 1011


@dataclass(frozen=True)
class Target:
    """Where a terminal goes: a node as a login, or into a live session (sid) on that node."""

    node: str
    login: str
    cols: int = 80
    rows: int = 24
    sid: str = ""


@contextlib.asynccontextmanager
async def connect(serve_ssh: ServeSSH, session: WebSession, target: Target,
                  client_addr: tuple[str, int],
                  host_cas: Sequence[str], algorithms: SSHAlgorithms = sshalgos.DEFAULT
                  ) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """Open the user's two hops to the node (proxy, then node), closed on leaving.

    algorithms: the proxy's teleport.yaml choice, for both hops (its own server, then the node).
    """
    key = asyncssh.import_private_key(session.ssh_private_key)
    cert = asyncssh.import_certificate(session.ssh_cert)
    cas = [asyncssh.import_public_key(k) for k in host_cas]
    ours, theirs = socket.socketpair()
    try:
        await serve_ssh(theirs, client_addr)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    # Our own server at the other end of a socket pair: no host to check (the name stands
    # in for the address a socket pair does not have).
    async with hop.connect_node(ours, ("proxy", 22),
                                hop.user_options(session.user, key, cert, None, algorithms=algorithms),
                                (target.node, NODE_PORT),
                                hop.user_options(target.login, key, cert, cas, algorithms=algorithms),
                                name=target.node, via=target.node) as conn:
        yield conn


async def serve(ws: web.WebSocketResponse, conn: asyncssh.SSHClientConnection,
                target: Target, ended: asyncio.Event) -> None:
    """Relay one terminal until the shell ends, the page goes away or `ended` is set (logout).

    Tells the page the shell's exit status, or why the terminal was ended.
    """
    cols, rows = clamp_term_size(target.cols, target.rows)
    env = {SESSION_ENV: target.sid} if target.sid else {}
    process = await conn.create_process(None, env=env, term_type=TERM_TYPE,
                                        term_size=(cols, rows), encoding=None,
                                        request_pty="force")
    await ws.send_str(json.dumps({"type": "session", "node": target.node, "login": target.login,
                                  "sid": target.sid}))
    typing = asyncio.ensure_future(_input(ws, process))
    ending = asyncio.ensure_future(ended.wait())
    ending.add_done_callback(lambda _: conn.close())
    try:
        while data := await process.stdout.read(READ_SIZE):
            await ws.send_bytes(data)  # waits while the browser is behind: the node waits too
        await process.wait_closed()
    finally:
        for task in (typing, ending):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if ws.closed:
        return
    if ended.is_set():
        await ws.send_str(json.dumps({"type": "error", "message": "logged out"}))
        await ws.close(code=CLOSE_UNAUTHORIZED, message=b"logged out")
        return
    status = process.exit_status if process.exit_status is not None else -1
    await ws.send_str(json.dumps({"type": "exit", "status": status}))
    await ws.close(code=1000)


async def _input(ws: web.WebSocketResponse, process: asyncssh.SSHClientProcess[bytes]) -> None:
    """Copy keystrokes and resizes from the page to the session; the page leaving ends it."""
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            process.stdin.write(msg.data)
            await process.stdin.drain()
        elif msg.type == WSMsgType.TEXT:
            resize = _resize(msg.data)
            if resize is not None:
                process.change_terminal_size(*resize)
        else:
            break
    process.close()


def _resize(text: str) -> tuple[int, int] | None:
    try:
        msg = json.loads(text)
        if msg.get("type") != "resize":
            return None
        cols, rows = msg["cols"], msg["rows"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not (isinstance(cols, int) and isinstance(rows, int)) or isinstance(cols, bool):
        return None
    return clamp_term_size(cols, rows)


async def read_token(ws: web.WebSocketResponse) -> str:
    """Return the bearer token the page sends first, or "" when it sends anything else."""
    try:
        msg = await asyncio.wait_for(ws.receive(), TOKEN_WAIT)
    except TimeoutError:
        return ""
    if msg.type != WSMsgType.TEXT:
        return ""
    try:
        token = json.loads(msg.data).get("token")
    except (ValueError, AttributeError):
        return ""
    return token if isinstance(token, str) else ""


__all__ = ["CLOSE_FAILED", "CLOSE_UNAUTHORIZED", "MAX_MESSAGE", "ServeSSH", "Target", "connect",
           "read_token", "serve"]
