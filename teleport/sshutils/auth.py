"""Certificate-only SSH authentication for asyncssh servers, with our refusal reasons audited.

asyncssh checks certificates itself (`validate_ca_key` only sees the signing key, and its own
`cert.validate` uses the wall clock and reports no reason), so `CertAuthConnection` overrides
the one method that receives the raw key blob, `SSHServerConnection.validate_public_key`, and
does the whole decision with `teleport.keys.ssh.verify_cert`. The single private detail it
relies on is the connection's `_session_id`, needed to check the client's signature exactly as
asyncssh does in the method we replace (asyncssh 2.24, pinned).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import asyncssh
from asyncssh.packet import String

from teleport.api.throttle import Slot
from teleport.errors import AccessDenied, BadParameter, TeleportError
from teleport.events.emitter import AUTH, CLIENT_DISCONNECT, Emitter, make_event
from teleport.keys.ssh import CertType, SSHCertInfo, parse_cert, verify_cert
from teleport.rbac import rules
from teleport.sshutils.batchwrite import BatchingTransport
from teleport.sshutils.leanrecv import LeanReceive
from teleport.sshutils.leansend import LeanSend
from teleport.utils.clock import Clock

log = logging.getLogger("teleport.ssh")

_CERT_SUFFIX = b"-cert-v01@openssh.com"

#: Why a valid certificate no longer grants access (its user was deleted or locked), or None.
RevocationCheck = Callable[[SSHCertInfo], "str | None"]


def never_revoked(cert: SSHCertInfo) -> str | None:
    """Refuse no certificate: for servers without a revocation list (tests, tools)."""
    return None


@dataclass(frozen=True)
class Identity:
    """Who authenticated on a connection and what their certificate permits."""

    cert: SSHCertInfo
    login: str
    #: The certificate's `permit-*` extensions without the prefix: `pty`, `port-forwarding`, ...
    permissions: frozenset[str]

    @property
    def user(self) -> str:
        return self.cert.key_id


@dataclass(frozen=True)
class CertChecker:
    """The trust settings one listener authenticates users with."""

    trusted_cas: Callable[[], Sequence[str]]
    emitter: Emitter
    clock: Clock
    #: The node requires the requested login among the principals; the proxy takes any login.
    check_login: bool
    #: The auth server's revocation list as last polled (this layer cannot ask the auth server).
    revoked: RevocationCheck = field(default=never_revoked)
    #: Users log in with user certificates; reverse tunnel agents with their host certificate.
    cert_type: CertType = "user"
    #: A further rule for the certificate and the SSH user name (a tunnel's role and host UUID).
    accept: Callable[[SSHCertInfo, str], None] | None = None

    def check(self, login: str, key_data: bytes) -> tuple[Identity, asyncssh.SSHKey]:
        """Return the identity and public key of an offered certificate, or raise AccessDenied."""
        if not _is_cert(key_data):
            raise AccessDenied("a certificate is required: plain public keys are not accepted")
        try:
            info = verify_cert(key_line(key_data), list(self.trusted_cas()), now=self.clock.now(),
                               cert_type=self.cert_type)
            key = asyncssh.import_public_key(info.public_key)
        except (BadParameter, asyncssh.KeyImportError) as err:
            raise AccessDenied(str(err)) from None
        if self.accept is not None:  # first: the node's roles name the rule that refuses
            self.accept(info, login)
        if self.check_login:
            rules.check_login(info.principals, login)
        reason = self.revoked(info)
        if reason is not None:
            raise AccessDenied(f"access revoked: {reason}")
        permissions = frozenset(name.removeprefix("permit-") for name in info.extensions
                                if name.startswith("permit-"))
        return Identity(info, login, permissions), key

    async def audit_failure(self, login: str, key_data: bytes, reason: str, remote: str) -> None:
        """Record a refused attempt; if the audit sink is down, log it and refuse all the same."""
        event = make_event(AUTH, self.clock, user=_key_id(key_data) or login, login=login,
                           success=False, error=reason, addr_remote=remote)
        try:
            await self.emitter.emit(event)
        except TeleportError as err:
            log.warning("cannot record failed login of %s: %s", login, err)

    async def audit_disconnect(self, identity: Identity, reason: str, remote: str) -> None:
        """Record that a live connection was hung up because its user lost access."""
        event = make_event(CLIENT_DISCONNECT, self.clock, user=identity.user,
                           login=identity.login, reason=reason, addr_remote=remote)
        try:
            await self.emitter.emit(event)
        except TeleportError as err:
            log.warning("cannot record disconnect of %s: %s", identity.user, err)


class CertAuthServer(asyncssh.SSHServer):
    """Per-connection server object that accepts user certificates and nothing else."""

    def __init__(self, checker: CertChecker) -> None:
        self.checker = checker
        self.conn: asyncssh.SSHServerConnection | None = None
        #: Set once the client proved it holds the certificate's private key.
        self.identity: Identity | None = None
        #: Why this connection will be hung up before authentication (a connection limit).
        self.refusal: str | None = None
        #: Set once the connection is being hung up because its user lost access.
        self.access_revoked = False
        #: When the client last sent anything: what `client_idle_timeout` measures.
        self.last_input = checker.clock.now()
        #: Set when the connection is gone, which ends its monitor (`teleport.sshutils.monitor`).
        self.gone = asyncio.Event()
        self._ending = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone.set()

    def touch(self) -> None:
        """Note input from the client, so the connection is not idle."""
        self.last_input = self.checker.clock.now()

    def begin_auth(self, username: str) -> bool:
        if self.refusal is not None and self.conn is not None:
            # Hung up only now, after key exchange, so the client can show the reason.
            self.conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, self.refusal)
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    async def agent_forwarding_requested(self) -> bool:
        """Answer a session's `auth-agent-req@openssh.com`: servers that do not forward refuse."""
        return False

    def remote_addr(self) -> str:
        """Return the client's `host:port` for audit events."""
        return _addr(self.conn, "peername")

    def peer(self) -> tuple[str, int]:
        """Return the client's address and port ("", 0 when it has none: a socket pair)."""
        info = self.conn.get_extra_info("peername") if self.conn else None
        return (str(info[0]), int(info[1])) if isinstance(info, tuple) and len(info) >= 2 else ("", 0)

    def local_addr(self) -> str:
        """Return the `host:port` the client connected to, for audit events."""
        return _addr(self.conn, "sockname")

    def check_refusal(self) -> None:
        """Refuse a channel with the reason when a limit was reached or access was revoked."""
        if self.refusal is not None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, self.refusal)
        reason = self.revocation()
        if reason is not None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                            f"access revoked: {reason}")

    def revocation(self) -> str | None:
        """Return why this connection's user has lost access since authenticating, or None:
        revoked (deleted, locked), or no longer allowed by the listener's rule (a role changed)."""
        if self.identity is None:
            return None
        reason = self.checker.revoked(self.identity.cert)
        if reason is None and self.checker.accept is not None:
            try:
                self.checker.accept(self.identity.cert, self.identity.login)
            except AccessDenied as err:
                reason = str(err)
        return reason

    async def end_revoked(self, reason: str) -> None:
        """Audit and hang up a connection whose user lost access, telling the client why."""
        assert self.identity is not None
        if self.access_revoked:
            return
        self.access_revoked = True
        await self.hang_up(f"access revoked: {reason}")

    #: Seconds a hang-up waits before disconnecting: a proxy, which only relays, lets the node
    #: behind it (enforcing the same revocations) tell the user why first.
    HANG_UP_GRACE = 0.0

    async def tell(self, reason: str) -> None:
        """Show the reason to the user before hanging up (servers with sessions override it):
        a disconnect's own reason reaches few clients once their channels are closed."""

    async def hang_up(self, reason: str) -> None:
        """Audit `client.disconnect` with the reason once, tell the user, then disconnect."""
        assert self.identity is not None
        if self._ending:
            return
        self._ending = True
        log.warning("disconnecting %s from %s: %s", self.identity.user, self.remote_addr(), reason)
        await self.checker.audit_disconnect(self.identity, reason, self.remote_addr())
        await self.tell(reason)
        if self.HANG_UP_GRACE:
            await asyncio.sleep(self.HANG_UP_GRACE)
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    async def wait_closed(self) -> None:
        if self.conn is not None:
            await self.conn.wait_closed()


class CertAuthConnection(LeanSend, LeanReceive, asyncssh.SSHServerConnection):
    """asyncssh server connection whose public key step is decided by `CertChecker`."""

    #: Its place among its source's unauthenticated connections (`teleport.api.throttle`),
    #: given up once the user (or tunnel agent) is authenticated or the connection is gone.
    throttle_slot: Slot | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Batch the packets of one loop turn into one socket write (teleport.sshutils.batchwrite)."""
        batched = BatchingTransport(cast(asyncio.Transport, transport))
        super().connection_made(cast(asyncio.Transport, batched))

    def connection_lost(self, exc: Exception | None = None) -> None:
        if self.throttle_slot is not None:
            self.throttle_slot.release()
        super().connection_lost(exc)

    async def create_agent_listener(self) -> bool:
        """Let the server object decide agent forwarding: asyncssh's own socket would be ours
        (the node's user), not the login's, and would skip the audit."""
        return await cast(CertAuthServer, self.get_owner()).agent_forwarding_requested()

    async def reload_config(self) -> None:
        """Keep the options: asyncssh rebuilds them on every login, in its thread pool, to apply
        an sshd_config's `Match` blocks; ours load no config, so the rebuild is the same options
        at the price of a thread hand-off per connection (6-7% of the event loop at 20 logins
        at once)."""

    async def validate_public_key(self, username: str, key_data: bytes,
                                  msg: bytes, signature: bytes) -> bool:
        """Accept only a trusted certificate, then (when signed) record the identity."""
        owner = cast(CertAuthServer, self.get_owner())
        try:
            identity, key = owner.checker.check(username, key_data)
            # Without a signature this is the client's "would you accept this key?" probe.
            if msg and not key.verify(String(self._session_id) + msg, signature):
                raise AccessDenied("certificate signature does not match the offered key")
        except AccessDenied as err:
            reason = str(err)
            log.info("refused %s from %s: %s", username, owner.remote_addr(), reason)
            await owner.checker.audit_failure(username, key_data, reason, owner.remote_addr())
            if _is_cert(key_data):
                # Tell the user why; OpenSSH only says "Permission denied (publickey)".
                self.send_auth_banner(f"teleport: {reason}\r\n")
            return False
        if msg:
            owner.identity = identity
            if self.throttle_slot is not None:
                self.throttle_slot.authenticated()
        return True


def _is_cert(key_data: bytes) -> bool:
    """Tell a certificate from a plain key by the algorithm name that starts the blob."""
    size = int.from_bytes(key_data[:4], "big")
    return key_data[4:4 + size].endswith(_CERT_SUFFIX)


def key_line(key_data: bytes) -> str:
    """Return the blob as the one-line OpenSSH text teleport.keys parses."""
    size = int.from_bytes(key_data[:4], "big")
    algorithm = key_data[4:4 + size].decode("ascii", errors="replace")
    return f"{algorithm} {base64.b64encode(key_data).decode()}"


def _key_id(key_data: bytes) -> str:
    """Return the certificate's key ID (the Teleport user) when the blob is a parseable cert."""
    if not _is_cert(key_data):
        return ""
    try:
        return parse_cert(key_line(key_data)).key_id
    except BadParameter:
        return ""


def _addr(conn: asyncssh.SSHServerConnection | None, name: str) -> str:
    info = conn.get_extra_info(name) if conn else None
    if not info:
        return ""
    host, port = info[0], info[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
