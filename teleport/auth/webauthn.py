"""WebAuthn ceremonies: registering a key, and logging in with one (as a second factor or alone).

The checks of the specification (client data, origin, RP ID hash, flags, attestation statement,
signature) are py_webauthn's, a maintained server library; this module keeps what is ours: the
challenges (`services.mfa_devices`: five minutes, taken once, so a replayed assertion finds
nothing), which credential belongs to whom, and the signature counter. The counter is judged
after the signature and inside the compare-and-swap that stores it: a stored non-zero counter
and a new one not greater means two copies of one key exist, and the login is refused.

Every refusal is one line, raised as AccessDenied and audited as Teleport does (`user.login`,
`success: false`, `method: webauthn`, `error`). A successful login is audited by the caller,
once it has issued what the login was for.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    parse_attestation_object,
    parse_authentication_credential_json,
    parse_authenticator_data,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    CollectedClientData,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from teleport.auth.context import AuthContext
from teleport.config.secondfactor import origins_from_facets, rp_id_from_app_id
from teleport.errors import AccessDenied, AlreadyExists, BadParameter, NotFound
from teleport.events import emitter as ev
from teleport.services.mfa_devices import (
    CHALLENGE_TTL,
    CounterNotAdvanced,
    MFADeviceService,
    WebauthnChallenge,
    new_challenge,
)
from teleport.types.mfa import MFADevice, MFADeviceSpec, WebauthnDevice, b64url, check_device_name
from teleport.types.resource import Metadata

#: Teleport's names for a device added or removed.
MFA_ADD = ev.MFA_ADD
MFA_DELETE = ev.MFA_DELETE
METHOD = "webauthn"
#: The browser's hint for how long to wait for a touch, in milliseconds: the challenge's life.
TIMEOUT_MS = int(CHALLENGE_TTL.total_seconds() * 1000)

Credential = str | Mapping[str, Any]
__all__ = ["Webauthn", "origins_from_facets", "rp_id_from_app_id"]


class Webauthn:
    """Begins and finishes WebAuthn registrations and logins against the stored devices."""

    def __init__(self, ctx: AuthContext, devices: MFADeviceService) -> None:
        self.ctx = ctx
        self.devices = devices

    # Registration.

    async def begin_registration(self, user: str, rp_id: str, rp_name: str,
                                 existing: Sequence[MFADevice] | None = None,
                                 resident_key: bool = False) -> str:
        """Return `navigator.credentials.create()` options (JSON) for a new key of `user`.

        The user's keys are excluded, so one key is not registered twice. A resident key (for
        passwordless login) must also verify the user (PIN or biometrics): it then stands alone.
        """
        if existing is None:
            existing = await self.devices.list(user)
        handle = await self.devices.user_handle(user)
        challenge = new_challenge()
        requirement = (UserVerificationRequirement.REQUIRED if resident_key
                       else UserVerificationRequirement.DISCOURAGED)
        options = generate_registration_options(
            rp_id=rp_id, rp_name=rp_name, user_name=user, user_id=handle,
            challenge=challenge, timeout=TIMEOUT_MS,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=(ResidentKeyRequirement.REQUIRED if resident_key
                              else ResidentKeyRequirement.DISCOURAGED),
                user_verification=requirement),
            exclude_credentials=_descriptors(existing))
        await self.devices.put_challenge(WebauthnChallenge(
            challenge=b64url(options.challenge), ceremony="register", user=user,
            user_handle=b64url(handle), user_verification=requirement.value,
            resident_key=resident_key, created=self.ctx.clock.now()))
        return options_to_json(options)

    async def finish_registration(self, user: str, device_name: str, credential: Credential,
                                  origins: str | Sequence[str], rp_id: str,
                                  remote_addr: str = "") -> MFADevice:
        """Check the browser's answer to begin_registration and store the key as a device."""
        check_device_name(device_name)
        if any(d.metadata.name == device_name for d in await self.devices.list(user)):
            raise AlreadyExists(f"MFA device {device_name!r} already exists")
        origins = _origin_list(origins)

        async def refuse(reason: str) -> AccessDenied:
            await self.ctx.audit(MFA_ADD, user, success=False, method=METHOD, error=reason,
                                 mfa_device_name=device_name, addr_remote=remote_addr)
            return AccessDenied(reason).mark_audited()

        try:
            parsed = parse_registration_credential_json(_as_json(credential))
            client = parse_client_data_json(parsed.response.client_data_json)
            auth_data = parse_attestation_object(parsed.response.attestation_object).auth_data
        except (WebAuthnException, ValueError, TypeError, KeyError):
            raise await refuse("invalid WebAuthn registration: the credential is malformed") from None
        record = await self._take(user, client, "register")
        if (reason := _client_refusal(record, client, auth_data.rp_id_hash, origins, rp_id)):
            raise await refuse(reason)
        assert record is not None
        try:
            verified = verify_registration_response(
                credential=parsed, expected_challenge=client.challenge, expected_rp_id=rp_id,
                expected_origin=origins,
                require_user_verification=record.user_verification == "required")
        except WebAuthnException as err:
            raise await refuse(f"invalid WebAuthn registration: {_one_line(err)}") from None
        credential_id = b64url(verified.credential_id)
        for known in await self.devices.list(user):
            if known.spec.webauthn is not None and known.spec.webauthn.credential_id == credential_id:
                raise await refuse(f"this key is already registered as {known.metadata.name!r}")
        now = self.ctx.clock.now()
        device = MFADevice(metadata=Metadata(name=device_name), spec=MFADeviceSpec(
            id=str(uuid.uuid4()), added_at=now, last_used=now, webauthn=WebauthnDevice(
                credential_id=credential_id,
                public_key_cbor=base64.b64encode(verified.credential_public_key).decode(),
                attestation_type=str(getattr(verified.fmt, "value", verified.fmt)),
                aaguid=verified.aaguid, signature_counter=verified.sign_count,
                resident_key=record.resident_key)))
        await self.devices.add(user, device)
        await self.ctx.audit(MFA_ADD, user, success=True, method=METHOD,
                             mfa_device_name=device_name, mfa_device_uuid=device.id,
                             mfa_device_type=device.type, addr_remote=remote_addr)
        return device

    # Login.

    async def begin_login(self, user: str | None, rp_id: str) -> str:
        """Return `navigator.credentials.get()` options (JSON): for `user`'s keys as a second
        factor, or, with no user, for any resident key that verifies its user (passwordless)."""
        if user is None:
            allowed: list[MFADevice] = []
            requirement = UserVerificationRequirement.REQUIRED
        else:
            allowed = [d for d in await self.devices.list(user) if d.spec.webauthn is not None]
            if not allowed:
                raise AccessDenied(f"user {user!r} has no WebAuthn devices")
            requirement = UserVerificationRequirement.DISCOURAGED
        challenge = new_challenge()
        options = generate_authentication_options(
            rp_id=rp_id, challenge=challenge, timeout=TIMEOUT_MS,
            allow_credentials=_descriptors(allowed), user_verification=requirement)
        await self.devices.put_challenge(WebauthnChallenge(
            challenge=b64url(options.challenge),
            ceremony="passwordless" if user is None else "login", user=user or "",
            user_verification=requirement.value,
            allowed_credentials=[d.spec.webauthn.credential_id for d in allowed if d.spec.webauthn],
            created=self.ctx.clock.now()))
        return options_to_json(options)

    async def finish_login(self, assertion: Credential, origins: str | Sequence[str],
                           rp_id: str, *, user: str | None = None,
                           remote_addr: str = "") -> tuple[str, MFADevice]:
        """Check the browser's answer to begin_login; return whose key it was and the device.

        `user` is the one begin_login named (None for passwordless, where the key's user
        handle names the user).
        """
        origins = _origin_list(origins)
        who = user or ""

        async def refuse(reason: str) -> AccessDenied:
            await self.ctx.audit(ev.USER_LOGIN, who, success=False, method=METHOD, error=reason,
                                 addr_remote=remote_addr)
            return AccessDenied(reason).mark_audited()

        try:
            parsed = parse_authentication_credential_json(_as_json(assertion))
            client = parse_client_data_json(parsed.response.client_data_json)
            auth_data = parse_authenticator_data(parsed.response.authenticator_data)
        except (WebAuthnException, ValueError, TypeError, KeyError):
            raise await refuse("invalid WebAuthn assertion: the credential is malformed") from None
        record = await self._take(who, client, "login" if user else "passwordless")
        if (reason := _client_refusal(record, client, auth_data.rp_id_hash, origins, rp_id)):
            raise await refuse(reason)
        assert record is not None
        handle = parsed.response.user_handle
        if user is None:
            if not handle:
                raise await refuse("passwordless login needs a resident key: the key sent no user handle")
            try:
                who = await self.devices.user_of_handle(handle)
            except NotFound:
                raise await refuse(_UNKNOWN_CREDENTIAL) from None
        # Only the user's own keys count: another user's credential is unknown here.
        credential_id = b64url(parsed.raw_id)
        device = next((d for d in await self.devices.list(who) if d.spec.webauthn is not None
                       and d.spec.webauthn.credential_id == credential_id), None)
        if device is None or device.spec.webauthn is None or \
                (record.allowed_credentials and credential_id not in record.allowed_credentials):
            raise await refuse(_UNKNOWN_CREDENTIAL)
        try:
            # The counter is judged below, atomically with storing it: 0 here skips the
            # library's own (racy) comparison, which would run before the signature check.
            verified = verify_authentication_response(
                credential=parsed, expected_challenge=client.challenge, expected_rp_id=rp_id,
                expected_origin=origins, credential_public_key=device.spec.webauthn.public_key_bytes,
                credential_current_sign_count=0,
                require_user_verification=record.user_verification == "required")
        except WebAuthnException as err:
            raise await refuse(f"invalid WebAuthn assertion: {_one_line(err)}") from None
        try:
            device = await self.devices.advance_counter(who, device.id, verified.new_sign_count,
                                                        self.ctx.clock.now())
        except CounterNotAdvanced as err:
            raise await refuse(
                f"WebAuthn key {device.metadata.name!r}: signature counter went backwards "
                f"({err.presented} after {err.stored}): possible cloned authenticator") from None
        except NotFound:
            raise await refuse(_UNKNOWN_CREDENTIAL) from None
        return who, device

    # Removal.

    async def remove_device(self, user: str, name_or_id: str, remote_addr: str = "") -> MFADevice:
        """Remove a device by name or id (`tsh mfa rm`) and audit it as Teleport does."""
        device = await self.devices.delete(user, (await self.devices.find(user, name_or_id)).id)
        await self.ctx.audit(MFA_DELETE, user, success=True, mfa_device_name=device.metadata.name,
                             mfa_device_uuid=device.id, mfa_device_type=device.type,
                             addr_remote=remote_addr)
        return device

    async def _take(self, user: str, client: CollectedClientData,
                    ceremony: str) -> WebauthnChallenge | None:
        """Take the challenge the client data names, if it is this user's and this ceremony's."""
        try:
            record = await self.devices.take_challenge(user, b64url(client.challenge))
        except NotFound:
            return None
        return record if record.ceremony == ceremony else None


def _client_refusal(record: WebauthnChallenge | None, client: CollectedClientData,
                    rp_id_hash: bytes, origins: Sequence[str], rp_id: str) -> str | None:
    """Why a ceremony's answer is refused before its signature is checked, or None: both
    ceremonies need their own live challenge, an expected origin and this RP ID's hash."""
    if record is None:
        return _CHALLENGE_GONE
    if client.origin not in origins:
        return _wrong_origin(client.origin, origins)
    if rp_id_hash != hashlib.sha256(rp_id.encode()).digest():
        return _wrong_rp_id(rp_id)
    return None


_CHALLENGE_GONE = "WebAuthn challenge not found: it expired or was already used (a replayed answer?)"
_UNKNOWN_CREDENTIAL = "unknown WebAuthn credential: this key is not registered to the user"


def _wrong_origin(origin: str, origins: Sequence[str]) -> str:
    return f"WebAuthn answer from origin {origin!r}, expected {' or '.join(origins)}"


def _wrong_rp_id(rp_id: str) -> str:
    return f"WebAuthn answer for another relying party: its RP ID is not {rp_id!r}"


def _origin_list(origins: str | Sequence[str]) -> list[str]:
    result = [origins] if isinstance(origins, str) else list(origins)
    if not result:
        raise BadParameter("no WebAuthn origins configured")
    return result


def _as_json(credential: Credential) -> str | dict[str, Any]:
    return credential if isinstance(credential, str) else json.loads(json.dumps(credential))


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _descriptors(devices: Sequence[MFADevice]) -> list[PublicKeyCredentialDescriptor]:
    return [PublicKeyCredentialDescriptor(id=d.spec.webauthn.credential_id_bytes)
            for d in devices if d.spec.webauthn is not None]
