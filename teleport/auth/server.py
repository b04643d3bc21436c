"""The auth server's logic: users and logins, certificate issuing, tokens, presence.

Handlers in `teleport.auth.api` authorize the caller and then call exactly one method here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import bcrypt
import pyotp

from teleport.auth import authority
from teleport.backend.base import Backend, Item, key, range_end
from teleport.config import StaticToken
from teleport.errors import AccessDenied, BadParameter, NotFound, NotSupported
from teleport.events import emitter as ev
from teleport.events.sessions_store import SessionStore
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys.identity import Identity
from teleport.metrics import LOGINS
from teleport.services.authorities import CAService
from teleport.services.presence import PresenceService
from teleport.services.tokens import TokenService
from teleport.services.users import UserService
from teleport.types.resource import Metadata
from teleport.types.resources import (
    CertAuthority,
    CreatedBy,
    CreatedByUser,
    LoginStatus,
    ProvisionToken,
    ProvisionTokenSpec,
    Server,
    User,
    UserSpec,
    UserToken,
    UserTokenSpec,
)
from teleport.utils.addr import is_ip, parse_addr
from teleport.utils.clock import Clock

SIGNUP_TOKEN_TTL = timedelta(hours=1)
DEFAULT_CERT_TTL = timedelta(hours=12)
MAX_CERT_TTL = timedelta(hours=30)
MIN_CERT_TTL = timedelta(minutes=1)
# Teleport's defaults: 5 failures inside 30 minutes lock the account for 20 minutes.
MAX_LOGIN_ATTEMPTS = 5
ATTEMPT_WINDOW = timedelta(minutes=30)
LOCK_DURATION = timedelta(minutes=20)
MIN_PASSWORD_LEN = 6
# Longer than the codes' validity (3 steps of 30 s) so a seen code can never be replayed.
OTP_REUSE_WINDOW = timedelta(minutes=3)
MAX_PASSWORD_LEN = 128
SYSTEM_ROLES = frozenset({"Admin", "Auth", "Proxy", "Node"})
JOIN_ROLES = frozenset({"node", "proxy", "auth"})
MAX_TOKEN_TTL = timedelta(days=365)
# Spent on unknown users too, so timing does not reveal which names exist.
#: How long a live session stays listed after its node last refreshed it.
ACTIVE_SESSION_TTL = timedelta(seconds=90)
_DUMMY_HASH = bcrypt.hashpw(b"teleport-dummy-password", bcrypt.gensalt(rounds=10))


@dataclass(frozen=True)
class AuthSettings:
    cluster_name: str | None = None
    second_factor: str = "otp"
    ca_signature_algo: str | None = None
    static_tokens: tuple[StaticToken, ...] = ()
    #: `node` (nodes record), `proxy` (not implemented: nodes record) or `off`.
    session_recording: str = "node"
    #: Where recordings are stored (`data_dir/log/sessions/default`); None: not stored here.
    recordings_dir: Path | None = None


@dataclass(frozen=True)
class IssuedCerts:
    """What a login or a join hands back: certificates plus the CAs to trust."""

    ssh_cert: str
    tls_cert: str
    host_ca_keys: list[str]
    user_ca_keys: list[str]
    tls_ca_certs: list[str]


@dataclass(frozen=True)
class SignupInfo:
    user: str
    otp_secret: str
    otp_uri: str
    expires: str
    second_factor: str = field(default="otp")


class AuthServer:
    def __init__(self, backend: Backend, emitter: ev.Emitter, clock: Clock,
                 settings: AuthSettings) -> None:
        self.backend = backend
        self.emitter = emitter
        self.clock = clock
        self.settings = settings
        self.users = UserService(backend)
        self.tokens = TokenService(backend)
        self.cas = CAService(backend)
        self.presence = PresenceService(backend)
        self.cluster_name = ""

    async def init(self) -> None:
        """Create the cluster name and CAs on first start; later starts load them."""
        self.cluster_name = await authority.ensure_cluster_name(self.cas, self.settings.cluster_name)
        if self.settings.cluster_name and self.settings.cluster_name != self.cluster_name:
            raise BadParameter(
                f"cluster_name {self.settings.cluster_name!r} does not match the stored name "
                f"{self.cluster_name!r}: renaming a cluster invalidates its keys")
        await authority.ensure_authorities(self.cas, self.cluster_name, self.clock,
                                           self.settings.ca_signature_algo)

    # --- certificate authorities -------------------------------------------------------------

    async def get_ca(self, ca_type: str, with_secrets: bool = False) -> CertAuthority:
        ca = await self.cas.get(ca_type, self.cluster_name)
        return ca if with_secrets else ca.without_secrets()

    async def _trust(self) -> tuple[list[str], list[str], list[str]]:
        host = await self.get_ca("host")
        user = await self.get_ca("user")
        tls = await self.get_ca("tls")
        return host.trusted_ssh_public_keys(), user.trusted_ssh_public_keys(), tls.trusted_tls_certs()

    def _rsa_hash(self) -> str:
        return "sha512"

    # --- hosts --------------------------------------------------------------------------------

    async def issue_host_certs(self, *, host_uuid: str, nodename: str, system_role: str,
                               ssh_public_key: str, tls_public_key: bytes,
                               addresses: list[str]) -> IssuedCerts:
        """Sign a host's SSH and X.509 certificates for one system role."""
        if system_role not in SYSTEM_ROLES:
            raise BadParameter(f"unknown system role {system_role!r}")
        cluster = self.cluster_name
        principals = _unique([host_uuid, f"{host_uuid}.{cluster}", nodename,
                              f"{nodename}.{cluster}", *addresses])
        host_ca = await self.get_ca("host", with_secrets=True)
        tls_ca = await self.get_ca("tls", with_secrets=True)
        now = self.clock.now()
        ssh_cert = await asyncio.to_thread(
            sshkeys.sign_host_cert, authority.ssh_signer(host_ca), ssh_public_key,
            host_uuid=host_uuid, nodename=nodename, cluster=cluster, principals=principals,
            system_role=system_role, valid_before=None)
        ca_key, ca_cert = authority.tls_signer(tls_ca)
        identity = Identity(username=host_uuid, roles=(system_role,),
                            cluster=cluster, system_role=system_role, host_uuid=host_uuid)
        dns = [n for n in principals if not is_ip(n)]
        ips = [n for n in principals if is_ip(n)]
        tls_cert = await asyncio.to_thread(
            tlskeys.issue_tls_cert, ca_key, ca_cert, tls_public_key, identity, now=now,
            not_after=now + authority.HOST_CERT_TTL, dns_names=dns, ip_addresses=ips)
        host_keys, user_keys, tls_certs = await self._trust()
        return IssuedCerts(ssh_cert, tls_cert.decode(), host_keys, user_keys, tls_certs)

    async def upsert_server(self, server: Server) -> None:
        await self.presence.store(server.kind).put(server)

    async def list_servers(self, kind: str) -> list[Server]:
        return [s for s in await self.presence.store(kind).list() if not s.expired(self.clock.now())]

    # --- users --------------------------------------------------------------------------------

    async def create_user_signup(self, name: str, logins: list[str], roles: list[str],
                                 created_by: str) -> UserToken:
        """Create a user without a password and the 1h signup token that lets them set one."""
        _check_name(name)
        now = self.clock.now()
        user = User(metadata=Metadata(name=name), spec=UserSpec(
            roles=roles or ["admin"],
            traits={"logins": logins or [name]},
            created_by=CreatedBy(time=now, user=CreatedByUser(name=created_by)),
        ))
        await self.users.users.create(user)
        return await self.create_signup_token(name)

    async def create_signup_token(self, user: str) -> UserToken:
        await self.users.users.get(user)
        now = self.clock.now()
        token = UserToken(
            metadata=Metadata(name=secrets.token_hex(16), expires=now + SIGNUP_TOKEN_TTL),
            spec=UserTokenSpec(user=user, created=now),
        )
        await self.tokens.create_signup(token, pyotp.random_base32())
        return token

    async def _live_signup_token(self, token: str) -> UserToken:
        try:
            record = await self.tokens.signup.get(token)
        except NotFound:
            raise NotFound("signup token not found or expired") from None
        if record.expired(self.clock.now()):
            raise NotFound("signup token not found or expired")
        return record

    async def get_signup_info(self, token: str) -> SignupInfo:
        record = await self._live_signup_token(token)
        secret = await self.tokens.signup_otp_secret(token)
        uri = pyotp.TOTP(secret).provisioning_uri(name=record.spec.user,
                                                 issuer_name=self.cluster_name)
        expires = record.metadata.expires.isoformat() if record.metadata.expires else ""
        return SignupInfo(record.spec.user, secret, uri, expires, self.settings.second_factor)

    async def complete_signup(self, token: str, password: str, otp_code: str) -> User:
        """Set the password (and enroll the OTP device) with a signup token, then burn it."""
        record = await self._live_signup_token(token)
        user = record.spec.user
        _check_password(password)
        secret = await self.tokens.signup_otp_secret(token)
        if self.settings.second_factor != "off":
            if not pyotp.TOTP(secret).verify(otp_code, for_time=self.clock.now(), valid_window=1):
                await self._audit_failure(user, "invalid one-time password during signup")
                raise AccessDenied("invalid one-time password: check your authenticator's clock")
            await self.users.set_totp_secret(user, secret)
            await self.users.mark_totp_used(user, otp_code, self.clock.now() + OTP_REUSE_WINDOW)
        hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt())
        await self.users.set_password_hash(user, hashed)
        await self.tokens.delete_signup(token)
        return await self.users.users.get(user)

    async def list_users(self) -> list[User]:
        return await self.users.users.list()

    async def get_user(self, name: str) -> User:
        return await self.users.users.get(name)

    async def upsert_user(self, user: User) -> User:
        _check_name(user.metadata.name)
        return await self.users.users.put(user)

    async def delete_user(self, name: str) -> None:
        await self.users.delete_user(name)

    # --- login --------------------------------------------------------------------------------

    async def authenticate(self, username: str, password: str, otp_code: str,
                           remote_addr: str = "") -> User:
        """Check password and OTP, enforcing the lockout policy; audit either way."""
        now = self.clock.now()
        try:
            user = await self.users.users.get(username)
        except NotFound:
            await asyncio.to_thread(bcrypt.checkpw, password.encode(), _DUMMY_HASH)
            await self._audit_failure(username, "invalid username, password or second factor",
                                      remote_addr)
            raise AccessDenied("invalid username, password or second factor") from None
        status = user.spec.status
        if status.is_locked and status.lock_expires > now:
            await self._audit_failure(username, "user is locked", remote_addr)
            raise AccessDenied(
                f"{status.locked_message or 'user is locked'}: try again after "
                f"{status.lock_expires:%Y-%m-%d %H:%M:%S} UTC")
        try:
            pw_hash = await self.users.get_password_hash(username)
        except NotFound:
            pw_hash = _DUMMY_HASH
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), pw_hash)
        ok = ok and pw_hash is not _DUMMY_HASH
        if ok and self.settings.second_factor != "off":
            ok = await self._check_otp(username, otp_code)
        if not ok:
            await self._record_failure(user, remote_addr)
            raise AccessDenied("invalid username, password or second factor")
        await self.users.clear_failed_logins(username)
        return user

    async def _check_otp(self, username: str, code: str) -> bool:
        try:
            secret = await self.users.get_totp_secret(username)
        except NotFound:
            return False
        if not pyotp.TOTP(secret).verify(code, for_time=self.clock.now(), valid_window=1):
            return False
        # A code may be used once: replaying an observed code must fail.
        return await self.users.mark_totp_used(username, code, self.clock.now() + OTP_REUSE_WINDOW)

    async def _record_failure(self, user: User, remote_addr: str) -> None:
        now = self.clock.now()
        name = user.metadata.name
        times = await self.users.add_failed_login(name, now, now + ATTEMPT_WINDOW)
        recent = [t for t in times if t > now - ATTEMPT_WINDOW]
        error = "invalid username, password or second factor"
        if len(recent) >= MAX_LOGIN_ATTEMPTS:
            locked = user.spec.status.model_copy(update={
                "is_locked": True, "locked_time": now, "lock_expires": now + LOCK_DURATION,
                "locked_message": f"{MAX_LOGIN_ATTEMPTS} failed login attempts, user is locked"})
            await self.users.users.put(_with_status(user, locked))
            await self.users.clear_failed_logins(name)
            error = f"{error}; user locked for {int(LOCK_DURATION.total_seconds() // 60)} minutes"
        await self._audit_failure(name, error, remote_addr)

    async def _audit_failure(self, user: str, error: str, remote_addr: str = "") -> None:
        await self.emitter.emit(ev.make_event(ev.AUTH, self.clock, user=user, success=False,
                                              error=error, addr_remote=remote_addr))

    async def login(self, *, username: str, password: str, otp_code: str, ssh_public_key: str,
                    tls_public_key: bytes, ttl: timedelta | None, remote_addr: str = "") -> IssuedCerts:
        """Authenticate a local user and sign their SSH and X.509 certificates."""
        try:
            user = await self.authenticate(username, password, otp_code, remote_addr)
        except AccessDenied:
            LOGINS.labels("failure").inc()
            raise
        LOGINS.labels("success").inc()
        certs = await self.issue_user_certs(user, ssh_public_key, tls_public_key, ttl)
        await self.emitter.emit(ev.make_event(ev.USER_LOGIN, self.clock, user=username,
                                              method="local", success=True,
                                              addr_remote=remote_addr))
        return certs

    async def issue_user_certs(self, user: User, ssh_public_key: str, tls_public_key: bytes,
                               ttl: timedelta | None) -> IssuedCerts:
        ttl = min(max(ttl or DEFAULT_CERT_TTL, MIN_CERT_TTL), MAX_CERT_TTL)
        now = self.clock.now()
        logins = user.logins or [user.metadata.name]
        user_ca = await self.get_ca("user", with_secrets=True)
        tls_ca = await self.get_ca("tls", with_secrets=True)
        try:
            ssh_cert = await asyncio.to_thread(
                sshkeys.sign_user_cert, authority.ssh_signer(user_ca), ssh_public_key,
                key_id=user.metadata.name, principals=logins, valid_after=now - timedelta(minutes=1),
                valid_before=now + ttl, roles=user.spec.roles,
                traits={k: v for k, v in user.spec.traits.items()})
        except ValueError as err:
            raise BadParameter(f"invalid SSH public key: {err}") from None
        ca_key, ca_cert = authority.tls_signer(tls_ca)
        identity = Identity(username=user.metadata.name, roles=tuple(user.spec.roles),
                            logins=tuple(logins), cluster=self.cluster_name,
                            traits={k: tuple(v) for k, v in user.spec.traits.items()},
                            route_to_cluster=self.cluster_name)
        tls_cert = await asyncio.to_thread(
            tlskeys.issue_tls_cert, ca_key, ca_cert, tls_public_key, identity,
            now=now, not_after=now + ttl)
        host_keys, user_keys, tls_certs = await self._trust()
        return IssuedCerts(ssh_cert, tls_cert.decode(), host_keys, user_keys, tls_certs)

    # --- provision tokens and joining ----------------------------------------------------------

    async def create_provision_token(self, roles: list[str], ttl: timedelta,
                                     token: str | None = None) -> ProvisionToken:
        """Create an invitation for hosts of the given roles, usable until it expires."""
        wanted = {r.lower() for r in roles}
        if not wanted or not wanted <= JOIN_ROLES:
            raise BadParameter(f"invalid token roles {','.join(roles) or '(none)'}: "
                               f"use {', '.join(sorted(JOIN_ROLES))}")
        if ttl <= timedelta(0) or ttl > MAX_TOKEN_TTL:
            raise BadParameter(f"token TTL must be positive and at most {MAX_TOKEN_TTL}")
        if token is not None and (len(token) < 8 or not token.isprintable() or "/" in token):
            raise BadParameter("a token must be at least 8 printable characters without '/'")
        record = ProvisionToken(
            metadata=Metadata(name=token or secrets.token_hex(16), expires=self.clock.now() + ttl),
            spec=ProvisionTokenSpec(roles=sorted(wanted)))
        return await self.tokens.provision.create(record)

    async def _check_join_token(self, token: str, role: str) -> None:
        """Accept a static or unexpired dynamic token that allows the role; else AccessDenied."""
        roles: set[str] | None = None
        for static in self.settings.static_tokens:
            if secrets.compare_digest(token.encode(), static.token.encode()):
                roles = {r.lower() for r in static.roles}
        if roles is None:
            try:
                record = await self.tokens.provision.get(token)
            except NotFound:
                record = None
            if record is not None and not record.expired(self.clock.now()):
                roles = set(record.spec.roles)
        if roles is None:
            raise AccessDenied("the join token is invalid, expired or revoked")
        if role.lower() not in roles:
            raise AccessDenied(f"the join token does not allow the {role.lower()} role")

    async def register_host(self, *, token: str, host_uuid: str, nodename: str, role: str,
                            ssh_public_key: str, tls_public_key: bytes, addresses: list[str],
                            remote_addr: str) -> IssuedCerts:
        """Let a new host join with a token: check it, audit the decision, sign its identity."""
        if role not in ("Node", "Proxy", "Auth"):
            raise BadParameter(f"a host cannot join as {role!r}")
        try:
            await self._check_join_token(token, role)
        except AccessDenied as err:
            await self.emitter.emit(ev.make_event(
                ev.AUTH, self.clock, user=f"{nodename} ({host_uuid})", method="token",
                role=role, success=False, error=str(err), addr_remote=remote_addr,
                token=_redact(token)))
            raise
        certs = await self.issue_host_certs(
            host_uuid=host_uuid, nodename=nodename, system_role=role,
            ssh_public_key=ssh_public_key, tls_public_key=tls_public_key, addresses=addresses)
        await self.emitter.emit(ev.make_event(
            ev.HOST_JOIN, self.clock, user=f"{nodename} ({host_uuid})", method="token", role=role,
            success=True, addr_remote=remote_addr, token=_redact(token)))
        return certs


    async def list_tokens(self) -> tuple[list[ProvisionToken], list[UserToken]]:
        now = self.clock.now()
        static = [ProvisionToken(metadata=Metadata(name=t.token),
                                 spec=ProvisionTokenSpec(roles=sorted(t.roles)))
                  for t in self.settings.static_tokens]
        dynamic = [t for t in await self.tokens.provision.list() if not t.expired(now)]
        signups = [t for t in await self.tokens.signup.list() if not t.expired(now)]
        return static + dynamic, signups

    async def delete_token(self, token: str) -> None:
        if any(secrets.compare_digest(token, t.token) for t in self.settings.static_tokens):
            raise BadParameter("static tokens are set in the config file and cannot be deleted")
        try:
            await self.tokens.provision.delete(token)
        except NotFound:
            await self.tokens.delete_signup(token)

    # --- session recordings -------------------------------------------------------------------

    @functools.cached_property
    def recordings(self) -> SessionStore:
        """Open the recordings folder on first use, so hosts without one never create it."""
        if self.settings.recordings_dir is None:
            raise NotSupported("this auth server does not store session recordings")
        return SessionStore(self.settings.recordings_dir)

    async def may_play(self, sid: str, username: str, roles: tuple[str, ...] | None) -> None:
        """Refuse anyone but the session's owner and admins; roles None means look them up."""
        summary = await self.recordings.summary(sid)
        if summary.user == username:
            return
        if roles is None:
            try:
                roles = tuple((await self.get_user(username)).spec.roles)
            except NotFound:
                roles = ()
        if "admin" not in roles:
            raise AccessDenied(f"only {summary.user!r} and admins may play session {sid}")

    # --- live sessions (`tsh sessions ls`, `tsh join`) ---------------------------------------

    async def announce_session(self, server_id: str, session: dict[str, Any]) -> None:
        """Store a node's live session until it ends or its node stops refreshing it (a crash)."""
        item_key = key("sessions", "active", session["sid"])
        try:
            stored = json.loads((await self.backend.get(item_key)).value)
        except NotFound:
            stored = None
        if stored is not None and stored["server_id"] != server_id:
            raise AccessDenied(f"session {session['sid']} belongs to another node")
        record = {**session, "server_id": server_id}
        await self.backend.put(Item(item_key, json.dumps(record).encode(),
                                    self.clock.now() + ACTIVE_SESSION_TTL))

    async def end_session(self, server_id: str, sid: str) -> None:
        """Forget a live session; only the node that runs it may end it."""
        item_key = key("sessions", "active", sid)
        try:
            stored = json.loads((await self.backend.get(item_key)).value)
        except NotFound:
            return
        if stored["server_id"] != server_id:
            raise AccessDenied(f"session {sid} belongs to another node")
        await self.backend.delete(item_key)

    async def list_active_sessions(self, username: str | None,
                                   roles: tuple[str, ...] | None) -> list[dict[str, Any]]:
        """List the live sessions a user may join: their own, every one for admins (None: tctl)."""
        start = key("sessions", "active") + b"/"
        sessions = [json.loads(item.value)
                    for item in await self.backend.get_range(start, range_end(start))
                    if item.expires is None or item.expires > self.clock.now()]
        if username is not None and not await self._is_admin(username, roles):
            sessions = [s for s in sessions if s["user"] == username]
        return sorted(sessions, key=lambda s: (s["created"], s["sid"]))

    async def _is_admin(self, username: str, roles: tuple[str, ...] | None) -> bool:
        """Tell whether a user holds role admin; roles None means look them up."""
        if roles is None:
            try:
                roles = tuple((await self.get_user(username)).spec.roles)
            except NotFound:
                roles = ()
        return "admin" in roles

    # --- recording proxy: short-lived certificates to stand between a user and a node ---------

    async def issue_node_cert_for_proxy(self, node_id: str, ssh_public_key: str) -> str:
        """Sign a short-lived host cert for a registered node's names, for a recording proxy."""
        node = next((n for n in await self.list_servers("node") if n.metadata.name == node_id), None)
        if node is None:
            raise NotFound(f"node {node_id!r} is not registered")
        cluster = self.cluster_name
        names = [node_id, node.spec.hostname]
        principals = _unique([p for name in names if name for p in (name, f"{name}.{cluster}")]
                             + [h for h in [_addr_host(node.spec.addr)] if h])
        host_ca = await self.get_ca("host", with_secrets=True)
        try:
            return await asyncio.to_thread(
                sshkeys.sign_host_cert, authority.ssh_signer(host_ca), ssh_public_key,
                host_uuid=node_id, nodename=node.spec.hostname or node_id, cluster=cluster,
                principals=principals, system_role="Node",
                valid_before=self.clock.now() + PROXY_CERT_TTL)
        except ValueError as err:
            raise BadParameter(f"invalid SSH public key: {err}") from None

    async def issue_user_cert_for_proxy(self, presented: str, ssh_public_key: str) -> str:
        """Re-issue a user's valid certificate for the proxy's key: same grants, shorter life."""
        _, user_keys, _ = await self._trust()
        now = self.clock.now()
        try:
            info = sshkeys.verify_cert(presented, user_keys, now=now, cert_type="user")
        except BadParameter as err:
            raise AccessDenied(f"invalid user certificate: {err}") from None
        await self.get_user(info.key_id)  # a deleted user gets nothing
        user_ca = await self.get_ca("user", with_secrets=True)
        try:
            return await asyncio.to_thread(
                sshkeys.sign_user_cert, authority.ssh_signer(user_ca), ssh_public_key,
                key_id=info.key_id, principals=info.principals,
                valid_after=now - timedelta(minutes=1),
                valid_before=min(now + PROXY_CERT_TTL, info.valid_before),
                roles=info.roles, traits=info.traits, route_to_cluster=info.route_to_cluster,
                permit_port_forwarding="permit-port-forwarding" in info.extensions,
                permit_pty="permit-pty" in info.extensions)
        except ValueError as err:
            raise BadParameter(f"invalid SSH public key: {err}") from None


#: How long the certificates a recording proxy obtains for one connection stay valid.
PROXY_CERT_TTL = timedelta(minutes=5)


def _addr_host(addr: str) -> str:
    if not addr:
        return ""
    try:
        return parse_addr(addr, 3022).host
    except BadParameter:
        return ""


def _redact(token: str) -> str:
    """Keep only a token's head for logs: enough to tell tokens apart, useless to an attacker."""
    return token[:4] + "****" if len(token) > 8 else "****"


def _with_status(user: User, status: LoginStatus) -> User:
    return user.model_copy(update={"spec": user.spec.model_copy(update={"status": status})})


def _check_name(name: str) -> None:
    if not name or len(name) > 255 or any(c in name for c in "/\\ \t\n:"):
        raise BadParameter(f"invalid user name {name!r}")


def _check_password(password: str) -> None:
    if not MIN_PASSWORD_LEN <= len(password) <= MAX_PASSWORD_LEN:
        raise BadParameter(
            f"password must be between {MIN_PASSWORD_LEN} and {MAX_PASSWORD_LEN} characters")


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))

