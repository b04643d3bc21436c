"""A software CTAP2 authenticator that python-fido2's `Fido2Client` talks to as to a USB key.

tsh finds real keys with `CtapHidDevice.list_devices()` (USB HID); a software key cannot appear
there without /dev/uhid, which the test machines lack. This device is handed to tsh's
`keyflow.fido2_ceremony` instead, so the python-fido2 half of tsh (options parsing, client
data, CTAP2 makeCredential/getAssertion, the answer's JSON) runs for real against it. It
answers CTAP2 CBOR commands (getInfo, makeCredential, getAssertion) with ES256 credentials, a
`none` attestation, presence and built-in user verification, as `tests.webauthn_softkey` does
for the browser half.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Callable, Iterator
from threading import Event
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.hid import CAPABILITY, CTAPHID

from tests.webauthn_softkey import AT, UP, UV, SoftCredential

_GET_INFO, _MAKE_CREDENTIAL, _GET_ASSERTION = 0x04, 0x01, 0x02


class SoftCtap2Device(CtapDevice):
    """One authenticator: its credentials and their signature counters."""

    aaguid = bytes(16)

    def __init__(self) -> None:
        self.credentials: dict[bytes, SoftCredential] = {}

    @property
    def capabilities(self) -> int:
        return CAPABILITY.CBOR | CAPABILITY.NMSG

    @classmethod
    def list_devices(cls) -> Iterator[CtapDevice]:
        return iter(())

    def call(self, cmd: int, data: bytes = b"", event: Event | None = None,
             on_keepalive: Callable[[STATUS], None] | None = None) -> bytes:
        if cmd != CTAPHID.CBOR:
            raise CtapError(CtapError.ERR.INVALID_COMMAND)
        request: dict[int, Any] = cbor.decode(data[1:]) if len(data) > 1 else {}
        try:
            answer = {_GET_INFO: lambda _: self._info(), _MAKE_CREDENTIAL: self._make,
                      _GET_ASSERTION: self._assert}[data[0]](request)
        except KeyError:
            return bytes([CtapError.ERR.INVALID_COMMAND])
        except CtapError as err:
            return bytes([err.code])
        return b"\x00" + cbor.encode(answer)

    def _info(self) -> dict[int, Any]:
        # Built-in user verification (uv), no PIN token: the client then asks with uv=True.
        return {1: ["FIDO_2_0"], 3: self.aaguid, 4: {"rk": True, "up": True, "uv": True},
                6: [1]}

    def _auth_data(self, rp_id: str, flags: int, counter: int, tail: bytes = b"") -> bytes:
        return hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + \
            struct.pack(">I", counter) + tail

    def _make(self, req: dict[int, Any]) -> dict[int, Any]:
        rp_id = req[2]["id"]
        if any(c["id"] in self.credentials for c in req.get(5, [])):
            raise CtapError(CtapError.ERR.CREDENTIAL_EXCLUDED)
        options = req.get(7, {})
        cred = SoftCredential(secrets.token_bytes(32), ec.generate_private_key(ec.SECP256R1()),
                              rp_id, req[3]["id"], bool(options.get("rk")))
        self.credentials[cred.credential_id] = cred
        attested = (self.aaguid + struct.pack(">H", len(cred.credential_id))
                    + cred.credential_id + cred.cose_public_key())
        return {1: "none", 2: self._auth_data(rp_id, UP | UV | AT, 0, attested), 3: {}}

    def _assert(self, req: dict[int, Any]) -> dict[int, Any]:
        rp_id, client_data_hash = req[1], req[2]
        allowed = [c["id"] for c in req.get(3, [])]
        usable = [c for c in self.credentials.values() if c.rp_id == rp_id and
                  (c.credential_id in allowed if allowed else c.resident)]
        if not usable:
            raise CtapError(CtapError.ERR.NO_CREDENTIALS)
        cred = usable[0]
        cred.counter += 1
        auth_data = self._auth_data(rp_id, UP | UV, cred.counter)
        signature = cred.key.sign(auth_data + client_data_hash, ec.ECDSA(hashes.SHA256()))
        answer = {1: {"type": "public-key", "id": cred.credential_id}, 2: auth_data,
                  3: signature}
        if cred.resident:
            answer[4] = {"id": cred.user_handle}
        return answer
