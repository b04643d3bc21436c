"""OIDC single sign-on end to end against a real, certified OpenID Provider run locally.

The provider is panva's `oidc-provider` on Node.js (`tests/e2e/oidcprovider.py`), nothing of it
mocked; the cluster is configured `authentication.type: oidc` with `connector_name`, so a plain
`tsh login` takes the connector. Claims decide roles (`claims_to_roles`) and logins (the
`logins` claim fills `{{internal.logins}}` of the `access` role).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium import webdriver

from tests.e2e.browser import check_page, wait_until, wait_visible
from tests.e2e.cluster import CLUSTER, NODENAME, Cluster, make_cluster
from tests.e2e.oidcprovider import OpenIDProvider, idp_login
from tests.e2e.sso import logins_of, tsh_sso_login, wait_for_connector

pytestmark = pytest.mark.slow

CLIENT_ID = "teleport-e2e"
CLIENT_SECRET = "e2e-oidc-client-secret"
PASSWORD = "provider password"


@pytest.fixture(scope="module")
def sso_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster whose default login is the OIDC connector `corp`."""
    cluster = make_cluster(tmp_path_factory.mktemp("oidc"))
    cluster.set_authentication({"type": "oidc", "connector_name": "corp"})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def idp(sso_cluster: Cluster) -> Iterator[OpenIDProvider]:
    callback = f"https://{sso_cluster.web_addr}/v1/webapi/oidc/callback"
    config = {
        "clients": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                     "redirect_uris": [callback]}],
        "users": [
            {"id": "ann", "password": PASSWORD,
             "claims": {"email": "ann@example.com", "groups": ["dev", "team-ops"],
                        "logins": ["root"]}},
            {"id": "bob", "password": PASSWORD,
             "claims": {"email": "bob@example.com", "groups": ["sales"], "logins": ["root"]}},
        ]}
    with OpenIDProvider(config) as provider:
        sso_cluster.tctl("create", input=f"""\
kind: oidc
version: v3
metadata:
  name: corp
spec:
  issuer_url: {provider.issuer}
  client_id: {CLIENT_ID}
  client_secret: {CLIENT_SECRET}
  display: Corp SSO
  redirect_url: {callback}
  scope: [groups, logins]
  claims_to_roles:
    - {{claim: groups, value: dev, roles: [access]}}
    - {{claim: groups, value: "^team-(.*)$", roles: ["$1"]}}
""")
        sso_cluster.tctl("create", input="""\
kind: role
version: v5
metadata:
  name: ops
spec:
  allow:
    rules:
      - resources: [session]
        verbs: [list, read]
""")
        wait_for_connector(sso_cluster, "corp")
        yield provider


def _login(cluster: Cluster, browser: webdriver.Chrome, user: str,
           auth: str | None = None) -> tuple[int, str, str]:
    result = tsh_sso_login(cluster, auth, lambda link: idp_login(browser, link, user, PASSWORD))
    return result.returncode, result.stdout, result.stderr


def test_a_plain_tsh_login_goes_through_the_configured_connector_and_ssh_works(
        sso_cluster: Cluster, idp: OpenIDProvider, browser: webdriver.Chrome) -> None:
    code, out, err = _login(sso_cluster, browser, "ann")
    assert code == 0, err
    status = sso_cluster.tsh("status").stdout
    assert "ann@example.com" in status, status
    assert "access" in status and "ops" in status  # `$1` of ^team-(.*)$
    assert sso_cluster.tsh("ssh", f"root@{NODENAME}", "id", "-un").stdout.strip() == "root"
    (login,) = logins_of(sso_cluster, "ann@example.com", method="oidc", success=True)
    assert login["connector"] == "corp"
    users = sso_cluster.tctl("get", "users/ann@example.com").stdout
    assert "connector:" in users and "id: corp" in users  # a temporary SSO user
    assert CLIENT_SECRET not in str(sso_cluster.audit_events()) + sso_cluster.log()


def test_claims_that_map_to_no_role_are_refused(
        sso_cluster: Cluster, idp: OpenIDProvider, browser: webdriver.Chrome) -> None:
    code, _, err = _login(sso_cluster, browser, "bob", "corp")
    assert code == 1
    assert "no claims_to_roles mapping of connector 'corp' matches their claims" in err, err
    failure = logins_of(sso_cluster, "", method="oidc", success=False)[-1]
    assert "bob@example.com" in failure["error"]


def test_logins_keep_working_when_the_provider_rotates_its_signing_key(
        sso_cluster: Cluster, idp: OpenIDProvider, browser: webdriver.Chrome) -> None:
    before = {k["kid"] for k in idp.jwks()["keys"]}
    idp.rotate_keys()  # the old key leaves the JWKS: the auth server must fetch the new one
    assert not before & {k["kid"] for k in idp.jwks()["keys"]}
    code, _, err = _login(sso_cluster, browser, "ann", "oidc")
    assert code == 0, err


def test_a_token_signed_by_a_key_the_provider_does_not_publish_is_refused(
        sso_cluster: Cluster, idp: OpenIDProvider, browser: webdriver.Chrome) -> None:
    idp.rotate_keys(publish=False)
    try:
        code, _, err = _login(sso_cluster, browser, "ann", "corp")
    finally:
        idp.rotate_keys()
    assert code == 1
    assert "signature does not verify with the issuer's keys" in err, err


def test_the_login_page_button_logs_the_browser_in(
        sso_cluster: Cluster, idp: OpenIDProvider, browser: webdriver.Chrome) -> None:
    browser.get(f"https://{sso_cluster.web_addr}/web/login")
    button = wait_visible(browser, '#login-sso a[data-connector="corp"]')
    assert button.text == "Corp SSO"
    check_page(browser, "login-sso", widths=("laptop", "phone"), schemes=("light", "dark"))
    button = wait_visible(browser, '#login-sso a[data-connector="corp"]')
    idp_login(browser, button.get_attribute("href") or "", "ann", PASSWORD)
    wait_until(browser, lambda d: d.current_url.endswith(f"/web/cluster/{CLUSTER}/nodes"),
               "the UI after the OIDC login")
    wait_visible(browser, f'#nodes-table tr[data-node="{NODENAME}"]')
    # The callback's URL cannot be used again: its state was taken once.
    callbacks = [u for u in idp.departures() if "/v1/webapi/oidc/callback" in u]
    browser.get(callbacks[-1])
    wait_visible(browser, "main")
    assert "unknown, used or expired" in browser.page_source


def test_a_forged_state_gets_an_error_page_and_is_audited(
        sso_cluster: Cluster, idp: OpenIDProvider, browser: webdriver.Chrome) -> None:
    browser.get(f"https://{sso_cluster.web_addr}/v1/webapi/oidc/callback?code=x&state=forged")
    assert "Login failed" in browser.page_source
    assert any("unknown, used or expired" in e["error"]
               for e in logins_of(sso_cluster, "", method="oidc", success=False))

