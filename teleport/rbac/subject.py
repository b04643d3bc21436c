"""Who asks: the kinds of caller and the built-in role names, declared once."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from teleport.errors import AccessDenied
from teleport.keys.identity import Identity
from teleport.rbac.roles import RoleSet


class Caller(enum.StrEnum):
    """The kind of caller a certificate (or its absence) makes: what API routes allow."""

    ADMIN = "Admin"  # tctl on the auth host, with the admin identity
    AUTH = "Auth"
    PROXY = "Proxy"
    NODE = "Node"
    USER = "User"  # an end user holding a certificate from `tsh login`
    ANONYMOUS = "Anonymous"  # no client certificate: only joining with a token


#: The system roles a host or tctl certificate carries (`Identity.system_role`).
SYSTEM_ROLES = frozenset({Caller.ADMIN, Caller.AUTH, Caller.PROXY, Caller.NODE})
#: The system roles a join token may let a host take, and the presence kind each announces as.
HOST_KINDS = {Caller.NODE: "node", Caller.PROXY: "proxy", Caller.AUTH: "auth_server"}


@dataclass(frozen=True)
class Subject:
    """The facts a decision needs about who asks."""

    kind: Caller
    #: The user's name, or the host's UUID.
    name: str = ""
    #: A user's roles as stored now (not as when the certificate was issued).
    roles: tuple[str, ...] = ()
    #: What those roles allow, as the asker knows the role definitions (the auth server: as
    #: stored now; a node or proxy: as last fetched). Empty for hosts and anonymous callers.
    access: RoleSet = field(default_factory=lambda: RoleSet(()))

    @classmethod
    def of(cls, identity: Identity, access: RoleSet | None = None) -> Subject:
        """Return the subject a verified certificate speaks for (a user's roles judged by
        `access`, built by the asker from the role definitions it holds)."""
        if identity.system_role:
            if identity.system_role not in SYSTEM_ROLES:
                raise AccessDenied(f"unknown system role {identity.system_role!r}")
            return cls(Caller(identity.system_role), identity.host_uuid or identity.username)
        return cls.user(identity.username, identity.roles, access)

    @classmethod
    def user(cls, name: str, roles: Sequence[str], access: RoleSet | None = None) -> Subject:
        return cls(Caller.USER, name, tuple(roles), access if access is not None else RoleSet(()))
