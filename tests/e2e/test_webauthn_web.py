"""Security keys end to end: a real cluster, headless Chromium with its virtual authenticator.

The browser opens the proxy as https://localhost:<port> (WebAuthn wants a DNS name; the proxy
listens on 127.0.0.1): a person signs up registering a key, logs in with it, adds a passkey on
the account page, removes the first key, and logs in with the passkey alone. The manual's
`second_factor: u2f` with `app_id`/`facets` does the same. The refusals (wrong origin, wrong
RP ID, a replayed answer, a counter going backwards, the lockout) are sent by the software
authenticator (tests/webauthn_softkey.py) straight to the proxy's web API, each audited.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.e2e import virtual_authenticator as va
from tests.e2e.browser import check_page, wait_text, wait_until, wait_visible
from tests.e2e.cluster import Cluster, make_cluster
from tests.webauthn_softkey import SoftAuthenticator

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"


def _origin(cluster: Cluster) -> str:
    return f"https://localhost:{cluster.ports['web']}"


def _signup_url(cluster: Cluster, name: str) -> str:
    out = cluster.tctl("users", "add", name, "root", "--roles=access").stdout
    token = re.findall(r"/web/newuser/([A-Za-z0-9_-]+)", out)[0]
    return f"{_origin(cluster)}/web/newuser/{token}"


def _events(cluster: Cluster, kind: str, user: str) -> list[dict[str, Any]]:
    return [e for e in cluster.audit_events() if e.get("event") == kind and e.get("user") == user]


# --- the browser ---------------------------------------------------------------------------------

def _sign_up(browser: webdriver.Chrome, cluster: Cluster, user: str, device: str,
             check: bool = False) -> None:
    browser.get(_signup_url(cluster, user))
    wait_visible(browser, "#signup")
    if check:
        check_page(browser, "signup-key", widths=("laptop", "phone"), schemes=("light",))
    assert not browser.find_elements(By.CSS_SELECTOR, "#otp-secret"), "no OTP under webauthn"
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.NAME, "confirm").send_keys(PASSWORD)
    name = browser.find_element(By.NAME, "device")
    name.clear()
    name.send_keys(device)
    browser.find_element(By.CSS_SELECTOR, "#signup button[type=submit]").click()
    wait_text(browser, "#done", "tsh login")


def _log_in(browser: webdriver.Chrome, cluster: Cluster, user: str) -> None:
    browser.get(f"{_origin(cluster)}/web/login")
    wait_visible(browser, "#login-form")
    wait_until(browser, lambda d: d.find_element(By.ID, "login-form").get_attribute("data-otp"),
               "the login page did not read the cluster's second factor")
    assert not browser.find_element(By.ID, "login-otp").is_displayed()
    browser.find_element(By.ID, "login-user").send_keys(user)
    browser.find_element(By.ID, "login-password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-submit").click()
    wait_text(browser, "#current-user", user)


def _devices(browser: webdriver.Chrome) -> list[str]:
    """The device names the account page lists (read in one script: the table redraws)."""
    names: list[str] = browser.execute_script(
        "return [...document.querySelectorAll('#devices-table tr[data-device]')]"
        ".map((row) => row.dataset.device);")
    return names


def test_signup_login_add_remove_and_passwordless(browser: webdriver.Chrome,
                                                  keys_cluster: Cluster) -> None:
    cluster = keys_cluster
    browser.get(f"{_origin(cluster)}/web/login")
    usb = va.add(browser, transport="usb")
    _sign_up(browser, cluster, "alice", "yubikey", check=True)
    [held] = va.credentials(browser, usb)
    assert held.rp_id == "localhost"

    _log_in(browser, cluster, "alice")
    login = _events(cluster, "user.login", "alice")[-1]
    assert login["success"] is True and login["method"] == "local"
    assert login["mfa_device"]["mfa_device_name"] == "yubikey"

    # The account page: the key is listed; add a passkey from another authenticator.
    browser.get(f"{_origin(cluster)}/web/account")
    wait_until(browser, lambda d: _devices(d) == ["yubikey"], "the key is not listed")
    check_page(browser, "account")
    va.remove(browser, usb)
    passkey = va.add(browser, transport="internal", resident_key=True, user_verification=True,
                     user_verified=True)
    name = browser.find_element(By.ID, "device-name")
    name.clear()
    name.send_keys("laptop passkey")
    browser.find_element(By.ID, "device-passkey").click()
    browser.find_element(By.ID, "device-add").click()
    wait_until(browser, lambda d: _devices(d) == ["yubikey", "laptop passkey"],
               "the passkey was not added")
    assert va.credentials(browser, passkey)[0].resident

    # Remove the first key; the last one stays while second_factor is webauthn.
    browser.find_element(By.CSS_SELECTOR, "[data-remove='yubikey']").click()
    browser.find_element(By.ID, "confirm-yes").click()
    wait_until(browser, lambda d: _devices(d) == ["laptop passkey"], "the key was not removed")
    browser.find_element(By.CSS_SELECTOR, "[data-remove='laptop passkey']").click()
    browser.find_element(By.ID, "confirm-yes").click()
    wait_text(browser, "#account-error",
              "cannot remove the last MFA device while second_factor is webauthn")
    assert _devices(browser) == ["laptop passkey"]
    assert [e["mfa_device_name"] for e in _events(cluster, "mfa.add", "alice")] == \
        ["yubikey", "laptop passkey"]
    assert [e["mfa_device_name"] for e in _events(cluster, "mfa.delete", "alice")] == ["yubikey"]

    # Log out; the passkey alone logs in (no user name, no password).
    browser.find_element(By.ID, "logout").click()
    wait_visible(browser, "#login-form")
    wait_visible(browser, "#login-passkey")
    check_page(browser, "login-passkey", widths=("laptop",), schemes=("light",))
    browser.find_element(By.ID, "login-passkey").click()
    wait_text(browser, "#current-user", "alice")
    login = _events(cluster, "user.login", "alice")[-1]
    assert (login["success"], login["method"]) == (True, "passwordless")
    assert login["mfa_device"]["mfa_device_name"] == "laptop passkey"


def test_the_manuals_u2f_config(browser: webdriver.Chrome, tmp_path: Path) -> None:
    """`second_factor: u2f` with app_id and facets naming the proxy: a key, as webauthn."""
    cluster = make_cluster(tmp_path)
    cluster.start()  # binds the ports, which app_id and facets then name
    cluster.stop()
    origin = _origin(cluster)
    cluster.set_authentication({"type": "local", "second_factor": "u2f",
                              "u2f": {"app_id": origin, "facets": [origin]}})
    cluster.start()
    try:
        assert cluster.web("GET", "/webapi/ping")["auth"]["webauthn"] == {"rp_id": "localhost"}
        browser.get(f"{origin}/web/login")
        va.add(browser, transport="usb")
        _sign_up(browser, cluster, "bob", "u2f key")
        _log_in(browser, cluster, "bob")
        assert _events(cluster, "user.login", "bob")[-1]["mfa_device"]["mfa_device_name"] == \
            "u2f key"
    finally:
        cluster.stop()


# --- refusals, from a software authenticator ------------------------------------------------------

class WebAPI:
    """The proxy's web API from one source address (each its own rate-limit bucket)."""

    def __init__(self, cluster: Cluster, source: str) -> None:
        self.port = cluster.ports["web"]
        self.source = source

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=10,
                                           source_address=(self.source, 0))
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        assert status == 200, (status, answer)
        return answer


def _soft_signup(cluster: Cluster, api: WebAPI, user: str, key: SoftAuthenticator) -> None:
    token = _signup_url(cluster, user).rsplit("/", 1)[1]
    options = api.ok("POST", f"/webapi/mfa/token/{token}/registerchallenge", {})
    credential = key.create(json.dumps(options["webauthn_public_key"]), _origin(cluster))
    api.ok("PUT", "/webapi/users/password/token", {
        "token": token, "password": PASSWORD, "webauthn_creation_response": credential,
        "device_name": "soft"})


def _begin(api: WebAPI, user: str) -> str:
    answer = api.ok("POST", "/webapi/mfa/login/begin", {"user": user, "pass": PASSWORD})
    return json.dumps(answer["webauthn_public_key"])


def _finish(api: WebAPI, user: str, assertion: dict[str, Any]) -> tuple[int, Any]:
    return api.call("POST", "/webapi/mfa/login/finishsession",
                    {"user": user, "webauthn_challenge_response": assertion})


def _refused(cluster: Cluster, answer: tuple[int, Any], user: str, words: str) -> None:
    status, body = answer
    assert status == 403, answer
    assert words in body["error"]["message"], body
    failures = [e for e in _events(cluster, "user.login", user) if e.get("success") is False]
    assert failures and words in failures[-1]["error"], failures[-1:]


def test_wrong_origin_rp_id_replay_and_counter_are_refused_and_audited(
        keys_cluster: Cluster) -> None:
    cluster = keys_cluster
    api = WebAPI(cluster, "127.0.0.2")
    key = SoftAuthenticator()
    _soft_signup(cluster, api, "carol", key)
    origin = _origin(cluster)

    # Another site's page asking for carol's key: its origin is in the client data.
    assertion = key.get(_begin(api, "carol"), "https://evil.example.com")
    _refused(cluster, _finish(api, "carol", assertion), "carol",
             "origin 'https://evil.example.com'")
    # A key answering for another relying party.
    assertion = key.get(_begin(api, "carol"), origin, rp_id="evil.example.com")
    _refused(cluster, _finish(api, "carol", assertion), "carol", "another relying party")
    # A good answer logs in once; replayed, it finds no challenge.
    assertion = key.get(_begin(api, "carol"), origin)
    assert _finish(api, "carol", assertion)[1]["user"] == "carol"
    _refused(cluster, _finish(api, "carol", assertion), "carol", "already used")
    # A counter below the stored one: a cloned key.
    assert _finish(api, "carol", key.get(_begin(api, "carol"), origin, counter=50))[0] == 200
    _refused(cluster, _finish(api, "carol", key.get(_begin(api, "carol"), origin, counter=7)),
             "carol", "signature counter went backwards (7 after 50)")
    # The password is asked before any challenge, and a wrong one gets none.
    status, body = api.call("POST", "/webapi/mfa/login/begin", {"user": "carol", "pass": "nope!!"})
    assert status == 403 and "invalid username, password or second factor" in \
        body["error"]["message"]


def test_bad_key_answers_count_toward_the_lockout(keys_cluster: Cluster) -> None:
    cluster = keys_cluster
    api = WebAPI(cluster, "127.0.0.3")
    key = SoftAuthenticator()
    _soft_signup(cluster, api, "dave", key)
    for _ in range(5):
        _finish(api, "dave", key.get(_begin(api, "dave"), "https://evil.example.com"))
    status, body = api.call("POST", "/webapi/mfa/login/begin", {"user": "dave", "pass": PASSWORD})
    assert status == 403 and "user is locked" in body["error"]["message"], body
