"""The web terminal's websocket against the real daemon, spoken as the page speaks it.

The browser tests (test_web_ui.py) drive the same path through Chromium; these check the wire
protocol and what the node and the audit log see, without a browser in between.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster
from tests.e2e.test_interactive import Terminal, session_url

pytestmark = pytest.mark.slow

PASSWORD = "web terminal password"
COOKIE = "__Host-teleport-session"


@dataclass
class Page:
    """A logged-in page: the session's cookie and bearer token, as a browser holds them."""

    cluster: Cluster
    cookie: str
    token: str

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.cookie}", "Origin": f"https://{self.cluster.web_addr}",
                **extra}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = self.headers(Authorization=f"Bearer {self.token}")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http, \
                http.request(method, f"https://{self.cluster.web_addr}{path}", json=body,
                             headers=headers, ssl=False) as resp:
            return resp.status, await resp.json()


async def _web_login(cluster: Cluster, user: str, code: str) -> Page:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http, http.post(
            f"https://{cluster.web_addr}/webapi/sessions/web", ssl=False,
            json={"user": user, "pass": PASSWORD, "second_factor_token": code}) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
        match = re.search(rf"{COOKIE}=([^;]+)", resp.headers["Set-Cookie"])
        assert match
        return Page(cluster, match.group(1), answer["token"])


class WebTerm:
    """The page's side of one terminal websocket: type, resize, read until text appears."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.output = ""
        self.messages: list[dict[str, Any]] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    async def type(self, text: str) -> None:
        await self.ws.send_bytes(text.encode())

    async def resize(self, cols: int, rows: int) -> None:
        await self.ws.send_str(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    async def expect(self, needle: str, timeout: float = 20) -> str:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"did not see {needle!r} in {self.output[-2000:]!r}")
            msg = await asyncio.wait_for(self.ws.receive(), left)
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.output += self._decoder.decode(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(msg.data))
            else:
                raise AssertionError(f"socket closed ({msg.type}, {self.ws.close_code}) before "
                                     f"{needle!r}: {self.output[-2000:]!r} {self.messages}")
        return self.output

    async def connected(self, timeout: float = 20) -> dict[str, Any]:  # noqa: ASYNC109
        """Wait for the server's `session` message: the shell (or the joined session) is ready."""
        async with asyncio.timeout(timeout):
            while not any(m["type"] == "session" for m in self.messages):
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.messages.append(json.loads(msg.data))
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.output += self._decoder.decode(msg.data)
                else:
                    raise AssertionError(f"socket closed before connecting: {self.messages}")
        return next(m for m in self.messages if m["type"] == "session")

    async def until_closed(self, timeout: float = 20) -> int | None:  # noqa: ASYNC109
        """Read to the end; return the close code."""
        deadline = time.monotonic() + timeout
        while not self.ws.closed:
            msg = await asyncio.wait_for(self.ws.receive(), max(deadline - time.monotonic(), 0.1))
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(msg.data))
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self.output += self._decoder.decode(msg.data)
        return self.ws.close_code


@asynccontextmanager
async def terminal(page: Page, token: str | None = None, source: str | None = None,
                   **query: str) -> AsyncIterator[WebTerm]:
    """Open the terminal websocket as the page does (source: the browser's own address)."""
    url = f"https://{page.cluster.web_addr}/webapi/sites/{CLUSTER}/connect"
    connector = aiohttp.TCPConnector(local_addr=(source, 0) if source else None)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                     connector=connector) as http, \
            http.ws_connect(url, params=query, headers=page.headers(), ssl=False) as ws:
        await ws.send_str(json.dumps({"token": page.token if token is None else token}))
        yield WebTerm(ws)


async def _new_user(cluster: Cluster, name: str) -> Page:
    """Add a user with `tctl users add` (role admin, login root), sign up, log in the browser way.

    A user per test: each code is accepted once and only in its window, so one user's logins
    cannot run ahead of the clock.
    """
    totp = cluster.signup(name, "root", PASSWORD)
    return await _web_login(cluster, name, totp.at(time.time() + 30))


async def _node_id(page: Page) -> str:
    status, nodes = await page.call("GET", f"/webapi/sites/{CLUSTER}/nodes")
    assert status == 200, nodes
    return next(n["id"] for n in nodes if n["name"] == NODENAME)


async def _session_start(cluster: Cluster, user: str) -> dict[str, Any]:
    """Wait for the one `session.start` of user in the audit log and return it."""

    def started() -> list[dict[str, Any]]:
        return [e for e in cluster.audit_events()
                if e["event"] == "session.start" and e.get("user") == user]

    async with asyncio.timeout(10):
        while not started():  # noqa: ASYNC110 (the audit log is a file)
            await asyncio.sleep(0.2)
    (event,) = started()
    return event


async def test_a_web_terminal_runs_a_shell_resizes_and_reports_the_exit(
        cluster: Cluster) -> None:
    page = await _new_user(cluster, "webby")
    node = await _node_id(page)
    async with terminal(page, node=node, login="root", cols="80", rows="24") as term:
        await term.type("stty size; echo web-$((40+2))-ok ✓\r")
        out = await term.expect("web-42-ok ✓")
        assert "24 80" in out
        assert term.messages[0] == {"type": "session", "node": node, "login": "root", "sid": ""}
        await term.resize(120, 40)
        await term.type("stty size; echo $TERM-term\r")
        await term.expect("40 120")
        await term.expect("xterm-256color-term")
        await term.type("exit 3\r")
        assert await term.until_closed() == 1000
    assert term.messages[-1] == {"type": "exit", "status": 3}

    event = await _session_start(cluster, "webby")
    assert event["login"] == "root" and event["server_id"] == node


async def test_the_node_audits_and_shows_the_browsers_address(cluster: Cluster) -> None:
    """The proxy signs the browser's address for the node (sshutils.clientaddr): the node's
    audit log and SSH_CLIENT name 127.0.0.3, where the browser is, not the proxy's 127.0.0.1."""
    page = await _new_user(cluster, "webwatcher")
    node = await _node_id(page)
    async with terminal(page, source="127.0.0.3", node=node, login="root") as term:
        await term.type("echo client=$SSH_CLIENT=$((1+1))\r")
        out = await term.expect("=2")
        await term.type("exit\r")
        await term.until_closed()
    assert re.search(r"client=127\.0\.0\.3 \d+ \d+=2", out), out

    event = await _session_start(cluster, "webwatcher")
    assert event["addr.remote"].startswith("127.0.0.3:"), event


async def test_a_wrong_token_or_a_logout_closes_the_door(cluster: Cluster) -> None:
    page = await _new_user(cluster, "webleaver")
    node = await _node_id(page)
    async with terminal(page, token="0" * 64, node=node, login="root") as term:
        assert await term.until_closed() == 4401
    async with terminal(page, node=node, login="root") as open_term:
        await open_term.type("echo before-logout-$((1+1))\r")
        await open_term.expect("before-logout-2")
        status, _ = await page.call("DELETE", "/webapi/sessions/web", {})
        assert status == 200
        assert await open_term.until_closed() == 4401
    assert open_term.messages[-1] == {"type": "error", "message": "logged out"}
    status, answer = await page.call("GET", f"/webapi/sites/{CLUSTER}/nodes")
    assert status == 403, answer
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with terminal(page, node=node, login="root"):
            pass
    assert refused.value.status == 403


async def test_a_login_the_user_may_not_use_is_refused_with_a_message(
        cluster: Cluster) -> None:
    page = await _new_user(cluster, "webstranger")
    node = await _node_id(page)
    async with terminal(page, node=node, login="nobody-here") as term:
        assert await term.until_closed() == 1011
    assert term.messages[-1]["type"] == "error"
    assert "access denied to nobody-here" in term.messages[-1]["message"]


async def test_the_browser_joins_a_live_tsh_session_and_both_type(
        cluster: Cluster, joe: dict[str, Any]) -> None:
    """`teleport status`'s session URL names the node and session the page joins."""
    page = await _new_user(cluster, "webadmin")  # tctl users add: role admin
    env = {**os.environ, **cluster.env, "TERM": "xterm"}
    owner = Terminal([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"], env)
    try:
        owner.expect("#")
        _, cluster_name, node, login, sid = session_url(owner)
        assert (cluster_name, login) == (CLUSTER, "root")
        async with terminal(page, node=node, login=login, sid=sid) as term:
            await term.connected()  # the node has attached the page to the session
            owner.type("echo from-tsh-$((40+2))\n")
            await term.expect("from-tsh-42")
            await term.type("echo from-web-$((50+5))\r")
            owner.expect("from-web-55")
            owner.type("exit\n")
            assert await term.until_closed() == 1000
    finally:
        owner.type("exit\n")
        owner.close()
    joins = [e for e in cluster.audit_events()
             if e.get("sid") == sid and e["event"] == "session.join"]
    assert [e["user"] for e in joins] == ["webadmin"]
