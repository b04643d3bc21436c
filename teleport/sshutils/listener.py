"""Listen for SSH with the settings the node and the proxy share."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

import asyncssh

from teleport.api.throttle import Slot, Throttle
from teleport.config import sshalgos
from teleport.config.sshalgos import SSHAlgorithms
from teleport.metrics import CONNECTIONS, CONNECTIONS_REFUSED
from teleport.sshutils import ciphers, clientaddr
from teleport.sshutils.auth import CertAuthConnection, CertAuthServer
from teleport.sshutils.flow import SESSION_PKTSIZE, WINDOW
from teleport.sshutils.gate import ACCEPTED_SLOT, Gate
from teleport.utils.supervisor import Supervisor

#: Teleport's default `connection_limits.max_connections`.
DEFAULT_MAX_CONNECTIONS = 15000
DEFAULT_MAX_USERS = 250
#: The prototype dropped SYNs at 200 concurrent clients with asyncio's default backlog of 100.
BACKLOG = 1024


def server_options(*, host_private_key: bytes, host_cert: str,
                   server_factory: Callable[[], CertAuthServer],
                   algorithms: SSHAlgorithms = sshalgos.DEFAULT) -> asyncssh.SSHServerConnectionOptions:
    """Build asyncssh options: host key with its certificate, user certs only, `algorithms`."""
    ciphers.install()
    return asyncssh.SSHServerConnectionOptions(
        server_factory=server_factory,
        server_host_keys=host_keys(host_private_key, host_cert),
        **sshalgos.asyncssh_kwargs(algorithms, "server"),
        # Authentication is ours (see CertAuthConnection): no authorized_keys, GSS or host-based.
        authorized_client_keys=None, gss_host=None, known_client_hosts=None,
        # Terminals are real PTYs on the node; asyncssh's line editor would get in the way.
        line_editor=False, agent_forwarding=False, x11_forwarding=False,
        keepalive_interval=300, login_timeout=60, window=WINDOW, max_pktsize=SESSION_PKTSIZE)


def with_host_key(options: asyncssh.SSHServerConnectionOptions, *, host_private_key: bytes,
                  host_cert: str) -> asyncssh.SSHServerConnectionOptions:
    """Return options that present another host key and certificate, all else unchanged."""
    return asyncssh.SSHServerConnectionOptions(
        options=options, server_host_keys=host_keys(host_private_key, host_cert))


def host_keys(host_private_key: bytes, host_cert: str) -> Sequence[asyncssh.SSHKeyPair]:
    """Load a host key with its certificate, offered only under algorithms without SHA-1.

    asyncssh offers every algorithm a key can sign with (`ssh-rsa-cert-v01@openssh.com` for
    an RSA host certificate) and has no option to narrow the offer, so the key pair's list is.
    """
    key = asyncssh.import_private_key(host_private_key)
    cert = asyncssh.import_certificate(host_cert)
    pairs = asyncssh.load_keypairs([(key, cert)])
    for pair in pairs:
        pair.host_key_algorithms = sshalgos.host_key_algorithms(pair.host_key_algorithms)
    return pairs


Options = asyncssh.SSHServerConnectionOptions | Callable[[], asyncssh.SSHServerConnectionOptions]


async def listen(host: str, port: int, options: Options,
                 sock: socket.socket | None = None,
                 client_addr: clientaddr.Check | None = None,
                 throttle: Throttle | None = None) -> asyncio.Server:
    """Start accepting SSH on host:port (0 picks a free port) with our connection class.

    asyncssh.listen() has no way to choose the connection class, so we create the asyncio
    server ourselves with the same factory shape it uses; asyncssh sets TCP_NODELAY itself.
    options: fixed, or read for each new connection (a host key that changes while serving).
    client_addr: a node's check of the line a proxy may send first with the user's address.
    throttle: the per-source limits on handshakes (`teleport.api.throttle`); the banner waits
    for its turn. With a proxy's address line the user's address is the source, so a proxy
    carrying many users' sessions is not slowed as one address.
    """
    loop = asyncio.get_running_loop()
    current = options if callable(options) else (lambda: options)

    def connection() -> asyncio.Protocol:
        now = current()

        def ssh(peer: tuple[str, int] | None, slot: Slot | None) -> asyncio.Protocol:
            conn = CertAuthConnection(loop, now)
            conn.throttle_slot = slot
            if peer is not None:
                conn.set_extra_info(peername=peer)
            return conn

        def gated(peer: tuple[str, int] | None, slot: Slot | None) -> asyncio.Protocol:
            if throttle is None:
                return ssh(peer, None)
            return Gate(throttle, lambda slot: ssh(peer, slot), slot)

        if client_addr is not None:
            return clientaddr.AddressPreamble(gated, client_addr, throttle=throttle)
        return gated(None, None)

    if sock is not None:
        return await loop.create_server(connection, sock=sock, backlog=BACKLOG)
    return await loop.create_server(connection, host, port, backlog=BACKLOG, reuse_address=True)


def bound_port(server: asyncio.Server) -> int:
    """Return the port a listener bound, for port 0."""
    return int(server.sockets[0].getsockname()[1])


C = TypeVar("C", bound=CertAuthServer)
log = logging.getLogger("teleport.ssh")


class SSHListener(Generic[C]):
    """The lifecycle the node and proxy share: listen, track connections and tasks, close.

    Subclasses build `self._options`; one that hangs up its own way overrides `close()` with
    `_stop_listening()` first and `_wait_closed()` last, doing its hang-up in between.
    """

    _options: asyncssh.SSHServerConnectionOptions

    def __init__(self, service: str, max_connections: int, max_users: int) -> None:
        self.service = service
        self.max_connections = max_connections
        self.max_users = max_users
        # Touch the labelled series so /metrics shows them at zero from the start.
        CONNECTIONS.labels(service)
        CONNECTIONS_REFUSED.labels(service)
        self._server: asyncio.Server | None = None
        self._port = 0
        self.connections: set[C] = set()
        #: Owns the connections' work (sessions, audit calls), so close() can wait for it.
        self.tasks = Supervisor(f"{service} SSH")
        #: A node's check of the user's address a proxy sends first (None: not accepted).
        self.client_addr: clientaddr.Check | None = None
        #: Per-source limits on unauthenticated connections and handshake rate; the process
        #: sets the configured one (`teleport.connection_limits`) before `start`.
        self.throttle = Throttle(service)

    def admit(self, conn: C) -> None:
        """Track a new connection, or mark it to be hung up with the reason over the limit."""
        if len(self.connections) >= self.max_connections:
            CONNECTIONS_REFUSED.labels(self.service).inc()
            log.warning("%s refused a connection from %s: %d connections is the limit",
                        self.service, conn.remote_addr(), self.max_connections)
            conn.refusal = (f"too many connections: this {self.service} serves at most "
                            f"{self.max_connections} (teleport.connection_limits)")
            return
        self.connections.add(conn)
        CONNECTIONS.labels(self.service).inc()

    def admit_user(self, conn: C) -> None:
        """Refuse a new user's channels once max_users distinct users are connected."""
        if conn.identity is None or conn.conn is None:
            return
        users = {c.identity.user for c in self.connections
                 if c.identity is not None and c is not conn and c.refusal is None}
        if conn.identity.user in users or len(users) < self.max_users:
            return
        CONNECTIONS_REFUSED.labels(self.service).inc()
        log.warning("%s refused user %s: %d users is the limit", self.service,
                    conn.identity.user, self.max_users)
        # Every channel it opens is refused with this reason, which clients show verbatim.
        conn.refusal = (f"too many users: this {self.service} serves at most {self.max_users} "
                        "users at once (teleport.connection_limits)")

    async def end_revoked(self) -> int:
        """Hang up every connection whose user lost access since it authenticated; count them.

        Run after each poll of the revocation list: deleting or locking a user ends their live
        sessions within one poll, not when their certificate expires.
        """
        ending = [(conn, reason) for conn in list(self.connections)
                  if conn.conn is not None and (reason := conn.revocation()) is not None]
        # Together: each may wait a moment (HANG_UP_GRACE) before its disconnect.
        await asyncio.gather(*(conn.end_revoked(reason) for conn, reason in ending))
        return len(ending)

    def forget(self, conn: C) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            CONNECTIONS.labels(self.service).dec()

    async def __aenter__(self) -> SSHListener[C]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self, host: str, port: int, sock: socket.socket | None = None, *,
                    bind: bool = True) -> None:
        """Listen on host:port (port 0 picks one, see `port`), or on a socket handed down.

        With bind=False nothing is bound: connections come only through `serve_socket`.
        """
        if not self.tasks.running:
            await self.tasks.start()
        if not bind:
            return
        self._server = await listen(host, port, lambda: self._options, sock, self.client_addr,
                                    self.throttle)
        self._port = bound_port(self._server)

    async def serve_socket(self, sock: socket.socket, peer: tuple[str, int] | None = None) -> None:
        """Serve SSH on a connection accepted elsewhere (the proxy's port multiplexer, a tunnel).

        The same connection class as our own port, so the connection limits and tracking apply.
        peer: the client's address when the socket has none of its own (a reverse tunnel's
        socket pair; the proxy sent the user's address along), for SSH_CLIENT and the audit log.
        The acceptor's throttle slot (`gate.ACCEPTED_SLOT`, the multiplexer's) goes on with the
        connection; a tunnel's connection is throttled here by the user's address.
        """
        loop = asyncio.get_running_loop()
        options = self._options

        def ssh(slot: Slot | None) -> asyncio.Protocol:
            conn = CertAuthConnection(loop, options)
            conn.throttle_slot = slot
            if peer is not None:
                conn.set_extra_info(peername=peer if peer[0] else ("0.0.0.0", 0),
                                    sockname=("0.0.0.0", 0))
            return conn

        accepted = ACCEPTED_SLOT.get()
        if accepted is not None or peer is None:
            await loop.connect_accepted_socket(lambda: ssh(accepted), sock)
            return
        slot = self.throttle.enter(peer[0])
        if slot is None:
            sock.close()
            return
        await loop.connect_accepted_socket(lambda: Gate(self.throttle, ssh, slot), sock)

    def set_host_key(self, host_private_key: bytes, host_cert: str) -> None:
        """Present another host key and certificate to new connections (a CA rotation's
        update_servers phase); open connections keep the key they negotiated."""
        self._options = with_host_key(self._options, host_private_key=host_private_key,
                                      host_cert=host_cert)

    @property
    def port(self) -> int:
        return self._port

    async def close(self) -> None:
        """Stop listening, drop every connection and wait for them to be gone.

        The node overrides it to give sessions a grace to end first.
        """
        conns = self._stop_listening()
        await self._cancel_tasks()
        await self._wait_closed(conns)

    def stop_accepting(self) -> None:
        """Stop taking new connections and keep serving the open ones (graceful restart)."""
        if self._server is not None:
            self._server.close()

    def _stop_listening(self) -> list[C]:
        """Stop accepting and close every connection; return them for _wait_closed."""
        if self._server is not None:
            self._server.close()
        conns = list(self.connections)
        for conn in conns:
            conn.close()
        return conns

    async def _cancel_tasks(self) -> None:
        await self.tasks.cancel_all()

    async def _wait_closed(self, conns: list[C]) -> None:
        for conn in conns:
            await conn.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        # Last: work the closing connections started on their way out is cancelled too.
        await self.tasks.close()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run connection work as a task this server owns, so close() can wait for it."""
        self.tasks.spawn(coro, name)
