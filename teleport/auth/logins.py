"""Local logins (`tsh login`): password and OTP under the lockout policy, then certificates.

Each attempt first takes a slot in the name's attempt record (`services.login_attempts`, one
compare-and-swap) before bcrypt runs, so in-flight attempts count as failed; attempts for one
name run one at a time per auth server.
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import datetime, timedelta

import pyotp

from teleport.api.auth_models import IssuedCerts
from teleport.auth import access, passwords
from teleport.auth.accounts import OTP_REUSE_WINDOW, Accounts
from teleport.auth.certs import CertIssuer
from teleport.auth.context import AuthContext
from teleport.errors import AccessDenied, NotFound
from teleport.events import emitter as ev
from teleport.metrics import LOGINS
from teleport.services.login_attempts import (
    LOGIN_LOCK_MESSAGE,
    Locked,
    LoginAttemptService,
    LoginPolicy,
)
from teleport.types.resources import LoginStatus, User, check_user_name

# Teleport's defaults: 5 failures inside 30 minutes lock the account for 20 minutes.
MAX_LOGIN_ATTEMPTS = 5
ATTEMPT_WINDOW = timedelta(minutes=30)
LOCK_DURATION = timedelta(minutes=20)
LOGIN_POLICY = LoginPolicy(MAX_LOGIN_ATTEMPTS, ATTEMPT_WINDOW, LOCK_DURATION)
#: How long an attempt waits while other auth servers hold every attempt slot of a user.
ATTEMPT_SLOT_WAIT = timedelta(seconds=5)
INVALID_LOGIN = "invalid username, password or second factor"


class Logins:
    """Judges login attempts and signs the certificates of the ones that pass."""

    def __init__(self, ctx: AuthContext, accounts: Accounts, attempts: LoginAttemptService,
                 certs: CertIssuer) -> None:
        self.ctx = ctx
        self.accounts = accounts
        self.users = accounts.users
        self.attempts = attempts
        self.certs = certs
        # One login at a time per name on this server; the backend record orders servers.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = \
            weakref.WeakValueDictionary()

    async def login(self, *, username: str, password: str, otp_code: str, ssh_public_key: str,
                    tls_public_key: bytes, ttl: timedelta | None, remote_addr: str = "") -> IssuedCerts:
        """Authenticate a local user and sign their SSH and X.509 certificates."""
        user = await self.counted(username, password, otp_code, remote_addr)
        certs = await self.certs.issue_user_certs(user, ssh_public_key, tls_public_key, ttl)
        await self.ctx.audit(ev.USER_LOGIN, username, method="local", success=True,
                             addr_remote=remote_addr)
        return certs

    async def counted(self, username: str, password: str, otp_code: str,
                      remote_addr: str = "") -> User:
        """Authenticate (below) and count the outcome: `tsh login` and web logins alike."""
        try:
            user = await self.authenticate(username, password, otp_code, remote_addr)
            await self._refuse_locked(user, remote_addr)
        except AccessDenied:
            LOGINS.labels("failure").inc()
            raise
        LOGINS.labels("success").inc()
        return user

    async def authenticate(self, username: str, password: str, otp_code: str,
                           remote_addr: str = "", *, password_only: bool = False) -> User:
        """Check password and OTP under the lockout policy; audit either way.

        Of any number of attempts sent at once, at most five wrong ones are checked, and none
        passes once five failed. Unknown and expired names take the same steps (a slot, bcrypt
        at the real cost, the failure count, the lock) and get the same answers as real users.
        """
        check_user_name(username)
        passwords.utf8(password, "password")
        lock = self._locks.get(username)
        if lock is None:
            lock = self._locks[username] = asyncio.Lock()
        async with lock:
            attempt = await self._reserve_attempt(username, remote_addr)
            decided = False
            try:
                user = await self._check_credentials(username, password, otp_code, attempt,
                                                     remote_addr, password_only)
                decided = True
                return user
            except AccessDenied:
                decided = True
                raise
            finally:
                if not decided:  # an error or a cancellation: the attempt was never judged
                    try:
                        await self.attempts.cancel(username, attempt, self.ctx.clock.now())
                    except Exception:  # noqa: BLE001 - the slot then times out as a failure
                        pass

    async def _reserve_attempt(self, username: str, remote_addr: str) -> str:
        """Take an attempt slot, waiting a little while other auth servers hold them all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ATTEMPT_SLOT_WAIT.total_seconds()
        while True:
            try:
                attempt = await self.attempts.reserve(username, self.ctx.clock.now())
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
                                 attempt: str, remote_addr: str,
                                 password_only: bool = False) -> User:
        """Judge one reserved attempt and record the outcome; raise AccessDenied on failure."""
        now = self.ctx.clock.now()
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
            await self.attempts.cancel(username, attempt, now)
            await self._audit_failure(username, "user is locked", remote_addr)
            raise AccessDenied(access.user_refusal(user, now) or "user is locked").mark_audited()
        # Every name takes the same reads (an unknown one finds nothing) and the same bcrypt.
        try:
            pw_hash: bytes | None = await self.users.get_password_hash(username)
        except NotFound:
            pw_hash = None
        if user is None:
            pw_hash = None  # an expired user's hash opens nothing
        ok = await asyncio.to_thread(passwords.password_matches, password,
                                     pw_hash or passwords.dummy_hash())
        ok = ok and pw_hash is not None
        if ok and not password_only:
            ok = await self._second_factor_ok(username, otp_code)
        if ok and user is not None:
            if password_only:
                # The first step of a WebAuthn login: its outcome is counted when the key
                # answers (`auth.mfa`), so a known password never clears failures by itself.
                await self.attempts.cancel(username, attempt, self.ctx.clock.now())
            else:
                await self.attempts.succeed(username, attempt, self.ctx.clock.now())
            return user
        error = INVALID_LOGIN
        locked_until = await self.attempts.fail(username, attempt, self.ctx.clock.now())
        if locked_until is not None:
            error = f"{error}; user locked for {int(LOCK_DURATION.total_seconds() // 60)} minutes"
            await self._show_lock(username, locked_until)  # a no-op for an unknown name
        await self._audit_failure(username, error, remote_addr)
        raise AccessDenied(INVALID_LOGIN).mark_audited()

    async def _show_lock(self, username: str, until: datetime) -> None:
        """Write a lockout into the user's status, where `tctl get users` shows it."""
        try:
            user = await self.users.users.get(username)
        except NotFound:
            return
        status = LoginStatus(is_locked=True, locked_message=LOGIN_LOCK_MESSAGE,
                             locked_time=self.ctx.clock.now(), lock_expires=until)
        await self.users.users.put(
            user.model_copy(update={"spec": user.spec.model_copy(update={"status": status})}))

    async def _second_factor_ok(self, username: str, code: str) -> bool:
        """Judge the OTP part of a password login by `second_factor`: `webauthn` never passes
        here (the key has its own path), `optional` asks for what the user registered."""
        mode = self.ctx.settings.second_factor
        if mode == "off":
            return True
        if mode == "optional" and not code:
            try:
                await self.users.get_totp_secret(username)
                return False
            except NotFound:
                pass
            devices = self.accounts.mfa_devices
            return devices is None or not await devices.list(username)
        if mode not in ("otp", "on", "optional"):
            return False
        return await self._check_otp(username, code)

    async def _check_otp(self, username: str, code: str) -> bool:
        normalized = passwords.normalize_otp(code)
        if normalized is None:
            return False
        try:
            secret = await self.users.get_totp_secret(username)
        except NotFound:
            return False
        if not pyotp.TOTP(secret).verify(normalized, for_time=self.ctx.clock.now(), valid_window=1):
            return False
        # A code may be used once: replaying an observed code, in any spelling, must fail.
        return await self.users.mark_totp_used(username, normalized,
                                               self.ctx.clock.now() + OTP_REUSE_WINDOW)

    async def _refuse_locked(self, user: User, remote_addr: str) -> None:
        """Refuse, with the lock's reason, a user a lock holds on (or on one of their roles).

        Asked only once the password and OTP passed, so the answer tells nothing to a guesser.
        """
        try:
            await access.check_not_locked(self.accounts, user)
        except AccessDenied as err:
            await self._audit_failure(user.metadata.name, str(err), remote_addr)
            raise err.mark_audited() from None

    async def _audit_failure(self, user: str, error: str, remote_addr: str = "") -> None:
        await self.ctx.audit(ev.AUTH, user, success=False, error=error, addr_remote=remote_addr)
