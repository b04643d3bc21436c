"""A software WebAuthn authenticator and browser, for testing the server side without a browser.

It does what a browser and a security key do together: reads the server's options JSON, builds
`clientDataJSON` (type, challenge, origin), `authenticatorData` (SHA-256 of the RP ID, the
flags, the signature counter, and at registration the attested credential with its ES256 COSE
key), a `none` attestation, and assertion signatures over authenticatorData || SHA-256 of the
client data; then answers in the JSON form `PublicKeyCredential.toJSON()` gives. Each knob a
test needs to misbehave (origin, RP ID, counter, user verification) is an argument.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftCredential:
    credential_id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    resident: bool
    counter: int = 0

    def cose_public_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})


class SoftAuthenticator:
    """One authenticator (its credentials and counters) plus the browser half of the ceremony."""

    aaguid = bytes(16)

    def __init__(self, *, counter_step: int = 1) -> None:
        #: How much the counter moves per signature; 0 for an authenticator that keeps none.
        self.counter_step = counter_step
        self.credentials: dict[bytes, SoftCredential] = {}

    @staticmethod
    def _client_data(kind: str, options: dict[str, Any], origin: str) -> bytes:
        return json.dumps({"type": kind, "challenge": options["challenge"], "origin": origin,
                           "crossOrigin": False}).encode()

    @staticmethod
    def _flags(uv: bool, extra: int = 0) -> int:
        return UP | (UV if uv else 0) | extra

    def create(self, options_json: str, origin: str, *, rp_id: str | None = None,
               uv: bool = True, resident: bool | None = None) -> dict[str, Any]:
        """Answer navigator.credentials.create(options); rp_id overrides the options' (a forgery)."""
        options = json.loads(options_json)
        rp = rp_id or options["rp"]["id"]
        if resident is None:
            resident = options.get("authenticatorSelection", {}).get("residentKey") == "required"
        excluded = {unb64url(c["id"]) for c in options.get("excludeCredentials", [])}
        if excluded & set(self.credentials):
            raise RuntimeError("InvalidStateError: this authenticator is already registered")
        cred = SoftCredential(secrets.token_bytes(32), ec.generate_private_key(ec.SECP256R1()),
                              rp, unb64url(options["user"]["id"]), resident)
        self.credentials[cred.credential_id] = cred
        client_data = self._client_data("webauthn.create", options, origin)
        auth_data = (hashlib.sha256(rp.encode()).digest()
                     + bytes([self._flags(uv, AT)]) + struct.pack(">I", cred.counter)
                     + self.aaguid + struct.pack(">H", len(cred.credential_id))
                     + cred.credential_id + cred.cose_public_key())
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {"id": b64url(cred.credential_id), "rawId": b64url(cred.credential_id),
                "type": "public-key", "authenticatorAttachment": "cross-platform",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": b64url(client_data),
                             "attestationObject": b64url(attestation), "transports": ["usb"]}}

    def get(self, options_json: str, origin: str, *, rp_id: str | None = None,
            uv: bool = True, credential_id: bytes | None = None,
            counter: int | None = None) -> dict[str, Any]:
        """Answer navigator.credentials.get(options) with the first allowed (or given) credential.

        `counter` forces the signature counter (a cloned key's); otherwise it moves by counter_step.
        """
        options = json.loads(options_json)
        rp = rp_id or options["rpId"]
        allowed = [unb64url(c["id"]) for c in options.get("allowCredentials", [])]
        if credential_id is None:
            usable = [c for c in self.credentials.values() if
                      (c.credential_id in allowed if allowed else c.resident)]
            if not usable:
                raise RuntimeError("NotAllowedError: no credential of this authenticator fits")
            cred = usable[0]
        else:
            cred = self.credentials[credential_id]
        cred.counter = cred.counter + self.counter_step if counter is None else counter
        client_data = self._client_data("webauthn.get", options, origin)
        auth_data = (hashlib.sha256(rp.encode()).digest() + bytes([self._flags(uv)])
                     + struct.pack(">I", cred.counter))
        signature = cred.key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                  ec.ECDSA(hashes.SHA256()))
        return {"id": b64url(cred.credential_id), "rawId": b64url(cred.credential_id),
                "type": "public-key", "authenticatorAttachment": "cross-platform",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": b64url(client_data),
                             "authenticatorData": b64url(auth_data),
                             "signature": b64url(signature),
                             "userHandle": b64url(cred.user_handle) if cred.resident else None}}
