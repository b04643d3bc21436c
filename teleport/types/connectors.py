"""Single sign-on connectors: `kind: github` (v3) and `kind: oidc` (v2/v3), as Teleport writes them.

What a connector may say is checked here at load (an unknown field, a bad regular expression, a
`$1` without a capture group, a plain-http provider off this machine are one error naming the
field); what a login through it yields is decided in `teleport.rbac.sso`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator

from teleport.types.resource import Model, Resource
from teleport.types.roles import Duration, check_regex

GITHUB_URL = "https://github.com"
GITHUB_API_URL = "https://api.github.com"
#: OIDC's default username claim, as Teleport's.
DEFAULT_USERNAME_CLAIM = "email"
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_provider_url(value: str, what: str) -> str:
    """Refuse a provider address that is not https (plain http only to this machine's loopback).

    Secrets (the client secret, codes, tokens) travel to it; a tester's local provider on
    127.0.0.1 is the one exception, as OAuth 2.1 allows for loopback redirects.
    """
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} {value!r} is not an https:// URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ValueError(f"{what} {value!r} must use https (http only for 127.0.0.1, ::1, localhost)")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} {value!r} must not carry a query or fragment")
    return value.rstrip("/")


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_one_or_many)]


class ClaimMapping(Model):
    """Users whose `claim` has a value matching `value` get `roles` (`$1` from a regex)."""

    claim: str = Field(min_length=1)
    value: str = Field(min_length=1)
    roles: StrList = Field(min_length=1)

    @field_validator("value")
    @classmethod
    def _pattern(cls, value: str) -> str:
        check_regex(value, "value")
        return value


class OIDCConnectorSpec(Model):
    issuer_url: str
    client_id: str = Field(min_length=1)
    client_secret: str = ""
    redirect_url: StrList = Field(min_length=1)
    display: str = ""
    scope: StrList = []
    claims_to_roles: list[ClaimMapping] = Field(min_length=1)
    prompt: str | None = None
    max_age: Duration | None = None
    username_claim: str = DEFAULT_USERNAME_CLAIM

    @field_validator("issuer_url")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return check_provider_url(value, "issuer_url")

    @field_validator("redirect_url")
    @classmethod
    def _redirects(cls, value: list[str]) -> list[str]:
        for url in value:
            check_redirect_url(url, "oidc")
        return value


class OIDCConnector(Resource):
    kind: Literal["oidc"] = "oidc"
    version: Annotated[Literal["v3"], BeforeValidator(lambda v: "v3" if v == "v2" else v)] = "v3"
    spec: OIDCConnectorSpec

    def without_secrets(self) -> OIDCConnector:
        return self.model_copy(update={"spec": self.spec.model_copy(update={"client_secret": ""})})


class TeamLogins(Model):
    """The manual's mapping: members of organization/team may log in as `logins`."""

    organization: str = Field(min_length=1)
    team: str = Field(min_length=1)
    logins: StrList = Field(min_length=1)
    kubernetes_groups: StrList = []
    kubernetes_users: StrList = []

    @field_validator("kubernetes_groups", "kubernetes_users")
    @classmethod
    def _no_kubernetes(cls, value: list[str]) -> list[str]:
        if value:
            raise ValueError("Kubernetes access is not supported yet: remove kubernetes_groups "
                             "and kubernetes_users")
        return value


class TeamRoles(Model):
    """Today's Teleport mapping: members of organization/team get `roles`."""

    organization: str = Field(min_length=1)
    team: str = Field(min_length=1)
    roles: StrList = Field(min_length=1)


class GithubConnectorSpec(Model):
    client_id: str = Field(min_length=1)
    client_secret: str = ""
    redirect_url: str
    display: str = ""
    teams_to_logins: list[TeamLogins] = []
    teams_to_roles: list[TeamRoles] = []
    endpoint_url: str = GITHUB_URL
    api_endpoint_url: str = GITHUB_API_URL

    @field_validator("endpoint_url", "api_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return check_provider_url(value, "endpoint")

    @field_validator("redirect_url")
    @classmethod
    def _redirect(cls, value: str) -> str:
        return check_redirect_url(value, "github")

    @model_validator(mode="after")
    def _maps_someone(self) -> GithubConnectorSpec:
        if not self.teams_to_logins and not self.teams_to_roles:
            raise ValueError("a github connector needs teams_to_logins or teams_to_roles")
        return self


class GithubConnector(Resource):
    kind: Literal["github"] = "github"
    version: Literal["v3"] = "v3"
    spec: GithubConnectorSpec

    def without_secrets(self) -> GithubConnector:
        return self.model_copy(update={"spec": self.spec.model_copy(update={"client_secret": ""})})


Connector = OIDCConnector | GithubConnector
CONNECTOR_KINDS = ("github", "oidc")
#: The path of a connector kind's callback on the proxy, as the manual writes redirect_url.
CALLBACK_PATH = "/v1/webapi/{kind}/callback"


def check_redirect_url(value: str, kind: str) -> str:
    """Refuse a redirect URL that is not the proxy's callback for this kind of connector."""
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"redirect_url {value!r} must be the proxy's https:// address")
    expected = CALLBACK_PATH.format(kind=kind)
    if parts.path != expected or parts.query or parts.fragment:
        raise ValueError(f"redirect_url {value!r} must end in {expected}")
    return value
