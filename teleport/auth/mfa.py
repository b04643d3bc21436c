"""Second factors wired into signup, logins and a user's own devices (WebAuthn keys).

`webauthn.Webauthn` runs the ceremonies; this part decides when they run and what they grant:
- signup registers a key with the signup token's user (the key is written first and removed
  again when the signup then fails, so a failed signup leaves no key behind);
- a login with a key checks the password first (under the failed-login lockout, as any
  login), and only then hands out a challenge; the key's answer is counted in the same
  lockout record, so five bad answers lock the name as five bad OTP codes would;
- a passwordless login names its user by the key's user handle, and still meets locks and
  the lockout;
- a user adds and removes their own keys; the last one cannot be removed while the cluster's
  second factor needs it.
Every success is audited here (`user.login` with `mfa_device`, `mfa.add`, `mfa.delete`);
refusals are audited by `Webauthn` or by the API's refusal hook.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from teleport.api.auth_models import IssuedCerts
from teleport.api.mfa_models import NO_KEY_MESSAGE, MFADeviceInfo, MFADeviceList
from teleport.auth import access, passwords
from teleport.auth.accounts import Accounts
from teleport.auth.context import AuthContext
from teleport.auth.logins import Logins
from teleport.auth.webauthn import Webauthn
from teleport.auth.websessions import WebSessions
from teleport.config.secondfactor import origin_matches_rp_id
from teleport.errors import AccessDenied, BadParameter, NotFound
from teleport.events import emitter as ev
from teleport.services.login_attempts import LoginAttemptService
from teleport.services.mfa_devices import MFADeviceService
from teleport.services.web_sessions import WebSessionRecord
from teleport.types.mfa import MFADevice
from teleport.types.resources import User


@dataclass(frozen=True)
class UserKeys:
    """The public keys a `tsh login` with a security key asks to have signed."""

    ssh_public_key: str
    tls_public_key: bytes
    ttl: timedelta | None


#: The name a key registered at signup gets when the page sends none.
SIGNUP_DEVICE_NAME = "security-key"


class MFA:
    """Signup with a key, logins with a key (second factor or alone), a user's own keys."""

    def __init__(self, ctx: AuthContext, accounts: Accounts, logins: Logins,
                 attempts: LoginAttemptService, web: WebSessions,
                 devices: MFADeviceService) -> None:
        self.ctx = ctx
        self.accounts = accounts
        self.logins = logins
        self.attempts = attempts
        self.web = web
        self.devices = devices
        self.webauthn = Webauthn(ctx, devices)

    # --- settings --------------------------------------------------------------------------

    @property
    def rp_id(self) -> str:
        """The RP ID; refuses when this cluster does not use WebAuthn keys."""
        rp_id = self.ctx.settings.webauthn_rp_id
        if not rp_id:
            raise BadParameter(f"this cluster does not use security keys (second_factor: "
                               f"{self.ctx.settings.second_factor})")
        return rp_id

    def origins_for(self, credential: Mapping[str, Any]) -> list[str]:
        """The origins an answer may come from: the configured facets, or (without them) the
        https origin the answer names when its host is the RP ID or under it."""
        configured = self.ctx.settings.webauthn_origins
        if configured:
            return list(configured)
        rp_id = self.rp_id
        origin = _client_origin(credential)
        if origin and origin_matches_rp_id(origin, rp_id):
            return [origin]
        return [f"https://{rp_id}"]

    # --- signup ----------------------------------------------------------------------------

    async def signup_challenge(self, token: str) -> str:
        """Registration options for the signup (or reset) token's user."""
        rp_id = self.rp_id
        record = await self.accounts._live_signup_token(token)
        return await self.webauthn.begin_registration(
            record.spec.user, rp_id, self.ctx.cluster_name, existing=[])

    async def complete_signup(self, token: str, password: str, otp_code: str,
                              credential: Mapping[str, Any] | None, device_name: str = "",
                              remote_addr: str = "") -> User:
        """Set the password with an OTP code or a new key, as `second_factor` asks."""
        if credential is None:
            return await self.accounts.complete_signup(token, password, otp_code)
        rp_id = self.rp_id
        record = await self.accounts._live_signup_token(token)
        user = record.spec.user
        passwords.check_password_policy(password)
        device = await self.webauthn.finish_registration(
            user, device_name or SIGNUP_DEVICE_NAME, credential, self.origins_for(credential),
            rp_id, remote_addr=remote_addr)
        try:
            return await self.accounts.complete_signup(token, password, "", webauthn_device=True)
        except BaseException:
            # The signup failed (token taken meanwhile, user gone): its key goes with it.
            try:
                await self.devices.delete(user, device.id)
            except NotFound:
                pass
            raise

    # --- logins ----------------------------------------------------------------------------

    async def begin_login(self, username: str, password: str,
                          remote_addr: str = "") -> str | None:
        """Check the password, then answer a challenge for the user's keys.

        None: the user needs no key (`optional`, nothing registered): log in with the password.
        """
        rp_id = self.rp_id
        user = await self.logins.authenticate(username, password, "", remote_addr,
                                              password_only=True)
        await self.logins._refuse_locked(user, remote_addr)
        keys = [d for d in await self.devices.list(username) if d.spec.webauthn is not None]
        if not keys:
            if self.ctx.settings.second_factor == "optional" and not await self._has_otp(username):
                return None
            raise AccessDenied(NO_KEY_MESSAGE)
        return await self.webauthn.begin_login(username, rp_id)

    async def finish_login(self, username: str, assertion: Mapping[str, Any],
                           remote_addr: str = "") -> WebSessionRecord:
        """Check the key's answer under the lockout and start a web session."""
        who, device = await self._check_login(username, assertion, remote_addr)
        return await self._start(who, device, "local", remote_addr)

    async def finish_login_certs(self, username: str, assertion: Mapping[str, Any],
                                 keys: UserKeys, remote_addr: str = "") -> IssuedCerts:
        """Check the key's answer as `finish_login` does, then sign `tsh login`'s keys."""
        who, device = await self._check_login(username, assertion, remote_addr)
        return await self._issue(who, device, "local", keys, remote_addr)

    async def _check_login(self, username: str, assertion: Mapping[str, Any],
                           remote_addr: str) -> tuple[str, MFADevice]:
        """The key's answer after the password, counted in the name's lockout record."""
        rp_id = self.rp_id
        attempt = await self.logins._reserve_attempt(username, remote_addr)
        decided = False
        try:
            try:
                who, device = await self.webauthn.finish_login(
                    assertion, self.origins_for(assertion), rp_id, user=username,
                    remote_addr=remote_addr)
            except AccessDenied:
                decided = True
                until = await self.attempts.fail(username, attempt, self.ctx.clock.now())
                if until is not None:
                    await self.logins._show_lock(username, until)
                raise
            decided = True
            await self.attempts.succeed(username, attempt, self.ctx.clock.now())
        finally:
            if not decided:
                await self.attempts.cancel(username, attempt, self.ctx.clock.now())
        return who, device

    async def begin_passwordless(self) -> str:
        """A challenge for any resident key of this cluster that verifies its user."""
        rp_id = self.rp_id
        if not self.ctx.settings.passwordless:
            raise AccessDenied("passwordless login is disabled on this cluster")
        return await self.webauthn.begin_login(None, rp_id)

    async def finish_passwordless(self, assertion: Mapping[str, Any],
                                  remote_addr: str = "") -> WebSessionRecord:
        """Check a resident key's answer; its user handle names the user."""
        who, device = await self._check_passwordless(assertion, remote_addr)
        return await self._start(who, device, "passwordless", remote_addr)

    async def finish_passwordless_certs(self, assertion: Mapping[str, Any], keys: UserKeys,
                                        remote_addr: str = "") -> tuple[str, IssuedCerts]:
        """`tsh login --auth=passwordless`: the key names the user; their certificates."""
        who, device = await self._check_passwordless(assertion, remote_addr)
        return who, await self._issue(who, device, "passwordless", keys, remote_addr)

    async def _check_passwordless(self, assertion: Mapping[str, Any],
                                  remote_addr: str) -> tuple[str, MFADevice]:
        rp_id = self.rp_id
        if not self.ctx.settings.passwordless:
            raise AccessDenied("passwordless login is disabled on this cluster")
        who, device = await self.webauthn.finish_login(
            assertion, self.origins_for(assertion), rp_id, user=None, remote_addr=remote_addr)
        # A name locked by failed logins stays locked for a key too.
        attempt = await self.logins._reserve_attempt(who, remote_addr)
        await self.attempts.succeed(who, attempt, self.ctx.clock.now())
        return who, device

    async def _start(self, who: str, device: MFADevice, method: str,
                     remote_addr: str) -> WebSessionRecord:
        started = self.ctx.clock.now()
        user = await self._may_log_in(who, method, remote_addr)
        return await self.web.start(user, method=method, remote_addr=remote_addr,
                                    started=started, audit={"mfa_device": _audit_device(device)})

    async def _issue(self, who: str, device: MFADevice, method: str, keys: UserKeys,
                     remote_addr: str) -> IssuedCerts:
        user = await self._may_log_in(who, method, remote_addr)
        certs = await self.logins.certs.issue_user_certs(user, keys.ssh_public_key,
                                                         keys.tls_public_key, keys.ttl)
        await self.ctx.audit(ev.USER_LOGIN, who, method=method, success=True,
                             addr_remote=remote_addr, mfa_device=_audit_device(device))
        return certs

    async def _may_log_in(self, who: str, method: str, remote_addr: str) -> User:
        """The user the key named, still there, active and not locked (refusals audited)."""
        started = self.ctx.clock.now()
        try:
            user = await self.accounts.get_user(who)
            access.check_user_active(user, started)
        except (NotFound, AccessDenied) as err:
            reason = f"user {who!r} no longer exists" if isinstance(err, NotFound) else str(err)
            await self.ctx.audit(ev.USER_LOGIN, who, success=False, method=method,
                                 error=reason, addr_remote=remote_addr)
            raise AccessDenied(reason).mark_audited() from None
        await self.logins._refuse_locked(user, remote_addr)
        return user

    async def _has_otp(self, username: str) -> bool:
        try:
            await self.accounts.users.get_totp_secret(username)
            return True
        except NotFound:
            return False

    # --- a user's own devices --------------------------------------------------------------

    async def list_devices(self, user: str) -> MFADeviceList:
        return MFADeviceList(devices=[device_info(d) for d in await self.devices.list(user)],
                             otp=await self._has_otp(user))

    async def add_challenge(self, user: str, passwordless: bool = False) -> str:
        """Registration options for another key of a logged-in user (passwordless: a resident
        key that verifies its user)."""
        rp_id = self.rp_id
        if passwordless and not self.ctx.settings.passwordless:
            raise BadParameter("passwordless login is disabled on this cluster")
        return await self.webauthn.begin_registration(user, rp_id, self.ctx.cluster_name,
                                                      resident_key=passwordless)

    async def add_device(self, user: str, name: str, credential: Mapping[str, Any],
                         remote_addr: str = "") -> MFADeviceInfo:
        """Store the new key the challenge asked for (`mfa.add` audited by `Webauthn`)."""
        device = await self.webauthn.finish_registration(
            user, name, credential, self.origins_for(credential), self.rp_id,
            remote_addr=remote_addr)
        return device_info(device)

    async def remove_device(self, user: str, name_or_id: str, remote_addr: str = "") -> None:
        """Remove a key by name or id; the last second factor stays while one is required."""
        target = await self.devices.find(user, name_or_id)
        mode = self.ctx.settings.second_factor
        others = [d for d in await self.devices.list(user) if d.id != target.id]
        if mode == "webauthn" and not any(d.spec.webauthn is not None for d in others):
            raise AccessDenied("cannot remove the last MFA device while second_factor is webauthn")
        if mode == "on" and not others and not await self._has_otp(user):
            raise AccessDenied("cannot remove the last MFA device while second_factor is on")
        await self.webauthn.remove_device(user, target.id, remote_addr=remote_addr)


def device_info(device: MFADevice) -> MFADeviceInfo:
    webauthn = device.spec.webauthn
    return MFADeviceInfo(id=device.id, name=device.metadata.name, type=device.type,
                         added_at=device.spec.added_at, last_used=device.spec.last_used,
                         passwordless=bool(webauthn and webauthn.resident_key))


def _audit_device(device: MFADevice) -> dict[str, str]:
    return {"mfa_device_name": device.metadata.name, "mfa_device_uuid": device.id,
            "mfa_device_type": device.type}


def _client_origin(credential: Mapping[str, Any]) -> str:
    """The origin the browser wrote into the answer's client data ("" if unreadable); the
    ceremony checks it again, with the signature."""
    try:
        response = credential.get("response")
        encoded = response.get("clientDataJSON") if isinstance(response, Mapping) else None
        if not isinstance(encoded, str) or len(encoded) > 8192:
            return ""
        data = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        origin = data.get("origin") if isinstance(data, dict) else None
        return origin if isinstance(origin, str) else ""
    except (ValueError, binascii.Error, AttributeError):
        return ""


__all__: Sequence[str] = ["MFA", "UserKeys", "device_info"]
