"""Roles, locks, and the one store per registry kind behind the auth API's resource routes.

`tctl get/create/rm` of every kind reaches the auth server through `teleport.auth.api_resources`,
which looks the kind up in `teleport.types.registry` and asks `Resources.store(kind)` here: each
kind's store knows how that kind is listed, read, created, replaced and deleted (and audited),
so no route branches per kind. Roles and locks themselves live here too: presets made at
start, no role removed while a user holds it, locks named and stamped by the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from teleport.auth.context import AuthContext, redact
from teleport.auth.hosts import JOIN_ROLES
from teleport.errors import AlreadyExists, BadParameter, NotFound
from teleport.events import emitter as ev
from teleport.rbac.roles import RoleSet
from teleport.services.connectors import ConnectorService
from teleport.services.locks import LockService
from teleport.services.roles import RoleService
from teleport.services.store import ResourceStore
from teleport.types.locks import Lock
from teleport.types.presets import PRESETS
from teleport.types.registry import KINDS_REGISTRY, ResourceKind
from teleport.types.resource import Resource
from teleport.types.resources import CertAuthority, ProvisionToken, User
from teleport.types.roles import Role, check_role_name

if TYPE_CHECKING:
    from teleport.auth.accounts import Accounts
    from teleport.auth.certs import CertIssuer
    from teleport.auth.hosts import Hosts
    from teleport.auth.trustedclusters import TrustedClusters

CA_TYPES = ("user", "host", "tls")


class KindStore(Protocol):
    """What the resource routes do with one kind; `actor` is who asks, for the audit log."""

    async def list(self) -> Sequence[Resource]: ...
    async def get(self, name: str) -> Resource: ...
    async def create(self, resource: Resource, actor: str) -> Resource: ...
    async def upsert(self, resource: Resource, actor: str) -> Resource: ...
    async def delete(self, name: str, actor: str) -> None: ...
    async def with_secrets(self, resource: Resource) -> Resource:
        """Return the resource with every secret it has (a CA's private keys, a user's
        credentials kept beside the user); only for callers the registry lets have them."""
        ...


class _SecretsInside:
    """A kind with no secrets, or with them inside the resource itself (a connector's)."""

    async def with_secrets(self, resource: Resource) -> Resource:
        return resource


R = TypeVar("R", bound=Resource)


def _typed(resource: Resource, model: type[R]) -> R:
    if not isinstance(resource, model):
        raise BadParameter(f"expected a {model.__name__} resource, not {resource.kind}")
    return resource


class Resources:
    """Keeps roles and locks and serves every registry kind through one store each."""

    def __init__(self, ctx: AuthContext, roles: RoleService, locks: LockService,
                 accounts: Accounts, hosts: Hosts, certs: CertIssuer,
                 connectors: ConnectorService, trusted: TrustedClusters) -> None:
        self.ctx = ctx
        self.roles = roles
        self.locks = locks
        self.accounts = accounts
        self._stores: dict[str, KindStore] = {
            "user": _Users(accounts), "role": _Roles(self), "token": _Tokens(ctx, hosts),
            "cert_authority": _Authorities(certs), "lock": _Locks(self), "node": _Nodes(hosts),
            "github": _Connectors(ctx, connectors, "github"),
            "oidc": _Connectors(ctx, connectors, "oidc"),
            "trusted_cluster": trusted.trusted_store(), "remote_cluster": trusted.remote_store(),
        }
        missing = set(KINDS_REGISTRY) - set(self._stores)
        assert not missing, f"registry kinds without a store: {missing}"

    async def init(self) -> None:
        """Create the preset roles that are missing; edited presets are left as they are."""
        for preset in PRESETS:
            try:
                await self.roles.roles.create(preset)
            except AlreadyExists:
                continue

    def store(self, kind: ResourceKind) -> KindStore:
        return self._stores[kind.name]

    # --- roles --------------------------------------------------------------------------------

    async def role_map(self) -> dict[str, Role]:
        """Return every stored role by name (the evaluator's lookup)."""
        return await self.roles.by_name()

    async def list_roles(self) -> list[Role]:
        return await self.roles.roles.list()

    async def roleset(self, names: Iterable[str],
                      traits: Mapping[str, Sequence[str]] | None = None) -> RoleSet:
        """Return what roles `names` allow with their definitions stored now (a deleted role
        grants nothing); traits fill the `{{internal.x}}` templates."""
        return RoleSet.of(names, await self.role_map(), traits)

    async def save_role(self, role: Role, *, actor: str, overwrite: bool) -> Role:
        """Create a role (or replace it with overwrite); audited `role.created` either way."""
        check_role_name(role.metadata.name)
        if overwrite:
            stored = await self.roles.roles.put(role)
        else:
            stored = await self.roles.roles.create(role)
        await self.ctx.audit(ev.ROLE_CREATED, actor, name=role.metadata.name)
        return stored

    async def delete_role(self, name: str, *, actor: str) -> None:
        """Delete a role no user holds (a user's roles must all exist)."""
        await self.roles.roles.get(name)
        for user in await self.accounts.list_users():
            if name in user.spec.roles:
                raise BadParameter(f'role "{name}" is in use by user "{user.metadata.name}"')
        await self.roles.roles.delete(name)
        await self.ctx.audit(ev.ROLE_DELETED, actor, name=name)

    # --- locks --------------------------------------------------------------------------------

    async def save_lock(self, lock: Lock, *, actor: str, overwrite: bool) -> Lock:
        """Store a lock stamped with when and by whom; it is kept only until it expires."""
        now = self.ctx.clock.now()
        expires = lock.spec.expires
        if expires is not None and expires <= now:
            raise BadParameter(f"lock spec.expires {expires:%Y-%m-%dT%H:%M:%SZ} is in the past")
        stamped = lock.model_copy(update={
            "metadata": lock.metadata.model_copy(update={"expires": expires}),
            "spec": lock.spec.model_copy(update={"created_at": now, "created_by": actor})})
        if overwrite:
            stored = await self.locks.locks.put(stamped)
        else:
            stored = await self.locks.locks.create(stamped)
        await self.ctx.audit(ev.LOCK_CREATED, actor, name=stored.metadata.name,
                             target=stored.spec.target.model_dump(exclude_defaults=True),
                             message=stored.spec.message,
                             expires=stored.spec.expires.isoformat() if stored.spec.expires else "")
        return stored

    async def delete_lock(self, name: str, *, actor: str) -> None:
        await self.locks.locks.delete(name)
        await self.ctx.audit(ev.LOCK_DELETED, actor, name=name)

    async def locks_in_force(self) -> list[Lock]:
        return await self.locks.in_force(self.ctx.clock.now())


def fresh_name() -> str:
    """Name a resource the server names (a lock) as Teleport does: a fresh UUID."""
    return str(uuid.uuid4())


# --- one store per kind -----------------------------------------------------------------------

class _Users:
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    async def with_secrets(self, resource: Resource) -> Resource:
        user = _typed(resource, User)
        local_auth = await self.accounts.local_auth(user.metadata.name)
        return user.model_copy(update={"spec": user.spec.model_copy(
            update={"local_auth": local_auth})})

    async def list(self) -> Sequence[Resource]:
        return await self.accounts.list_users()

    async def get(self, name: str) -> Resource:
        return await self.accounts.get_user(name)

    async def create(self, resource: Resource, actor: str) -> Resource:
        user = _typed(resource, User)
        try:  # read then write: users have no create-only path yet (a race only overwrites)
            await self.accounts.get_user(user.metadata.name)
        except NotFound:
            return await self.accounts.upsert_user(user, actor=actor)
        raise AlreadyExists(f'user "{user.metadata.name}" already exists')

    async def upsert(self, resource: Resource, actor: str) -> Resource:
        return await self.accounts.upsert_user(_typed(resource, User), actor=actor)

    async def delete(self, name: str, actor: str) -> None:
        await self.accounts.delete_user(name, actor=actor)


class _Roles(_SecretsInside):
    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    async def list(self) -> Sequence[Resource]:
        return await self.resources.list_roles()

    async def get(self, name: str) -> Resource:
        return await self.resources.roles.roles.get(name)

    async def create(self, resource: Resource, actor: str) -> Resource:
        return await self.resources.save_role(_typed(resource, Role), actor=actor, overwrite=False)

    async def upsert(self, resource: Resource, actor: str) -> Resource:
        return await self.resources.save_role(_typed(resource, Role), actor=actor, overwrite=True)

    async def delete(self, name: str, actor: str) -> None:
        await self.resources.delete_role(name, actor=actor)


class _Locks(_SecretsInside):
    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    async def list(self) -> Sequence[Resource]:
        return await self.resources.locks.locks.list()

    async def get(self, name: str) -> Resource:
        return await self.resources.locks.locks.get(name)

    async def create(self, resource: Resource, actor: str) -> Resource:
        return await self.resources.save_lock(_typed(resource, Lock), actor=actor, overwrite=False)

    async def upsert(self, resource: Resource, actor: str) -> Resource:
        return await self.resources.save_lock(_typed(resource, Lock), actor=actor, overwrite=True)

    async def delete(self, name: str, actor: str) -> None:
        await self.resources.delete_lock(name, actor=actor)


class _Tokens(_SecretsInside):
    """Join tokens (`tctl tokens add` makes them too); static ones live in the config file."""

    def __init__(self, ctx: AuthContext, hosts: Hosts) -> None:
        self.ctx = ctx
        self.hosts = hosts

    async def list(self) -> Sequence[Resource]:
        return (await self.hosts.list_tokens())[0]

    async def get(self, name: str) -> Resource:
        for token in await self.list():
            if token.metadata.name == name:
                return token
        raise NotFound(f'token "{redact(name)}" not found')

    def _check(self, token: ProvisionToken) -> None:
        name = token.metadata.name
        if len(name) < 8 or not name.isprintable() or "/" in name:
            raise BadParameter("a token must be at least 8 printable characters without '/'")
        if any(t.token == name for t in self.ctx.settings.static_tokens):
            raise BadParameter("static tokens are set in the config file and cannot be changed")
        if not token.spec.roles or not {r.lower() for r in token.spec.roles} <= JOIN_ROLES:
            raise BadParameter(f"token spec.roles: use {', '.join(sorted(JOIN_ROLES))}")
        expires = token.metadata.expires
        if expires is not None and expires <= self.ctx.clock.now():
            raise BadParameter("token metadata.expires is in the past")

    async def _save(self, resource: Resource, actor: str, overwrite: bool) -> Resource:
        token = _typed(resource, ProvisionToken)
        self._check(token)
        token = token.model_copy(update={"spec": token.spec.model_copy(
            update={"roles": sorted({r.lower() for r in token.spec.roles})})})
        store = self.hosts.tokens.provision
        stored = await (store.put(token) if overwrite else store.create(token))
        await self.ctx.audit(ev.JOIN_TOKEN_CREATE, actor, name=redact(token.metadata.name),
                             roles=token.spec.roles, join_method="token",
                             expires=token.metadata.expires.isoformat()
                             if token.metadata.expires else "")
        return stored

    async def create(self, resource: Resource, actor: str) -> Resource:
        return await self._save(resource, actor, overwrite=False)

    async def upsert(self, resource: Resource, actor: str) -> Resource:
        return await self._save(resource, actor, overwrite=True)

    async def delete(self, name: str, actor: str) -> None:
        await self.hosts.delete_token(name, actor=actor)


class _Connectors(_SecretsInside):
    """GitHub or OIDC connectors. Replacing one with a blank client_secret keeps the stored
    secret: `tctl get` prints none, and re-creating its output must not erase it."""

    _EVENTS = {"github": (ev.GITHUB_CREATED, ev.GITHUB_DELETED),
               "oidc": (ev.OIDC_CREATED, ev.OIDC_DELETED)}

    def __init__(self, ctx: AuthContext, connectors: ConnectorService, kind: str) -> None:
        self.ctx = ctx
        self.store: ResourceStore[Any] = connectors.store(kind)  # GitHub or OIDC connectors
        self.created, self.deleted = self._EVENTS[kind]

    async def list(self) -> Sequence[Resource]:
        return await self.store.list()

    async def get(self, name: str) -> Resource:
        return await self.store.get(name)

    async def _save(self, resource: Resource, actor: str, overwrite: bool) -> Resource:
        connector = _typed(resource, self.store.model)
        check_role_name(connector.metadata.name)  # the same rule: it is a path segment
        if overwrite and not connector.spec.client_secret:
            try:
                stored = await self.store.get(connector.metadata.name)
            except NotFound:
                pass
            else:
                connector = connector.model_copy(update={"spec": connector.spec.model_copy(
                    update={"client_secret": stored.spec.client_secret})})
        saved = await (self.store.put(connector) if overwrite else self.store.create(connector))
        await self.ctx.audit(self.created, actor, name=connector.metadata.name)
        return saved

    async def create(self, resource: Resource, actor: str) -> Resource:
        return await self._save(resource, actor, overwrite=False)

    async def upsert(self, resource: Resource, actor: str) -> Resource:
        return await self._save(resource, actor, overwrite=True)

    async def delete(self, name: str, actor: str) -> None:
        await self.store.delete(name)
        await self.ctx.audit(self.deleted, actor, name=name)


class _ReadOnly(_SecretsInside):
    noun = ""

    async def create(self, resource: Resource, actor: str) -> Resource:
        raise BadParameter(f"{self.noun} resources are made by the cluster, not created with tctl")

    async def upsert(self, resource: Resource, actor: str) -> Resource:
        return await self.create(resource, actor)

    async def delete(self, name: str, actor: str) -> None:
        raise BadParameter(f"{self.noun} resources cannot be deleted")


class _Authorities(_ReadOnly):
    """The cluster's CAs, named by type (`cert_authority/user`); private keys only through
    `with_secrets` (the admin identity's backup)."""

    noun = "cert_authority"

    def __init__(self, certs: CertIssuer) -> None:
        self.certs = certs

    async def list(self) -> Sequence[Resource]:
        return [await self.certs.get_ca(t) for t in CA_TYPES]

    async def get(self, name: str) -> Resource:
        if name not in CA_TYPES:
            raise NotFound(f"cert_authority {name!r} not found: name one of {', '.join(CA_TYPES)}")
        return await self.certs.get_ca(name)  # with_secrets=False: public keys only

    async def with_secrets(self, resource: Resource) -> Resource:
        return await self.certs.get_ca(_typed(resource, CertAuthority).spec.type, with_secrets=True)


class _Nodes(_ReadOnly):
    noun = "node"

    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts

    async def list(self) -> Sequence[Resource]:
        return await self.hosts.list_servers("node")

    async def get(self, name: str) -> Resource:
        for node in await self.hosts.list_servers("node"):
            if node.metadata.name == name:
                return node
        raise NotFound(f'node "{name}" not found')

