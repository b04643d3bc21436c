"""A person's path through the proxy's web UI in headless Chromium, against a real cluster.

Sign up from a `tctl users add` link, log in with a TOTP read off the signup page, find the node
by label, open a terminal, join a live `tsh ssh` session, log out; a non-admin's view. Every page
visited is photographed (laptop, phone, light, dark) and checked with axe-core (`check_page`);
the pictures land in test-output/web/test_web_ui.<test>/. The wire protocol itself is checked
without a browser in test_web_terminal.py.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Literal

import pyotp
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.e2e.browser import check_page, set_width, wait_text, wait_until, wait_visible
from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster
from tests.e2e.test_interactive import Terminal, session_url

pytestmark = pytest.mark.slow

PASSWORD = "through the browser"
COOKIE = "__Host-teleport-session"
ADMIN_LINKS = ("Users", "Tokens", "Status")
#: Sessions made through the browser by one test, for a later test to look at (sid by name).
RECORDED: dict[str, str] = {}

# The console keeps xterm.js's Terminal on its container (`#terminal`); a player may keep one
# on another element. The canvas is not in the DOM: read the terminal's buffer, line by line.
_SCREEN = """
const host = arguments[0] ? document.querySelector(arguments[0])
  : [...document.querySelectorAll("div")].find((el) => el.xterm);
if (!host || !host.xterm) return null;
const buf = host.xterm.buffer.active;
const lines = [];
for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i).translateToString(true));
return lines.join("\\n");
"""

# A fetch from the page itself: same origin, the browser's cookie jar, a bearer of our choice.
_FETCH = """
const [method, path, token, done] = [arguments[0], arguments[1], arguments[2],
                                     arguments[arguments.length - 1]];
const headers = {Accept: "application/json"};
if (token) headers.Authorization = `Bearer ${token}`;
fetch(path, {method, headers, credentials: "same-origin", cache: "no-store"})
  .then(async (r) => done({status: r.status, body: await r.text()}))
  .catch((e) => done({status: 0, body: String(e)}));
"""

# A terminal websocket opened by the page as the console does, with a token of our choice.
_WEBSOCKET = """
const [url, token, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const seen = {opened: false, messages: [], code: null};
const ws = new WebSocket(url);
let finished = false;
const finish = () => { if (!finished) { finished = true; done(seen); } };
ws.onopen = () => { seen.opened = true; ws.send(JSON.stringify({token})); };
ws.onmessage = (event) => {
  if (typeof event.data !== "string") return;
  const msg = JSON.parse(event.data);
  seen.messages.push(msg);
  if (msg.type === "session") ws.close(1000);
};
ws.onclose = (event) => { seen.code = event.code; finish(); };
setTimeout(finish, 10000);
"""


# ---------------------------------------------------------------------------------------------
# Helpers: what a person does, step by step


def screen_text(driver: webdriver.Chrome, css: str = "#terminal") -> str:
    """The terminal's whole buffer as text (`css` empty: the first element holding an xterm)."""
    return driver.execute_script(_SCREEN, css) or ""


def screen_lines(driver: webdriver.Chrome, css: str = "#terminal") -> list[str]:
    """The buffer's lines, stripped, without the empty rows below the last output."""
    return [line.strip() for line in screen_text(driver, css).rstrip().splitlines()]


def wait_screen_line(driver: webdriver.Chrome, pattern: str, after: int = 0,
                     css: str = "#terminal") -> re.Match[str]:
    """Wait for a whole screen line matching `pattern` (a regex) below line `after`.

    Whole lines: the typed command echoes on the prompt's line, so only the output matches.
    """
    regex = re.compile(pattern)

    def found(d: webdriver.Chrome) -> re.Match[str] | Literal[False]:
        for line in screen_lines(d, css)[after:]:
            if match := regex.fullmatch(line):
                return match
        return False
    try:
        return wait_until(driver, found, f"no screen line matched {pattern!r}")
    except Exception as err:
        raise AssertionError(f"{err}; the screen:\n{screen_text(driver, css)}") from None


def type_in_terminal(driver: webdriver.Chrome, text: str) -> None:
    driver.find_element(By.CSS_SELECTOR, "#terminal textarea").send_keys(text)


def add_user(cluster: Cluster, name: str, *flags: str) -> str:
    """`tctl users add name root [flags]` (role admin unless flags say otherwise); return the
    signup link it prints."""
    out = cluster.tctl("users", "add", name, "root", *(flags or ("--roles=admin",))).stdout
    urls = re.findall(r"https://\S+/web/newuser/[A-Za-z0-9_-]+", out)
    assert len(urls) == 1, out
    return urls[0]


def sign_up_in_browser(driver: webdriver.Chrome, url: str, user: str) -> pyotp.TOTP:
    """Open the signup link, read the secret off the page, choose the password; return its TOTP."""
    driver.get(url)
    secret = "".join(wait_visible(driver, "#otp-secret").text.split())
    assert driver.find_element(By.ID, "user").text == user
    totp = pyotp.TOTP(secret)
    for name, value in (("password", PASSWORD), ("confirm", PASSWORD), ("otp", totp.now())):
        driver.find_element(By.NAME, name).send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#signup button[type=submit]").click()
    wait_visible(driver, "#done")
    return totp


def sign_up(cluster: Cluster, name: str, *flags: str) -> pyotp.TOTP:
    """Sign a user up without a browser (the signup page has its own tests); return its TOTP."""
    token = add_user(cluster, name, *flags).rsplit("/", 1)[1]
    totp = pyotp.TOTP(cluster.web("GET", f"/webapi/users/password/token/{token}")["otp_secret"])
    cluster.web("PUT", "/webapi/users/password/token",
                {"token": token, "password": PASSWORD, "second_factor_token": totp.now()})
    return totp


def log_in(driver: webdriver.Chrome, cluster: Cluster, user: str, totp: pyotp.TOTP,
           path: str = "/web/login", photograph: bool = False, keyboard: bool = False) -> None:
    """Log in on the login page (at `path`, maybe with a redirect) with the next window's code.

    keyboard: submit with Enter in the code field instead of clicking the button.

    The signup spent the current code and each code is accepted once: the next window's is
    within the server's allowed skew.
    """
    driver.get(f"https://{cluster.web_addr}{path}")
    wait_visible(driver, "#login-form")
    if photograph:
        check_page(driver, "login")
    driver.find_element(By.ID, "login-user").send_keys(user)
    driver.find_element(By.ID, "login-password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-otp").send_keys(totp.at(time.time() + 30))
    if keyboard:
        driver.find_element(By.ID, "login-otp").send_keys(Keys.ENTER)
    else:
        driver.find_element(By.ID, "login-submit").click()
    wait_until(driver, lambda d: "/web/login" not in d.current_url,
               f"still on the login page: {_error_text(driver)!r}")


def _error_text(driver: webdriver.Chrome) -> str:
    found = driver.find_elements(By.ID, "login-error")
    return found[0].text if found else ""


def nav_links(driver: webdriver.Chrome) -> list[str]:
    return [a.text for a in driver.find_elements(By.CSS_SELECTOR, "nav[aria-label=Main] a")]


def nodes_loaded(driver: webdriver.Chrome) -> None:
    """Wait until the node list (and with it the user's context) has been drawn."""
    wait_visible(driver, f'#nodes-table tr[data-node="{NODENAME}"]')
    wait_text(driver, "#node-count", "node")


def search_nodes(driver: webdriver.Chrome, text: str) -> str:
    """Replace the search box's text as a person types; return the count line."""
    box = driver.find_element(By.ID, "node-search")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    box.send_keys(text)
    return driver.find_element(By.ID, "node-count").text


def node_id(driver: webdriver.Chrome) -> str:
    row = driver.find_element(By.CSS_SELECTOR, f'#nodes-table tr[data-node="{NODENAME}"]')
    return row.get_attribute("data-node-id") or ""


def page_fetch(driver: webdriver.Chrome, method: str, path: str, token: str) -> dict[str, Any]:
    return driver.execute_async_script(_FETCH, method, path, token)


def page_websocket(driver: webdriver.Chrome, cluster: Cluster, token: str,
                   **query: str) -> dict[str, Any]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    url = f"wss://{cluster.web_addr}/webapi/sites/{CLUSTER}/connect?{params}"
    return driver.execute_async_script(_WEBSOCKET, url, token)


def bearer(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.CSS_SELECTOR, 'meta[name="teleport-bearer"]') \
        .get_attribute("content") or ""


def stty_size(driver: webdriver.Chrome) -> tuple[int, int]:
    """Ask the remote shell for its size; return (rows, cols) from the newest answer."""
    after = len(screen_lines(driver))  # the prompt's line: the answer comes below it
    type_in_terminal(driver, "stty size\n")
    match = wait_screen_line(driver, r"(\d+) (\d+)", after=after)
    return int(match.group(1)), int(match.group(2))


def audited(cluster: Cluster, event: str, **fields: str) -> list[dict[str, Any]]:
    """The audit events of a kind whose fields match, waiting a little for the log file."""
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in cluster.audit_events()
                 if e["event"] == event and all(e.get(k) == v for k, v in fields.items())]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# Tests


def test_sign_up_log_in_find_the_node_and_run_a_shell(cluster: Cluster,
                                                      browser: webdriver.Chrome) -> None:
    user = "webui"
    totp = sign_up_in_browser(browser, add_user(cluster, user), user)
    log_in(browser, cluster, user, totp, photograph=True, keyboard=True)

    # /web lands on the node list; tctl's default role is admin: the admin pages are offered.
    wait_until(browser, lambda d: d.current_url.endswith(f"/web/cluster/{CLUSTER}/nodes"),
               "the login did not land on the node list")
    nodes_loaded(browser)
    wait_until(browser, lambda d: all(link in nav_links(d) for link in ADMIN_LINKS),
               "an admin was not offered the admin pages")
    assert browser.find_element(By.ID, "current-user").text == user
    assert browser.find_element(By.ID, "cluster-name").text == CLUSTER
    current = browser.find_element(By.CSS_SELECTOR, "nav[aria-label=Main] a[aria-current=page]")
    assert current.text == "Nodes"
    row_css = f'#nodes-table tr[data-node="{NODENAME}"]'
    assert "env=e2e" in browser.find_element(By.CSS_SELECTOR, row_css).text

    # A label search finds the node; a label it does not have hides it.
    assert search_nodes(browser, "env=nope") == "0 of 1 nodes"
    assert not browser.find_elements(By.CSS_SELECTOR, row_css)
    assert search_nodes(browser, "env=e2e") == "1 of 1 nodes"
    wait_visible(browser, row_css)
    check_page(browser, "nodes")

    # Connect (from the keyboard) offers the user's logins; the link opens the console for root.
    browser.find_element(By.CSS_SELECTOR, f"{row_css} details.connect > summary").send_keys(
        Keys.ENTER)
    link = wait_visible(browser, f'{row_css} details.connect a[data-login="root"]')
    href = link.get_attribute("href") or ""
    assert href.endswith(f"/web/cluster/{CLUSTER}/console/node/{node_id(browser)}/root"), href
    browser.get(href)
    wait_text(browser, "#status-state", "connected")
    assert browser.find_element(By.ID, "status-target").text == f"root@{NODENAME}"
    wait_screen_line(browser, r".*# ?")  # root's prompt: the shell is ready for input

    type_in_terminal(browser, "echo web-ok\n")
    wait_screen_line(browser, "web-ok")

    # The window shrinks to a phone: the remote terminal follows.
    laptop = stty_size(browser)
    set_width(browser, "phone")
    wait_until(browser, lambda d: stty_size(d) != laptop, "stty size did not change")
    phone = stty_size(browser)
    assert phone[1] < laptop[1], (laptop, phone)
    set_width(browser, "laptop")
    check_page(browser, "console")

    type_in_terminal(browser, "exit\n")
    wait_text(browser, "#status-state", "session ended (exit status 0)")
    check_page(browser, "console-ended")
    (start,) = audited(cluster, "session.start", user=user)
    assert start["login"] == "root"
    RECORDED["web-ok"] = start["sid"]


def test_the_recording_of_the_web_session_plays_in_the_browser(
        cluster: Cluster, browser: webdriver.Chrome) -> None:
    sid = RECORDED.get("web-ok")
    assert sid, "run with the test that records the web-ok session (the one before)"
    totp = sign_up(cluster, "webviewer")  # an admin: may play everyone's sessions
    log_in(browser, cluster, "webviewer", totp,
           path=f"/web/login?redirect=/web/cluster/{CLUSTER}/recordings")
    row = wait_visible(browser, f'#recordings-table tr[data-sid="{sid}"]')
    assert "webui" in row.text and "root" in row.text, row.text
    check_page(browser, "recordings")

    row.find_element(By.CSS_SELECTOR, "a.play").click()
    wait_until(browser, lambda d: d.current_url.endswith(f"/web/cluster/{CLUSTER}/session/{sid}"),
               "the recording's link did not open the player")
    timeline = wait_visible(browser, "#player-timeline")
    wait_until(browser, lambda d: timeline.is_enabled(), "the timeline stayed disabled")
    timeline.send_keys(Keys.END)  # seek to the end: what was shown up to it is replayed
    wait_until(browser, lambda d: d.find_element(By.ID, "player").get_attribute("data-state")
               == "ended", "the player did not reach the end")
    wait_screen_line(browser, "web-ok", css="#player-terminal")
    assert browser.find_element(By.ID, "player-user").text == "webui"
    assert browser.find_element(By.ID, "player-login").text == "root"
    assert browser.find_element(By.ID, "player-node").text == NODENAME
    check_page(browser, "player")

    # Play again from the start, then pause.
    play = browser.find_element(By.ID, "player-play")
    play.click()
    wait_text(browser, "#player-state", "playing")
    play.click()
    wait_text(browser, "#player-state", "paused")


def test_the_browser_joins_a_live_tsh_session_by_its_url(
        cluster: Cluster, joe: dict[str, Any], browser: webdriver.Chrome) -> None:
    """`teleport status`'s Session URL, opened in the browser, joins the live session."""
    totp = sign_up(cluster, "webjoiner")
    env = {**os.environ, **cluster.env, "TERM": "xterm"}
    owner = Terminal([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"], env)
    try:
        owner.expect("#")
        url, _, _, login, sid = session_url(owner)
        assert login == "root"

        # The active sessions page lists it, its Join link the URL `teleport status` printed.
        log_in(browser, cluster, "webjoiner", totp,
               path=f"/web/login?redirect=/web/cluster/{CLUSTER}/sessions")
        row = wait_visible(browser, f'#sessions-table tr[data-sid="{sid}"]')
        assert "joe" in row.text and NODENAME in row.text, row.text
        join = row.find_element(By.CSS_SELECTOR, "a.join").get_attribute("href")
        assert join == url, (join, url)
        check_page(browser, "sessions")

        browser.get(url)
        wait_text(browser, "#status-state", "connected")
        wait_until(browser, lambda d: d.find_element(By.ID, "status-session")
                   .get_attribute("data-sid") == sid, "the page did not join the session")

        owner.type("echo from-tsh-$((40+2))\n")
        wait_screen_line(browser, "from-tsh-42")
        type_in_terminal(browser, "echo from-web-$((50+5))\n")
        owner.expect("from-web-55")
        owner.type("exit\n")
        wait_text(browser, "#status-state", "session ended")
    finally:
        owner.type("exit\n")
        owner.close()
    joins = audited(cluster, "session.join", sid=sid)
    assert [e["user"] for e in joins] == ["webjoiner"], joins
    leaves = audited(cluster, "session.leave", sid=sid, user="webjoiner")
    assert len(leaves) == 1, leaves


def test_the_audit_viewer_finds_the_session_start(cluster: Cluster,
                                                 browser: webdriver.Chrome) -> None:
    sid = RECORDED.get("web-ok")
    assert sid, "run with the test that records the web-ok session (the first)"
    totp = sign_up(cluster, "webauditor")
    log_in(browser, cluster, "webauditor", totp,
           path=f"/web/login?redirect=/web/cluster/{CLUSTER}/audit")
    wait_visible(browser, "#audit-table tr.event")  # the last 24 hours, newest first
    check_page(browser, "audit")

    browser.find_element(By.ID, "audit-type").send_keys("session.start")
    browser.find_element(By.ID, "audit-search").send_keys(sid)
    browser.find_element(By.ID, "audit-submit").click()
    shown = ("return [...document.querySelectorAll('#audit-table tr.event')]"
             ".map((row) => row.dataset.event)")  # read at once: the table is redrawn
    wait_until(browser, lambda d: d.execute_script(shown) == ["session.start"],
               "the search did not narrow to the one session.start")
    row = browser.find_element(By.CSS_SELECTOR, "#audit-table tr.event")
    assert "webui" in row.text, row.text
    row.find_element(By.CSS_SELECTOR, "button.json-toggle").click()
    json_text = wait_visible(browser, "#audit-table tr.event-json pre").text
    assert f'"sid": "{sid}"' in json_text and '"event": "session.start"' in json_text, json_text


def test_an_admin_invites_a_user_and_visits_the_admin_pages(cluster: Cluster,
                                                            browser: webdriver.Chrome) -> None:
    totp = sign_up(cluster, "webinviter")
    log_in(browser, cluster, "webinviter", totp, path="/web/login?redirect=/web/users")
    wait_visible(browser, '#users-table tr[data-user="webinviter"]')
    check_page(browser, "users")
    browser.find_element(By.ID, "invite-name").send_keys("invitee")
    browser.find_element(By.ID, "invite-logins").send_keys("root")
    browser.find_element(By.ID, "invite-submit").click()
    link = wait_visible(browser, "#invite-result #invite-url").get_attribute("value") or ""
    assert re.fullmatch(rf"https://{re.escape(cluster.web_addr)}/web/newuser/[A-Za-z0-9_-]+",
                        link), link
    wait_visible(browser, '#users-table tr[data-user="invitee"]')

    browser.get(f"https://{cluster.web_addr}/web/tokens")
    wait_visible(browser, "#token-form")
    check_page(browser, "tokens")
    browser.get(f"https://{cluster.web_addr}/web/cluster/{CLUSTER}/status")
    assert wait_visible(browser, "#status-cluster").text == CLUSTER
    check_page(browser, "status")

    browser.get(link)  # the link works: the invitee's signup page
    assert wait_visible(browser, "#user").text == "invitee"


def test_logging_out_refuses_the_old_session_on_the_api_and_the_websocket(
        cluster: Cluster, browser: webdriver.Chrome) -> None:
    totp = sign_up(cluster, "webleaving")
    log_in(browser, cluster, "webleaving", totp)
    nodes_loaded(browser)
    token, node = bearer(browser), node_id(browser)
    cookie = browser.get_cookie(COOKIE)
    assert token and cookie and cookie["httpOnly"] and cookie["secure"], cookie
    assert cookie.get("sameSite") == "Strict", cookie
    nodes_api = f"/webapi/sites/{CLUSTER}/nodes"

    # Before: the page's bearer and cookie are good for the API and a terminal.
    assert page_fetch(browser, "GET", nodes_api, token)["status"] == 200
    before = page_websocket(browser, cluster, token, node=node, login="root")
    assert before["opened"] and before["messages"][:1] == [
        {"type": "session", "sid": "", "node": node, "login": "root"}], before

    browser.find_element(By.ID, "logout").click()
    wait_visible(browser, "#login-form")
    assert browser.get_cookie(COOKIE) is None, "logout left the session cookie"

    # Bring the old cookie back, as a thief who copied it would: still refused.
    browser.add_cookie({"name": COOKIE, "value": cookie["value"], "path": "/", "secure": True,
                        "httpOnly": True, "sameSite": "Strict"})
    refused = page_fetch(browser, "GET", nodes_api, token)
    assert refused["status"] == 403, refused
    after = page_websocket(browser, cluster, token, node=node, login="root")
    assert not any(m["type"] == "session" for m in after["messages"]), after
    assert not after["opened"] or after["code"] == 4401, after

    # And the pages send the browser to log in again.
    browser.get(f"https://{cluster.web_addr}/web/cluster/{CLUSTER}/nodes")
    wait_visible(browser, "#login-form")
    assert "/web/login?redirect=" in browser.current_url


def test_a_non_admin_sees_no_admin_pages_and_is_refused_on_their_api(
        cluster: Cluster, browser: webdriver.Chrome) -> None:
    totp = sign_up(cluster, "webplain", "--roles=access")
    log_in(browser, cluster, "webplain", totp)
    nodes_loaded(browser)
    links = nav_links(browser)
    assert "Nodes" in links and not set(ADMIN_LINKS) & set(links), links

    token = bearer(browser)
    for path in ("/webapi/users", "/webapi/tokens", f"/webapi/sites/{CLUSTER}/status",
                 f"/webapi/sites/{CLUSTER}/events/search"):
        answer = page_fetch(browser, "GET", path, token)
        assert answer["status"] == 403, (path, answer)

    browser.get(f"https://{cluster.web_addr}/web/users")  # typed in by hand
    wait_text(browser, "#users-error", "for cluster administrators")
    assert not browser.find_elements(By.ID, "invite-form")


def test_login_mistakes_say_the_same_for_every_name_and_the_terminal_speaks_utf8(
        cluster: Cluster, browser: webdriver.Chrome) -> None:
    """A wrong password, a wrong code and an unknown user read alike on the login page; after
    logging in, non-ASCII text typed into the terminal comes back intact."""
    totp = sign_up(cluster, "webtypist")
    messages = []
    for user, password, code in (("webtypist", "wrong password", totp.now()),
                                 ("webtypist", PASSWORD, "000000"),
                                 ("nobody-by-this-name", PASSWORD, totp.now())):
        browser.get(f"https://{cluster.web_addr}/web/login")
        wait_visible(browser, "#login-form")
        for field, value in (("login-user", user), ("login-password", password),
                             ("login-otp", code)):
            browser.find_element(By.ID, field).send_keys(value)
        browser.find_element(By.ID, "login-submit").click()
        messages.append(wait_visible(browser, "#login-error").text)
        assert "/web/login" in browser.current_url
    assert len(set(messages)) == 1 and "invalid" in messages[0], messages
    check_page(browser, "login-error")

    log_in(browser, cluster, "webtypist", totp)
    nodes_loaded(browser)
    browser.get(f"https://{cluster.web_addr}/web/cluster/{CLUSTER}/console/node/"
                f"{node_id(browser)}/root")
    wait_text(browser, "#status-state", "connected")
    wait_screen_line(browser, r".*# ?")
    # Text as an input method or a paste delivers it (WebDriver's key events are ASCII only).
    browser.find_element(By.CSS_SELECTOR, "#terminal textarea").click()
    browser.execute_cdp_cmd("Input.insertText", {"text": "echo grüße-✓-日本"})
    type_in_terminal(browser, "\n")
    wait_screen_line(browser, "grüße-✓-日本")
