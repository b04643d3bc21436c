"""What a single sign-on login yields: the roles, logins and traits an identity provider's answer maps to.

Pure (no I/O): the auth server hands in the connector and what the provider asserted (an OIDC
ID token's claims, a GitHub user's teams) and gets the user to create, or a refusal naming why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from teleport.errors import AccessDenied
from teleport.rbac import DEFAULT_USER_ROLES
from teleport.types.connectors import ClaimMapping, GithubConnector, OIDCConnector

#: The trait `{{internal.logins}}` reads.
LOGINS_TRAIT = "logins"
#: An ID token's protocol claims: about the token, not the person, and new at every login, so
#: they are not kept as traits (nor carried in certificates).
PROTOCOL_CLAIMS = frozenset({"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash",
                             "auth_time", "azp", "sid", "jti", "acr", "amr"})


@dataclass(frozen=True)
class SSOIdentity:
    """Who the provider says logged in, and what they may do here."""

    username: str
    roles: tuple[str, ...]
    traits: dict[str, list[str]] = field(default_factory=dict)


def claim_values(value: Any) -> list[str]:
    """A claim as trait values: a string, a number or a list of them; anything else is dropped."""
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, str | int | float):
        return [str(value)]
    if isinstance(value, list):
        return [v for item in value if not isinstance(item, list | dict)
                for v in claim_values(item)]
    return []


def _match(pattern: str, value: str) -> re.Match[str] | None:
    """Match a whole value: `^...$` is a regular expression, `*` a glob, anything else exact."""
    if pattern.startswith("^") and pattern.endswith("$"):
        return re.fullmatch(pattern, value)
    if "*" in pattern:
        return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), value)
    return re.fullmatch(re.escape(pattern), value)


def _expand(role: str, match: re.Match[str]) -> str:
    """Fill `$1`..`$9` with the regex's groups (an unmatched group leaves the role empty)."""
    out = role
    for number in range(9, 0, -1):
        token = f"${number}"
        if token in out:
            group = match.group(number) if number <= (match.re.groups or 0) else None
            if not group:
                return ""
            out = out.replace(token, group)
    return out


def map_claims(mappings: Sequence[ClaimMapping], claims: Mapping[str, Any]) -> list[str]:
    """Return the roles the claims earn, in mapping order, each once."""
    roles: dict[str, None] = {}
    for mapping in mappings:
        for value in claim_values(claims.get(mapping.claim)):
            match = _match(mapping.value, value)
            if match is None:
                continue
            for role in mapping.roles:
                expanded = _expand(role, match)
                if expanded:
                    roles[expanded] = None
    return list(roles)


def oidc_identity(connector: OIDCConnector, claims: Mapping[str, Any]) -> SSOIdentity:
    """Map an ID token's (and userinfo's) claims through the connector's `claims_to_roles`."""
    names = claim_values(claims.get(connector.spec.username_claim))
    if len(names) != 1 or not names[0]:
        raise AccessDenied(f"the identity provider sent no {connector.spec.username_claim!r} "
                           f"claim to name the user by (connector {connector.name!r})")
    roles = map_claims(connector.spec.claims_to_roles, claims)
    if not roles:
        raise AccessDenied(f"user {names[0]!r}: no claims_to_roles mapping of connector "
                           f"{connector.name!r} matches their claims, so they have no role")
    traits = {k: v for k, v in ((k, claim_values(c)) for k, c in claims.items()
                                if k not in PROTOCOL_CLAIMS) if v}
    return SSOIdentity(names[0], tuple(roles), traits)


@dataclass(frozen=True)
class GithubTeam:
    organization: str
    slug: str


def github_identity(connector: GithubConnector, login: str,
                    teams: Iterable[GithubTeam]) -> SSOIdentity:
    """Map a GitHub user's teams: `teams_to_roles` gives roles, `teams_to_logins` (the
    manual's) gives OS logins with the `access` role, as in the open-source Teleport."""
    member = {(t.organization.lower(), t.slug.lower()) for t in teams}
    roles: dict[str, None] = {}
    logins: dict[str, None] = {}
    for by_roles in connector.spec.teams_to_roles:
        if (by_roles.organization.lower(), by_roles.team.lower()) in member:
            roles.update(dict.fromkeys(by_roles.roles))
    for by_logins in connector.spec.teams_to_logins:
        if (by_logins.organization.lower(), by_logins.team.lower()) in member:
            logins.update(dict.fromkeys(by_logins.logins))
            roles.update(dict.fromkeys(DEFAULT_USER_ROLES))
    if not roles:
        raise AccessDenied(f"GitHub user {login!r} is in no team that connector "
                           f"{connector.name!r} maps to a role or login")
    traits = {"github_teams": sorted(f"{o}/{s}" for o, s in member)}
    if logins:
        traits[LOGINS_TRAIT] = list(logins)
    return SSOIdentity(login, tuple(roles), traits)
