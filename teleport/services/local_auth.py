"""A local user's credentials as one record (`spec.local_auth`): read for a backup, written by a restore.

The auth server keeps them in three places (`users`: the password hash and OTP secret,
`mfa_devices`: the WebAuthn keys and the user handle their passkeys name the user by); a
backup (`tctl get users --with-secrets`) and `teleport start --bootstrap` move them together,
as the same bytes, so a restored user logs in with the same password, app and keys.
"""

from __future__ import annotations

import base64

from teleport.errors import NotFound
from teleport.services.mfa_devices import MFADeviceService
from teleport.services.users import UserService
from teleport.types.resources import LocalAuthSecrets, WebauthnLocalAuth


async def read_local_auth(users: UserService, devices: MFADeviceService | None,
                          name: str) -> LocalAuthSecrets | None:
    """Return the user's credentials, or None for a user without any (not signed up yet)."""
    password_hash = totp = ""
    try:
        password_hash = base64.b64encode(await users.get_password_hash(name)).decode()
    except NotFound:
        pass
    try:
        totp = await users.get_totp_secret(name)
    except NotFound:
        pass
    mfa = await devices.list(name) if devices is not None else []
    webauthn = None
    if devices is not None:
        try:
            handle = await devices.user_handle(name, create=False)
            webauthn = WebauthnLocalAuth(user_id=base64.b64encode(handle).decode())
        except NotFound:
            pass
    if not (password_hash or totp or mfa or webauthn):
        return None
    return LocalAuthSecrets(password_hash=password_hash, totp_key=totp, mfa=mfa,
                            webauthn=webauthn)


async def write_local_auth(users: UserService, devices: MFADeviceService, name: str,
                           secrets: LocalAuthSecrets) -> None:
    """Store a user's credentials from a backup (into a backend being initialised).

    Idempotent, so an interrupted restore can run again: a device already there is kept.
    """
    if secrets.password_hash:
        await users.set_password_hash(name, base64.b64decode(secrets.password_hash))
    if secrets.totp_key:
        await users.set_totp_secret(name, secrets.totp_key)
    if secrets.webauthn is not None:
        await devices.set_user_handle(name, base64.b64decode(secrets.webauthn.user_id))
    for device in secrets.mfa:
        try:
            await devices.get(name, device.id)
        except NotFound:
            await devices.add(name, device)

