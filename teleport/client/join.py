"""`tsh sessions ls` and `tsh join`: find live sessions and attach to one through the proxy.

The session list comes from the proxy's web API and names each session's node by UUID, so
joining dials that node through the proxy like `tsh ssh` and asks it, with the environment
variable `TELEPORT_SESSION`, to attach the terminal to the session rather than start a shell
(see `teleport.srv.party`). The node, not this list, decides who may join.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import tty
from typing import Any

import asyncssh

from teleport.client import stdio
from teleport.client.profile import Profile
from teleport.client.ssh import connect_node
from teleport.client.webapi import WebClient
from teleport.errors import NotFound
from teleport.events.recording import check_sid
from teleport.keys.ssh import parse_cert
from teleport.srv.party import JOIN_ENV

#: tsh's exit status when the session ended without reporting one.
EXIT_UNKNOWN = 255


async def list_sessions(profile: Profile) -> list[dict[str, Any]]:
    """Return the live sessions this login may join, oldest first."""
    async with WebClient(profile.web_proxy_addr, insecure=profile.insecure,
                         ca_pems=[profile.ca_path.read_bytes()],
                         client_cert=(profile.tls_cert_path.read_bytes(),
                                      profile.tls_key_path.read_bytes())) as web:
        return await web.list_active_sessions(profile.cluster)


async def join(profile: Profile, sid: str) -> int:
    """Share a live session's terminal until it ends; return its exit status."""
    check_sid(sid)
    session = next((s for s in await list_sessions(profile) if s["sid"] == sid), None)
    if session is None:
        raise NotFound(f"session {sid} is not running, or you may not join it")
    # Any login the certificate allows gets us onto the node: joining starts no shell as it.
    login = parse_cert(profile.ssh_cert()).principals[0]
    async with connect_node(profile, login, session["server_id"]) as conn:
        return await _attach(conn, sid)


async def _attach(conn: asyncssh.SSHClientConnection, sid: str) -> int:
    """Pump this terminal to and from the shared one; the owner's window size rules."""
    process = await conn.create_process(
        None, env={JOIN_ENV: sid}, term_type=os.environ.get("TERM", "xterm"),
        term_size=_terminal_size(), encoding=None, request_pty="force")
    saved = None
    if sys.stdin.isatty():
        saved = termios.tcgetattr(sys.stdin.fileno())
        tty.setraw(sys.stdin.fileno(), termios.TCSADRAIN)
    stdin = asyncio.ensure_future(stdio.feed_stdin(sys.stdin.fileno(), process.stdin))
    try:
        await asyncio.gather(stdio.copy_out(process.stdout, sys.stdout.fileno()),
                             stdio.copy_out(process.stderr, sys.stderr.fileno()))
        await process.wait_closed()
    finally:
        stdin.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await stdin
        if saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
    status = process.exit_status
    return status if status is not None and status >= 0 else EXIT_UNKNOWN


def _terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
        return size.columns, size.lines
    except OSError:
        return 80, 25
