"""`tsh ssh login@env=prod cmd`: run a command on every node whose labels match.

Each output line is written whole, prefixed with its node's name, so the lines of concurrent
nodes never mix; the exit status is the first failure's, in node order.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

import asyncssh

from teleport.api.listing_models import NodeInfo
from teleport.client import ssh
from teleport.client.nodes import format_selector, matching_nodes
from teleport.client.profile import Profile
from teleport.client.stdio import CHUNK
from teleport.errors import BadParameter, NotFound, TeleportError

#: How many nodes a fan-out talks to at once, to bound connections through the proxy.
MAX_PARALLEL = 8
#: A line longer than this is written in pieces rather than buffered without bound.
_MAX_LINE = 65536
_CONNECTION_FAILED = 255


async def run_on_matching(profile: Profile, login: str, selector: dict[str, str],
                          command: list[str], *, tty_mode: bool | None = None,
                          forwards: Sequence[ssh.Forward] = (), no_command: bool = False) -> int:
    """Run the command on every matching node, or open a session on the only one."""
    nodes = await matching_nodes(profile, selector)
    if not nodes:
        raise NotFound(f"no nodes match labels {format_selector(selector)}")
    if not command or forwards or no_command:
        # A terminal or a forwarded port can only be attached to one node.
        if len(nodes) != 1:
            raise BadParameter(
                f"labels {format_selector(selector)} match {len(nodes)} nodes; an interactive "
                "session or port forwarding needs exactly one: add labels or name the node")
        return await ssh.run(profile, login, nodes[0].id, command, tty_mode=tty_mode,
                             forwards=list(forwards), no_command=no_command)
    out, err = _LineWriter(sys.stdout.fileno()), _LineWriter(sys.stderr.fileno())
    limit = asyncio.Semaphore(MAX_PARALLEL)

    async def one(node: NodeInfo) -> int:
        async with limit:
            return await _run_on_node(profile, login, node, " ".join(command), out, err)

    async with asyncio.TaskGroup() as tasks:
        results = [tasks.create_task(one(node)) for node in nodes]
    return next((code for code in (r.result() for r in results) if code != 0), 0)


async def _run_on_node(profile: Profile, login: str, node: NodeInfo, command: str,
                       out: _LineWriter, err: _LineWriter) -> int:
    """Run on one node by UUID (names may repeat); a failure to reach it is a line, not a crash."""
    prefix = f"[{node.name}] ".encode()
    try:
        async with ssh.connect_node(profile, login, node.id) as conn:
            process = await conn.create_process(command, encoding=None, stdin=asyncssh.DEVNULL)
            await asyncio.gather(_copy_lines(process.stdout, prefix, out),
                                 _copy_lines(process.stderr, prefix, err))
            await process.wait_closed()
    except (TeleportError, asyncssh.Error, OSError) as exc:
        await err.write(prefix + f"error: {_one_line(exc)}\n".encode())
        return _CONNECTION_FAILED
    status = process.exit_status
    return status if status is not None and status >= 0 else _CONNECTION_FAILED


async def _copy_lines(reader: asyncssh.SSHReader[bytes], prefix: bytes, writer: _LineWriter) -> None:
    """Prefix every complete line; end an unterminated last line so the next prefix starts fresh."""
    pending = b""
    while data := await reader.read(CHUNK):
        pending += data
        *lines, pending = pending.split(b"\n")
        if len(pending) > _MAX_LINE:
            lines.append(pending)
            pending = b""
        if lines:
            await writer.write(b"".join(prefix + line + b"\n" for line in lines))
    if pending:
        await writer.write(prefix + pending + b"\n")


class _LineWriter:
    """Write whole batches of lines to an fd, one batch at a time across all nodes."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = asyncio.Lock()

    async def write(self, data: bytes) -> None:
        async with self._lock:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self._fd, view):]
                except BlockingIOError:
                    await asyncio.sleep(0.005)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
