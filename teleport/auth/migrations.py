"""The stored state's schema version, and the migrations that move it forward on start.

The backend holds one item, `/meta/schema_version` (JSON: `{"version": N, "teleport": "x.y.z"}`,
the version of the resource formats and who wrote it). A backend without it was written by the
version before versioning (schema 0) or is empty. `migrate`, called by `AuthServer.init` before
anything reads a resource, applies each migration above the stored version in order and
records the new version after each one; a newer version than this build knows is refused in
one line naming both, so an old auth server never reads (or rewrites) a format it does not
know. This is the format of the records; the table layout of a driver (sqlite's
`user_version`, PostgreSQL's `schema_migrations`) is the driver's own business.

A migration is a function of one record (its decoded JSON), which returns it unchanged when it
is already current. The same functions, all of them, upgrade the documents of a `--bootstrap`
file (`upgrade_record`), so an old `tctl get all --with-secrets` backup still restores.

Several auth servers may start at once on one etcd or PostgreSQL store: the migration runs
under the lock it is handed (the bootstrap's init lock), each record is replaced with a
compare-and-swap against what was read (a record changed meanwhile is read and upgraded again),
and the version is moved with a compare-and-swap too; running it twice changes nothing.
Teleport's advice still holds: shrink to one auth server and back up before an upgrade.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from teleport import __version__
from teleport.backend.base import Backend, Item, key, range_end
from teleport.errors import AlreadyExists, BadParameter, CompareFailed, NotFound, NotSupported
from teleport.types.resource import ZERO_TIME, Time

log = logging.getLogger("teleport.auth")

#: A resource as stored and as a backup file holds it: `kind`, `version`, `metadata`, `spec`.
Record = dict[str, Any]

SCHEMA_KEY = key("meta", "schema_version")
#: How often a record changed by someone else while being migrated is read again before giving up.
_ATTEMPTS = 10


@dataclass(frozen=True)
class Migration:
    """One step of the stored format: the version it leads to and how each record changes."""

    version: int
    #: One line for the log.
    what: str
    #: Where the records it may change are stored.
    prefixes: tuple[bytes, ...]
    upgrade: Callable[[Record], Record]


_TIME: TypeAdapter[datetime] = TypeAdapter(Time)


def _ca_rotation(record: Record) -> Record:
    """v0 -> v1: a CA's `spec.last_rotated` is now `spec.rotation.last_rotated` (dropped when
    zero, the value of a CA never rotated, which is also the new field's default)."""
    spec = record.get("spec")
    if record.get("kind") != "cert_authority" or not isinstance(spec, dict) \
            or "last_rotated" not in spec:
        return record
    spec = dict(spec)
    last = spec.pop("last_rotated")
    try:
        zero = last in (None, "") or _TIME.validate_python(last) <= ZERO_TIME
    except ValidationError:
        zero = False  # kept as it was: the model names the field when it reads the record
    if not zero:
        rotation = spec.get("rotation")
        rotation = dict(rotation) if isinstance(rotation, dict) else {}
        rotation.setdefault("last_rotated", last)
        spec["rotation"] = rotation
    return {**record, "spec": spec}


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "certificate authorities: spec.last_rotated moved into spec.rotation",
              (key("authorities"),), _ca_rotation),
)
#: The schema version this build writes and reads.
SCHEMA_VERSION = MIGRATIONS[-1].version


def upgrade_record(record: Record) -> Record:
    """Bring one resource written by any earlier version to the current format (unchanged if
    it is current); a new dict, the argument is left alone."""
    for migration in MIGRATIONS:
        record = migration.upgrade(record)
    return record


async def stored_version(backend: Backend) -> int:
    """The schema version of the stored state (0: none recorded, an empty or unversioned store)."""
    try:
        return _decode_version((await backend.get(SCHEMA_KEY)).value)
    except NotFound:
        return 0


def _decode_version(value: bytes) -> int:
    try:
        version = json.loads(value)["version"]
    except (ValueError, TypeError, KeyError):
        version = None
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise BadParameter(f"the backend's {SCHEMA_KEY.decode()} is not a schema version: "
                           f"{value[:60]!r}")
    return version


def _encode_version(version: int) -> bytes:
    return json.dumps({"version": version, "teleport": __version__}).encode()


def check_known(version: int) -> None:
    """Refuse a stored state newer than this build knows, in one line naming both versions."""
    if version > SCHEMA_VERSION:
        raise NotSupported(
            f"the backend holds cluster state of schema version {version}, newer than this "
            f"teleport {__version__} knows (schema version {SCHEMA_VERSION}): run the newer "
            "teleport, or restore a backup made for this one")


async def migrate(backend: Backend,
                  lock: Callable[[], AbstractAsyncContextManager[None]]) -> int:
    """Move the stored state to SCHEMA_VERSION (record the version on an empty backend);
    refuse a newer one. Return the version found before. Under `lock` when there is work."""
    found = await stored_version(backend)
    check_known(found)
    if found == SCHEMA_VERSION:
        return found
    async with lock():
        version = await stored_version(backend)  # another auth server may have done it meanwhile
        check_known(version)
        for migration in MIGRATIONS:
            if migration.version <= version:
                continue
            changed = 0
            for prefix in migration.prefixes:
                changed += await _upgrade_prefix(backend, prefix + b"/", migration.upgrade)
            await _set_version(backend, version, migration.version)
            if changed:
                log.info("Migrated the stored state to schema version %d: %s (%d records).",
                         migration.version, migration.what, changed)
            version = migration.version
    return found


async def _upgrade_prefix(backend: Backend, start: bytes,
                          upgrade: Callable[[Record], Record]) -> int:
    """Upgrade every record under start; return how many changed."""
    changed = 0
    for item in await backend.get_range(start, range_end(start)):
        for _ in range(_ATTEMPTS):
            new = _upgraded(item, upgrade)
            if new is None:
                break
            try:
                await backend.compare_and_swap(item, new)
                changed += 1
                break
            except CompareFailed:  # written meanwhile: upgrade what is there now
                pass
            except NotFound:  # deleted meanwhile: nothing to upgrade
                break
            try:
                item = await backend.get(item.key)
            except NotFound:
                break
        else:
            raise CompareFailed(f"cannot migrate {item.key.decode(errors='replace')}: it keeps "
                                "changing; start the auth server again")
    return changed


def _upgraded(item: Item, upgrade: Callable[[Record], Record]) -> Item | None:
    """The item with its record upgraded, or None if it is already current."""
    try:
        record = json.loads(item.value)
    except ValueError:
        raise BadParameter(f"cannot migrate {item.key.decode(errors='replace')}: "
                           "the stored record is not JSON") from None
    if not isinstance(record, dict):
        return None
    new = upgrade(record)
    if new == record:
        return None
    return Item(item.key, json.dumps(new).encode(), item.expires)


async def _set_version(backend: Backend, old: int, new: int) -> None:
    """Move the recorded version from old to new, unless another auth server already did."""
    value = _encode_version(new)
    try:
        if old == 0:
            try:
                await backend.create(Item(SCHEMA_KEY, value))
                return
            except AlreadyExists:
                pass
        else:
            current = await backend.get(SCHEMA_KEY)
            if _decode_version(current.value) == old:
                await backend.compare_and_swap(current, Item(SCHEMA_KEY, value))
                return
    except (CompareFailed, NotFound):
        pass
    check_known(await stored_version(backend))
