"""Browser sessions on the proxy: login, the cookie and bearer pair, Origin, renewal, logout.

The web proxy and the auth API run in-process (tests/integration/proxy/test_web.py's fixture);
requests are sent the way a browser sends them, cookie and headers by hand, so each test sees
exactly what a page would.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pyotp
import pytest

from teleport.proxy.websession import CACHE_SECONDS, COOKIE
from tests.integration.proxy import test_web
from tests.integration.proxy.test_web import CLUSTER, PASSWORD, Cluster

SAME_ORIGIN = "https://{addr}"
make_cluster = test_web.make_cluster  # the in-process auth API and web proxy


@pytest.fixture
async def cluster(make_cluster: test_web.ClusterFactory) -> Cluster:
    return await make_cluster()


class Browser:
    """One browser's view of the proxy: its cookie (if any) and the page's bearer token."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.cookie = ""
        self.token = ""

    async def send(self, method: str, path: str, body: Any = None, *, bearer: bool = True,
                   cookie: bool = True, origin: str | None = None,
                   ) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
        headers: dict[str, str] = {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if bearer and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if cookie and self.cookie:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        if origin is not None:
            headers["Origin"] = origin.format(addr=self.cluster.addr)
        data = None if body is None else json.dumps(body).encode()
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session, \
                session.request(method, f"https://{self.cluster.addr}{path}", data=data,
                                headers=headers, ssl=False, allow_redirects=False) as resp:
            text = await resp.text()
            answer = json.loads(text) if resp.content_type == "application/json" else {
                "html": text}
            return resp.status, answer, resp.headers

    async def login(self, user: str, code: str, password: str = PASSWORD) -> tuple[int, dict[str, Any]]:
        status, answer, headers = await self.send(
            "POST", "/webapi/sessions/web",
            {"user": user, "pass": password, "second_factor_token": code})
        if status == 200:
            self.token = answer["token"]
            match = re.search(rf"{COOKIE}=([^;]+)", headers.get("Set-Cookie", ""))
            assert match, headers
            self.cookie = match.group(1)
        return status, answer


async def _logged_in(cluster: Cluster, name: str = "alice") -> tuple[Browser, pyotp.TOTP]:
    totp = await cluster.signup(name, [name, "root"])
    browser = Browser(cluster)
    status, answer = await browser.login(name, cluster.otp(totp))
    assert status == 200, answer
    return browser, totp


async def test_login_sets_a_strict_host_only_cookie_and_answers_a_bearer_token(
        cluster: Cluster) -> None:
    totp = await cluster.signup("bob")
    status, answer, headers = await Browser(cluster).send(
        "POST", "/webapi/sessions/web",
        {"user": "bob", "pass": PASSWORD, "second_factor_token": cluster.otp(totp)})
    assert status == 200, answer
    assert answer["user"] == "bob" and len(answer["token"]) >= 32
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert attribute in cookie, cookie
    assert "Domain" not in cookie and answer["token"] not in cookie
    expires = datetime.fromisoformat(answer["expires"])
    assert timedelta(minutes=5) < expires - cluster.clock.now() <= timedelta(minutes=10)


async def test_wrong_password_code_or_user_get_one_answer(cluster: Cluster) -> None:
    totp = await cluster.signup("alice")
    browser = Browser(cluster)
    answers = [await browser.login("alice", cluster.otp(totp), password="wrong password"),
               await browser.login("alice", "000000"),
               await browser.login("nobody", cluster.otp(totp))]
    assert {status for status, _ in answers} == {403}
    assert len({a["error"]["message"] for _, a in answers}) == 1
    assert not browser.cookie and not browser.token


async def test_calls_need_the_cookie_and_the_bearer_token_together(cluster: Cluster) -> None:
    browser, _ = await _logged_in(cluster)
    context = f"/webapi/sites/{CLUSTER}/context"
    status, answer, _ = await browser.send("GET", context)
    assert status == 200, answer
    assert answer["user"] == "alice" and answer["cluster"] == CLUSTER
    assert answer["logins"] == ["alice", "root"]
    for kwargs in ({"bearer": False}, {"cookie": False}):
        status, answer, _ = await browser.send("GET", context, **kwargs)
        assert status == 403, (kwargs, answer)
    status, nodes, _ = await browser.send("GET", f"/webapi/sites/{CLUSTER}/nodes")
    assert status == 200 and nodes == []
    browser.token = "0" * len(browser.token)
    status, _, _ = await browser.send("GET", f"/webapi/sites/{CLUSTER}/nodes")
    assert status == 403


async def test_only_a_logged_in_browser_gets_its_token_in_the_page(cluster: Cluster) -> None:
    browser, _ = await _logged_in(cluster)
    status, page, _ = await browser.send("GET", f"/web/cluster/{CLUSTER}/nodes", bearer=False)
    assert status == 200
    assert f'<meta name="teleport-bearer" content="{browser.token}">' in page["html"]
    assert '<meta name="teleport-user" content="alice">' in page["html"]
    status, _, headers = await browser.send("GET", f"/web/cluster/{CLUSTER}/nodes",
                                            bearer=False, cookie=False)
    assert status == 302 and headers["Location"].startswith("/web/login?redirect=")


async def test_a_state_change_from_another_origin_is_refused(cluster: Cluster) -> None:
    browser, _ = await _logged_in(cluster)
    status, answer, _ = await browser.send("POST", "/webapi/sessions/web/renew", {},
                                           origin="https://evil.example.com")
    assert status == 403 and "cross-origin" in answer["error"]["message"]
    status, answer, _ = await browser.send("DELETE", "/webapi/sessions/web", {},
                                           origin="https://evil.example.com")
    assert status == 403
    status, answer, _ = await browser.send("POST", "/webapi/sessions/web/renew", {},
                                           origin=SAME_ORIGIN)
    assert status == 200, answer


async def test_a_page_left_open_keeps_its_session_and_an_idle_one_lapses(cluster: Cluster) -> None:
    browser, _ = await _logged_in(cluster)
    context = f"/webapi/sites/{CLUSTER}/context"
    for _ in range(4):  # 4 x 8 minutes: longer than the idle window, kept alive by renewals
        cluster.clock.advance(timedelta(minutes=8))
        status, answer, _ = await browser.send("POST", "/webapi/sessions/web/renew", {})
        assert status == 200, answer
    cluster.clock.advance(timedelta(minutes=11))
    status, answer, _ = await browser.send("GET", context)
    assert status == 403


async def test_logout_ends_the_session_and_clears_the_cookie(cluster: Cluster) -> None:
    browser, _ = await _logged_in(cluster)
    other = Browser(cluster)
    other.cookie, other.token = browser.cookie, browser.token  # the same session, another tab
    status, _, headers = await browser.send("DELETE", "/webapi/sessions/web", {},
                                            origin=SAME_ORIGIN)
    assert status == 200
    assert f'{COOKIE}=""' in headers["Set-Cookie"] or "Max-Age=0" in headers["Set-Cookie"]
    status, _, _ = await other.send("GET", f"/webapi/sites/{CLUSTER}/context")
    assert status == 403
    status, _, headers = await other.send("GET", "/web", bearer=False)
    assert status == 302 and headers["Location"].startswith("/web/login")


async def test_deleting_the_user_ends_their_web_sessions(cluster: Cluster) -> None:
    browser, _ = await _logged_in(cluster)
    await cluster.auth.accounts.delete_user("alice", actor="admin")
    cluster.clock.advance(timedelta(seconds=CACHE_SECONDS + 1))
    status, _, _ = await browser.send("GET", f"/webapi/sites/{CLUSTER}/context")
    assert status == 403


@pytest.mark.parametrize("origin", [None, "https://evil.example.com"])
async def test_the_terminal_websocket_needs_this_origin_and_a_session(
        cluster: Cluster, origin: str | None) -> None:
    browser, _ = await _logged_in(cluster)
    path = f"/webapi/sites/{CLUSTER}/connect?node=node-1&login=alice"
    status, answer, _ = await browser.send("GET", path, origin=origin)
    assert status == 403, answer
