"""The node's SSH server (3022): user certificates in, shells and commands as the OS login out."""

from __future__ import annotations

import logging
import signal
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncssh

from teleport.config.sshalgos import DEFAULT as DEFAULT_ALGORITHMS
from teleport.config.sshalgos import SSHAlgorithms
from teleport.errors import AccessDenied, TeleportError
from teleport.events.emitter import PORT_FORWARD, Emitter, make_event
from teleport.keys.ssh import SSHCertInfo
from teleport.metrics import AUDIT_FAILURES, SESSIONS
from teleport.rbac.roles import RoleSet
from teleport.srv.forward import Forwarding
from teleport.srv.pam import PamService
from teleport.srv.party import LiveSession, SessionRegistry
from teleport.srv.process import Child
from teleport.srv.session import NodeSession
from teleport.sshutils.auth import CertAuthServer, CertChecker, RevocationCheck, never_revoked
from teleport.sshutils.listener import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_USERS,
    SSHListener,
    server_options,
)
from teleport.sshutils.monitor import PolicySource, SessionPolicy, no_policy, watch
from teleport.sshutils.recorder import Recordings
from teleport.sshutils.splice import forward_to
from teleport.types.roles import Role
from teleport.utils.clock import Clock, RealClock

log = logging.getLogger("teleport.node")

#: The role definitions as the node last fetched them (None: not fetched yet).
RoleSource = Callable[[], "Mapping[str, Role] | None"]

#: How long close() lets sessions end on SIGHUP before it kills what is left.
HANGUP_GRACE_SECONDS = 2.0


class NodeServer(SSHListener["NodeConnection"]):
    """Serve SSH for this host; an async context manager, started with `start(host, port)`."""

    def __init__(self, *, host_private_key: bytes, host_cert: str,
                 trusted_user_cas: Callable[[], Sequence[str]], cluster_name: str,
                 server_id: str, nodename: str, labels: Callable[[], Mapping[str, str]],
                 emitter: Emitter, proxy_addr: Callable[[], str],
                 clock: Clock | None = None, recordings: Recordings | None = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_users: int = DEFAULT_MAX_USERS,
                 registry: SessionRegistry | None = None,
                 revoked: RevocationCheck | None = None,
                 policy: PolicySource = no_policy,
                 roles: RoleSource | None = None,
                 roles_of: Callable[[SSHCertInfo], Sequence[str]] | None = None,
                 algorithms: SSHAlgorithms = DEFAULT_ALGORITHMS) -> None:
        self.cluster_name = cluster_name
        #: Which of our roles a certificate stands for: its own, or a trusted root's user's
        #: after the role map (`teleport.service.trust`); may refuse (AccessDenied).
        self.roles_of = roles_of or (lambda cert: cert.roles)
        self.server_id = server_id
        self.nodename = nodename
        self.labels = labels
        self.emitter = emitter
        self.proxy_addr = proxy_addr
        #: Where interactive sessions are recorded; None records nothing (tests, `off`).
        self.recordings = recordings
        #: The PAM service every session goes through (`ssh_service.pam`); None: no PAM.
        self.pam: PamService | None = None
        #: Where live sessions are listed for `tsh sessions ls`; None lists nothing (tests).
        self.registry = registry
        #: Live terminal sessions by id, which `tsh join` attaches to.
        self.live: dict[str, LiveSession] = {}
        #: When connections end although their user has access (expired certificate, idle).
        self.policy = policy
        self.clock = clock or RealClock()
        #: The cluster's roles as last fetched: every login is judged with them against this
        #: node's labels, so a role change applies without a new certificate. None: no role
        #: check beyond the certificate's principals (servers built by tests).
        self.roles = roles
        self.checker = CertChecker(trusted_cas=trusted_user_cas, emitter=emitter,
                                   clock=self.clock, check_login=True,
                                   revoked=revoked or never_revoked,
                                   accept=self.check_access if roles is not None else None)
        self._options = server_options(host_private_key=host_private_key, host_cert=host_cert,
                                       server_factory=lambda: NodeConnection(self),
                                       algorithms=algorithms)
        super().__init__("node", max_connections, max_users)
        #: Running children of every session, so close() can kill the ones ignoring SIGHUP.
        self.children: set[Child] = set()
        SESSIONS.set_function(lambda: len(self.children))

    def access(self, cert: SSHCertInfo) -> RoleSet:
        """Return what a certificate's roles allow, as this node last fetched the roles."""
        defined = self.roles() if self.roles is not None else None
        if defined is None:
            raise AccessDenied("this node has not loaded the cluster's roles yet")
        return RoleSet.of(self.roles_of(cert), defined, cert.traits)

    def check_access(self, cert: SSHCertInfo, login: str) -> None:
        """Let a user log in as login only if their roles reach this node's labels with it."""
        self.access(cert).check_node_login(self.nodename, self.labels(), login)

    async def close(self) -> None:
        """Stop listening, hang up every session, and wait until nothing of ours runs."""
        conns = self._stop_listening()
        if await self.tasks.wait(HANGUP_GRACE_SECONDS):
            for child in list(self.children):
                child.signal(signal.SIGKILL)
            await self.tasks.wait(HANGUP_GRACE_SECONDS)
        await self._cancel_tasks()
        await self._wait_closed(conns)

    async def audit(self, event_type: str, **fields: Any) -> None:
        """Emit an event with this node's fields; a failed emit is logged, not fatal to the session."""
        event = make_event(event_type, self.clock, namespace="default", server_id=self.server_id,
                           server_labels=dict(self.labels()), **fields)
        try:
            await self.emitter.emit(event)
        except TeleportError as err:
            AUDIT_FAILURES.inc()
            log.warning("cannot record %s event: %s", event_type, err)


class NodeConnection(CertAuthServer):
    """One client connection to the node: sessions and local port forwards."""

    def __init__(self, node: NodeServer) -> None:
        super().__init__(node.checker)
        self.node = node
        #: `-R` listeners and the forwarded agent (teleport.srv.forward).
        self.forwarding = Forwarding(self)
        #: The session channels opened on this connection (told why, if it is hung up).
        self.sessions: weakref.WeakSet[NodeSession] = weakref.WeakSet()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        super().connection_made(conn)
        self.node.admit(self)

    def auth_completed(self) -> None:
        self.node.admit_user(self)
        self.touch()
        self.node.spawn(watch(self, self.policy, self.node.clock), f"monitor {self.remote_addr()}")

    def policy(self) -> SessionPolicy:
        """The cluster's session policy, tightened by the user's roles as the node knows them."""
        policy = self.node.policy()
        if self.identity is None or self.node.roles is None:
            return policy
        try:
            access = self.node.access(self.identity.cert)
        except AccessDenied:
            return policy  # roles not loaded: the login check refuses anyway
        return policy.with_role_options(access.client_idle_timeout, access.disconnect_expired_cert)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.forwarding.close()
        self.node.forget(self)

    def session_requested(self) -> tuple[asyncssh.SSHServerChannel[bytes], NodeSession]:
        assert self.identity is not None and self.conn is not None
        self.check_refusal()
        # Bytes in and out: terminals and commands speak whatever encoding they like.
        session = NodeSession(self, self.identity)
        self.sessions.add(session)
        return self.conn.create_server_channel(encoding=None), session

    async def tell(self, reason: str) -> None:
        """Write why the connection ends to every open session's stderr (a terminal, `ssh`)."""
        for session in list(self.sessions):
            if session.chan is not None and not session.chan.is_closing():
                session.chan.write_stderr(f"\r\nteleport: {reason}\r\n".encode())

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
        """Forward `-L` traffic from this host when the certificate permits port forwarding."""
        assert self.identity is not None and self.conn is not None
        self.check_refusal()
        self.forwarding.check_local(dest_host, dest_port)
        return self._forward(dest_host, dest_port)

    def server_requested(self, listen_host: str,
                         listen_port: int) -> Awaitable[asyncssh.SSHListener | bool]:
        """`-R`: listen on this host's loopback, connections go back to the client."""
        return self.forwarding.listen(listen_host, listen_port)

    async def agent_forwarding_requested(self) -> bool:
        """`-A`: give this connection's sessions a socket reaching the client's agent."""
        return await self.forwarding.agent_requested()

    async def _forward(self, host: str, port: int) -> asyncssh.SSHTCPSession[bytes]:
        assert self.identity is not None and self.conn is not None
        await self.node.audit(PORT_FORWARD, user=self.identity.user, login=self.identity.login,
                              addr=f"{host}:{port}", addr_local=self.local_addr(),
                              addr_remote=self.remote_addr(), success=True)
        return await forward_to(host, port, on_input=self.touch)
