"""WebAuthn ceremonies against a software authenticator, on the memory and sqlite backends.

The server side is `teleport.auth.webauthn` as the auth server will use it; the key and the
browser are `tests.webauthn_softkey`, which builds every byte a real one sends. Each refusal
the issue lists (wrong origin, wrong RP ID, a replayed answer, a counter going backwards, a key
of another user) is asked for here and must come back as one AccessDenied line, audited.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from teleport.auth.context import AuthContext, AuthSettings
from teleport.auth.webauthn import Webauthn
from teleport.backend.base import Backend
from teleport.backend.memory import MemoryBackend
from teleport.backend.sqlite import SqliteBackend
from teleport.errors import AccessDenied, AlreadyExists, NotFound
from teleport.events import emitter as ev
from teleport.events.emitter import MemoryEmitter
from teleport.services.mfa_devices import CHALLENGE_TTL, MFADeviceService
from teleport.types.mfa import MFADevice
from teleport.utils.clock import FakeClock
from tests.webauthn_softkey import SoftAuthenticator, unb64url

RP_ID = "localhost"
ORIGIN = "https://localhost:3080"


class Rig:
    def __init__(self, backend: Backend, clock: FakeClock, emitter: MemoryEmitter) -> None:
        self.clock = clock
        self.emitter = emitter
        self.devices = MFADeviceService(backend)
        self.webauthn = Webauthn(AuthContext(backend, emitter, clock, AuthSettings()), self.devices)

    async def register(self, key: SoftAuthenticator, user: str, name: str,
                       resident_key: bool = False) -> MFADevice:
        options = await self.webauthn.begin_registration(user, RP_ID, "Teleport",
                                                         resident_key=resident_key)
        return await self.webauthn.finish_registration(user, name, key.create(options, ORIGIN),
                                                       [ORIGIN], RP_ID)

    async def login(self, key: SoftAuthenticator, user: str | None,
                    **answer: Any) -> tuple[str, MFADevice]:
        options = await self.webauthn.begin_login(user, RP_ID)
        assertion = key.get(options, ORIGIN, **answer)
        return await self.webauthn.finish_login(assertion, [ORIGIN], RP_ID, user=user)

    def refusals(self) -> list[str]:
        return [e["error"] for e in self.emitter.of_type(ev.USER_LOGIN)
                if e.get("success") is False and e.get("method") == "webauthn"]


@pytest.fixture(params=["memory", "sqlite"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    clock = FakeClock(datetime.now(timezone.utc))
    backend: Backend = MemoryBackend(clock) if request.param == "memory" else \
        await SqliteBackend.open(tmp_path / "backend.db", clock)
    try:
        yield Rig(backend, clock, MemoryEmitter())
    finally:
        await backend.close()


async def test_register_then_log_in(rig: Rig) -> None:
    key = SoftAuthenticator()
    device = await rig.register(key, "alice", "yubikey")
    assert device.type == "WebAuthn" and device.spec.webauthn is not None
    assert device.spec.webauthn.attestation_type == "none"
    assert (await rig.devices.list("alice")) == [device]

    user, used = await rig.login(key, "alice")
    assert (user, used.id) == ("alice", device.id)
    stored = await rig.devices.get("alice", device.id)
    assert stored.spec.webauthn is not None and stored.spec.webauthn.signature_counter == 1
    added = rig.emitter.of_type("mfa.add")
    assert added and added[-1]["success"] is True and added[-1]["mfa_device_name"] == "yubikey"


async def test_options_are_what_the_browser_takes(rig: Rig) -> None:
    options = json.loads(await rig.webauthn.begin_registration("alice", RP_ID, "Teleport"))
    assert options["rp"] == {"id": RP_ID, "name": "Teleport"}
    assert options["user"]["name"] == "alice" and options["user"]["id"]
    assert len(unb64url(options["challenge"])) >= 16
    assert {"type": "public-key", "alg": -7} in options["pubKeyCredParams"]
    assert options["authenticatorSelection"]["residentKey"] == "discouraged"
    passwordless = json.loads(await rig.webauthn.begin_registration(
        "alice", RP_ID, "Teleport", resident_key=True))
    assert passwordless["authenticatorSelection"]["residentKey"] == "required"
    assert passwordless["authenticatorSelection"]["userVerification"] == "required"
    # One user handle per user, whatever the number of ceremonies.
    assert passwordless["user"]["id"] == options["user"]["id"]


async def test_second_device_then_remove_the_first(rig: Rig) -> None:
    first_key, second_key = SoftAuthenticator(), SoftAuthenticator()
    first = await rig.register(first_key, "alice", "first")
    options = json.loads(await rig.webauthn.begin_registration("alice", RP_ID, "Teleport"))
    assert [c["id"] for c in options["excludeCredentials"]] == [first.spec.webauthn.credential_id]  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="already registered"):
        first_key.create(json.dumps(options), ORIGIN)  # the browser refuses a known key
    second = await rig.register(second_key, "alice", "second")
    assert [d.metadata.name for d in await rig.devices.list("alice")] == ["first", "second"]
    assert (await rig.login(second_key, "alice"))[1].id == second.id
    assert (await rig.login(first_key, "alice"))[1].id == first.id

    removed = await rig.webauthn.remove_device("alice", "first")
    assert removed.id == first.id
    assert [d.metadata.name for d in await rig.devices.list("alice")] == ["second"]
    assert rig.emitter.of_type("mfa.delete")[-1]["mfa_device_name"] == "first"
    # The removed key is offered no more, and an answer from it is refused.
    options_json = await rig.webauthn.begin_login("alice", RP_ID)
    with pytest.raises(RuntimeError, match="NotAllowedError"):
        first_key.get(options_json, ORIGIN)
    forced = first_key.get(options_json, ORIGIN, credential_id=first.spec.webauthn.credential_id_bytes)  # type: ignore[union-attr]
    with pytest.raises(AccessDenied, match="unknown WebAuthn credential"):
        await rig.webauthn.finish_login(forced, [ORIGIN], RP_ID, user="alice")
    assert (await rig.login(second_key, "alice"))[1].id == second.id
    # The name is free again.
    again = await rig.register(SoftAuthenticator(), "alice", "first")
    assert again.id != first.id


async def test_device_names_are_unique_per_user(rig: Rig) -> None:
    await rig.register(SoftAuthenticator(), "alice", "yubikey")
    with pytest.raises(AlreadyExists, match="'yubikey' already exists"):
        await rig.register(SoftAuthenticator(), "alice", "yubikey")
    await rig.register(SoftAuthenticator(), "bob", "yubikey")  # another user's names are theirs


async def test_passwordless_with_a_resident_key(rig: Rig) -> None:
    key = SoftAuthenticator()
    device = await rig.register(key, "alice", "passkey", resident_key=True)
    assert device.spec.webauthn is not None and device.spec.webauthn.resident_key
    options = json.loads(await rig.webauthn.begin_login(None, RP_ID))
    assert options["allowCredentials"] == [] and options["userVerification"] == "required"
    user, used = await rig.login(key, None)
    assert (user, used.id) == ("alice", device.id)
    # Without user verification the key alone is not enough.
    with pytest.raises(AccessDenied, match="User verification is required"):
        await rig.login(key, None, uv=False)
    # A resident key registration needs user verification too.
    options_json = await rig.webauthn.begin_registration("alice", RP_ID, "Teleport", resident_key=True)
    with pytest.raises(AccessDenied, match="User verification is required"):
        await rig.webauthn.finish_registration(
            "alice", "unverified", SoftAuthenticator().create(options_json, ORIGIN, uv=False),
            [ORIGIN], RP_ID)


async def test_passwordless_needs_a_resident_key(rig: Rig) -> None:
    key = SoftAuthenticator()
    device = await rig.register(key, "alice", "plain")
    options = await rig.webauthn.begin_login(None, RP_ID)
    answer = key.get(options, ORIGIN, credential_id=device.spec.webauthn.credential_id_bytes)  # type: ignore[union-attr]
    with pytest.raises(AccessDenied, match="needs a resident key"):
        await rig.webauthn.finish_login(answer, [ORIGIN], RP_ID)


async def test_wrong_origin_is_refused(rig: Rig) -> None:
    key = SoftAuthenticator()
    options = await rig.webauthn.begin_registration("alice", RP_ID, "Teleport")
    with pytest.raises(AccessDenied, match="origin 'https://evil.example'"):
        await rig.webauthn.finish_registration("alice", "key", key.create(options, "https://evil.example"),
                                               [ORIGIN], RP_ID)
    assert await rig.devices.list("alice") == []
    await rig.register(key, "alice", "key")
    options = await rig.webauthn.begin_login("alice", RP_ID)
    with pytest.raises(AccessDenied, match="origin 'https://localhost:3081', expected https://localhost:3080"):
        await rig.webauthn.finish_login(key.get(options, "https://localhost:3081"), [ORIGIN], RP_ID,
                                        user="alice")
    assert any("origin" in r for r in rig.refusals())


async def test_wrong_rp_id_is_refused(rig: Rig) -> None:
    key = SoftAuthenticator()
    options = await rig.webauthn.begin_registration("alice", RP_ID, "Teleport")
    with pytest.raises(AccessDenied, match="another relying party"):
        await rig.webauthn.finish_registration(
            "alice", "key", key.create(options, ORIGIN, rp_id="evil.example"), [ORIGIN], RP_ID)
    await rig.register(key, "alice", "key")
    options = await rig.webauthn.begin_login("alice", RP_ID)
    with pytest.raises(AccessDenied, match="another relying party: its RP ID is not 'localhost'"):
        await rig.webauthn.finish_login(key.get(options, ORIGIN, rp_id="evil.example"), [ORIGIN],
                                        RP_ID, user="alice")
    assert any("relying party" in r for r in rig.refusals())


async def test_replayed_assertion_is_refused(rig: Rig) -> None:
    key = SoftAuthenticator()
    await rig.register(key, "alice", "key")
    options = await rig.webauthn.begin_login("alice", RP_ID)
    assertion = key.get(options, ORIGIN)
    await rig.webauthn.finish_login(assertion, [ORIGIN], RP_ID, user="alice")
    with pytest.raises(AccessDenied, match="expired or was already used"):
        await rig.webauthn.finish_login(assertion, [ORIGIN], RP_ID, user="alice")
    assert any("already used" in r for r in rig.refusals())


async def test_same_assertion_twice_at_once_passes_once(rig: Rig) -> None:
    key = SoftAuthenticator()
    await rig.register(key, "alice", "key")
    assertion = key.get(await rig.webauthn.begin_login("alice", RP_ID), ORIGIN)
    results = await asyncio.gather(
        *(rig.webauthn.finish_login(assertion, [ORIGIN], RP_ID, user="alice") for _ in range(4)),
        return_exceptions=True)
    assert sum(isinstance(r, tuple) for r in results) == 1
    assert all(isinstance(r, AccessDenied) for r in results if not isinstance(r, tuple))


async def test_expired_challenge_is_refused(rig: Rig) -> None:
    key = SoftAuthenticator()
    await rig.register(key, "alice", "key")
    options = await rig.webauthn.begin_login("alice", RP_ID)
    rig.clock.advance(CHALLENGE_TTL + timedelta(seconds=1))
    with pytest.raises(AccessDenied, match="expired"):
        await rig.webauthn.finish_login(key.get(options, ORIGIN), [ORIGIN], RP_ID, user="alice")


async def test_counter_going_backwards_is_refused(rig: Rig) -> None:
    key = SoftAuthenticator()
    device = await rig.register(key, "alice", "key")
    await rig.login(key, "alice", counter=10)
    with pytest.raises(AccessDenied, match=r"went backwards \(7 after 10\): possible cloned authenticator"):
        await rig.login(key, "alice", counter=7)
    with pytest.raises(AccessDenied, match="possible cloned authenticator"):
        await rig.login(key, "alice", counter=10)  # not greater is refused too
    stored = await rig.devices.get("alice", device.id)
    assert stored.spec.webauthn is not None and stored.spec.webauthn.signature_counter == 10
    assert any("cloned" in r for r in rig.refusals())
    await rig.login(key, "alice", counter=11)


async def test_two_clones_at_once_cannot_both_pass(rig: Rig) -> None:
    key = SoftAuthenticator()
    await rig.register(key, "alice", "key")
    answers = [key.get(await rig.webauthn.begin_login("alice", RP_ID), ORIGIN, counter=5)
               for _ in range(3)]
    results = await asyncio.gather(
        *(rig.webauthn.finish_login(a, [ORIGIN], RP_ID, user="alice") for a in answers),
        return_exceptions=True)
    assert sum(isinstance(r, tuple) for r in results) == 1
    assert all("cloned" in str(r) for r in results if not isinstance(r, tuple))


async def test_keys_without_a_counter_keep_working(rig: Rig) -> None:
    key = SoftAuthenticator(counter_step=0)  # many platform authenticators send 0 always
    await rig.register(key, "alice", "passkey")
    await rig.login(key, "alice")
    await rig.login(key, "alice")


async def test_another_users_credential_is_refused(rig: Rig) -> None:
    alice_key, bob_key = SoftAuthenticator(), SoftAuthenticator()
    await rig.register(alice_key, "alice", "key")
    bob = await rig.register(bob_key, "bob", "key")
    options = await rig.webauthn.begin_login("alice", RP_ID)
    answer = bob_key.get(options, ORIGIN, credential_id=bob.spec.webauthn.credential_id_bytes)  # type: ignore[union-attr]
    with pytest.raises(AccessDenied, match="unknown WebAuthn credential"):
        await rig.webauthn.finish_login(answer, [ORIGIN], RP_ID, user="alice")
    assert rig.emitter.of_type(ev.USER_LOGIN)[-1]["user"] == "alice"


async def test_a_registration_challenge_does_not_log_in(rig: Rig) -> None:
    key = SoftAuthenticator()
    await rig.register(key, "alice", "key")
    options = json.loads(await rig.webauthn.begin_registration("alice", RP_ID, "Teleport"))
    login_options = json.dumps({"challenge": options["challenge"], "rpId": RP_ID,
                                "allowCredentials": []})
    answer = key.get(login_options, ORIGIN, credential_id=next(iter(key.credentials)))
    with pytest.raises(AccessDenied, match="expired or was already used"):
        await rig.webauthn.finish_login(answer, [ORIGIN], RP_ID, user="alice")


async def test_bad_input_is_one_line(rig: Rig) -> None:
    await rig.register(SoftAuthenticator(), "alice", "key")
    await rig.webauthn.begin_login("alice", RP_ID)
    for junk in ("not json", "{}", {"id": "x", "rawId": "x", "type": "public-key",
                                    "response": {"clientDataJSON": "!!", "authenticatorData": "",
                                                 "signature": ""}}):
        with pytest.raises(AccessDenied, match=r"^invalid WebAuthn assertion: the credential is malformed$"):
            await rig.webauthn.finish_login(junk, [ORIGIN], RP_ID, user="alice")
    with pytest.raises(AccessDenied, match="has no WebAuthn devices"):
        await rig.webauthn.begin_login("nobody", RP_ID)


async def test_deleting_a_user_forgets_keys_and_handle(rig: Rig) -> None:
    key = SoftAuthenticator()
    await rig.register(key, "alice", "passkey", resident_key=True)
    options = await rig.webauthn.begin_login(None, RP_ID)
    await rig.devices.delete_all("alice")
    assert await rig.devices.list("alice") == []
    with pytest.raises(NotFound):
        await rig.devices.user_handle("alice", create=False)
    with pytest.raises(AccessDenied, match="unknown WebAuthn credential"):
        await rig.webauthn.finish_login(key.get(options, ORIGIN), [ORIGIN], RP_ID)
