"""tsh with security keys end to end: a real cluster (`second_factor: webauthn`, RP ID localhost),
the real tsh, and headless Chromium's virtual authenticator holding the key.

No key is attached to this machine (and no /dev/uhid to make a software one appear), so tsh
takes its browser flow: it prints a link to the proxy's /web/cli/webauthn page; the test opens
it in the same Chromium that registered the key at signup, presses the page's button, and the
browser hands the answer to tsh's callback on 127.0.0.1. tsh is run with
`--proxy=localhost:<port>` so that the page's origin matches the RP ID, as a real proxy's
public address would.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from teleport.client.keyflow import fido2_ceremony
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from tests.ctap2_softkey import SoftCtap2Device
from tests.e2e import virtual_authenticator as va
from tests.e2e.browser import check_page, wait_text, wait_until, wait_visible
from tests.e2e.cluster import NODENAME, Cluster, make_cluster
from tests.e2e.sso import tsh_following_link
from tests.e2e.test_webauthn_web import (
    PASSWORD,
    WebAPI,
    _begin,
    _origin,
    _sign_up,
    _signup_url,
    _soft_signup,
)
from tests.webauthn_softkey import SoftAuthenticator

pytestmark = pytest.mark.slow

LINK = re.compile(r"^ (https://localhost:\d+/web/cli/webauthn#\S+)$")


def _proxy(cluster: Cluster) -> str:
    return f"--proxy=localhost:{cluster.ports['web']}"


def tsh_with_key(cluster: Cluster, args: list[str], answer: Callable[[str], None], *,
                 stdin: str = "", timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run tsh, hand the key page's link it prints to `answer`, return tsh's result."""
    return tsh_following_link(cluster, [*args, "--browser=none"], LINK, answer, stdin=stdin,
                              timeout=timeout)


def press_key_button(browser: webdriver.Chrome, check: bool = False) -> Callable[[str], None]:
    """What a person does with the link: open it, press the button (the key answers)."""
    def answer(link: str) -> None:
        browser.get(link)
        button = wait_visible(browser, "#cli-go")
        if check:
            assert "log in to" in browser.find_element(By.ID, "cli-what").text
            assert "#" not in browser.current_url  # the challenge left the address bar
            check_page(browser, "tsh-key", widths=("laptop", "phone"), schemes=("light",))
        button.click()
        # Read by script: the page is navigating away, so elements found before go stale.
        wait_until(browser, lambda d: d.current_url.startswith("http://127.0.0.1:") and
                   d.execute_script("return document.querySelector('h1')?.textContent") ==
                   "Done", "the browser did not hand the answer to tsh")
    return answer


def _logins(cluster: Cluster, user: str) -> list[dict[str, object]]:
    return [e for e in cluster.audit_events()
            if e.get("event") == "user.login" and e.get("user") == user]


def test_tsh_login_with_a_key_in_the_browser_then_ssh(browser: webdriver.Chrome,
                                                       keys_cluster: Cluster) -> None:
    cluster = keys_cluster
    browser.get(f"{_origin(cluster)}/web/login")
    va.add(browser, transport="usb")
    _sign_up(browser, cluster, "alice", "yubikey")

    # A wrong password gets no challenge: no link, one line, exit 1.
    wrong = tsh_with_key(cluster, ["login", _proxy(cluster), "--user=alice", "--insecure"],
                         lambda link: pytest.fail(f"a link after a wrong password: {link}"),
                         stdin="wrong password\n")
    assert wrong.returncode == 1, wrong
    assert wrong.stderr.strip() == "ERROR: invalid username, password or second factor"
    assert "webauthn" not in wrong.stdout

    result = tsh_with_key(cluster, ["login", _proxy(cluster), "--user=alice", "--insecure"],
                          press_key_button(browser, check=True), stdin=f"{PASSWORD}\n")
    assert result.returncode == 0, result
    assert "Logged in as: alice" in result.stdout
    login = _logins(cluster, "alice")[-1]
    assert (login["success"], login["method"]) == (True, "local")
    device = login["mfa_device"]
    assert isinstance(device, dict)
    assert (device["mfa_device_name"], device["mfa_device_type"]) == ("yubikey", "WebAuthn")
    ssh = cluster.tsh("ssh", f"root@{NODENAME}", "id", "-un")
    assert ssh.stdout.strip() == "root"

    # The page sends answers only to tsh on this computer.
    browser.get(f"{_origin(cluster)}/web/cli/webauthn#kind=get&state=abcdefghijklmnopqrst"
                "&options=%7B%22challenge%22%3A%22AA%22%7D&callback=https%3A%2F%2Fevil.example%2F")
    wait_text(browser, "#cli-error", "does not lead back to tsh on this computer")
    assert not browser.find_element(By.ID, "cli-go").is_displayed()


def test_tsh_mfa_add_ls_rm_and_passwordless_login(browser: webdriver.Chrome,
                                                  keys_cluster: Cluster) -> None:
    cluster = keys_cluster
    browser.get(f"{_origin(cluster)}/web/login")
    usb = va.add(browser, transport="usb")
    _sign_up(browser, cluster, "bob", "yubikey")
    login = ["login", _proxy(cluster), "--user=bob", "--insecure"]
    assert tsh_with_key(cluster, login, press_key_button(browser),
                        stdin=f"{PASSWORD}\n").returncode == 0

    # A passkey from another authenticator (the first one unplugged).
    va.remove(browser, usb)
    passkey = va.add(browser, transport="internal", resident_key=True, user_verification=True,
                     user_verified=True)
    added = tsh_with_key(cluster, ["mfa", "add", "--name=laptop", "--allow-passwordless"],
                         press_key_button(browser))
    assert added.returncode == 0, added
    assert 'MFA device "laptop" added.' in added.stdout
    assert va.credentials(browser, passkey)[0].resident

    listed = cluster.tsh("mfa", "ls").stdout.splitlines()
    assert listed[0].split() == ["Name", "Type", "Added", "at", "Last", "used"]
    assert [row.split()[0] for row in listed[2:]] == ["yubikey", "laptop"]
    assert "WebAuthn (passwordless)" in listed[3]

    assert cluster.tsh("mfa", "rm", "yubikey").stdout.strip() == 'MFA device "yubikey" removed.'
    assert [row.split()[0] for row in cluster.tsh("mfa", "ls").stdout.splitlines()[2:]] == \
        ["laptop"]
    last = cluster.tsh("mfa", "rm", "laptop", check=False)
    assert last.returncode == 1
    assert last.stderr.strip() == \
        "ERROR: cannot remove the last MFA device while second_factor is webauthn"

    # The passkey alone: no user name, no password.
    cluster.tsh("logout")
    alone = tsh_with_key(cluster, ["login", _proxy(cluster), "--auth=passwordless", "--insecure"],
                         press_key_button(browser))
    assert alone.returncode == 0, alone
    assert "Logged in as: bob" in alone.stdout
    event = _logins(cluster, "bob")[-1]
    assert (event["success"], event["method"]) == (True, "passwordless")
    assert cluster.tsh("ssh", f"root@{NODENAME}", "id", "-un").stdout.strip() == "root"


def test_the_certificate_route_refuses_replays_and_counts_bad_answers(
        keys_cluster: Cluster) -> None:
    """`POST /webapi/mfa/login/finish` (what tsh calls) checks as the web login does."""
    cluster = keys_cluster
    api = WebAPI(cluster, "127.0.0.4")
    key = SoftAuthenticator()
    _soft_signup(cluster, api, "carol", key)
    ssh_pub = sshkeys.public_key_of(sshkeys.generate_private_key("ed25519"))
    tls_pub = tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()).decode()

    def finish(assertion: dict[str, object]) -> tuple[int, dict[str, object]]:
        return api.call("POST", "/webapi/mfa/login/finish", {
            "user": "carol", "webauthn_challenge_response": assertion, "pub_key": ssh_pub,
            "tls_pub_key": tls_pub, "ttl": "1h"})

    good = key.get(_begin(api, "carol"), _origin(cluster))
    status, answer = finish(good)
    assert status == 200, answer
    assert answer["username"] == "carol" and str(answer["cert"]).startswith("ssh-ed25519-cert")
    status, answer = finish(good)
    assert status == 403 and "already used" in str(answer)
    failures = [e for e in _logins(cluster, "carol") if e.get("success") is False]
    assert "already used" in str(failures[-1]["error"])
    for _ in range(4):  # with the replay: five bad answers lock the name
        finish(key.get(_begin(api, "carol"), "https://evil.example.com"))
    status, answer = api.call("POST", "/webapi/mfa/login/begin",
                              {"user": "carol", "pass": PASSWORD})
    assert status == 403 and "user is locked" in str(answer), answer


def test_tshs_python_fido2_half_against_a_software_ctap2_key(keys_cluster: Cluster) -> None:
    """python-fido2 (tsh's path for a key plugged into the computer) with a software CTAP2
    device: it registers at signup and answers a login the auth server accepts. Only the HID
    discovery (`CtapHidDevice.list_devices`) is not exercised: that needs /dev/uhid."""
    cluster = keys_cluster
    api = WebAPI(cluster, "127.0.0.5")
    device = SoftCtap2Device()
    origin = _origin(cluster)
    token = _signup_url(cluster, "dora").rsplit("/", 1)[1]
    options = api.ok("POST", f"/webapi/mfa/token/{token}/registerchallenge", {})
    created = fido2_ceremony(device, "create", options["webauthn_public_key"], origin)
    api.ok("PUT", "/webapi/users/password/token", {
        "token": token, "password": PASSWORD, "webauthn_creation_response": created,
        "device_name": "usb key"})

    challenge = json.loads(_begin(api, "dora"))
    assertion = fido2_ceremony(device, "get", challenge, origin)
    status, answer = api.call("POST", "/webapi/mfa/login/finish", {
        "user": "dora", "webauthn_challenge_response": assertion,
        "pub_key": sshkeys.public_key_of(sshkeys.generate_private_key("ed25519")),
        "tls_pub_key": tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()).decode()})
    assert status == 200, answer
    assert answer["username"] == "dora"
    event = _logins(cluster, "dora")[-1]
    assert event["mfa_device"]["mfa_device_name"] == "usb key"  # type: ignore[index]


def test_second_factor_on_asks_an_app_user_for_the_code(tmp_path: Path) -> None:
    """`second_factor: on` with keys: tsh asks the password, the proxy says this user has no
    key, and tsh asks the authenticator app's code instead."""
    cluster = make_cluster(tmp_path)
    cluster.set_authentication({"type": "local", "second_factor": "on",
                              "webauthn": {"rp_id": "localhost"}})
    cluster.start()
    try:
        assert cluster.web("GET", "/webapi/ping")["auth"]["webauthn"] == {"rp_id": "localhost"}
        totp = cluster.signup("erin", "root", PASSWORD, roles="access")
        result = cluster.login("erin", PASSWORD, totp, check=False)
        assert result.returncode == 0, result
        assert "Logged in as: erin" in result.stdout
        wrong = cluster.tsh("login", f"--proxy={cluster.web_addr}", "--user=erin", "--insecure",
                            input=f"{PASSWORD}\n000000\n", check=False)
        assert wrong.returncode == 1
        assert wrong.stderr.strip() == "ERROR: invalid username, password or second factor"
    finally:
        cluster.stop()
