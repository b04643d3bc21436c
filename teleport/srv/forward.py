"""Forwarding on the node: `-L` checks, remote port forwarding (`-R`) and agent forwarding (`-A`).

Each kind is allowed only when the user's certificate carries the matching extension
(`permit-port-forwarding` for `-L`, `-R` and `-D`, `permit-agent-forwarding` for `-A`), and
every grant and refusal is audited as Teleport's `port` event (`addr`, `success`, `error`).

Remote listeners follow OpenSSH's `GatewayPorts no`: whatever address the client names, the
node listens on loopback only, and as OpenSSH does for a non-root user, a login other than
root may not listen below port 1024. The forwarded agent's socket lives in a fresh directory
under /tmp that belongs to the OS login and is private to it (0700, socket 0600), so no other
account on the node can use the agent; both go when the connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import tempfile
from typing import TYPE_CHECKING, Any

import asyncssh

from teleport.errors import AccessDenied, TeleportError
from teleport.events.emitter import PORT_FORWARD
from teleport.srv.process import OSLogin, lookup_login
from teleport.sshutils.auth import Identity
from teleport.sshutils.splice import ChannelSplice, SpliceChannelEvents, SpliceTCPSession

if TYPE_CHECKING:
    from teleport.srv.server import NodeConnection

log = logging.getLogger("teleport.node")

#: Ports below this need root, as on any Unix host (OpenSSH applies the same rule to -R).
PRIVILEGED_PORTS = 1024
PORT_REFUSED = "port forwarding is not permitted by your role"
AGENT_REFUSED = "agent forwarding is not permitted by your role"


def listen_address(login: OSLogin, host: str, port: int) -> str:
    """Return where to listen for a `tcpip-forward` request, or raise AccessDenied saying why.

    Loopback only (OpenSSH's `GatewayPorts no`): IPv6 loopback when asked for it, else IPv4.
    """
    if not 0 <= port <= 65535:
        raise AccessDenied(f"invalid port {port}")
    if 0 < port < PRIVILEGED_PORTS and login.uid != 0:
        raise AccessDenied(f"only root may listen on port {port} (below {PRIVILEGED_PORTS})")
    return "::1" if host == "::1" else "127.0.0.1"


class Forwarding:
    """The forwarding state of one node connection: its remote listeners and agent socket."""

    def __init__(self, conn: NodeConnection) -> None:
        self.conn = conn
        self.agent: AgentSocket | None = None
        #: Refusals to show on the next session's stderr (agent requests expect no reply).
        self.notices: list[str] = []

    # --- -L / -D: direct-tcpip ------------------------------------------------------------------

    def check_local(self, host: str, port: int) -> None:
        """Refuse (and audit) a direct-tcpip channel when the certificate lacks the permission."""
        if "port-forwarding" not in self._identity().permissions:
            self._audit_later(f"{host}:{port}", PORT_REFUSED)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                            PORT_REFUSED)

    # --- -R: tcpip-forward ----------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> asyncssh.SSHListener | bool:
        """Answer a `tcpip-forward` request: a loopback listener whose connections come back."""
        identity = self._identity()
        addr = f"{host}:{port}"
        try:
            if self.conn.refusal is not None or self.conn.revocation() is not None:
                raise AccessDenied(self.conn.refusal or "access revoked")
            if "port-forwarding" not in identity.permissions:
                raise AccessDenied(PORT_REFUSED)
            login = lookup_login(identity.login)
            bind = listen_address(login, host, port)
            listener = await RemoteListener.start(self.conn, host, bind, port)
        except (TeleportError, OSError) as err:
            reason = str(err) if isinstance(err, TeleportError) else \
                f"cannot listen on {addr}: {err.strerror or err}"
            log.info("refused remote forward %s of %s: %s", addr, identity.user, reason)
            self.notices.append(f"remote port forwarding of {addr} refused: {reason}")
            await self._audit(addr, reason)
            return False
        await self._audit(f"{bind}:{listener.get_port()}", "")
        return listener

    # --- -A: auth-agent-req@openssh.com ---------------------------------------------------------

    async def agent_requested(self) -> bool:
        """Answer a session's agent request: a socket only the OS login can use."""
        identity = self._identity()
        if self.agent is not None:
            return True
        try:
            if "agent-forwarding" not in identity.permissions:
                raise AccessDenied(AGENT_REFUSED)
            self.agent = await AgentSocket.start(self.conn, lookup_login(identity.login))
        except (TeleportError, OSError) as err:
            reason = str(err) if isinstance(err, TeleportError) else \
                f"cannot create the agent socket: {err.strerror or err}"
            log.info("refused agent forwarding of %s: %s", identity.user, reason)
            self.notices.append(f"agent forwarding refused: {reason}")
            await self._audit("agent", reason)
            return False
        await self._audit(f"agent:{self.agent.path}", "")
        return True

    @property
    def agent_path(self) -> str | None:
        """SSH_AUTH_SOCK for this connection's sessions, when the agent is forwarded."""
        return self.agent.path if self.agent is not None else None

    def take_notices(self) -> list[str]:
        notices, self.notices = self.notices, []
        return notices

    def close(self) -> None:
        """Remove the agent socket; asyncssh closes the remote listeners with the connection."""
        if self.agent is not None:
            self.agent.close()
            self.agent = None

    # --- audit ----------------------------------------------------------------------------------

    def _identity(self) -> Identity:
        assert self.conn.identity is not None
        return self.conn.identity

    async def _audit(self, addr: str, error: str) -> None:
        identity = self._identity()
        fields: dict[str, Any] = {"success": not error}
        if error:
            fields["error"] = error
        await self.conn.node.audit(PORT_FORWARD, user=identity.user, login=identity.login,
                                   addr=addr, addr_local=self.conn.local_addr(),
                                   addr_remote=self.conn.remote_addr(), **fields)

    def _audit_later(self, addr: str, error: str) -> None:
        self.conn.node.spawn(self._audit(addr, error), f"audit port {addr}")


class RemoteListener(asyncssh.SSHListener):
    """A TCP listener on the node whose connections go back to the client (`forwarded-tcpip`)."""

    def __init__(self, conn: NodeConnection, requested_host: str) -> None:
        super().__init__()
        self.conn = conn
        #: The address as the client asked for it: the client finds its forward by it.
        self.requested_host = requested_host
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    @classmethod
    async def start(cls, conn: NodeConnection, requested_host: str, bind: str,
                    port: int) -> RemoteListener:
        listener = cls(conn, requested_host)
        loop = asyncio.get_running_loop()
        listener.server = await loop.create_server(listener._accept, bind, port,
                                                   reuse_address=True)
        listener.port = int(listener.server.sockets[0].getsockname()[1])
        return listener

    def _accept(self) -> asyncio.Protocol:
        splice = ChannelSplice()
        return splice.tcp_protocol(
            lambda: self.conn.node.spawn(self._open(splice), f"forwarded-tcpip {self.port}"))

    async def _open(self, splice: ChannelSplice) -> None:
        """Open the channel back to the client; the TCP side waits (paused) until it is open."""
        ssh = self.conn.conn
        peer = splice.transport.get_extra_info("peername") if splice.transport else None
        if ssh is None or not peer:
            splice.abort()
            return
        try:
            await ssh.create_connection(lambda: SpliceTCPSession(splice, self.conn.touch),
                                        self.requested_host, self.port, peer[0], peer[1])
        except (asyncssh.ChannelOpenError, asyncssh.Error, OSError) as err:
            log.info("client refused forwarded connection to port %d: %s", self.port, err)
            splice.abort()

    def get_port(self) -> int:
        return self.port

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()


class _AgentSession(SpliceChannelEvents, asyncssh.SSHUNIXSession[bytes]):
    """The channel side of one agent connection."""

    def __init__(self, splice: ChannelSplice) -> None:
        self.splice = splice

    def connection_made(self, chan: asyncssh.SSHUNIXChannel[bytes]) -> None:
        self.splice.channel_open(chan)


class AgentSocket:
    """A Unix socket on the node whose connections reach the client's agent.

    Made by the node (root) in a directory nobody else can enter yet, then handed to the
    login; removed through a descriptor of that directory, checked to be the one we made,
    so a login that swapped the path for a symlink cannot make us delete anything else.
    """

    def __init__(self, conn: NodeConnection, directory: str, path: str,
                 dir_id: tuple[int, int]) -> None:
        self.conn = conn
        self.directory = directory
        self.path = path
        self.server: asyncio.AbstractServer | None = None
        self._dir_id = dir_id

    @classmethod
    async def start(cls, conn: NodeConnection, login: OSLogin) -> AgentSocket:
        directory = tempfile.mkdtemp(prefix="teleport-")  # 0700, ours for now
        path = os.path.join(directory, f"agent.{os.getpid()}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o600)
            if os.geteuid() == 0:
                os.chown(path, login.uid, login.gid, follow_symlinks=False)
                os.chown(directory, login.uid, login.gid, follow_symlinks=False)
            info = os.stat(directory, follow_symlinks=False)
            sock.listen(16)
            agent = cls(conn, directory, path, (info.st_dev, info.st_ino))
            loop = asyncio.get_running_loop()
            agent.server = await loop.create_unix_server(agent._accept, sock=sock)
        except BaseException:
            sock.close()
            _remove(directory, os.path.basename(path), None)
            raise
        return agent

    def _accept(self) -> asyncio.Protocol:
        splice = ChannelSplice()
        return splice.tcp_protocol(
            lambda: self.conn.node.spawn(self._open(splice), "agent connection"))

    async def _open(self, splice: ChannelSplice) -> None:
        ssh = self.conn.conn
        if ssh is None:
            splice.abort()
            return
        try:
            chan = ssh.create_agent_channel()
            await chan.open(lambda: _AgentSession(splice))
        except (asyncssh.ChannelOpenError, asyncssh.Error, OSError) as err:
            log.info("client refused an agent connection: %s", err)
            splice.abort()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        _remove(self.directory, os.path.basename(self.path), self._dir_id)


def _remove(directory: str, name: str, dir_id: tuple[int, int] | None) -> None:
    """Unlink the socket and the directory, only if the directory is still the one we made."""
    parent, base = os.path.split(directory)
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        info = os.fstat(fd)
        if dir_id is not None and (info.st_dev, info.st_ino) != dir_id:
            return
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.rmdir(base, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
