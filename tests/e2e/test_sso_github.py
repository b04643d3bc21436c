"""GitHub single sign-on end to end: tsh and the web UI against a local GitHub-speaking server.

github.com cannot be reached from CI, so the connector's `endpoint_url` and `api_endpoint_url`
point at `tests/e2e/github_server.py`, as a GitHub Enterprise customer's would. The teams a
user is in decide their roles (`teams_to_roles`) and OS logins (the manual's `teams_to_logins`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium import webdriver

from tests.e2e.browser import wait_until, wait_visible
from tests.e2e.cluster import CLUSTER, NODENAME, Cluster
from tests.e2e.github_server import GitHubServer, GitHubUser, OAuthApp, github_authorize
from tests.e2e.sso import logins_of, tsh_sso_login, wait_for_connector

pytestmark = pytest.mark.slow

CLIENT_ID = "teleport-e2e"
CLIENT_SECRET = "e2e-github-client-secret"


@pytest.fixture(scope="module")
def github(cluster: Cluster) -> Iterator[GitHubServer]:
    callback = f"https://{cluster.web_addr}/v1/webapi/github/callback"
    users = [GitHubUser("octo", 1, "Octo Cat", teams=[("octocats", "admins"), ("octocats", "devs")]),
             GitHubUser("stranger", 2, "Not In A Team", teams=[("elsewhere", "admins")])]
    # One team per page: the connector must follow GitHub's Link header to see them all.
    with GitHubServer([OAuthApp(CLIENT_ID, CLIENT_SECRET, callback)], users,
                      team_page_size=1) as server:
        cluster.tctl("create", input=f"""\
kind: github
version: v3
metadata:
  name: github
spec:
  client_id: {CLIENT_ID}
  client_secret: {CLIENT_SECRET}
  display: GitHub
  redirect_url: {callback}
  endpoint_url: {server.endpoint_url}
  api_endpoint_url: {server.api_endpoint_url}
  teams_to_roles:
    - organization: octocats
      team: admins
      roles: [auditor]
  teams_to_logins:
    - organization: octocats
      team: devs
      logins: [root]
""")
        wait_for_connector(cluster, "github")
        yield server


def test_tsh_logs_in_through_github_and_ssh_uses_the_teams_logins(
        cluster: Cluster, github: GitHubServer, browser: webdriver.Chrome) -> None:
    result = tsh_sso_login(cluster, "github", lambda link: github_authorize(browser, link, "octo"))
    assert result.returncode == 0, result.stderr
    assert "If browser window does not open automatically" in result.stdout
    sent = github.requests_to("/login/oauth/authorize", "GET")[-1].query
    assert sent["scope"] == "read:org" and sent["code_challenge_method"] == "S256"
    status = cluster.tsh("status").stdout
    assert "octo" in status and "auditor" in status and "access" in status, status
    assert "root" in status
    out = cluster.tsh("ssh", f"root@{NODENAME}", "id", "-un").stdout
    assert out.strip() == "root"
    (login,) = logins_of(cluster, "octo", method="github", success=True)
    assert login["connector"] == "github"
    # The secret reached GitHub, never the audit log or the daemon's log.
    assert CLIENT_SECRET not in str(cluster.audit_events())
    assert CLIENT_SECRET not in cluster.log()


def test_a_github_user_in_no_mapped_team_is_refused(
        cluster: Cluster, github: GitHubServer, browser: webdriver.Chrome) -> None:
    result = tsh_sso_login(cluster, "github",
                           lambda link: github_authorize(browser, link, "stranger"))
    assert result.returncode == 1
    assert "ERROR: GitHub user 'stranger' is in no team that connector 'github' maps" \
        in result.stderr, result.stderr
    assert logins_of(cluster, "", method="github", success=False)


def test_the_login_page_offers_github_and_lands_in_the_ui(
        cluster: Cluster, github: GitHubServer, browser: webdriver.Chrome) -> None:
    browser.get(f"https://{cluster.web_addr}/web/login")
    button = wait_visible(browser, '#login-sso a[data-connector="github"]')
    assert button.text == "GitHub"
    github_authorize(browser, button.get_attribute("href") or "", "octo")
    wait_until(browser, lambda d: d.current_url.endswith(f"/web/cluster/{CLUSTER}/nodes"),
               "the UI after the GitHub login")
    wait_visible(browser, f'#nodes-table tr[data-node="{NODENAME}"]')


def test_the_connector_is_listed_without_its_secret_unless_asked(
        cluster: Cluster, github: GitHubServer) -> None:
    listed = cluster.tctl("get", "connectors").stdout
    assert "kind: github" in listed and CLIENT_SECRET not in listed
    assert CLIENT_SECRET in cluster.tctl("get", "github/github", "--with-secrets").stdout
    refused = cluster.tctl("rm", "connectors/github", check=False)
    assert refused.returncode != 0 and "github/<name> or oidc/<name>" in refused.stderr
