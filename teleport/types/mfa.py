"""The `mfa_device` resource: one second factor a user enrolled (an OTP app or a WebAuthn key).

Written as Teleport writes it (`kind: mfa_device`, `version: v1`): metadata.name is the name the
user gave the device (`tsh mfa ls` shows it, `tsh mfa rm` takes it), the spec holds a stable
uuid and exactly one of `totp` or `webauthn`. An OTP device shows no secret: the secret lives
with the user's other secrets, never in a resource that is listed or sent. A WebAuthn device
holds only public data (credential id, COSE public key, signature counter), nothing a reader
could log in with.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from typing import Literal

from pydantic import Field, field_validator, model_validator

from teleport.errors import BadParameter
from teleport.types.resource import ZERO_TIME, Model, Resource, Time

#: Longest device name accepted; names are shown in one table row.
MAX_DEVICE_NAME = 128
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def check_device_name(name: str) -> None:
    """Refuse a device name that cannot be shown on one line or typed back to `tsh mfa rm`."""
    if not name.strip() or len(name) > MAX_DEVICE_NAME:
        raise BadParameter(f"device name must be 1 to {MAX_DEVICE_NAME} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise BadParameter("device name must not contain control characters")


def b64url(data: bytes) -> str:
    """Encode as WebAuthn writes binary fields on the wire: base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: str) -> bytes:
    """Decode base64url with or without padding; BadParameter when it is not base64url."""
    if not text or not _BASE64URL.fullmatch(text.rstrip("=")):
        raise BadParameter("not base64url")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise BadParameter("not base64url") from None


class TOTPDevice(Model):
    """An OTP app; its secret is kept with the user's secrets and never shown."""


class WebauthnDevice(Model):
    """A WebAuthn credential: what the server needs to check the key's assertions."""

    #: The credential id the authenticator chose, base64url (as `allowCredentials` carries it).
    credential_id: str = Field(min_length=1)
    #: The credential's COSE public key as the authenticator sent it, standard base64.
    public_key_cbor: str = Field(min_length=1)
    #: The attestation statement format at registration (`none`, `packed`, `fido-u2f`, ...).
    attestation_type: str = "none"
    #: The authenticator model's AAGUID (all zeros for `none` attestation and U2F keys).
    aaguid: str = "00000000-0000-0000-0000-000000000000"
    #: The last signature counter seen; 0 for authenticators that keep none.
    signature_counter: int = Field(default=0, ge=0, lt=2**32)
    #: A discoverable credential, usable for passwordless login.
    resident_key: bool = False

    @field_validator("credential_id")
    @classmethod
    def _credential_id(cls, value: str) -> str:
        try:
            from_b64url(value)
        except BadParameter:
            raise ValueError("credential_id must be base64url") from None
        return value

    @field_validator("public_key_cbor")
    @classmethod
    def _public_key(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("public_key_cbor must be base64") from None
        return value

    @property
    def credential_id_bytes(self) -> bytes:
        return from_b64url(self.credential_id)

    @property
    def public_key_bytes(self) -> bytes:
        return base64.b64decode(self.public_key_cbor)


class MFADeviceSpec(Model):
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    added_at: Time = ZERO_TIME
    last_used: Time = ZERO_TIME
    totp: TOTPDevice | None = None
    webauthn: WebauthnDevice | None = None

    @field_validator("id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"id {value!r} is not a uuid") from None

    @model_validator(mode="after")
    def _exactly_one(self) -> MFADeviceSpec:
        if (self.totp is None) == (self.webauthn is None):
            raise ValueError("a device is exactly one of totp or webauthn")
        return self


class MFADevice(Resource):
    kind: Literal["mfa_device"] = "mfa_device"
    version: Literal["v1"] = "v1"
    spec: MFADeviceSpec

    @field_validator("metadata")
    @classmethod
    def _name(cls, value: object) -> object:
        name = getattr(value, "name", "")
        try:
            check_device_name(name)
        except BadParameter as err:
            raise ValueError(str(err)) from None
        return value

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def type(self) -> Literal["TOTP", "WebAuthn"]:
        """The device kind as `tsh mfa ls` prints it."""
        return "TOTP" if self.spec.totp is not None else "WebAuthn"
