"""`teleport start --bootstrap state.yaml`: initialise an empty backend from a backup.

The file is `tctl get all --with-secrets` output (the manual's "Migrating Backends"). It is
read and checked whole before anything is written: every document through the registry's
models, names, users' roles, and the CAs complete (user, host and TLS, each with its private
keys) and for the configured cluster. A bad file is one line naming the document, and the
backend is left untouched. A backup made by an earlier version is read too: each document is
first upgraded as the stored state is (`teleport.auth.migrations`).

It is applied only to a backend no auth server initialised yet (no cluster name stored), under
an init lock every first start takes, so of several auth servers starting at once on one empty
backend exactly one initialises it, from the file or with fresh CAs, never a mix. The CAs and
the cluster name are written last: the cluster name is what makes a backend initialised, so a
bootstrap cut short is applied again by the next start instead of counting as done. On an
initialised backend the flag is ignored (one info line), which makes it safe in supervised and
HA setups. Node announcements in the file are skipped: nodes announce themselves again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from teleport.auth.hosts import JOIN_ROLES
from teleport.auth.migrations import upgrade_record
from teleport.backend.base import Backend, Item, key
from teleport.config import yamlsafe
from teleport.errors import AlreadyExists, BadParameter, NotFound, TeleportError
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.services.authorities import CAService
from teleport.services.connectors import ConnectorService
from teleport.services.local_auth import write_local_auth
from teleport.services.locks import LockService
from teleport.services.mfa_devices import MFADeviceService
from teleport.services.roles import RoleService
from teleport.services.tokens import TokenService
from teleport.services.users import UserService
from teleport.types.codec import from_dict, to_dict
from teleport.types.presets import PRESET_NAMES
from teleport.types.registry import KINDS_REGISTRY, ResourceKind
from teleport.types.resource import Metadata, Resource
from teleport.types.resources import (
    CertAuthority,
    ClusterName,
    ClusterNameSpec,
    ProvisionToken,
    User,
    check_user_name,
)
from teleport.types.roles import check_role_name
from teleport.utils.clock import Clock

log = logging.getLogger("teleport.auth")

CA_TYPES = ("user", "host", "tls")
#: Held by the auth server initialising an empty backend; it expires, so a crash mid-init
#: delays the next first start by at most this long.
INIT_LOCK = key("auth_init", "lock")
INIT_LOCK_TTL = timedelta(seconds=60)
INIT_LOCK_POLL = 0.2


@dataclass(frozen=True)
class Bootstrap:
    """A checked bootstrap file: what to write, in the order to write it."""

    source: str
    #: Restored kinds but CAs, in registry order (roles before the users holding them).
    resources: list[tuple[ResourceKind, Resource]] = field(default_factory=list)
    #: The user, host and TLS CAs with their keys; empty: fresh ones, as any first start.
    authorities: list[CertAuthority] = field(default_factory=list)
    #: Node announcements in the file, not restored.
    skipped: int = 0

    @property
    def cluster_name(self) -> str | None:
        return self.authorities[0].spec.cluster_name if self.authorities else None


def load(path: Path, cluster_name: str | None, static_tokens: Sequence[str] = ()) -> Bootstrap:
    """Read and check the whole file; BadParameter (one line, naming the document) if bad.

    cluster_name: the configured one, which the file's CAs must be for. Tokens the config
    lists as static are skipped: the config keeps them.
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise BadParameter(f"--bootstrap: cannot read {source}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise BadParameter(f"--bootstrap: {source} is not UTF-8 text") from None
    try:
        documents = _parse(text, source)
    except BadParameter as err:
        raise BadParameter(f"--bootstrap: {err}") from None
    order = {name: i for i, name in enumerate(KINDS_REGISTRY)}
    planned: list[tuple[int, ResourceKind, Resource]] = []
    cas: dict[str, tuple[int, CertAuthority]] = {}
    seen: set[tuple[str, str]] = set()
    skipped = 0
    for number, resource in enumerate(documents, start=1):
        where = f"--bootstrap: {source} (document {number})"
        kind = KINDS_REGISTRY.get(resource.kind)
        if kind is None:
            raise BadParameter(f"{where}: {resource.kind} resources are not restored")
        if not kind.restored:
            skipped += 1
            continue
        name = resource.metadata.name
        if (kind.name, name) in seen and not isinstance(resource, CertAuthority):  # by type
            raise BadParameter(f"{where}: {kind.name} {name!r} appears twice")
        seen.add((kind.name, name))
        try:
            _CHECKS[kind.name](resource)
        except BadParameter as err:
            raise BadParameter(f"{where}: {kind.name} {name!r}: {err}") from None
        if isinstance(resource, CertAuthority):
            if resource.spec.type in cas:
                raise BadParameter(f"{where}: a second {resource.spec.type} cert_authority")
            cas[resource.spec.type] = (number, resource)
        elif isinstance(resource, ProvisionToken) and name in static_tokens:
            continue  # the config's static token: kept by the config, not the backend
        else:
            planned.append((number, kind, resource))
    authorities = _check_authorities(source, cas, cluster_name)
    _check_user_roles(source, planned)
    planned.sort(key=lambda p: (order[p[1].name], p[0]))
    return Bootstrap(source, [(k, r) for _, k, r in planned], authorities, skipped)


def _parse(text: str, source: str) -> list[Resource]:
    """Parse the documents as `tctl create` does, each first brought to the current format:
    a backup made by an earlier version restores (`migrations.upgrade_record`)."""
    docs = yamlsafe.load_all(text, source)
    if not docs:
        raise BadParameter(f"{source}: no resources found")
    return [from_dict(upgrade_record(d) if isinstance(d, dict) else d,
                      f"{source} (document {i + 1})" if len(docs) > 1 else source)
            for i, d in enumerate(docs)]


def _check_authorities(source: str, cas: dict[str, tuple[int, CertAuthority]],
                       cluster_name: str | None) -> list[CertAuthority]:
    if not cas:
        return []
    missing = [t for t in CA_TYPES if t not in cas]
    if missing:
        raise BadParameter(f"--bootstrap: {source}: the {missing[0]} cert_authority is missing "
                           "(a backup holds all three: tctl get all --with-secrets)")
    clusters = {ca.spec.cluster_name for _, ca in cas.values()}
    for ca_type in CA_TYPES:
        number, ca = cas[ca_type]
        where = f"--bootstrap: {source} (document {number}): cert_authority {ca_type}"
        if len(clusters) > 1:
            raise BadParameter(f"{where}: the CAs name different clusters "
                               f"({', '.join(sorted(clusters))})")
        if cluster_name and ca.spec.cluster_name != cluster_name:
            raise BadParameter(f"{where} is for cluster {ca.spec.cluster_name!r}, but the "
                               f"config's cluster_name is {cluster_name!r}")
        if ca.metadata.name != ca.spec.cluster_name:
            raise BadParameter(f"{where}: metadata.name must be its cluster_name")
        try:
            _check_keys(ca)
        except BadParameter as err:
            raise BadParameter(f"{where}: {err}") from None
    return [cas[t][1] for t in CA_TYPES]


def _check_keys(ca: CertAuthority) -> None:
    """Refuse a CA without its private keys, or whose private and public halves differ."""
    keys = ca.spec.active_keys
    pairs = keys.tls if ca.spec.type == "tls" else keys.ssh
    if not pairs:
        raise BadParameter("no active keys")
    for pair in keys.ssh:
        if not pair.private_key:
            raise BadParameter("no private key: back it up with tctl get all --with-secrets, "
                               "on the auth host")
        if sshkeys.public_key_of(pair.private_key.encode()).split()[:2] \
                != pair.public_key.split()[:2]:
            raise BadParameter("the private key does not match its public key")
    for tls in keys.tls:
        if not tls.key:
            raise BadParameter("no private key: back it up with tctl get all --with-secrets, "
                               "on the auth host")
        if not tlskeys.key_matches_cert(tls.key.encode(), tls.cert.encode()):
            raise BadParameter("the private key does not match its certificate")


def _check_user_roles(source: str, planned: list[tuple[int, ResourceKind, Resource]]) -> None:
    """Refuse a user holding a role that neither the file nor the presets define."""
    roles = {r.metadata.name for _, k, r in planned if k.name == "role"} | PRESET_NAMES
    for number, _, resource in planned:
        if isinstance(resource, User):
            for role in resource.spec.roles:
                if role not in roles:
                    raise BadParameter(
                        f"--bootstrap: {source} (document {number}): user "
                        f"{resource.metadata.name!r} has role {role!r}, which the file does "
                        "not define")


def _check_token(resource: Resource) -> None:
    name = resource.metadata.name
    if len(name) < 8 or not name.isprintable() or "/" in name:
        raise BadParameter("a token must be at least 8 printable characters without '/'")
    roles = resource.spec.roles if isinstance(resource, ProvisionToken) else []
    if not roles or not {r.lower() for r in roles} <= JOIN_ROLES:
        raise BadParameter(f"spec.roles: use {', '.join(sorted(JOIN_ROLES))}")


def _check_user(resource: Resource) -> None:
    check_user_name(resource.metadata.name)


def _check_role_name(resource: Resource) -> None:
    check_role_name(resource.metadata.name)


def _check_ca(resource: Resource) -> None:
    return None  # the set of CAs is checked together (`_check_authorities`)


def _check_lock(resource: Resource) -> None:
    if "/" in resource.metadata.name:
        raise BadParameter("a lock name has no '/'")


_CHECKS: dict[str, Callable[[Resource], None]] = {
    "role": _check_role_name, "user": _check_user, "token": _check_token,
    "cert_authority": _check_ca, "lock": _check_lock, "github": _check_role_name,
    "oidc": _check_role_name,
}


# --- applying it ---------------------------------------------------------------------------------

Writer = Callable[[Backend, Resource], Awaitable[None]]


async def _write_role(backend: Backend, resource: Resource) -> None:
    await RoleService(backend).roles.put(resource)  # type: ignore[arg-type]


async def _write_user(backend: Backend, resource: Resource) -> None:
    assert isinstance(resource, User)  # the registry's model for "user"
    users = UserService(backend)
    await users.users.put(resource.without_secrets())  # credentials live beside the user
    if resource.spec.local_auth is not None:
        await write_local_auth(users, MFADeviceService(backend), resource.metadata.name,
                               resource.spec.local_auth)


async def _write_token(backend: Backend, resource: Resource) -> None:
    await TokenService(backend).provision.put(resource)  # type: ignore[arg-type]


async def _write_lock(backend: Backend, resource: Resource) -> None:
    await LockService(backend).locks.put(resource)  # type: ignore[arg-type]


async def _write_connector(backend: Backend, resource: Resource) -> None:
    await ConnectorService(backend).store(resource.kind).put(resource)  # type: ignore[arg-type]


_WRITERS: dict[str, Writer] = {
    "role": _write_role, "user": _write_user, "token": _write_token, "lock": _write_lock,
    "github": _write_connector, "oidc": _write_connector,
}
_missing = {k.name for k in KINDS_REGISTRY.values() if k.restored} - set(_WRITERS) - {
    "cert_authority"}
assert not _missing, f"restored kinds without a writer: {_missing}"


async def initialised(backend: Backend) -> bool:
    """Tell whether an auth server initialised this backend (its cluster name is stored)."""
    try:
        await CAService(backend).cluster_names.get("name")
    except NotFound:
        return False
    return True


async def initialise(backend: Backend, clock: Clock, plan: Bootstrap | None,
                     first_start: Callable[[], Awaitable[None]]) -> None:
    """Run `first_start` (load or create the cluster name and CAs), applying plan first if
    the backend is empty; one auth server at a time initialises an empty backend."""
    if await initialised(backend):
        _ignored(plan)
        await first_start()
        return
    async with init_lock(backend, clock):
        if await initialised(backend):  # another auth server did it while we waited
            _ignored(plan)
        elif plan is not None:
            await _apply(backend, plan)
        await first_start()


def _ignored(plan: Bootstrap | None) -> None:
    if plan is not None:
        log.info("--bootstrap %s ignored: the backend is already initialised.", plan.source)


async def _apply(backend: Backend, plan: Bootstrap) -> None:
    """Write the file's resources, then its CAs, then the cluster name (the commit point)."""
    for kind, resource in plan.resources:
        await _WRITERS[kind.name](backend, resource)
    cas = CAService(backend)
    for ca in plan.authorities:
        try:
            await cas.store(ca.spec.type).create(ca)
        except AlreadyExists:  # an earlier bootstrap cut short: the same CA, or a conflict
            stored = await cas.store(ca.spec.type).get(ca.metadata.name)
            if to_dict(stored) != to_dict(ca):
                raise BadParameter(
                    f"--bootstrap: the backend already holds another {ca.spec.type} CA for "
                    f"{ca.metadata.name!r} than {plan.source}: use an empty backend") from None
    if plan.cluster_name is not None:
        await cas.cluster_names.create(ClusterName(
            metadata=Metadata(name="name"),
            spec=ClusterNameSpec(cluster_name=plan.cluster_name, cluster_id=str(uuid.uuid4()))))
    log.info("Bootstrapped the backend from %s: %d resources%s%s.", plan.source,
             len(plan.resources), ", the cluster's CAs" if plan.authorities else "",
             f" ({plan.skipped} node announcements skipped)" if plan.skipped else "")


@asynccontextmanager
async def init_lock(backend: Backend, clock: Clock) -> AsyncIterator[None]:
    """Hold the init lock: taken with one create, so one holder; it expires after a crash.
    First starts and migrations (`teleport.auth.migrations`) take it."""
    mine = secrets.token_hex(16).encode()
    waited = False
    while True:
        try:
            await backend.create(Item(INIT_LOCK, mine, clock.now() + INIT_LOCK_TTL))
            break
        except AlreadyExists:
            if not waited:
                log.info("Waiting for another auth server initialising the backend.")
                waited = True
            await asyncio.sleep(INIT_LOCK_POLL)
    try:
        yield
    finally:
        try:
            if (await backend.get(INIT_LOCK)).value == mine:
                await backend.delete(INIT_LOCK)
        except TeleportError:
            pass  # expired, or the backend is gone: it expires on its own
