"""Who a certificate speaks for: the identity both SSH and X.509 certificates encode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

#: The principal a certificate without logins carries: an empty principal list would let
#: OpenSSH's sshd accept it for every account, so it names a login no system has.
NO_LOGIN = "-teleport-nologin"


def _empty_traits() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Identity:
    """A user or a host as the auth server vouched for it when it signed the certificate."""

    username: str
    roles: tuple[str, ...] = ()
    logins: tuple[str, ...] = ()
    # Excluded from the hash (a mapping is not hashable) but compared for equality.
    traits: Mapping[str, tuple[str, ...]] = field(default_factory=_empty_traits, hash=False)
    cluster: str = ""
    #: "Admin", "Auth", "Proxy" or "Node" for hosts, None for users.
    system_role: str | None = None
    host_uuid: str = ""
    expires: datetime | None = None
    route_to_cluster: str = ""

    def __post_init__(self) -> None:
        # Callers hand in lists and dicts; freeze them so an Identity can be shared safely.
        object.__setattr__(self, "roles", tuple(self.roles))
        object.__setattr__(self, "logins", tuple(self.logins))
        frozen = {str(k): tuple(v) for k, v in self.traits.items()}
        object.__setattr__(self, "traits", MappingProxyType(frozen))
