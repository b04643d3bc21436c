"""Every resource kind `tctl` and the auth API's resource routes serve, declared once.

Adding a kind means one entry here, one store on the auth server (`teleport.auth.resources`)
and, if `restored`, one writer for `teleport start --bootstrap` (`teleport.auth.bootstrap`):
`tctl get/create/rm`, `tctl get all` and the routes of `teleport.auth.api_resources` go through
this table, never through a branch per kind.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from teleport.errors import BadParameter

if TYPE_CHECKING:
    from teleport.types.resource import Resource

SecretsTo = Literal["reader", "admin"]
READER: SecretsTo = "reader"
ADMIN: SecretsTo = "admin"


@dataclass(frozen=True)
class ResourceKind:
    """One kind: its model, the names users may call it, and how the rules judge it."""

    name: str
    #: Where its model lives (`module:Class`), imported on first use: a command that handles
    #: one kind does not build every kind's model (`tctl nodes ls` needs no role or connector).
    model_path: str
    #: Other names `tctl` accepts (`roles`, `cas`...); the first is the plural.
    aliases: tuple[str, ...]
    #: The resource a role's rules name for it (`teleport.types.roles.RULE_RESOURCES`).
    rule_resource: str
    #: Holds secrets (`without_secrets()`): dropped before the resource leaves the auth server.
    has_secrets: bool = False
    #: Who gets them when asked (`tctl get --with-secrets`): READER, anyone whose roles may
    #: read the kind (a connector's client secret); ADMIN, only tctl with the auth server's
    #: admin identity, on the auth host (a CA's private keys, users' password hashes and
    #: second factors: what a backup restores), never a user's profile whatever its roles.
    secrets_to: SecretsTo = "reader"
    #: `tctl create` may store it (a CA or a node announcement is made by the cluster itself).
    creatable: bool = True
    #: Listed by `tctl get all` (in this table's order: what must exist before what).
    in_get_all: bool = True
    #: Named by the auth server (a fresh UUID) when created without a name, as locks are.
    auto_name: bool = False
    #: `teleport start --bootstrap` writes it into a new backend (`teleport.auth.bootstrap`);
    #: a node's announcement is skipped: the node announces itself again.
    restored: bool = True

    @property
    def plural(self) -> str:
        return self.aliases[0] if self.aliases else self.name

    @property
    def model(self) -> type[Resource]:
        return load_model(self.model_path)


@functools.cache
def load_model(path: str) -> type[Resource]:
    """The model class at `module:Class`."""
    module, _, name = path.partition(":")
    model: type[Resource] = getattr(importlib.import_module(module), name)
    return model


_RESOURCES = "teleport.types.resources"


_KINDS = (
    ResourceKind("role", "teleport.types.roles:Role", ("roles",), "role"),  # before users, who name roles
    ResourceKind("user", f"{_RESOURCES}:User", ("users",), "user", has_secrets=True, secrets_to=ADMIN),
    ResourceKind("token", f"{_RESOURCES}:ProvisionToken", ("tokens",), "token"),
    ResourceKind("trusted_cluster", "teleport.types.trusted:TrustedCluster", ("trusted_clusters", "tc", "cluster", "clusters"),
                 # Not restored yet: a backup would need the root's CAs with it (planned).
                 "trusted_cluster", has_secrets=True, restored=False),
    ResourceKind("cert_authority", f"{_RESOURCES}:CertAuthority", ("cert_authorities", "cas", "ca"),
                 "cert_authority", has_secrets=True, secrets_to=ADMIN, creatable=False),
    ResourceKind("lock", "teleport.types.locks:Lock", ("locks",), "lock", auto_name=True),
    # Announcements: listed, never restored (a node announces itself again within seconds).
    ResourceKind("node", f"{_RESOURCES}:Server", ("nodes",), "node", creatable=False, restored=False),
    ResourceKind("remote_cluster", "teleport.types.trusted:RemoteCluster", ("remote_clusters", "rc"), "remote_cluster",
                 creatable=False, restored=False),
    ResourceKind("github", "teleport.types.connectors:GithubConnector", ("githubs",), "github", has_secrets=True),
    ResourceKind("oidc", "teleport.types.connectors:OIDCConnector", ("oidcs",), "oidc", has_secrets=True),
)
#: Names that stand for several kinds in `tctl get` (the manual's `tctl get connectors`).
GROUPS: dict[str, tuple[str, ...]] = {"connectors": ("github", "oidc"),
                                      "connector": ("github", "oidc")}
#: Kinds by name, in `tctl get all` order.
KINDS_REGISTRY: dict[str, ResourceKind] = {k.name: k for k in _KINDS}
_BY_ALIAS: dict[str, ResourceKind] = {a: k for k in _KINDS for a in (k.name, *k.aliases)}


def lookup(name: str) -> ResourceKind:
    """Return the kind a name or alias means (`roles`, `role`), or refuse it in one line."""
    kind = _BY_ALIAS.get(name.lower())
    if kind is None and name.lower() in GROUPS:
        raise BadParameter(f"{name!r} names several kinds: use "
                           + " or ".join(f"{k}/<name>" for k in GROUPS[name.lower()]))
    if kind is None:
        raise BadParameter(f"unsupported resource {name!r}: use one of "
                           + ", ".join(k.plural for k in _KINDS))
    return kind


def lookup_many(name: str) -> tuple[ResourceKind, ...]:
    """Return the kinds a name means: one kind, or each kind of a group (`connectors`)."""
    group = GROUPS.get(name.lower())
    if group is not None:
        return tuple(KINDS_REGISTRY[k] for k in group)
    return (lookup(name),)
