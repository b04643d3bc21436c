"""Backup with `tctl get all --with-secrets` and `teleport start --bootstrap`, on real auth servers.

The backup is taken through the auth API's resource routes with tctl's Admin identity, as tctl
does; the restore is `AuthServer.init(bootstrap=...)`, which the daemon calls. Two auth servers
on one sqlite file (two connections, each statement on its own thread) stand for an HA pair on
one shared backend.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyotp
import pytest
import yaml

from teleport.auth import migrations, passwords
from teleport.auth.bootstrap import init_lock
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.base import Backend, Item
from teleport.backend.memory import MemoryBackend
from teleport.backend.sqlite import SqliteBackend
from teleport.config import StaticToken
from teleport.errors import AccessDenied, BadParameter, ConnectionProblem
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.services.mfa_devices import MFADeviceService
from teleport.types.codec import dump_yaml, to_dict
from teleport.types.connectors import GithubConnector
from teleport.types.locks import Lock, LockSpec, LockTarget
from teleport.types.mfa import MFADevice, MFADeviceSpec, WebauthnDevice
from teleport.types.registry import KINDS_REGISTRY
from teleport.types.resource import Metadata
from teleport.types.resources import (
    ProvisionToken,
    ProvisionTokenSpec,
    Server,
    ServerSpec,
    User,
    UserSpec,
)
from teleport.types.roles import Role
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api

CLUSTER = "backup.test"
PASSWORD = "correct horse battery"
TOTP_SECRET = pyotp.random_base32()
CLIENT_SECRET = "github-client-secret-1"


def _settings(**changes: Any) -> AuthSettings:
    return AuthSettings(**{"cluster_name": CLUSTER, "second_factor": "otp", **changes})


def _auth(backend: Backend, clock: FakeClock, **changes: Any) -> AuthServer:
    return AuthServer(backend, MemoryEmitter(), clock, _settings(**changes))


async def _client(auth: AuthServer, addr: Any, cert: str, tls_key: bytes) -> AuthClient:
    ours = (await auth.certs.get_ca("tls")).trusted_tls_certs()
    ctx = tlsconfig.ssl_client_context(cert.encode(), tls_key, [c.encode() for c in ours])
    return AuthClient([addr], ctx, timeout=10, cluster=auth.cluster_name)


async def _admin(auth: AuthServer, addr: Any) -> AuthClient:
    """tctl's client on the auth host: the Admin identity."""
    tls_key = tlskeys.generate_tls_key()
    certs = await auth.certs.issue_host_certs(
        host_uuid="admin", nodename="admin", system_role="Admin",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
    return await _client(auth, addr, certs.tls_cert, tls_key)


async def _user_client(auth: AuthServer, addr: Any, name: str) -> AuthClient:
    """tctl through a user's tsh profile: the user's own certificate."""
    tls_key = tlskeys.generate_tls_key()
    certs = await auth.certs.issue_user_certs(
        await auth.accounts.get_user(name), sshkeys.public_key_of(sshkeys.generate_private_key()),
        tlskeys.tls_public_key_pem(tls_key), timedelta(hours=1))
    return await _client(auth, addr, certs.tls_cert, tls_key)


def _device() -> MFADevice:
    return MFADevice(metadata=Metadata(name="yubikey"), spec=MFADeviceSpec(
        added_at=datetime(2026, 1, 2, tzinfo=timezone.utc), webauthn=WebauthnDevice(
            credential_id="Y3JlZGVudGlhbC1pZA", public_key_cbor=base64.b64encode(b"cose").decode(),
            signature_counter=41, resident_key=True)))


async def _populate(auth: AuthServer, clock: FakeClock) -> None:
    """A cluster's state: a role, a user with password, OTP app and key, a token, a lock, a node."""
    role = Role.model_validate({"kind": "role", "version": "v5", "metadata": {"name": "dev"},
                                "spec": {"allow": {"logins": ["ubuntu"]}}})
    await auth.resources.save_role(role, actor="test", overwrite=False)
    await auth.accounts.upsert_user(User(metadata=Metadata(name="alice"), spec=UserSpec(
        roles=["dev", "access"], traits={"logins": ["alice"]})))
    users = auth.accounts.users
    await users.set_password_hash("alice", passwords.hash_password(PASSWORD))
    await users.set_totp_secret("alice", TOTP_SECRET)
    devices = MFADeviceService(auth.backend)
    await devices.add("alice", _device())
    await devices.user_handle("alice")
    await auth.hosts.tokens.provision.put(ProvisionToken(
        metadata=Metadata(name="node-join-token-1", expires=clock.now() + timedelta(hours=5)),
        spec=ProvisionTokenSpec(roles=["node"])))
    await auth.resources.save_lock(Lock(metadata=Metadata(name="lock-1"), spec=LockSpec(
        target=LockTarget(user="mallory"), message="gone")), actor="test", overwrite=False)
    await auth.resources.store(KINDS_REGISTRY["github"]).create(GithubConnector.model_validate({
        "kind": "github", "version": "v3", "metadata": {"name": "github"},
        "spec": {"client_id": "app", "client_secret": CLIENT_SECRET,
                 "redirect_url": "https://proxy.example.com/v1/webapi/github/callback",
                 "teams_to_roles": [{"organization": "octo", "team": "devs", "roles": ["dev"]}]}}),
        "test")
    await auth.hosts.upsert_server(Server(
        metadata=Metadata(name="node-uuid", expires=clock.now() + timedelta(minutes=10)),
        spec=ServerSpec(addr="127.0.0.1:3022", hostname="web1")))


async def _get_all(client: AuthClient, with_secrets: bool) -> str:
    """What `tctl get all [--with-secrets]` prints."""
    found = [r for k in KINDS_REGISTRY.values() if k.in_get_all
             for r in await client.list_resources(k.name, with_secrets=with_secrets)]
    return dump_yaml(found)


@pytest.fixture
async def old() -> AsyncIterator[tuple[AuthServer, Any, FakeClock]]:
    """A live cluster with state, serving its API."""
    clock = FakeClock(datetime.now(timezone.utc))
    auth = _auth(MemoryBackend(clock), clock)
    await auth.init()
    await _populate(auth, clock)
    runner, addr = await serve_auth_api(auth)
    try:
        yield auth, addr, clock
    finally:
        await runner.cleanup()


@pytest.fixture
async def backup(old: tuple[AuthServer, Any, FakeClock], tmp_path: Path) -> Path:
    auth, addr, _ = old
    async with await _admin(auth, addr) as tctl:
        path = tmp_path / "state.yaml"
        path.write_text(await _get_all(tctl, with_secrets=True))
    return path


async def _everything(backend: Backend) -> list[Item]:
    return await backend.get_range(b"/", b"\xff")


async def _cas(auth: AuthServer) -> list[dict[str, Any]]:
    return [to_dict(await auth.certs.get_ca(t, with_secrets=True)) for t in ("user", "host", "tls")]


async def test_get_all_with_secrets_holds_what_a_restore_needs(
        old: tuple[AuthServer, Any, FakeClock]) -> None:
    auth, addr, _ = old
    async with await _admin(auth, addr) as tctl:
        plain = await _get_all(tctl, with_secrets=False)
        full = await _get_all(tctl, with_secrets=True)
    assert "PRIVATE KEY" not in plain and "local_auth" not in plain
    docs = list(yaml.safe_load_all(full))
    assert {d["kind"] for d in docs} == {"role", "user", "token", "cert_authority", "lock", "node",
                                         "github"}
    assert CLIENT_SECRET in full and CLIENT_SECRET not in plain
    alice = next(d for d in docs if d["kind"] == "user")["spec"]["local_auth"]
    stored_hash = await auth.accounts.users.get_password_hash("alice")
    assert base64.b64decode(alice["password_hash"]) == stored_hash
    assert alice["totp_key"] == TOTP_SECRET
    key = alice["mfa"][0]["spec"]["webauthn"]
    assert (key["credential_id"], key["signature_counter"]) == ("Y3JlZGVudGlhbC1pZA", 41)
    handle = await MFADeviceService(auth.backend).user_handle("alice", create=False)
    assert base64.b64decode(alice["webauthn"]["user_id"]) == handle
    for ca in (d for d in docs if d["kind"] == "cert_authority"):
        pairs = ca["spec"]["active_keys"]
        assert all(p["private_key"] for p in pairs.get("ssh", []))
        assert all(p["key"] for p in pairs.get("tls", []))


async def test_credentials_are_not_stored_through_the_resource_routes(
        old: tuple[AuthServer, Any, FakeClock], backup: Path) -> None:
    auth, addr, _ = old
    [alice] = [d for d in yaml.safe_load_all(backup.read_text()) if d["kind"] == "user"]
    async with await _admin(auth, addr) as tctl:
        with pytest.raises(BadParameter, match='^user "alice" carries secrets '
                                               r"\(spec.local_auth\): they are restored only by"):
            await tctl.put_resource(User.model_validate(alice), overwrite=True)


async def test_a_users_profile_never_gets_ca_keys_or_credentials_whatever_its_roles(
        old: tuple[AuthServer, Any, FakeClock]) -> None:
    auth, addr, _ = old
    await auth.accounts.upsert_user(User(metadata=Metadata(name="root"), spec=UserSpec(
        roles=["admin"])))  # the preset role that may do everything
    async with await _user_client(auth, addr, "root") as tsh:
        for kind in ("cert_authority", "user"):
            with pytest.raises(AccessDenied, match=f"^{kind} with secrets: .* only to tctl "
                                                   "with the auth server's admin identity, on "
                                                   "the auth host; never to a user's profile"):
                await tsh.list_resources(kind, with_secrets=True)
        # A connector's client secret: to whoever may read connectors, as before.
        [github] = await tsh.list_resources("github", with_secrets=True)
        assert CLIENT_SECRET in str(to_dict(github))
        ca = await tsh.get_resource("cert_authority", "user")  # without secrets: as today
        assert "PRIVATE KEY" not in str(to_dict(ca))
        with pytest.raises(AccessDenied):
            await tsh.get_resource("cert_authority", "host", with_secrets=True)
    assert isinstance(auth.emitter, MemoryEmitter)
    refusals = [e for e in auth.emitter.of_type("auth") if not e["success"]]
    assert [(e["user"], e["error"].split(":")[0]) for e in refusals] == [
        ("root", "cert_authority with secrets"), ("root", "user with secrets"),
        ("root", "cert_authority with secrets")]


async def test_bootstrap_restores_the_state_with_the_same_cas_and_credentials(
        old: tuple[AuthServer, Any, FakeClock], backup: Path) -> None:
    auth, _, clock = old
    new = _auth(MemoryBackend(clock), clock)
    await new.init(bootstrap=backup)
    assert await _cas(new) == await _cas(auth)
    assert new.cluster_name == CLUSTER
    # The same password and a fresh code of the same app log in; the key and its counter stay.
    await new.logins.login(
        username="alice", password=PASSWORD, otp_code=pyotp.TOTP(TOTP_SECRET).now(),
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()), ttl=None)
    [device] = await MFADeviceService(new.backend).list("alice")
    assert device == _device().model_copy(update={"spec": device.spec}) and \
        device.spec.webauthn is not None and device.spec.webauthn.signature_counter == 41
    assert await MFADeviceService(new.backend).user_of_handle(
        await MFADeviceService(auth.backend).user_handle("alice", create=False)) == "alice"
    for kind in ("role", "user", "token", "lock", "github"):
        store_old, store_new = (a.resources.store(KINDS_REGISTRY[kind]) for a in (auth, new))
        assert [to_dict(r) for r in await store_new.list()] == \
            [to_dict(r) for r in await store_old.list()], kind
    assert await new.hosts.list_servers("node") == []  # announcements are not restored


class _Waiting(logging.Handler):
    """Counts the auth servers that found the backend uninitialised and wait for its lock."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self.both = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Waiting for another auth server initialising"):
            self.count += 1
            if self.count == 2:
                self.both.set()


async def _racing(path: Path, bootstraps: tuple[Path | None, Path | None],
                  clock: FakeClock) -> tuple[AuthServer, AuthServer]:
    """Start two auth servers on one empty backend so that both find it uninitialised first:
    the test holds the init lock until both wait for it, so the one that takes it second
    must notice the other's work (left to timing, the second often started after the first
    had finished, and the check under the lock went untested)."""
    backends = [await SqliteBackend.open(path, clock) for _ in range(3)]
    servers = [_auth(b, clock) for b in backends[:2]]
    logger = logging.getLogger("teleport.auth")
    waiting, level = _Waiting(), logger.level
    logger.addHandler(waiting)
    logger.setLevel(logging.INFO)
    try:
        # The schema version first, so neither waits for the lock in its migrations instead.
        await migrations.migrate(backends[2], lambda: init_lock(backends[2], clock))
        async with init_lock(backends[2], clock):
            tasks = [asyncio.create_task(s.init(bootstrap=f))
                     for s, f in zip(servers, bootstraps, strict=True)]
            both = asyncio.create_task(waiting.both.wait())
            # Both waiting, or one failed early (gather below raises its error).
            await asyncio.wait([both, *tasks], timeout=10, return_when=asyncio.FIRST_COMPLETED)
            both.cancel()
            assert waiting.count == 2 or any(t.done() for t in tasks), "they did not race"
        await asyncio.gather(*tasks)
        return servers[0], servers[1]
    finally:
        logger.removeHandler(waiting)
        logger.setLevel(level)
        for b in backends:
            await b.close()


@pytest.mark.parametrize("which", ["both", "first", "second", "neither"])
async def test_two_auth_servers_starting_at_once_make_one_set_of_cas(
        old: tuple[AuthServer, Any, FakeClock], backup: Path, tmp_path: Path, which: str) -> None:
    auth, _, clock = old
    flags = {"both": (backup, backup), "first": (backup, None), "second": (None, backup),
             "neither": (None, None)}[which]
    a, b = await _racing(tmp_path / "shared.db", flags, clock)
    cas_a, cas_b = await _cas_of(tmp_path / "shared.db", clock)
    assert cas_a == cas_b
    if which == "neither":
        assert cas_a != await _cas(auth)
    else:  # the bootstrapper may lose the race: then fresh CAs and no state, never a mix
        assert cas_a == await _cas(auth) or not (
            {str(c) for c in cas_a} & {str(c) for c in await _cas(auth)})


async def _cas_of(path: Path, clock: FakeClock) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The CAs two fresh auth servers on the shared file load (a restart of each)."""
    backend = await SqliteBackend.open(path, clock)
    try:
        first, second = _auth(backend, clock), _auth(backend, clock)
        await first.init()
        await second.init()
        return await _cas(first), await _cas(second)
    finally:
        await backend.close()


async def test_both_with_bootstrap_apply_the_file_once(
        old: tuple[AuthServer, Any, FakeClock], backup: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    auth, _, clock = old
    with caplog.at_level(logging.INFO, logger="teleport.auth"):
        await _racing(tmp_path / "shared.db", (backup, backup), clock)
    assert [r.getMessage() for r in caplog.records].count(
        f"--bootstrap {backup} ignored: the backend is already initialised.") == 1
    assert sum("Bootstrapped the backend" in r.getMessage() for r in caplog.records) == 1
    first, _ = await _cas_of(tmp_path / "shared.db", clock)
    assert first == await _cas(auth)


async def test_bootstrap_is_ignored_on_an_initialised_backend(
        backup: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(datetime.now(timezone.utc))
    backend = MemoryBackend(clock)
    first = _auth(backend, clock)
    await first.init()
    before = await _cas(first)
    with caplog.at_level(logging.INFO, logger="teleport.auth"):
        restarted = _auth(backend, clock)
        await restarted.init(bootstrap=backup)
    assert await _cas(restarted) == before
    assert [u.metadata.name for u in await restarted.accounts.list_users()] == []
    assert f"--bootstrap {backup} ignored: the backend is already initialised." in caplog.text


def _edit(path: Path, change: Any) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    docs = change(docs)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def _of(docs: list[dict[str, Any]], kind: str, ca_type: str = "") -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and (
        not ca_type or d["spec"].get("type") == ca_type))


def _without_key(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    _of(docs, "cert_authority", "host")["spec"]["active_keys"]["ssh"][0].pop("private_key")
    return docs


def _other_key(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pair = _of(docs, "cert_authority", "user")["spec"]["active_keys"]["ssh"][0]
    pair["private_key"] = sshkeys.generate_private_key().decode()
    return docs


def _ghost_role(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    _of(docs, "user")["spec"]["roles"].append("ghost")
    return docs


def _twice(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*docs, _of(docs, "role")]


def _no_tls_ca(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d is not _of(docs, "cert_authority", "tls")]


def _bad_hash(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    _of(docs, "user")["spec"]["local_auth"]["password_hash"] = base64.b64encode(b"plain").decode()
    return docs


def _unknown_kind(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*docs, {"kind": "user_token", "version": "v3", "metadata": {"name": "x"},
                    "spec": {"user": "alice"}}]


@pytest.mark.parametrize(("change", "settings", "message"), [
    (_without_key, {}, r"\(document \d+\): cert_authority host: no private key: back it up "
                       r"with tctl get all --with-secrets, on the auth host$"),
    (_other_key, {}, r"cert_authority user: the private key does not match its public key$"),
    (lambda d: d, {"cluster_name": "other.test"},
     r"cert_authority user is for cluster 'backup.test', but the config's cluster_name is "
     r"'other.test'$"),
    (_ghost_role, {}, r"user 'alice' has role 'ghost', which the file does not define$"),
    (_twice, {}, r"\(document \d+\): role '\w+' appears twice$"),
    (_no_tls_ca, {}, r"the tls cert_authority is missing"),
    (_bad_hash, {}, r"password_hash is not a base64 bcrypt hash"),
    (_unknown_kind, {}, r"user_token resources are not restored$"),
])
async def test_a_bad_bootstrap_file_is_refused_in_one_line_and_nothing_is_written(
        backup: Path, change: Any, settings: dict[str, Any], message: str) -> None:
    _edit(backup, change)
    clock = FakeClock(datetime.now(timezone.utc))
    backend = MemoryBackend(clock)
    with pytest.raises(BadParameter, match=f"^--bootstrap: {backup}.*{message}") as refused:
        await _auth(backend, clock, **settings).init(bootstrap=backup)
    assert "\n" not in str(refused.value)
    assert await _everything(backend) == []


async def test_unreadable_and_non_yaml_files_are_one_line(tmp_path: Path) -> None:
    clock = FakeClock(datetime.now(timezone.utc))
    backend = MemoryBackend(clock)
    with pytest.raises(BadParameter, match=r"^--bootstrap: cannot read .*missing.yaml: No such"):
        await _auth(backend, clock).init(bootstrap=tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(BadParameter, match=r"^--bootstrap: .*bad.yaml"):
        await _auth(backend, clock).init(bootstrap=tmp_path / "bad.yaml")
    assert await _everything(backend) == []


class _CutShort(MemoryBackend):
    """A backend whose connection drops at the first write of the TLS CA (the last CA)."""

    cut = True

    async def create(self, item: Item) -> Item:
        if self.cut and item.key.startswith(b"/authorities/tls/"):
            self.cut = False
            raise ConnectionProblem("backend unreachable")
        return await super().create(item)


async def test_a_bootstrap_cut_short_is_applied_again_by_the_next_start(
        old: tuple[AuthServer, Any, FakeClock], backup: Path) -> None:
    auth, _, clock = old
    backend = _CutShort(clock)
    with pytest.raises(ConnectionProblem):
        await _auth(backend, clock).init(bootstrap=backup)
    retry = _auth(backend, clock)
    await retry.init(bootstrap=backup)  # not initialised yet: applied again, not ignored
    assert await _cas(retry) == await _cas(auth)
    assert [u.metadata.name for u in await retry.accounts.list_users()] == ["alice"]


async def test_static_tokens_of_the_new_config_stay_in_the_config(
        old: tuple[AuthServer, Any, FakeClock], backup: Path) -> None:
    _, _, clock = old
    static = (StaticToken(roles=frozenset({"node"}), token="node-join-token-1"),)
    new = _auth(MemoryBackend(clock), clock, static_tokens=static)
    await new.init(bootstrap=backup)
    assert await new.hosts.tokens.provision.list() == []
