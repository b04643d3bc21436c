"""A person's path through the signup page in real headless Chromium, then `tsh login`.

The browser, waits, widths, dark mode, screenshots and axe-core come from tests/e2e/browser.py.
"""

from __future__ import annotations

import re
import time
import urllib.error

import pyotp
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.e2e.browser import check_page, wait_text, wait_until, wait_visible
from tests.e2e.cluster import Cluster

PASSWORD = "signup through chromium"
MISMATCH = "passwords do not match"

# Counts the page's fetch() calls; WebDriver scripts run outside the page's CSP.
_FETCH_SPY = """
window.__fetches = 0;
const realFetch = window.fetch.bind(window);
window.fetch = (...args) => { window.__fetches += 1; return realFetch(...args); };
"""


def _add_user(cluster: Cluster, name: str) -> str:
    out = cluster.tctl("users", "add", name, "root").stdout
    urls = re.findall(r"https://\S+/web/newuser/[A-Za-z0-9_-]+", out)
    assert len(urls) == 1, out
    return urls[0]


def _open_signup(driver: webdriver.Chrome, url: str, user: str) -> pyotp.TOTP:
    """Open the link like a person would and read the secret off the page; return its TOTP."""
    driver.get(url)
    secret_el = wait_visible(driver, "#otp-secret")
    assert driver.find_element(By.ID, "user").text == user
    secret = "".join(secret_el.text.split())  # what is rendered, as a person would type it
    assert re.fullmatch(r"[A-Z2-7]{16,}=*", secret), secret
    assert secret in driver.find_element(By.TAG_NAME, "body").text
    qr = driver.find_element(By.CSS_SELECTOR, "figure svg.qr")
    assert qr.is_displayed()
    assert qr.size["width"] >= 100 and qr.size["height"] >= 100, qr.size
    assert driver.find_elements(By.CSS_SELECTOR, "svg.qr path"), "the QR code has no modules"
    driver.execute_script(_FETCH_SPY)
    return pyotp.TOTP(secret)


def _fill(driver: webdriver.Chrome, password: str, confirm: str, code: str) -> None:
    for name, value in (("password", password), ("confirm", confirm), ("otp", code)):
        field = driver.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#signup button[type=submit]").click()


def _wait_done(driver: webdriver.Chrome, user: str) -> WebElement:
    done = wait_visible(driver, "#done")
    assert done.text.startswith("You can now log in with tsh login --proxy="), done.text
    assert done.text.endswith(f"--user={user}"), done.text
    assert not driver.find_element(By.ID, "setup").is_displayed()
    assert not driver.find_element(By.ID, "error").is_displayed()
    return done


def _token_alive(cluster: Cluster, url: str) -> bool:
    try:
        cluster.web("GET", f"/webapi/users/password/token/{url.rsplit('/', 1)[1]}")
        return True
    except urllib.error.HTTPError as err:
        assert err.code == 404, err
        return False


def test_sign_up_in_chromium_then_tsh_login(cluster: Cluster, browser: webdriver.Chrome) -> None:
    url = _add_user(cluster, "webuser")
    totp = _open_signup(browser, url, "webuser")
    check_page(browser, "signup")  # laptop and phone, light and dark: pictures and axe-core
    _fill(browser, PASSWORD, PASSWORD, totp.now())
    _wait_done(browser, "webuser")
    assert browser.execute_script("return window.__fetches") == 1
    check_page(browser, "signup-done")
    assert not _token_alive(cluster, url), "a completed signup must burn its token"

    cluster.login("webuser", PASSWORD, totp)  # next OTP window: the signup code is spent
    status = cluster.tsh("status").stdout
    assert "Logged in as: webuser" in status, status


def test_signup_page_reports_mistakes_and_stays_usable(cluster: Cluster,
                                                       browser: webdriver.Chrome) -> None:
    url = _add_user(cluster, "webuser2")
    totp = _open_signup(browser, url, "webuser2")
    error = browser.find_element(By.ID, "error")
    button = browser.find_element(By.CSS_SELECTOR, "#signup button[type=submit]")

    # A typo in the confirmation is caught in the page; the server is never asked.
    _fill(browser, PASSWORD, PASSWORD + "x", totp.now())
    wait_text(browser, "#error", MISMATCH)
    assert error.is_displayed() and error.text == MISMATCH
    assert browser.execute_script("return window.__fetches") == 0
    assert _token_alive(cluster, url), "a valid code reached the server and burned the token"

    # A wrong code: the server's one-line message is shown and the form stays as it was.
    now = time.time()
    valid = {totp.at(now + 30 * step) for step in range(-2, 3)}
    wrong = next(c for c in (f"{(int(totp.now()) + k * 111_111) % 1_000_000:06d}"
                             for k in range(1, 10)) if c not in valid)
    _fill(browser, PASSWORD, PASSWORD, wrong)
    wait_until(browser, lambda d: error.is_displayed() and error.text not in ("", MISMATCH),
               "the server's refusal was never shown")
    message = error.text
    assert message == "invalid one-time password: check your authenticator's clock", message
    assert "\n" not in message and "Traceback" not in message
    wait_until(browser, lambda d: button.is_enabled(), "the button stayed disabled")
    assert browser.execute_script("return window.__fetches") == 1
    assert browser.find_element(By.ID, "setup").is_displayed()
    assert not browser.find_element(By.ID, "done").is_displayed()
    assert browser.find_element(By.NAME, "password").get_attribute("value") == PASSWORD
    assert _token_alive(cluster, url), "a refused code must not burn the token"
    check_page(browser, "signup-error")

    # Still usable: the right code now signs the user up.
    _fill(browser, PASSWORD, PASSWORD, totp.now())
    _wait_done(browser, "webuser2")
    assert browser.execute_script("return window.__fetches") == 2
