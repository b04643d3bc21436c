"""Users: `tctl users add` and its signup link, `tctl create`/`rm` of users, and who exists now."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta

import pyotp

from teleport.api.auth_models import SignupInfo
from teleport.auth import access, passwords, usertokens
from teleport.auth.context import AuthContext, redact
from teleport.errors import AccessDenied, BadParameter, NotFound
from teleport.events import emitter as ev
from teleport.rbac import DEFAULT_USER_ROLES
from teleport.services.local_auth import read_local_auth
from teleport.services.locks import LockService
from teleport.services.login_attempts import LoginAttemptService
from teleport.services.mfa_devices import MFADeviceService
from teleport.services.tokens import TokenService
from teleport.services.users import UserService
from teleport.services.web_sessions import WebSessionService
from teleport.types.resource import Metadata
from teleport.types.resources import (
    CreatedBy,
    CreatedByUser,
    LocalAuthSecrets,
    LoginStatus,
    User,
    UserSpec,
    UserToken,
    UserTokenSpec,
    check_user_name,
)
from teleport.utils.duration import format_duration

# Longer than the codes' validity (3 steps of 30 s) so a seen code can never be replayed.
OTP_REUSE_WINDOW = timedelta(minutes=3)


class Accounts:
    """Creates, changes and deletes users, each change audited with who made it."""

    def __init__(self, ctx: AuthContext, users: UserService, tokens: TokenService,
                 attempts: LoginAttemptService, web_sessions: WebSessionService, *,
                 check_roles: Callable[[Iterable[str]], Awaitable[None]],
                 locks: LockService) -> None:
        self.ctx = ctx
        self.users = users
        self.tokens = tokens
        self.attempts = attempts
        self.web_sessions = web_sessions
        #: Refuses role names that do not exist (`RoleService.require`): no user holds one.
        self.check_roles = check_roles
        #: The locks (`tctl lock`) logins and every call of a user are checked against.
        self.locks = locks
        #: The users' MFA devices, forgotten with the user (set by `AuthServer`).
        self.mfa_devices: MFADeviceService | None = None

    async def list_users(self) -> list[User]:
        return await self.users.users.list()

    async def get_user(self, name: str) -> User:
        return await self.users.users.get(name)

    async def local_auth(self, name: str) -> LocalAuthSecrets | None:
        """Return the user's credentials for a backup (the admin identity only: see registry)."""
        return await read_local_auth(self.users, self.mfa_devices, name)

    async def roles_of(self, name: str) -> list[str]:
        """Return a user's roles as stored now; none for a user who no longer exists."""
        try:
            return list((await self.get_user(name)).spec.roles)
        except NotFound:
            return []

    async def create_user_signup(self, name: str, logins: list[str], roles: list[str],
                                 created_by: str, ttl: timedelta | None = None) -> UserToken:
        """Create a user without a password and the signup token (1h, at most 48h) to set one."""
        check_user_name(name)
        ttl = usertokens.signup_ttl(ttl)
        for value in (*logins, *roles):
            if not isinstance(value, str):
                raise BadParameter("logins and roles must be lists of strings")
            passwords.utf8(value, "a login or role")
        now = self.ctx.clock.now()
        user = User(metadata=Metadata(name=name), spec=UserSpec(
            roles=roles or list(DEFAULT_USER_ROLES),
            traits={"logins": logins or [name]},
            created_by=CreatedBy(time=now, user=CreatedByUser(name=created_by)),
        ))
        await self.check_roles(user.spec.roles)
        await self.users.users.create(user)
        await self.ctx.audit(ev.USER_CREATE, created_by, name=name, roles=user.spec.roles)
        return await self.create_signup_token(name, actor=created_by, ttl=ttl)

    async def create_signup_token(self, user: str, *, actor: str = "",
                                  ttl: timedelta = usertokens.SIGNUP_TOKEN_TTL,
                                  usage: usertokens.Usage = usertokens.SIGNUP) -> UserToken:
        """Issue a user's one link (signup or reset); links issued before stop working."""
        await self.users.users.get(user)
        await usertokens.delete_user_tokens(self.tokens, user)
        now = self.ctx.clock.now()
        token = UserToken(
            metadata=Metadata(name=secrets.token_hex(16), expires=now + ttl),
            spec=UserTokenSpec(user=user, created=now, usage=usage),
        )
        await self.tokens.create_signup(token, pyotp.random_base32())
        await self.ctx.audit(ev.RESET_PASSWORD_TOKEN_CREATE, actor, name=user,
                             token=redact(token.metadata.name), ttl=format_duration(ttl),
                             usage=usage)
        return token

    async def reset_user(self, name: str, *, actor: str = "") -> UserToken:
        """Start over a user's credentials (`tctl users reset`): the password and OTP device
        stop working at once, a failed-login lockout ends, browser sessions end, and the
        answer is the 8h reset link that sets new ones (roles, logins and traits are kept)."""
        user = await self.users.users.get(name)
        await self.users.clear_credentials(name)
        if self.mfa_devices is not None:
            await self.mfa_devices.delete_all(name)  # reset: every key re-registers
        await self._lift_login_lockout(user)
        await self.web_sessions.delete_all(name)
        return await self.create_signup_token(name, actor=actor, ttl=usertokens.RESET_TOKEN_TTL,
                                              usage=usertokens.RESET)

    async def _lift_login_lockout(self, user: User) -> None:
        """End a failed-login lockout and forget the failures; an administrator's lock stays."""
        await self.attempts.clear(user.metadata.name)
        unlocked = usertokens.without_login_lockout(user)
        if unlocked is not None:
            await self.users.users.put(unlocked)

    async def _live_signup_token(self, token: str) -> UserToken:
        """Return an unexpired signup or reset token; both kinds answer the same refusal."""
        try:
            record = await self.tokens.signup.get(token)
        except NotFound:
            raise NotFound("signup token not found or expired") from None
        if record.expired(self.ctx.clock.now()):
            raise NotFound("signup token not found or expired")
        return record

    async def get_signup_info(self, token: str) -> SignupInfo:
        record = await self._live_signup_token(token)
        secret = await self.tokens.signup_otp_secret(token)
        uri = pyotp.TOTP(secret).provisioning_uri(name=record.spec.user,
                                                 issuer_name=self.ctx.cluster_name)
        expires = record.metadata.expires.isoformat() if record.metadata.expires else ""
        return SignupInfo(user=record.spec.user, otp_secret=secret, otp_uri=uri, expires=expires,
                          second_factor=self.ctx.settings.second_factor, usage=record.spec.usage)

    async def complete_signup(self, token: str, password: str, otp_code: str, *,
                              webauthn_device: bool = False) -> User:
        """Set the password (and enroll the OTP device) with a signup token, burnt first.

        `webauthn_device`: the caller (`auth.mfa`) registered a WebAuthn key for this signup,
        which stands as the second factor; without one, `second_factor: webauthn` refuses.

        The token is claimed with one atomic delete before anything is written, so of two
        simultaneous signups with one token exactly one sets a password.
        """
        record = await self._live_signup_token(token)
        user = record.spec.user
        passwords.check_password_policy(password)
        try:
            stored = await self.users.users.get(user)
        except NotFound:
            raise NotFound("signup token not found or expired") from None
        now = self.ctx.clock.now()
        if access.is_user_expired(stored, now):
            raise AccessDenied(f"user {user!r} has expired: ask an administrator for a new account")
        secret = await self.tokens.signup_otp_secret(token)
        code = passwords.normalize_otp(otp_code)
        mode = self.ctx.settings.second_factor
        if mode == "webauthn" and not webauthn_device:
            raise BadParameter("this cluster's second factor is a security key: register one")
        second_factor = not webauthn_device and (
            mode in ("otp", "on") or (mode == "optional" and bool(otp_code)))
        if second_factor:
            if code is None or not pyotp.TOTP(secret).verify(code, for_time=now, valid_window=1):
                await self.ctx.audit(ev.AUTH, user, success=False,
                                     error="invalid one-time password during signup",
                                     addr_remote="")
                raise AccessDenied(
                    "invalid one-time password: check your authenticator's clock").mark_audited()
            if not await self.users.mark_totp_used(user, code, now + OTP_REUSE_WINDOW):
                await self.ctx.audit(ev.AUTH, user, success=False,
                                     error="one-time password reused during signup",
                                     addr_remote="")
                raise AccessDenied(
                    "this one-time password was already used: wait for the next one").mark_audited()
        await self.tokens.claim_signup(token)
        if second_factor:
            await self.users.set_totp_secret(user, secret)
        hashed = await asyncio.to_thread(passwords.hash_password, password)
        await self.users.set_password_hash(user, hashed)
        if record.spec.usage == usertokens.RESET:
            # Failures counted since the reset (by anyone guessing) must not lock the new password.
            await self._lift_login_lockout(await self.users.users.get(user))
            await self.web_sessions.delete_all(user)
        return await self.users.users.get(user)

    async def upsert_user(self, user: User, *, actor: str = "") -> User:
        """Create or replace a user (`tctl create`); unlocking one also ends a login lockout."""
        name = user.metadata.name
        check_user_name(name)
        try:
            before: User | None = await self.users.users.get(name)
        except NotFound:
            before = None
        await self.check_roles(user.spec.roles)
        stored = await self.users.users.put(user)
        if before is not None and before.spec.status.is_locked and not user.spec.status.is_locked:
            await self.attempts.clear(name)
        if access.revokes_access(stored, self.ctx.clock.now()):
            await self.web_sessions.delete_all(name)  # a lock ends the user's browser sessions
        await self.ctx.audit(ev.USER_CREATE if before is None else ev.USER_UPDATE, actor,
                             name=name, roles=user.spec.roles)
        return stored

    async def unlock_user(self, name: str, *, actor: str = "") -> User:
        """Clear a user's lock, an administrator's or a failed-login lockout, and their failures.

        The failed-login record is cleared even when the user shows no lock, so the next wrong
        password does not lock them again at once.
        """
        user = await self.users.users.get(name)
        stored = await self.users.users.put(user.model_copy(update={"spec": user.spec.model_copy(
            update={"status": LoginStatus()})}))
        await self.attempts.clear(name)
        await self.ctx.audit(ev.USER_UPDATE, actor, name=name, roles=user.spec.roles,
                             unlocked=True)
        return stored

    async def delete_user(self, name: str, *, actor: str = "") -> None:
        """Delete a user; the tombstone makes nodes and proxies refuse certificates issued before."""
        await self.users.delete_user(name)
        if self.mfa_devices is not None:
            await self.mfa_devices.delete_all(name)
        await access.record_deletion(self.ctx.backend, name, self.ctx.clock.now())
        await self.web_sessions.delete_all(name)
        await self.ctx.audit(ev.USER_DELETE, actor, name=name)
