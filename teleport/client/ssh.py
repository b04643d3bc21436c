"""`tsh ssh`: reach a node through the proxy with the profile's certificate."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncssh

from teleport.api import proxydial
from teleport.client import forwarding, stdio, trust
from teleport.client.profile import Profile, known_host_keys, leaf_host_keys
from teleport.errors import BadParameter, NotFound
from teleport.sshutils import hop
from teleport.utils.addr import parse_addr

NODE_PORT = 3022


@dataclass(frozen=True)
class Forward:
    bind: str
    port: int
    dest_host: str
    dest_port: int


def parse_forward(spec: str) -> Forward:
    """Parse `-L [bind:]port:host:hostport` as OpenSSH does."""
    parts = spec.split(":")
    if len(parts) == 3:
        parts.insert(0, "127.0.0.1")
    if len(parts) != 4 or not parts[1].isdigit() or not parts[3].isdigit():
        raise BadParameter(f"invalid -L {spec!r}: expected [bind_address:]port:host:hostport")
    return Forward(parts[0] or "127.0.0.1", int(parts[1]), parts[2], int(parts[3]))


def _host_ca_keys(profile: Profile, cluster: str = "") -> list[asyncssh.SSHKey]:
    return [asyncssh.import_public_key(key) for key in known_host_keys(profile, cluster)]


def _options(profile: Profile, username: str, agent_forward: str | None = None,
             cluster: str = "") -> asyncssh.SSHClientConnectionOptions:
    """Our keys, and the host CAs of the cluster the host belongs to (the proxy: ours)."""
    try:
        key = asyncssh.import_private_key(profile.key_path.read_bytes())
        cert = asyncssh.import_certificate(profile.ssh_cert())
        host_cas = _host_ca_keys(profile, cluster)
    except (OSError, asyncssh.KeyImportError) as err:
        raise NotFound(f"cannot load your keys ({err}), run 'tsh login'") from None
    return hop.user_options(username, key, cert, host_cas, agent_forward)


@contextlib.asynccontextmanager
async def connect_node(profile: Profile, login: str, host: str,
                       agent_forward: str | None = None,
                       cluster: str = "") -> AsyncIterator[asyncssh.SSHClientConnection]:
    """Open an SSH connection to a node, tunnelled through the proxy (agent_forward: `-A`);
    cluster: a leaf cluster of the proxy's, whose node it is (its proxy routes `host.<leaf>`).

    A host certificate of a host CA we do not trust yet (the cluster is rotating it, or a leaf
    we have not met) makes us refresh known_hosts from the proxy and try once more, if the keys
    trusted for the host's cluster changed meanwhile (here, or by the refresh `tsh` runs beside
    every command: `teleport.client.trust`).
    """
    profile.check_valid()
    if cluster and cluster != profile.cluster and cluster not in leaf_host_keys(profile):
        await trust.refresh_host_cas(profile)  # a leaf added since we last looked?
        if cluster not in leaf_host_keys(profile):
            raise NotFound(f"cluster {cluster!r} is not a leaf of {profile.cluster!r} "
                           "(see tsh clusters)")
    connected = False
    named = (host, cluster)
    for attempt in (1, 2):
        host, cluster = named if named[1] else _leaf_named(profile, named[0])
        before = (cluster, known_host_keys(profile, cluster))
        try:
            async with _connect_node(profile, login, host, agent_forward, cluster) as conn:
                connected = True
                yield conn
                return
        except hop.UntrustedHost:
            if connected or attempt == 2:
                raise
            await trust.refresh_host_cas(profile)
            again = named[1] or _leaf_named(profile, named[0])[1]
            if (again, known_host_keys(profile, again)) == before:
                raise


def _leaf_named(profile: Profile, host: str) -> tuple[str, str]:
    """Read `node.<leaf>` as (node, leaf) for a leaf we know (`tsh ssh root@web1.leaf`, as
    stock ssh through `tsh config`); any other name as (name, "")."""
    target = parse_addr(host, NODE_PORT)
    for leaf in leaf_host_keys(profile):
        if target.host.endswith(f".{leaf}") and len(target.host) > len(leaf) + 1:
            name = target.host[: -len(leaf) - 1]
            return (f"{name}:{target.port}" if ":" in host.rsplit("]", 1)[-1] else name), leaf
    return host, ""


@contextlib.asynccontextmanager
async def _connect_node(profile: Profile, login: str, host: str, agent_forward: str | None,
                        cluster: str) -> AsyncIterator[asyncssh.SSHClientConnection]:
    target = parse_addr(host, NODE_PORT)
    leaf = cluster if cluster and cluster != profile.cluster else ""
    proxy = parse_addr(profile.ssh_proxy_addr, 3023)
    via = f"cannot connect to proxy {proxy}"
    try:
        # HTTPS_PROXY/HTTP_PROXY: an HTTP CONNECT tunnel to the proxy's SSH port (proxydial).
        sock = await proxydial.dial(proxy.host, proxy.port)
    except OSError as err:
        raise hop.unreachable(via, err) from None
    async with hop.connect_node(sock, (proxy.host, proxy.port), _options(profile, profile.user),
                                (f"{target.host}.{leaf}" if leaf else target.host, target.port),
                                _options(profile, login, agent_forward, leaf), name=host,
                                via=via) as conn:
        yield conn


async def run(profile: Profile, login: str, host: str, command: list[str], *,
              tty_mode: bool | None = None, forwards: list[Forward] = (),  # type: ignore[assignment]
              no_command: bool = False, remote: Sequence[forwarding.RemoteForward] = (),
              dynamic: Sequence[forwarding.DynamicForward] = (), agent: bool = False,
              cluster: str = "") -> int:
    """Run a command or an interactive shell; return the exit code to exit with."""
    agent_forward = forwarding.agent_to_forward() if agent else None
    async with connect_node(profile, login, host, agent_forward, cluster) as conn:
        for fwd in forwards:
            try:
                await conn.forward_local_port(fwd.bind, fwd.port, fwd.dest_host, fwd.dest_port)
            except OSError as err:
                raise BadParameter(f"cannot listen on {fwd.bind}:{fwd.port}: {err.strerror}") from None
        await forwarding.start(conn, remote, dynamic)
        if no_command:
            await conn.wait_closed()
            return 0
        interactive = sys.stdin.isatty() if tty_mode is None else tty_mode
        if command and tty_mode is None:
            interactive = False
        return await session(conn, " ".join(command) or None, interactive)


async def session(conn: asyncssh.SSHClientConnection, command: str | None, pty: bool,
                  env: dict[str, str] | None = None) -> int:
    """Run command (None: a shell) with this terminal or pipes; return the exit code."""
    term_size = None
    if pty:
        cols, rows = _terminal_size()
        term_size = (cols, rows)
    process = await conn.create_process(
        command, env=env or {}, term_type=os.environ.get("TERM", "xterm") if pty else None,
        term_size=term_size, encoding=None, request_pty="force" if pty else False)
    loop = asyncio.get_running_loop()
    saved = None
    if pty and sys.stdin.isatty():
        saved = termios.tcgetattr(sys.stdin.fileno())
        tty.setraw(sys.stdin.fileno(), termios.TCSADRAIN)  # keep typeahead
        loop.add_signal_handler(signal.SIGWINCH,
                                lambda: process.change_terminal_size(*_terminal_size()))
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
            loop.remove_signal_handler(signal.SIGWINCH)
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
    if process.exit_status is not None and process.exit_status >= 0:
        return process.exit_status
    return 255


def _terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
        return size.columns, size.lines
    except OSError:
        return 80, 25
