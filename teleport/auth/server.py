"""The auth server's logic: users and logins, certificate issuing, tokens, presence.

Handlers in `teleport.auth.api` authorize the caller and then call exactly one method here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp

from teleport.api.auth_models import IssuedCerts, SignupInfo
from teleport.auth import access, authority, passwords
from teleport.backend.base import Backend, Item, key, range_end
from teleport.config import StaticToken
from teleport.errors import (
    AccessDenied,
    AlreadyExists,
    BadParameter,
    CompareFailed,
    NotFound,
    NotSupported,
)
from teleport.events import emitter as ev
from teleport.events.sessions_store import MAX_RECORDING_BYTES, SessionStore
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys.identity import Identity
from teleport.metrics import LOGINS
from teleport.services.authorities import CAService
from teleport.services.login_attempts import (
    LOGIN_LOCK_MESSAGE,
    Locked,
    LoginAttemptService,
    LoginPolicy,
)
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
    check_user_name,
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
MIN_PASSWORD_LEN = passwords.MIN_PASSWORD_LEN
MAX_PASSWORD_LEN = passwords.MAX_PASSWORD_LEN
#: How long an attempt waits while other auth servers hold every attempt slot of a user.
ATTEMPT_SLOT_WAIT = timedelta(seconds=5)
INVALID_LOGIN = "invalid username, password or second factor"
# Longer than the codes' validity (3 steps of 30 s) so a seen code can never be replayed.
OTP_REUSE_WINDOW = timedelta(minutes=3)
SYSTEM_ROLES = frozenset({"Admin", "Auth", "Proxy", "Node"})
JOIN_ROLES = frozenset({"node", "proxy", "auth"})
MAX_TOKEN_TTL = timedelta(days=365)
#: How long a live session stays listed after its node last refreshed it.
ACTIVE_SESSION_TTL = timedelta(seconds=90)


@dataclass(frozen=True)
class AuthSettings:
    cluster_name: str | None = None
    second_factor: str = "otp"
    ca_signature_algo: str | None = None
    static_tokens: tuple[StaticToken, ...] = ()
    #: `teleport.config.modes.SessionRecording`: announced in ping, nodes and proxies act on it.
    session_recording: str = "node"
    #: Where recordings are stored (`data_dir/log/sessions/default`); None: not stored here.
    recordings_dir: Path | None = None
    #: Largest recording a host may upload (both compressed parts); bigger ones get a 413.
    max_recording_bytes: int = MAX_RECORDING_BYTES
    #: Cut live sessions when the user's certificate expires (nodes and proxies enforce it).
    disconnect_expired_cert: bool = False
    #: Close sessions with no client input for this long; 0 never does.
    client_idle_seconds: float = 0.0


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
        self.login_attempts = LoginAttemptService(backend, LoginPolicy(
            MAX_LOGIN_ATTEMPTS, ATTEMPT_WINDOW, LOCK_DURATION))
        # One login at a time per name on this server; the backend record orders servers.
        self._login_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = \
            weakref.WeakValueDictionary()
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
        # Ready before the first login, so even that one takes the time of any other.
        await asyncio.to_thread(passwords.dummy_hash)

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
        return IssuedCerts(ssh_cert=ssh_cert, tls_cert=tls_cert.decode(), host_ca_keys=host_keys,
                           user_ca_keys=user_keys, tls_ca_certs=tls_certs)

    async def upsert_server(self, server: Server) -> None:
        """Store a host's announcement; its host name must be free or already its own."""
        host_uuid, hostname = server.metadata.name, server.spec.hostname
        _check_not_reserved([hostname])
        store = self.presence.store(server.kind)
        try:
            previous: Server | None = await store.get(host_uuid)
        except NotFound:
            previous = None
        if hostname:
            await self.presence.claim_hostname(hostname, host_uuid, server.metadata.expires)
        await store.put(server)
        if previous is not None and previous.spec.hostname.lower() != hostname.lower():
            await self.presence.release_hostname(previous.spec.hostname, host_uuid)

    async def list_servers(self, kind: str) -> list[Server]:
        return [s for s in await self.presence.store(kind).list() if not s.expired(self.clock.now())]

    # --- users --------------------------------------------------------------------------------

    async def create_user_signup(self, name: str, logins: list[str], roles: list[str],
                                 created_by: str) -> UserToken:
        """Create a user without a password and the 1h signup token that lets them set one."""
        check_user_name(name)
        for value in (*logins, *roles):
            if not isinstance(value, str):
                raise BadParameter("logins and roles must be lists of strings")
            passwords.utf8(value, "a login or role")
        now = self.clock.now()
        user = User(metadata=Metadata(name=name), spec=UserSpec(
            roles=roles or ["admin"],
            traits={"logins": logins or [name]},
            created_by=CreatedBy(time=now, user=CreatedByUser(name=created_by)),
        ))
        await self.users.users.create(user)
        await self._audit_change(ev.USER_CREATE, created_by, name=name, roles=user.spec.roles)
        return await self.create_signup_token(name, actor=created_by)

    async def create_signup_token(self, user: str, *, actor: str = "") -> UserToken:
        await self.users.users.get(user)
        now = self.clock.now()
        token = UserToken(
            metadata=Metadata(name=secrets.token_hex(16), expires=now + SIGNUP_TOKEN_TTL),
            spec=UserTokenSpec(user=user, created=now),
        )
        await self.tokens.create_signup(token, pyotp.random_base32())
        await self._audit_change(ev.RESET_PASSWORD_TOKEN_CREATE, actor, name=user,
                                 token=_redact(token.metadata.name), ttl=str(SIGNUP_TOKEN_TTL))
        return token

    async def _audit_change(self, event_type: str, actor: str, **fields: Any) -> None:
        """Record who changed users or tokens (`tctl users add`, `tctl tokens rm`, ...)."""
        await self.emitter.emit(ev.make_event(event_type, self.clock, user=actor, **fields))

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
        return SignupInfo(user=record.spec.user, otp_secret=secret, otp_uri=uri, expires=expires,
                          second_factor=self.settings.second_factor)

    async def complete_signup(self, token: str, password: str, otp_code: str) -> User:
        """Set the password (and enroll the OTP device) with a signup token, burnt first.

        The token is claimed with one atomic delete before anything is written, so of two
        simultaneous signups with one token exactly one sets a password.
        """
        record = await self._live_signup_token(token)
        user = record.spec.user
        _check_password(password)
        try:
            stored = await self.users.users.get(user)
        except NotFound:
            raise NotFound("signup token not found or expired") from None
        if access.is_user_expired(stored, self.clock.now()):
            raise AccessDenied(f"user {user!r} has expired: ask an administrator for a new account")
        secret = await self.tokens.signup_otp_secret(token)
        code = passwords.normalize_otp(otp_code)
        if self.settings.second_factor != "off":
            if code is None or not pyotp.TOTP(secret).verify(code, for_time=self.clock.now(),
                                                             valid_window=1):
                await self._audit_failure(user, "invalid one-time password during signup")
                raise AccessDenied(
                    "invalid one-time password: check your authenticator's clock").mark_audited()
            if not await self.users.mark_totp_used(user, code,
                                                   self.clock.now() + OTP_REUSE_WINDOW):
                await self._audit_failure(user, "one-time password reused during signup")
                raise AccessDenied(
                    "this one-time password was already used: wait for the next one").mark_audited()
        await self.tokens.claim_signup(token)
        if self.settings.second_factor != "off":
            await self.users.set_totp_secret(user, secret)
        hashed = await asyncio.to_thread(passwords.hash_password, password)
        await self.users.set_password_hash(user, hashed)
        return await self.users.users.get(user)

    async def list_users(self) -> list[User]:
        return await self.users.users.list()

    async def get_user(self, name: str) -> User:
        return await self.users.users.get(name)

    async def upsert_user(self, user: User, *, actor: str = "") -> User:
        """Create or replace a user (`tctl create`); unlocking one also ends a login lockout."""
        name = user.metadata.name
        check_user_name(name)
        try:
            before: User | None = await self.users.users.get(name)
        except NotFound:
            before = None
        stored = await self.users.users.put(user)
        if before is not None and before.spec.status.is_locked and not user.spec.status.is_locked:
            await self.login_attempts.clear(name)
        await self._audit_change(ev.USER_CREATE if before is None else ev.USER_UPDATE, actor,
                                 name=name, roles=user.spec.roles)
        return stored

    async def delete_user(self, name: str, *, actor: str = "") -> None:
        """Delete a user; the tombstone makes nodes and proxies refuse certificates issued before."""
        await self.users.delete_user(name)
        await access.record_deletion(self.backend, name, self.clock.now())
        await self._audit_change(ev.USER_DELETE, actor, name=name)

    # --- login --------------------------------------------------------------------------------

    async def authenticate(self, username: str, password: str, otp_code: str,
                           remote_addr: str = "") -> User:
        """Check password and OTP under the lockout policy; audit either way.

        Each attempt takes a slot in the name's attempt record (one atomic backend write) before
        bcrypt runs, and attempts for one name run one at a time on this server: of any number
        sent at once, at most five wrong ones are checked, and none passes once five failed.
        Unknown and expired names take the same steps (a slot, bcrypt at the real cost, the
        failure count, the lock) and get the same answers as real users.
        """
        check_user_name(username)
        passwords.utf8(password, "password")
        lock = self._login_locks.get(username)
        if lock is None:
            lock = self._login_locks[username] = asyncio.Lock()
        async with lock:
            attempt = await self._reserve_attempt(username, remote_addr)
            decided = False
            try:
                user = await self._check_credentials(username, password, otp_code, attempt,
                                                     remote_addr)
                decided = True
                return user
            except AccessDenied:
                decided = True
                raise
            finally:
                if not decided:  # an error or a cancellation: the attempt was never judged
                    try:
                        await self.login_attempts.cancel(username, attempt, self.clock.now())
                    except Exception:  # noqa: BLE001 - the slot then times out as a failure
                        pass

    async def _reserve_attempt(self, username: str, remote_addr: str) -> str:
        """Take an attempt slot, waiting a little while other auth servers hold them all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ATTEMPT_SLOT_WAIT.total_seconds()
        while True:
            try:
                attempt = await self.login_attempts.reserve(username, self.clock.now())
            except Locked as locked:
                await self._audit_failure(username, "user is locked", remote_addr)
                raise AccessDenied(
                    f"{MAX_LOGIN_ATTEMPTS} failed login attempts, user is locked: try again "
                    f"after {locked.until:%Y-%m-%d %H:%M:%S} UTC").mark_audited() from None
            if attempt is not None:
                return attempt
            if loop.time() >= deadline:
                await self._audit_failure(username, "too many login attempts at once", remote_addr)
                raise AccessDenied(
                    "too many login attempts at once: try again in a minute").mark_audited()
            await asyncio.sleep(0.05)

    async def _check_credentials(self, username: str, password: str, otp_code: str,
                                 attempt: str, remote_addr: str) -> User:
        """Judge one reserved attempt and record the outcome; raise AccessDenied on failure."""
        now = self.clock.now()
        user: User | None
        try:
            user = await self.users.users.get(username)
        except NotFound:
            user = None
        if user is not None and access.is_user_expired(user, now):
            user = None  # Teleport deletes expired users: look exactly like an unknown name
        if user is not None and access.is_user_locked(user, now) and \
                user.spec.status.locked_message != LOGIN_LOCK_MESSAGE:
            # Locked by an administrator; a lockout from failed logins is the record's to judge.
            await self.login_attempts.cancel(username, attempt, now)
            await self._audit_failure(username, "user is locked", remote_addr)
            raise AccessDenied(access.user_refusal(user, now) or "user is locked").mark_audited()
        pw_hash: bytes | None = None
        if user is not None:
            try:
                pw_hash = await self.users.get_password_hash(username)
            except NotFound:
                pass
        ok = await asyncio.to_thread(passwords.password_matches, password,
                                     pw_hash or passwords.dummy_hash())
        ok = ok and pw_hash is not None
        if ok and self.settings.second_factor != "off":
            ok = await self._check_otp(username, otp_code)
        if ok and user is not None:
            await self.login_attempts.succeed(username, attempt, self.clock.now())
            return user
        error = INVALID_LOGIN
        locked_until = await self.login_attempts.fail(username, attempt, self.clock.now())
        if locked_until is not None:
            error = f"{error}; user locked for {int(LOCK_DURATION.total_seconds() // 60)} minutes"
            if user is not None:
                await self._show_lock(username, locked_until)
        await self._audit_failure(username, error, remote_addr)
        raise AccessDenied(INVALID_LOGIN).mark_audited()

    async def _show_lock(self, username: str, until: datetime) -> None:
        """Write a lockout into the user's status, where `tctl get users` shows it."""
        try:
            user = await self.users.users.get(username)
        except NotFound:
            return
        status = LoginStatus(is_locked=True, locked_message=LOGIN_LOCK_MESSAGE,
                             locked_time=self.clock.now(), lock_expires=until)
        await self.users.users.put(_with_status(user, status))

    async def _check_otp(self, username: str, code: str) -> bool:
        normalized = passwords.normalize_otp(code)
        if normalized is None:
            return False
        try:
            secret = await self.users.get_totp_secret(username)
        except NotFound:
            return False
        if not pyotp.TOTP(secret).verify(normalized, for_time=self.clock.now(), valid_window=1):
            return False
        # A code may be used once: replaying an observed code, in any spelling, must fail.
        return await self.users.mark_totp_used(username, normalized,
                                               self.clock.now() + OTP_REUSE_WINDOW)

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
        return IssuedCerts(ssh_cert=ssh_cert, tls_cert=tls_cert.decode(), host_ca_keys=host_keys,
                           user_ca_keys=user_keys, tls_ca_certs=tls_certs)

    # --- provision tokens and joining ----------------------------------------------------------

    async def create_provision_token(self, roles: list[str], ttl: timedelta,
                                     token: str | None = None, *, actor: str = "") -> ProvisionToken:
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
        created = await self.tokens.provision.create(record)
        await self._audit_change(ev.JOIN_TOKEN_CREATE, actor, name=_redact(record.metadata.name),
                                 roles=record.spec.roles, join_method="token",
                                 expires=record.metadata.expires.isoformat() if
                                 record.metadata.expires else "")
        return created

    async def _check_join_token(self, token: str, role: str) -> None:
        """Accept a static or unexpired dynamic token that allows the role; else AccessDenied."""
        roles: set[str] | None = None
        raw = passwords.utf8(token, "join token")
        for static in self.settings.static_tokens:
            if secrets.compare_digest(raw, static.token.encode()):
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
            await self._check_host_is_new(host_uuid, nodename, role, addresses)
        except (AccessDenied, AlreadyExists) as err:
            await self.emitter.emit(ev.make_event(
                ev.AUTH, self.clock, user=f"{nodename} ({host_uuid})", method="token",
                role=role, success=False, error=str(err), addr_remote=remote_addr,
                token=_redact(token)))
            if isinstance(err, AccessDenied):
                err.mark_audited()
            raise
        certs = await self.issue_host_certs(
            host_uuid=host_uuid, nodename=nodename, system_role=role,
            ssh_public_key=ssh_public_key, tls_public_key=tls_public_key, addresses=addresses)
        await self.emitter.emit(ev.make_event(
            ev.HOST_JOIN, self.clock, user=f"{nodename} ({host_uuid})", method="token", role=role,
            success=True, addr_remote=remote_addr, token=_redact(token)))
        return certs


    async def _check_host_is_new(self, host_uuid: str, nodename: str, role: str,
                                 addresses: list[str]) -> None:
        """Refuse a join that would take over a live host's UUID or name, or a reserved name.

        A token lets a host in, not become another one: until the old host has stopped
        announcing itself for its TTL, its UUID and name stay its own.
        """
        _check_not_reserved([nodename, *addresses])
        kind = {"Node": "node", "Proxy": "proxy", "Auth": "auth_server"}[role]
        try:
            existing = await self.presence.store(kind).get(host_uuid)
        except NotFound:
            existing = None
        if existing is not None and not existing.expired(self.clock.now()):
            raise AlreadyExists(
                f"a {kind.replace('_', ' ')} with UUID {host_uuid} is already online "
                f"({existing.spec.hostname}); a host rejoins under its UUID only after it has "
                "been offline for its heartbeat TTL")
        owner = await self.presence.hostname_owner(nodename) if nodename else None
        if owner is not None and owner != host_uuid:
            raise AlreadyExists(f"host name {nodename!r} is in use by host {owner}, which is "
                                "online: pick another nodename")

    async def list_tokens(self) -> tuple[list[ProvisionToken], list[UserToken]]:
        now = self.clock.now()
        static = [ProvisionToken(metadata=Metadata(name=t.token),
                                 spec=ProvisionTokenSpec(roles=sorted(t.roles)))
                  for t in self.settings.static_tokens]
        dynamic = [t for t in await self.tokens.provision.list() if not t.expired(now)]
        signups = [t for t in await self.tokens.signup.list() if not t.expired(now)]
        return static + dynamic, signups

    async def delete_token(self, token: str, *, actor: str = "") -> None:
        raw = passwords.utf8(token, "token")
        if any(secrets.compare_digest(raw, t.token.encode()) for t in self.settings.static_tokens):
            raise BadParameter("static tokens are set in the config file and cannot be deleted")
        try:
            await self.tokens.provision.delete(token)
            event_type = ev.JOIN_TOKEN_DELETE
        except NotFound:
            await self.tokens.delete_signup(token)
            event_type = ev.RESET_PASSWORD_TOKEN_DELETE
        await self._audit_change(event_type, actor, name=_redact(token))

    # --- session recordings -------------------------------------------------------------------

    @functools.cached_property
    def recordings(self) -> SessionStore:
        """Open the recordings folder on first use, so hosts without one never create it."""
        if self.settings.recordings_dir is None:
            raise NotSupported("this auth server does not store session recordings")
        return SessionStore(self.settings.recordings_dir,
                            max_bytes=self.settings.max_recording_bytes)

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
        """Store a node's live session until it ends or its node stops refreshing it (a crash).

        The session is bound to the node that first announced it, and is listed under that
        node's registered host name, never a name the node claims.
        """
        item_key = key("sessions", "active", session["sid"])
        record = {**session, "server_id": server_id,
                  "server_hostname": await self._registered_hostname(server_id)}
        item = Item(item_key, json.dumps(record).encode(), self.clock.now() + ACTIVE_SESSION_TTL)
        try:
            await self.backend.create(item)
            return
        except AlreadyExists:
            pass
        try:
            stored = await self.backend.get(item_key)
        except NotFound:  # ended meanwhile: the node is refreshing a session it already ended
            raise NotFound(f"session {session['sid']} has ended") from None
        if json.loads(stored.value).get("server_id") != server_id:
            raise AccessDenied(f"session {session['sid']} belongs to another node")
        try:
            await self.backend.compare_and_swap(stored, item)
        except (CompareFailed, NotFound):
            raise CompareFailed(f"session {session['sid']} changed meanwhile, try again") from None

    async def _registered_hostname(self, server_id: str) -> str:
        """Return the host name a node announced in its heartbeat, or its UUID if it has none."""
        try:
            node = await self.presence.store("node").get(server_id)
        except NotFound:
            return server_id
        return node.spec.hostname if not node.expired(self.clock.now()) and node.spec.hostname \
            else server_id

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
        # A deleted, locked or expired user, or a certificate older than a deletion, gets nothing.
        await access.check_user(self, info.key_id, access.ssh_cert_issued_at(info))
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


#: Names under this suffix identify the cluster's own services in certificates; no host takes them.
RESERVED_NAME_SUFFIX = "teleport.cluster.local"


def _check_not_reserved(names: list[str]) -> None:
    for name in names:
        plain = name.lower().rstrip(".")
        if plain == RESERVED_NAME_SUFFIX or plain.endswith("." + RESERVED_NAME_SUFFIX):
            raise AccessDenied(f"{name!r} is reserved for the cluster's own identities: "
                               "a host may not use it as its name or address")


def _redact(token: str) -> str:
    """Keep only a token's head for logs: enough to tell tokens apart, useless to an attacker."""
    return token[:4] + "****" if len(token) > 8 else "****"


def _with_status(user: User, status: LoginStatus) -> User:
    return user.model_copy(update={"spec": user.spec.model_copy(update={"status": status})})


_check_password = passwords.check_password_policy


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))

