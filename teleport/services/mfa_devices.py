"""Users' second-factor devices and the WebAuthn ceremonies in flight.

Keys, as Teleport lays them out under a user's web prefix:

    /web/users/<user>/mfa/<device id>                  the `mfa_device` resource
    /web/users/<user>/mfa_names/<sha256(name)>         the device id: a name is taken once
    /web/users/<user>/webauthn/local_auth              the user's WebAuthn user handle
    /webauthn/users/<user handle>                      the user it belongs to (passwordless)
    /web/users/<user>/webauthn/challenges/<challenge>  a ceremony for a known user
    /webauthn/challenges/<challenge>                   a passwordless login (no user yet)

A device name is claimed with one `create` before the device is written, so two additions
racing for one name cannot both win. The signature counter moves forward only, with one
compare-and-swap: two logins at once with the same counter cannot both pass. A challenge lives
five minutes and is taken by one atomic delete, so an assertion replayed, or sent twice at
once, finds nothing the second time.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import secrets
from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field, ValidationError

from teleport.backend.base import Backend, Item, key, range_end
from teleport.errors import AlreadyExists, BadParameter, CompareFailed, NotFound
from teleport.types.codec import to_dict
from teleport.types.mfa import MFADevice, b64url, from_b64url
from teleport.types.resource import Model, Time

#: How long a user has to touch the key once a ceremony began (WebAuthn's usual timeout is 1-5 min).
CHALLENGE_TTL = timedelta(minutes=5)
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: Random bytes in a WebAuthn user handle (the spec allows up to 64).
USER_HANDLE_BYTES = 64


class CounterNotAdvanced(CompareFailed):
    """The key's signature counter did not move past the stored one: possibly a cloned key."""

    def __init__(self, stored: int, presented: int) -> None:
        super().__init__(f"signature counter {presented} is not above the stored {stored}")
        self.stored = stored
        self.presented = presented


Ceremony = Literal["register", "login", "passwordless"]


class WebauthnChallenge(Model):
    """What finishing a ceremony must know; kept server-side, never sent to the browser."""

    #: The challenge sent to the browser, base64url: it names the record.
    challenge: str
    ceremony: Ceremony
    #: The user the ceremony is for; "" for a passwordless login, which learns it at the end.
    user: str = ""
    #: The user's WebAuthn user handle, base64url (registration puts it in the credential).
    user_handle: str = ""
    user_verification: Literal["required", "preferred", "discouraged"] = "discouraged"
    resident_key: bool = False
    #: Credential ids (base64url) the login offered; empty for passwordless.
    allowed_credentials: list[str] = Field(default_factory=list)
    created: Time


def _user_prefix(user: str) -> bytes:
    if not user or "/" in user:
        raise NotFound(f"user {user!r} not found")
    return key("web", "users", user)


def new_challenge() -> bytes:
    """Return a fresh challenge: 32 random bytes (the spec asks for at least 16)."""
    return secrets.token_bytes(32)


class MFADeviceService:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # Devices.

    def _device_key(self, user: str, device_id: str) -> bytes:
        if not _UUID.fullmatch(device_id):
            raise NotFound(f"MFA device {device_id!r} not found")
        return _user_prefix(user) + f"/mfa/{device_id}".encode()

    def _name_key(self, user: str, name: str) -> bytes:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        return _user_prefix(user) + f"/mfa_names/{digest}".encode()

    @staticmethod
    def _decode(item: Item) -> MFADevice:
        return MFADevice.model_validate_json(item.value)

    async def list(self, user: str) -> builtins.list[MFADevice]:
        """Return the user's devices, oldest first."""
        start = _user_prefix(user) + b"/mfa/"
        devices = []
        for item in await self.backend.get_range(start, range_end(start)):
            try:
                devices.append(self._decode(item))
            except ValidationError:
                continue  # unreadable: never a way in; `rm` by id still removes it
        return sorted(devices, key=lambda d: (d.spec.added_at, d.metadata.name))

    async def get(self, user: str, device_id: str) -> MFADevice:
        try:
            return self._decode(await self.backend.get(self._device_key(user, device_id)))
        except NotFound:
            raise NotFound(f"MFA device {device_id!r} not found") from None

    async def find(self, user: str, name_or_id: str) -> MFADevice:
        """Return the device named so, or with this id (as `tsh mfa rm` takes either)."""
        for device in await self.list(user):
            if name_or_id in (device.metadata.name, device.id):
                return device
        raise NotFound(f"MFA device {name_or_id!r} not found")

    async def add(self, user: str, device: MFADevice) -> MFADevice:
        """Store a new device; AlreadyExists when the user has a device of that name."""
        name_key = self._name_key(user, device.metadata.name)
        try:
            await self.backend.create(Item(name_key, device.id.encode()))
        except AlreadyExists:
            raise AlreadyExists(f"MFA device {device.metadata.name!r} already exists") from None
        try:
            await self.backend.create(Item(self._device_key(user, device.id),
                                           json.dumps(to_dict(device)).encode()))
        except BaseException:
            await self._release_name(name_key, device.id)
            raise
        return device

    async def _release_name(self, name_key: bytes, device_id: str) -> None:
        try:
            item = await self.backend.get(name_key)
            if item.value == device_id.encode():  # only this device frees the name
                await self.backend.delete(name_key)
        except NotFound:
            pass

    async def delete(self, user: str, device_id: str) -> MFADevice:
        """Remove one device and free its name; return what was removed."""
        device_key = self._device_key(user, device_id)
        try:
            item = await self.backend.get(device_key)
            await self.backend.delete(device_key)
        except NotFound:
            raise NotFound(f"MFA device {device_id!r} not found") from None
        try:
            device = self._decode(item)
        except ValidationError:
            raise NotFound(f"MFA device {device_id!r} not found") from None
        await self._release_name(self._name_key(user, device.metadata.name), device.id)
        return device

    async def advance_counter(self, user: str, device_id: str, counter: int,
                              used_at: datetime) -> MFADevice:
        """Record a login: move the signature counter to `counter` and set `last_used`.

        Raises CounterNotAdvanced when the stored counter or the new one is non-zero and the new
        one is not greater (the WebAuthn spec's sign of a cloned key), judged inside one
        compare-and-swap, so two logins presenting the same counter cannot both pass.
        """
        device_key = self._device_key(user, device_id)
        while True:
            try:
                item = await self.backend.get(device_key)
            except NotFound:
                raise NotFound(f"MFA device {device_id!r} not found") from None
            device = self._decode(item)
            webauthn = device.spec.webauthn
            if webauthn is None:
                raise BadParameter(f"MFA device {device.metadata.name!r} is not a WebAuthn key")
            stored = webauthn.signature_counter
            if (stored or counter) and counter <= stored:
                raise CounterNotAdvanced(stored, counter)
            updated = device.model_copy(update={"spec": device.spec.model_copy(update={
                "last_used": used_at,
                "webauthn": webauthn.model_copy(update={"signature_counter": counter})})})
            try:
                await self.backend.compare_and_swap(
                    item, Item(device_key, json.dumps(to_dict(updated)).encode()))
            except CompareFailed:
                continue  # another login moved it first: judge against what it wrote
            except NotFound:
                raise NotFound(f"MFA device {device_id!r} not found") from None
            return updated

    async def delete_all(self, user: str) -> None:
        """Forget every device, the user handle and pending ceremonies (the user is deleted)."""
        try:
            handle = await self.user_handle(user, create=False)
        except NotFound:
            handle = None
        start = _user_prefix(user) + b"/"
        await self.backend.delete_range(start, range_end(start))
        if handle is not None:
            try:
                await self.backend.delete(key("webauthn", "users", b64url(handle)))
            except NotFound:
                pass

    # WebAuthn user handles: the opaque `user.id` a key stores with a resident credential.

    async def user_handle(self, user: str, *, create: bool = True) -> bytes:
        """Return the user's WebAuthn user handle, making one (and its reverse entry) if asked."""
        local_key = _user_prefix(user) + b"/webauthn/local_auth"
        try:
            return from_b64url(json.loads((await self.backend.get(local_key)).value)["user_handle"])
        except NotFound:
            if not create:
                raise NotFound(f"user {user!r} has no WebAuthn user handle") from None
        handle = secrets.token_bytes(USER_HANDLE_BYTES)
        # The reverse entry first: a handle is never findable from the user yet unknown to it.
        await self.backend.create(Item(key("webauthn", "users", b64url(handle)), user.encode()))
        try:
            await self.backend.create(
                Item(local_key, json.dumps({"user_handle": b64url(handle)}).encode()))
        except AlreadyExists:  # another ceremony made one first: use it, drop ours
            await self.backend.delete(key("webauthn", "users", b64url(handle)))
            return await self.user_handle(user, create=False)
        return handle

    async def set_user_handle(self, user: str, handle: bytes) -> None:
        """Give the user this handle (a restore: their passkeys already carry it)."""
        if not handle or len(handle) > USER_HANDLE_BYTES:
            raise BadParameter(f"a WebAuthn user handle is 1 to {USER_HANDLE_BYTES} bytes")
        await self.backend.put(Item(key("webauthn", "users", b64url(handle)), user.encode()))
        await self.backend.put(Item(_user_prefix(user) + b"/webauthn/local_auth",
                                    json.dumps({"user_handle": b64url(handle)}).encode()))

    async def user_of_handle(self, handle: bytes) -> str:
        """Return the user a WebAuthn user handle belongs to; NotFound if none."""
        if not handle or len(handle) > USER_HANDLE_BYTES:
            raise NotFound("unknown WebAuthn user handle")
        try:
            return (await self.backend.get(key("webauthn", "users", b64url(handle)))).value.decode()
        except NotFound:
            raise NotFound("unknown WebAuthn user handle") from None

    # Ceremonies in flight.

    @staticmethod
    def _challenge_key(user: str, challenge: str) -> bytes:
        if not _CHALLENGE.fullmatch(challenge):
            raise NotFound("WebAuthn challenge not found")
        if not user:
            return key("webauthn", "challenges", challenge)
        return _user_prefix(user) + f"/webauthn/challenges/{challenge}".encode()

    async def put_challenge(self, record: WebauthnChallenge) -> None:
        """Keep a ceremony's challenge for CHALLENGE_TTL (expired ones are invisible)."""
        await self.backend.create(Item(self._challenge_key(record.user, record.challenge),
                                       record.model_dump_json().encode(),
                                       record.created + CHALLENGE_TTL))

    async def take_challenge(self, user: str, challenge: str) -> WebauthnChallenge:
        """Return the challenge and delete it in one step; NotFound if unknown, used or expired.

        `user` "" takes a passwordless challenge.
        """
        gone = NotFound("WebAuthn challenge not found: expired or already used")
        try:
            item = await self.backend.get(self._challenge_key(user, challenge))
            await self.backend.delete(item.key)  # NotFound when another finish took it first
        except NotFound:
            raise gone from None
        try:
            record = WebauthnChallenge.model_validate_json(item.value)
        except ValidationError:
            raise gone from None
        if record.user != user or record.challenge != challenge:
            raise gone
        return record
