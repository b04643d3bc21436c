"""What an SSO login yields: roles from claims or teams, logins, traits; refusals name why."""

from __future__ import annotations

import pytest

from teleport.errors import AccessDenied
from teleport.rbac.sso import GithubTeam, github_identity, map_claims, oidc_identity
from teleport.types.connectors import ClaimMapping, GithubConnector, OIDCConnector

CALLBACK = "https://proxy.example.com:3080/v1/webapi/{}/callback"


def _oidc(*mappings: dict[str, object]) -> OIDCConnector:
    return OIDCConnector.model_validate({
        "metadata": {"name": "corp"}, "spec": {
            "issuer_url": "https://idp.example.com", "client_id": "teleport",
            "redirect_url": CALLBACK.format("oidc"), "claims_to_roles": list(mappings)}})


def _github(**spec: object) -> GithubConnector:
    return GithubConnector.model_validate({
        "metadata": {"name": "gh"}, "spec": {
            "client_id": "id", "redirect_url": CALLBACK.format("github"), **spec}})


def test_claims_map_exact_glob_and_regex_values_with_captures() -> None:
    mappings = [ClaimMapping(claim="groups", value="admins", roles=["editor"]),
                ClaimMapping(claim="groups", value="dev-*", roles=["access"]),
                ClaimMapping(claim="groups", value="^team-(\\w+)$", roles=["$1-ops", "access"])]
    claims = {"groups": ["admins", "dev-web", "team-db", "other"]}
    assert map_claims(mappings, claims) == ["editor", "access", "db-ops"]
    assert map_claims(mappings, {"groups": "admin"}) == []  # exact means exact
    assert map_claims(mappings, {}) == []


def test_an_oidc_identity_takes_its_name_from_the_username_claim_and_keeps_claims_as_traits() -> None:
    connector = _oidc({"claim": "groups", "value": "dev", "roles": ["access"]})
    identity = oidc_identity(connector, {"email": "ann@example.com", "groups": ["dev"],
                                         "logins": ["ann", "ubuntu"], "email_verified": True,
                                         "address": {"country": "x"}, "nonce": "n1",
                                         "exp": 1, "iss": "https://idp.example.com"})
    assert identity.username == "ann@example.com"
    assert identity.roles == ("access",)
    assert identity.traits["logins"] == ["ann", "ubuntu"]
    assert identity.traits["email_verified"] == ["true"]
    assert "address" not in identity.traits
    assert not {"nonce", "exp", "iss"} & set(identity.traits)  # about the token, not Ann


def test_an_oidc_identity_with_no_mapped_claim_or_no_name_is_refused() -> None:
    connector = _oidc({"claim": "groups", "value": "dev", "roles": ["access"]})
    with pytest.raises(AccessDenied, match="no claims_to_roles mapping"):
        oidc_identity(connector, {"email": "bob@example.com", "groups": ["sales"]})
    with pytest.raises(AccessDenied, match="no 'email' claim"):
        oidc_identity(connector, {"groups": ["dev"]})


def test_github_teams_map_to_roles_and_the_manuals_logins() -> None:
    connector = _github(
        teams_to_roles=[{"organization": "octocats", "team": "admins", "roles": ["editor"]}],
        teams_to_logins=[{"organization": "Octocats", "team": "devs", "logins": ["ubuntu"]}])
    identity = github_identity(connector, "octo", [GithubTeam("octocats", "admins"),
                                                   GithubTeam("OCTOCATS", "devs")])
    assert identity.roles == ("editor", "access")
    assert identity.traits["logins"] == ["ubuntu"]
    admins_only = github_identity(connector, "octo", [GithubTeam("octocats", "admins")])
    assert admins_only.roles == ("editor",) and "logins" not in admins_only.traits


def test_a_github_user_in_no_mapped_team_is_refused() -> None:
    connector = _github(
        teams_to_roles=[{"organization": "octocats", "team": "admins", "roles": ["editor"]}])
    with pytest.raises(AccessDenied, match="in no team"):
        github_identity(connector, "octo", [GithubTeam("octocats", "sales"),
                                            GithubTeam("other", "admins")])
