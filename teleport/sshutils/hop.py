"""The user's two SSH hops, shared by `tsh` and the proxy's web terminal: proxy, then node.

A user reaches a node by opening an SSH connection to the proxy and, inside a `direct-tcpip`
channel of it, a second SSH connection to the node, each authenticated with the user's
certificate. `tsh` does it from the user's machine; the web terminal does it inside the proxy
(over a socket pair into the proxy's own SSH server), so both go through the same checks,
routing and recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Sequence

import asyncssh

from teleport.config import sshalgos
from teleport.config.sshalgos import SSHAlgorithms
from teleport.errors import AccessDenied, ConnectionProblem, NotFound
from teleport.sshutils import ciphers, clientconn
from teleport.sshutils.flow import SESSION_PKTSIZE, TUNNEL_PKTSIZE, WINDOW


def user_options(username: str, key: asyncssh.SSHKey, cert: asyncssh.SSHCertificate,
                 host_cas: Sequence[asyncssh.SSHKey] | None,
                 agent_forward: str | None = None,
                 algorithms: SSHAlgorithms = sshalgos.DEFAULT) -> asyncssh.SSHClientConnectionOptions:
    """Options of a user's hop: the certificate only, hosts trusted by the host CA (None: any).

    algorithms: `tsh` uses the defaults; the proxy's web terminal what its teleport.yaml chose.
    """
    ciphers.install()
    return asyncssh.SSHClientConnectionOptions(
        username=username, client_keys=[(key, cert)],
        known_hosts=None if host_cas is None else ([], list(host_cas), []),
        agent_path=None, agent_forwarding=agent_forward or False, config=None,
        connect_timeout=15, preferred_auth=["publickey"], window=WINDOW,
        max_pktsize=SESSION_PKTSIZE, **sshalgos.asyncssh_kwargs(algorithms, "client"))


class ChannelTunnel:
    """The proxy connection as asyncssh's `tunnel=`, with channels sized for whole SSH packets."""

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    async def create_connection(
            self, session_factory: Callable[[], asyncssh.SSHTCPSession[bytes]], remote_host: str,
            remote_port: int) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]:
        return await self.conn.create_connection(session_factory, remote_host, remote_port,
                                                 window=WINDOW, max_pktsize=TUNNEL_PKTSIZE)

    def close(self) -> None:
        self.conn.close()

    async def wait_closed(self) -> None:
        await self.conn.wait_closed()


@contextlib.asynccontextmanager
async def connect_node(sock: socket.socket | None, proxy: tuple[str, int],
                       proxy_options: asyncssh.SSHClientConnectionOptions, node: tuple[str, int],
                       node_options: asyncssh.SSHClientConnectionOptions, *, name: str,
                       via: str) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """Open both hops (over sock, else by dialling the proxy); closed on leaving.

    Only a failure to connect is mapped to an error kind: access denied, the node unreachable
    or its host key not the cluster's, a disconnect (named after `name`, the node as the user
    named it), or the socket failing (named after `via`, where it goes).
    """
    login = node_options.username
    proxy_ends, node_ends = _Ending(), _Ending()
    async with contextlib.AsyncExitStack() as stack:
        try:
            proxy_conn = await stack.enter_async_context(await clientconn.connect(
                proxy[0], proxy[1], sock=sock, options=proxy_options, client_factory=proxy_ends))
            conn = await stack.enter_async_context(await clientconn.connect(
                node[0], node[1], tunnel=ChannelTunnel(proxy_conn), options=node_options,
                client_factory=node_ends))
        except asyncssh.PermissionDenied:
            # Our servers say why in a banner ("teleport: <reason>") before refusing.
            why = proxy_ends.banner or node_ends.banner
            raise AccessDenied(f"access denied to {login} connecting to {name}"
                               + (f": {why}" if why else "")) from None
        except asyncssh.ChannelOpenError as err:
            raise NotFound(f"cannot reach {name}: {err.reason}") from None
        except asyncssh.HostKeyNotVerifiable as err:
            raise UntrustedHost(f"host key of {name} is not signed by the cluster: "
                                f"{err.reason}") from None
        except asyncssh.DisconnectError as err:
            raise ConnectionProblem(f"{name}: {err.reason}") from None
        except OSError as err:
            raise unreachable(via, err) from None
        try:
            yield conn
        except asyncssh.DisconnectError as err:
            # Hung up mid-session (a lock, a revocation): say why, as the server said it.
            with contextlib.suppress(TimeoutError):  # its disconnect may trail the channel close
                await asyncio.wait_for(proxy_conn.wait_closed(), 1.0)
            raise ConnectionProblem(f"{name}: {node_ends.reason or proxy_ends.reason or err.reason}") \
                from None


class UntrustedHost(AccessDenied):
    """The proxy's or node's host certificate is not signed by a host CA we trust (a client
    whose trust predates a host CA rotation refreshes it and tries again)."""


class _Ending(asyncssh.SSHClient):
    """Remember why a server refused (its banner) or hung up (its disconnect message), for the
    user's error line."""

    def __init__(self) -> None:
        self.reason = ""
        self.banner = ""

    def auth_banner_received(self, msg: str, lang: str) -> None:
        text = " ".join(msg.split())  # one line, whatever the server sent
        self.banner = text.removeprefix("teleport: ")[:500] if text.isprintable() else ""

    def __call__(self) -> _Ending:  # asyncssh's client_factory
        return self

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, asyncssh.DisconnectError) and \
                exc.code != asyncssh.DISC_CONNECTION_LOST:
            self.reason = exc.reason


def unreachable(via: str, err: OSError) -> ConnectionProblem:
    """The error for a socket that failed on its way to `via`."""
    return ConnectionProblem(f"{via}: {err.strerror or err or type(err).__name__}")
