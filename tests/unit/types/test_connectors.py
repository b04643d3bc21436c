"""GitHub and OIDC connector resources: what `tctl create` accepts and refuses, in one line each."""

from __future__ import annotations

import pytest

from teleport.errors import BadParameter
from teleport.types.codec import parse_yaml, to_dict
from teleport.types.connectors import GithubConnector, OIDCConnector

MANUAL_GITHUB = """
kind: github
version: v3
metadata:
  name: github
spec:
  client_id: <client-id>
  client_secret: <client-secret>
  display: Github
  redirect_url: https://proxy.example.com:3080/v1/webapi/github/callback
  teams_to_logins:
    - organization: octocats
      team: admins
      logins:
        - root
"""

OIDC = """
kind: oidc
version: v2
metadata:
  name: corp
spec:
  issuer_url: https://idp.example.com/
  client_id: teleport
  client_secret: s3cret
  redirect_url: https://proxy.example.com:3080/v1/webapi/oidc/callback
  scope: [groups]
  max_age: 24h
  claims_to_roles:
    - {claim: groups, value: "^team-(.*)$", roles: ["$1"]}
"""


def test_the_manuals_github_connector_loads_and_round_trips() -> None:
    (connector,) = parse_yaml(MANUAL_GITHUB, "github.yaml")
    assert isinstance(connector, GithubConnector)
    assert connector.spec.teams_to_logins[0].logins == ["root"]
    assert connector.spec.endpoint_url == "https://github.com"
    assert connector.spec.api_endpoint_url == "https://api.github.com"
    assert GithubConnector.model_validate(to_dict(connector)) == connector


def test_an_oidc_v2_connector_is_stored_as_v3_with_its_duration_and_issuer_normalised() -> None:
    (connector,) = parse_yaml(OIDC, "oidc.yaml")
    assert isinstance(connector, OIDCConnector)
    assert connector.version == "v3"
    assert connector.spec.issuer_url == "https://idp.example.com"
    data = to_dict(connector)
    assert data["spec"]["max_age"] == "24h0m0s"
    assert data["spec"]["redirect_url"] == ["https://proxy.example.com:3080/v1/webapi/oidc/callback"]


def test_without_secrets_blanks_only_the_client_secret() -> None:
    (connector,) = parse_yaml(OIDC, "oidc.yaml")
    public = connector.without_secrets()
    assert public.spec.client_secret == ""
    assert public.spec.client_id == "teleport"


@pytest.mark.parametrize(("change", "message"), [
    (("issuer_url: https://idp.example.com/", "issuer_url: http://idp.example.com"),
     "must use https"),
    (("redirect_url: https://proxy.example.com:3080/v1/webapi/oidc/callback",
      "redirect_url: https://proxy.example.com:3080/elsewhere"), "must end in /v1/webapi/oidc/callback"),
    (('value: "^team-(.*)$"', 'value: "^team-(.*$"'), "invalid regular expression"),
    (("claims_to_roles:\n    - {claim: groups, value: \"^team-(.*)$\", roles: [\"$1\"]}",
      "claims_to_roles: []"), "claims_to_roles"),
    (("  scope: [groups]", "  scopes: [groups]"), "scopes"),
])
def test_bad_oidc_connectors_are_refused_naming_the_field(change: tuple[str, str],
                                                          message: str) -> None:
    text = OIDC.replace(*change)
    assert text != OIDC
    with pytest.raises(BadParameter, match=message):
        parse_yaml(text, "oidc.yaml")


def test_plain_http_providers_are_allowed_on_loopback_only() -> None:
    local = OIDC.replace("https://idp.example.com/", "http://127.0.0.1:9000")
    (connector,) = parse_yaml(local, "oidc.yaml")
    assert isinstance(connector, OIDCConnector)
    assert connector.spec.issuer_url == "http://127.0.0.1:9000"


def test_a_github_connector_mapping_nobody_or_kubernetes_is_refused() -> None:
    nobody = MANUAL_GITHUB.split("  teams_to_logins:")[0]
    with pytest.raises(BadParameter, match="needs teams_to_logins or teams_to_roles"):
        parse_yaml(nobody, "github.yaml")
    kube = MANUAL_GITHUB + '      kubernetes_groups: ["system:masters"]\n'
    with pytest.raises(BadParameter, match="Kubernetes access is not supported yet"):
        parse_yaml(kube, "github.yaml")
