"""Who asks: the kinds of caller and the built-in role names, declared once."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from teleport.errors import AccessDenied
from teleport.keys.identity import Identity


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
#: The user role that sees, plays and joins every session (Teleport's preset `access` + `editor`).
ADMIN_ROLE = "admin"
#: The roles a user gets when `tctl users add` names none.
DEFAULT_USER_ROLES = (ADMIN_ROLE,)


@dataclass(frozen=True)
class Subject:
    """The facts a decision needs about who asks."""

    kind: Caller
    #: The user's name, or the host's UUID.
    name: str = ""
    #: A user's roles as stored now (not as when the certificate was issued).
    roles: tuple[str, ...] = ()

    @classmethod
    def of(cls, identity: Identity) -> Subject:
        """Return the subject a verified certificate speaks for."""
        if identity.system_role:
            if identity.system_role not in SYSTEM_ROLES:
                raise AccessDenied(f"unknown system role {identity.system_role!r}")
            return cls(Caller(identity.system_role), identity.host_uuid or identity.username)
        return cls(Caller.USER, identity.username, tuple(identity.roles))

    @classmethod
    def user(cls, name: str, roles: tuple[str, ...] | list[str]) -> Subject:
        return cls(Caller.USER, name, tuple(roles))
