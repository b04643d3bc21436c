"""`tsh mfa ls|add|rm`: the logged-in user's own second-factor devices.

tsh reaches the auth API with the profile's certificate through the proxy (`client.authapi`),
so the auth server sees the user themselves and lets them reach only their own devices.
A new key registers through `client.keyflow` (a key attached here, else the browser flow).
"""

from __future__ import annotations

import sys
from typing import TextIO

from teleport.api.mfa_models import MFADeviceInfo, MFADeviceList
from teleport.client.authapi import profile_auth_client
from teleport.client.callback import LOGIN_TIMEOUT
from teleport.client.keyflow import answer_challenge
from teleport.client.profile import Profile
from teleport.utils.addr import parse_addr


async def list_devices(profile: Profile) -> MFADeviceList:
    async with profile_auth_client(profile) as auth:
        return await auth.list_mfa_devices(profile.user)


async def add_device(profile: Profile, name: str, *, passwordless: bool, browser: bool,
                     out: TextIO | None = None, within: float = LOGIN_TIMEOUT) -> MFADeviceInfo:
    """Register another key (passwordless: a resident key that verifies its user)."""
    async with profile_auth_client(profile) as auth:
        challenge = await auth.mfa_register_challenge(profile.user, passwordless)
        options = challenge.webauthn_public_key or {}
        kind = "passkey" if passwordless else "security key"
        credential = await answer_challenge(
            "create", options, web_addr=parse_addr(profile.web_proxy_addr, 3080),
            what=f"register a new {kind} named {name!r} for {profile.user} on {profile.cluster}",
            browser=browser, out=out or sys.stdout, within=within)
        return await auth.add_mfa_device(profile.user, name, credential)


async def remove_device(profile: Profile, name: str) -> None:
    async with profile_auth_client(profile) as auth:
        await auth.delete_mfa_device(profile.user, name)
