"""Versioned stored state, on real backends: the previous version's sqlite file (the fixture made
by `tests/fixtures/make_upgrade_v0.py` with the old code) is migrated on start, once, safely when
two auth servers start at once; a newer schema is refused; an old backup still bootstraps.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from teleport.auth import migrations
from teleport.auth.bootstrap import init_lock
from teleport.auth.bootstrap import load as load_bootstrap
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.base import Backend, Item, range_end
from teleport.backend.memory import MemoryBackend
from teleport.backend.sqlite import SqliteBackend
from teleport.config import StaticToken
from teleport.errors import NotSupported
from teleport.events.emitter import MemoryEmitter
from teleport.types.resource import ZERO_TIME
from teleport.utils.clock import FakeClock

FIXTURE = Path(__file__).parents[2] / "fixtures" / "upgrade_v0"
INFO = json.loads((FIXTURE / "fixture.json").read_text())
CLUSTER = INFO["cluster"]
CA_KEYS = [f"/authorities/{t}/{CLUSTER}".encode() for t in ("user", "host", "tls")]


def _auth(backend: Backend, clock: FakeClock) -> AuthServer:
    return AuthServer(backend, MemoryEmitter(), clock, AuthSettings(
        cluster_name=CLUSTER, static_tokens=(
            StaticToken(roles=frozenset({"node"}), token=INFO["static_token"]),)))


async def _everything(backend: Backend) -> dict[bytes, tuple[bytes, str]]:
    return {i.key: (i.value, i.revision) for i in await backend.get_range(b"/", range_end(b"/"))}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(timezone.utc))


@pytest.fixture
async def old_store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Path]:
    """A copy of the previous version's sqlite file."""
    path = tmp_path / "sqlite.db"
    shutil.copy(FIXTURE / "auth" / "backend" / "sqlite.db", path)
    yield path


async def test_the_previous_versions_store_is_migrated_on_start_and_only_cas_change(
        old_store: Path, clock: FakeClock) -> None:
    backend = await SqliteBackend.open(old_store, clock)
    try:
        before = await _everything(backend)
        assert await migrations.stored_version(backend) == 0
        assert all("last_rotated" in json.loads(before[k][0])["spec"] for k in CA_KEYS)
        auth = _auth(backend, clock)
        await auth.init()
        assert await migrations.stored_version(backend) == migrations.SCHEMA_VERSION == 1
        after = await _everything(backend)
        for ca_type in ("user", "host", "tls"):
            ca = await auth.certs.cas.get(ca_type, CLUSTER)  # read with the current model
            assert ca.spec.rotation.last_rotated == ZERO_TIME
            old = json.loads(before[f"/authorities/{ca_type}/{CLUSTER}".encode()][0])
            assert ca.spec.active_keys.model_dump(mode="json", exclude_none=True) \
                == old["spec"]["active_keys"]  # the same keys: every certificate stays valid
        for key in CA_KEYS:
            assert "last_rotated" not in json.loads(after[key][0])["spec"]
        # The user, their password and OTP secret, roles and the rest: untouched.
        unchanged = {k: v for k, v in before.items() if k not in CA_KEYS}
        assert {k: after[k] for k in unchanged} == unchanged
        assert await auth.accounts.get_user(INFO["user"])
    finally:
        await backend.close()


async def test_migrating_twice_changes_nothing(old_store: Path, clock: FakeClock) -> None:
    backend = await SqliteBackend.open(old_store, clock)
    try:
        lock = lambda: init_lock(backend, clock)  # noqa: E731
        assert await migrations.migrate(backend, lock) == 0
        once = await _everything(backend)
        assert await migrations.migrate(backend, lock) == 1
        assert await _everything(backend) == once  # not a write, not even the same bytes again
        # The per-record upgrade is idempotent too, and leaves its argument alone.
        record = json.loads(once[CA_KEYS[0]][0])
        assert migrations.upgrade_record(record) == record
    finally:
        await backend.close()


async def test_two_auth_servers_starting_at_once_migrate_once(old_store: Path,
                                                              clock: FakeClock) -> None:
    """Two connections to one sqlite file stand for two auth servers on one shared store."""
    first = await SqliteBackend.open(old_store, clock)
    second = await SqliteBackend.open(old_store, clock)
    swaps: list[bytes] = []
    for backend in (first, second):
        real = backend.compare_and_swap

        async def counted(expected: Item, replace: Item, real: Any = real) -> Item:
            swaps.append(expected.key)
            return await real(expected, replace)

        backend.compare_and_swap = counted  # type: ignore[method-assign]
    try:
        before = await _everything(first)
        await asyncio.gather(_auth(first, clock).init(), _auth(second, clock).init())
        assert await migrations.stored_version(first) == 1
        after = await _everything(first)
        for key in CA_KEYS:
            assert "last_rotated" not in json.loads(after[key][0])["spec"]
        # One of them migrated (under the init lock), each record once; the other waited.
        assert sorted(swaps) == sorted(CA_KEYS)
        assert {k for k in after if before.get(k) != after[k]} \
            == {*CA_KEYS, migrations.SCHEMA_KEY}
    finally:
        await first.close()
        await second.close()


async def test_a_migration_races_a_writer_and_upgrades_what_it_wrote(clock: FakeClock) -> None:
    """A record changed between the read and the compare-and-swap is read and upgraded again."""
    backend = MemoryBackend(clock)
    key = CA_KEYS[1]
    old: dict[str, Any] = {"kind": "cert_authority", "version": "v2",
                           "metadata": {"name": CLUSTER},
                           "spec": {"type": "host", "cluster_name": CLUSTER,
                                    "signing_alg": "ssh-ed25519",
                                    "last_rotated": "2024-05-06T07:08:09Z"}}
    await backend.put(Item(key, json.dumps(old).encode()))
    real_cas = backend.compare_and_swap
    raced = False

    async def racing_cas(expected: Item, replace: Item) -> Item:
        nonlocal raced
        if not raced:  # another writer gets in first, still in the old format
            raced = True
            await backend.put(Item(key, json.dumps({**old, "spec": {
                **old["spec"], "signing_alg": "rsa-sha2-512"}}).encode()))
        return await real_cas(expected, replace)

    backend.compare_and_swap = racing_cas  # type: ignore[method-assign]
    await migrations.migrate(backend, lambda: init_lock(backend, clock))
    spec = json.loads((await backend.get(key)).value)["spec"]
    assert raced and spec["signing_alg"] == "rsa-sha2-512"  # the other writer's change kept
    assert spec["rotation"] == {"last_rotated": "2024-05-06T07:08:09Z"}  # and upgraded
    assert "last_rotated" not in spec


async def test_an_empty_backend_gets_the_current_version(clock: FakeClock) -> None:
    backend = MemoryBackend(clock)
    await _auth(backend, clock).init()
    stored = json.loads((await backend.get(migrations.SCHEMA_KEY)).value)
    assert stored["version"] == migrations.SCHEMA_VERSION
    assert isinstance(stored["teleport"], str) and stored["teleport"]


async def test_a_newer_schema_is_refused_in_one_line_and_nothing_is_written(
        clock: FakeClock) -> None:
    backend = MemoryBackend(clock)
    await _auth(backend, clock).init()
    newer = migrations.SCHEMA_VERSION + 1
    await backend.put(Item(migrations.SCHEMA_KEY,
                           json.dumps({"version": newer, "teleport": "99.0.0"}).encode()))
    before = await _everything(backend)
    with pytest.raises(NotSupported) as err:
        await _auth(backend, clock).init()
    message = str(err.value)
    assert "\n" not in message
    assert f"schema version {newer}" in message
    assert f"schema version {migrations.SCHEMA_VERSION})" in message
    assert await _everything(backend) == before


async def test_an_old_backup_still_bootstraps(tmp_path: Path, clock: FakeClock) -> None:
    """`tctl get all --with-secrets` of the previous version (fixture state.yaml)."""
    text = (FIXTURE / "state.yaml").read_text()
    assert "last_rotated" in text
    plan = load_bootstrap(FIXTURE / "state.yaml", CLUSTER, [INFO["static_token"]])
    assert {ca.spec.type for ca in plan.authorities} == {"user", "host", "tls"}
    backend = MemoryBackend(clock)
    auth = _auth(backend, clock)
    await auth.init(bootstrap=FIXTURE / "state.yaml")
    assert await migrations.stored_version(backend) == migrations.SCHEMA_VERSION
    old_cas = {d["spec"]["type"]: d for d in yaml.safe_load_all(text)
               if d["kind"] == "cert_authority"}
    for ca_type, old in old_cas.items():
        ca = await auth.certs.cas.get(ca_type, CLUSTER)
        assert ca.spec.active_keys.model_dump(mode="json", exclude_none=True) \
            == old["spec"]["active_keys"]
    assert (await auth.accounts.get_user(INFO["user"])).spec.roles == ["access"]


def test_the_upgrade_moves_a_non_zero_last_rotated_and_drops_a_zero_one() -> None:
    def ca(spec: dict[str, object]) -> dict[str, object]:
        return {"kind": "cert_authority", "version": "v2", "metadata": {"name": "c"},
                "spec": {"type": "user", "cluster_name": "c", **spec}}

    zero = ca({"last_rotated": "0001-01-01T00:00:00Z"})
    assert migrations.upgrade_record(zero) == ca({})
    assert zero["spec"] == {"type": "user", "cluster_name": "c",  # the argument is left alone
                            "last_rotated": "0001-01-01T00:00:00Z"}
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)  # as YAML may read it
    assert migrations.upgrade_record(ca({"last_rotated": when})) \
        == ca({"rotation": {"last_rotated": when}})
    assert migrations.upgrade_record(ca({"last_rotated": "2024-05-06T07:08:09Z"})) \
        == ca({"rotation": {"last_rotated": "2024-05-06T07:08:09Z"}})
    current = ca({"rotation": {"state": "standby"}})
    assert migrations.upgrade_record(current) is current
    user = {"kind": "user", "spec": {"last_rotated": "x"}}  # another kind: not ours to touch
    assert migrations.upgrade_record(user) is user
