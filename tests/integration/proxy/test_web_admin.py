"""The web UI's admin and audit API: users, join tokens, status and event search, as the user.

The auth API and the web proxy run in-process (tests/integration/proxy/test_web.py's fixture),
the audit log is a real `dir` log; a browser is played by hand (cookie, bearer token, Origin),
as in test_web_sessions.py. The proxy calls the auth API with each session's own certificate,
so whether a page works is the auth server's decision: these tests check it end to end.

Codes: every user signs up with the code of the clock's window and logs in with the next
window's (accepted as one step of drift), so the fake clock never runs ahead of real time, which
the auth server's TLS layer checks the session's certificate against.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pyotp
import pytest

from teleport.events import emitter as ev
from teleport.events.filelog import FileLog
from teleport.events.sinks import FanOut
from teleport.keys.pin import ca_pin
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from tests.integration.proxy import test_web
from tests.integration.proxy.test_web import CLUSTER, PASSWORD, Cluster
from tests.integration.proxy.test_web_sessions import SAME_ORIGIN, Browser

make_cluster = test_web.make_cluster  # the in-process auth API and web proxy
EVIL = "https://evil.example.com"


@pytest.fixture
async def cluster(make_cluster: test_web.ClusterFactory, tmp_path: Path) -> Cluster:
    cluster = await make_cluster()
    # A searchable audit log, as a real auth server has; the memory copy stays for assertions.
    cluster.auth.ctx.emitter = FanOut(FileLog(tmp_path / "events", cluster.clock),
                                      [cluster.emitter])
    return cluster


async def _signup(cluster: Cluster, name: str, roles: list[str],
                  logins: list[str] | None = None) -> pyotp.TOTP:
    token = await cluster.auth.accounts.create_user_signup(name, logins or [name], roles,
                                                           created_by="admin")
    async with cluster.client() as web_client:
        info = await web_client.signup_info(token.metadata.name)
        totp = pyotp.TOTP(info.otp_secret)
        await web_client.complete_signup(token.metadata.name, PASSWORD,
                                         totp.at(cluster.clock.now()))
    return totp


def _next_code(cluster: Cluster, totp: pyotp.TOTP) -> str:
    return totp.at(cluster.clock.now() + timedelta(seconds=30))


async def _browser(cluster: Cluster, name: str, roles: list[str]) -> Browser:
    totp = await _signup(cluster, name, roles)
    browser = Browser(cluster)
    status, answer = await browser.login(name, _next_code(cluster, totp))
    assert status == 200, answer
    return browser


@pytest.fixture
async def admin(cluster: Cluster) -> Browser:
    return await _browser(cluster, "root", ["admin"])


@pytest.fixture
async def bob(cluster: Cluster) -> Browser:
    return await _browser(cluster, "bob", ["access"])


async def _ok(browser: Browser, method: str, path: str, body: Any = None,
              origin: str | None = SAME_ORIGIN) -> Any:
    status, answer, _ = await browser.send(method, path, body, origin=origin)
    assert status == 200, (method, path, answer)
    return answer


async def _users(browser: Browser) -> dict[str, dict[str, Any]]:
    return {u["name"]: u for u in await _ok(browser, "GET", "/webapi/users", origin=None)}


# --- users -----------------------------------------------------------------------------------

async def test_an_admin_lists_invites_and_deletes_users(cluster: Cluster, admin: Browser) -> None:
    users = await _users(admin)
    assert users["root"]["roles"] == ["admin"] and users["root"]["logins"] == ["root"]
    assert users["root"]["locked"] is False and users["root"]["created"]

    invite = await _ok(admin, "POST", "/webapi/users",
                       {"name": "carol", "logins": ["carol", "root"], "roles": ["access"]})
    url = urlsplit(invite["signup_url"])
    assert (invite["name"], url.scheme, url.netloc) == ("carol", "https", "proxy.example.com:3080")
    assert url.path.startswith("/web/newuser/")
    assert datetime.fromisoformat(invite["expires"]) - cluster.clock.now() == timedelta(hours=1)
    async with cluster.client() as web_client:  # the link works: the signup page's data
        assert (await web_client.signup_info(url.path.rsplit("/", 1)[1])).user == "carol"
    carol = (await _users(admin))["carol"]
    assert (carol["roles"], carol["logins"]) == (["access"], ["carol", "root"])
    created = [e for e in cluster.emitter.of_type(ev.USER_CREATE) if e["name"] == "carol"]
    assert [e["user"] for e in created] == ["root"]  # audited under the admin, not the proxy

    assert await _ok(admin, "DELETE", "/webapi/users/carol", {}) == {}
    assert "carol" not in await _users(admin)
    assert [e["user"] for e in cluster.emitter.of_type(ev.USER_DELETE)] == ["root"]


async def test_an_admin_unlocks_a_user_locked_out_by_failed_logins(
        cluster: Cluster, admin: Browser) -> None:
    totp = await _signup(cluster, "dave", ["access"])
    dave = Browser(cluster)
    for _ in range(5):
        status, _ = await dave.login("dave", "000000", password="wrong password")
        assert status == 403
    locked = (await _users(admin))["dave"]
    assert locked["locked"] is True and "failed login" in locked["locked_message"]
    status, answer = await dave.login("dave", _next_code(cluster, totp))
    assert status == 403 and "locked" in answer["error"]["message"]

    assert await _ok(admin, "POST", "/webapi/users/dave/unlock", {}) == {}
    assert (await _users(admin))["dave"]["locked"] is False
    updates = [e for e in cluster.emitter.of_type(ev.USER_UPDATE) if e["name"] == "dave"]
    assert [e["user"] for e in updates] == ["root"]
    # The failed attempts are gone too: one more wrong password does not lock dave again.
    status, _ = await dave.login("dave", "000000", password="wrong password")
    assert status == 403
    status, answer = await dave.login("dave", _next_code(cluster, totp))  # unused while locked
    assert status == 200, answer


async def test_an_admin_unlocks_a_user_an_administrator_locked(
        cluster: Cluster, admin: Browser) -> None:
    await _signup(cluster, "erin", ["access"])
    user = await cluster.auth.accounts.get_user("erin")
    status = user.spec.status.model_copy(update={"is_locked": True, "locked_message": "audit"})
    await cluster.auth.accounts.upsert_user(user.model_copy(update={"spec": user.spec.model_copy(
        update={"status": status})}), actor="admin")
    assert (await _users(admin))["erin"]["locked_message"] == "audit"
    await _ok(admin, "POST", "/webapi/users/erin/unlock", {})
    assert not (await cluster.auth.accounts.get_user("erin")).spec.status.is_locked



async def test_an_admin_resets_a_user_who_then_chooses_new_credentials(
        cluster: Cluster, admin: Browser) -> None:
    totp = await _signup(cluster, "fay", ["access"])
    answer = await _ok(admin, "POST", "/webapi/users/fay/reset", {})
    assert answer["name"] == "fay"
    assert answer["signup_url"].startswith("https://proxy.example.com:3080/web/reset/")
    assert datetime.fromisoformat(answer["expires"]) - cluster.clock.now() == timedelta(hours=8)
    status, refused = await Browser(cluster).login("fay", _next_code(cluster, totp))
    assert status == 403, refused  # the old password stopped working at once
    token = answer["signup_url"].rsplit("/", 1)[1]
    info = await cluster.auth.accounts.get_signup_info(token)
    assert info.user == "fay" and info.usage == "reset"


# --- join tokens -----------------------------------------------------------------------------

async def test_an_admin_creates_lists_and_revokes_join_tokens(
        cluster: Cluster, admin: Browser) -> None:
    created = await _ok(admin, "POST", "/webapi/tokens", {"roles": ["node"], "ttl": "15m"})
    tls = await cluster.auth.certs.get_ca("tls")
    assert created["ca_pin"] == ca_pin(tls.trusted_tls_certs()[0].encode())
    assert created["auth_server"] == "proxy.example.com:3080" and created["roles"] == ["node"]
    assert datetime.fromisoformat(created["expires"]) - cluster.clock.now() == \
        timedelta(minutes=15)
    both = await _ok(admin, "POST", "/webapi/tokens", {"roles": ["node", "proxy"], "ttl": "1h"})
    listed = {t["token"]: t["roles"] for t in await _ok(admin, "GET", "/webapi/tokens",
                                                         origin=None)}
    assert listed == {created["token"]: ["node"], both["token"]: ["node", "proxy"]}

    assert await _ok(admin, "DELETE", f"/webapi/tokens/{created['token']}", {}) == {}
    listed = {t["token"] for t in await _ok(admin, "GET", "/webapi/tokens", origin=None)}
    assert listed == {both["token"]}
    assert [e["user"] for e in cluster.emitter.of_type(ev.JOIN_TOKEN_DELETE)] == ["root"]


@pytest.mark.parametrize(("body", "message"), [
    ({"roles": ["auth"], "ttl": "1h"}, "node, proxy or both"),
    ({"roles": [], "ttl": "1h"}, "roles"),
    ({"roles": ["node"], "ttl": "soon"}, "soon"),
    ({"roles": ["node"], "ttl": "-5m"}, "positive"),
])
async def test_a_bad_token_request_is_a_clear_400(admin: Browser, body: dict[str, Any],
                                                 message: str) -> None:
    status, answer, _ = await admin.send("POST", "/webapi/tokens", body, origin=SAME_ORIGIN)
    assert status == 400 and message in answer["error"]["message"], answer


# --- status ----------------------------------------------------------------------------------

def _server(kind: str, uuid: str, hostname: str, addr: str, public_addr: str = "") -> Server:
    return Server(kind=kind, metadata=Metadata(name=uuid, expires=None),
                  spec=ServerSpec(addr=addr, hostname=hostname, public_addr=public_addr))


async def test_an_admin_reads_the_cluster_status(cluster: Cluster, admin: Browser) -> None:
    hosts = cluster.auth.hosts
    await hosts.upsert_server(_server("auth_server", "auth-1", "auth", "10.0.0.1:3025"))
    await hosts.upsert_server(_server("proxy", "proxy-1", "proxy", "10.0.0.2:3023",
                                      "proxy.example.com:3080"))
    for i in range(3):
        await hosts.upsert_server(_server("node", f"node-{i}", f"node{i}", f"10.0.1.{i}:3022"))
    status = await _ok(admin, "GET", f"/webapi/sites/{CLUSTER}/status", origin=None)
    tls = await cluster.auth.certs.get_ca("tls")
    assert status["cluster"] == CLUSTER and status["version"]
    assert status["ca_pin"] == ca_pin(tls.trusted_tls_certs()[0].encode())
    assert status["auth_servers"] == [{"id": "auth-1", "hostname": "auth",
                                       "addr": "10.0.0.1:3025", "public_addr": ""}]
    assert status["proxies"] == [{"id": "proxy-1", "hostname": "proxy", "addr": "10.0.0.2:3023",
                                  "public_addr": "proxy.example.com:3080"}]
    assert status["nodes_online"] == 3
    status_code, _, _ = await admin.send("GET", "/webapi/sites/other.example.com/status")
    assert status_code == 404


# --- the audit log ---------------------------------------------------------------------------

async def _search(browser: Browser, **params: str) -> dict[str, Any]:
    answer: dict[str, Any] = await _ok(
        browser, "GET", f"/webapi/sites/{CLUSTER}/events/search?{urlencode(params)}", origin=None)
    return answer


async def test_an_admin_searches_the_audit_log_newest_first(
        cluster: Cluster, admin: Browser) -> None:
    emitter = cluster.auth.emitter
    old = ev.make_event(ev.EXEC, cluster.clock, user="ann", command="too old")
    old["time"] = (cluster.clock.now() - timedelta(days=2)).strftime(ev.TIME_FORMAT)
    await emitter.emit(old)
    for i in range(5):
        cluster.clock.advance(timedelta(seconds=1))
        await emitter.emit(ev.make_event(ev.EXEC, cluster.clock, user="ann",
                                         command=f"make Target-{i}"))
    execs = await _search(admin, type=ev.EXEC)
    assert [e["command"] for e in execs["events"]] == [f"make Target-{i}" for i in range(4, -1, -1)]
    assert execs["next_key"] == ""  # the default range is the last day: "too old" is not in it
    logins = (await _search(admin, type=f"{ev.USER_LOGIN},{ev.USER_CREATE}"))["events"]
    assert {e["event"] for e in logins} == {ev.USER_LOGIN, ev.USER_CREATE}

    found = await _search(admin, q="TARGET-3")
    assert [e["command"] for e in found["events"]] == ["make Target-3"]
    since = (cluster.clock.now() - timedelta(days=3)).isoformat()
    assert [e["command"] for e in (await _search(admin, q="too old", **{"from": since}))[
        "events"]] == ["too old"]

    pages, key = [], ""
    while True:
        page = await _search(admin, type=ev.EXEC, limit="2", start_key=key)
        assert len(page["events"]) <= 2
        pages.append([e["command"] for e in page["events"]])
        if not (key := page["next_key"]):
            break
    assert pages[0] == ["make Target-4", "make Target-3"]
    assert sum(pages, []) == [f"make Target-{i}" for i in range(4, -1, -1)]


@pytest.mark.parametrize(("params", "message"), [
    ({"limit": "501"}, "limit must be a number from 1 to 500"),
    ({"from": "yesterday"}, "RFC 3339"),
    ({"to": "2024-01-01T00:00:00"}, "time zone"),
    ({"q": "x" * 300}, "longer than"),
])
async def test_a_bad_search_is_a_clear_400(admin: Browser, params: dict[str, str],
                                           message: str) -> None:
    status, answer, _ = await admin.send(
        "GET", f"/webapi/sites/{CLUSTER}/events/search?{urlencode(params)}")
    assert status == 400 and message in answer["error"]["message"], answer


# --- who may ---------------------------------------------------------------------------------

ADMIN_CALLS = [  # method, path, body, the rule of the roles the auth server asks for
    ("GET", f"/webapi/sites/{CLUSTER}/events/search", None, "list on 'event'"),
    ("GET", f"/webapi/sites/{CLUSTER}/status", None, "read on 'cluster_name'"),
    ("GET", "/webapi/users", None, "list on 'user'"),
    ("POST", "/webapi/users", {"name": "mallory"}, "create on 'user'"),
    ("DELETE", "/webapi/users/root", {}, "delete on 'user'"),
    ("POST", "/webapi/users/root/unlock", {}, "update on 'user'"),
    ("POST", "/webapi/users/root/reset", {}, "update on 'user'"),
    ("GET", "/webapi/tokens", None, "list on 'token'"),
    ("POST", "/webapi/tokens", {"roles": ["node"], "ttl": "1h"}, "create on 'token'"),
    ("DELETE", "/webapi/tokens/sometoken", {}, "delete on 'token'"),
]


async def test_a_user_whose_roles_do_not_allow_it_is_refused_by_the_auth_server(
        cluster: Cluster, admin: Browser, bob: Browser) -> None:
    for method, path, body, rule in ADMIN_CALLS:
        before = len(cluster.emitter.events)
        status, answer, _ = await bob.send(method, path, body, origin=SAME_ORIGIN)
        assert status == 403, (rule, answer)
        refusal = f"no role allows {rule} (roles: access)"
        assert answer["error"]["message"] == refusal
        refusals = [(e["event"], e["user"], e["success"], e["error"])
                    for e in cluster.emitter.events[before:]]
        assert refusals == [(ev.AUTH, "bob", False, refusal)]
    assert "root" in await _users(admin) and "mallory" not in await _users(admin)


async def test_a_demoted_admin_is_refused_at_once(cluster: Cluster, admin: Browser) -> None:
    await _users(admin)
    user = await cluster.auth.accounts.get_user("root")
    await cluster.auth.accounts.upsert_user(user.model_copy(update={"spec": user.spec.model_copy(
        update={"roles": ["access"]})}), actor="admin")
    status, answer, _ = await admin.send("GET", "/webapi/users")
    assert status == 403 and "no role allows list on 'user'" in answer["error"]["message"]


async def test_a_logged_out_session_is_refused(admin: Browser) -> None:
    await _ok(admin, "DELETE", "/webapi/sessions/web", {})
    for method, path, body, route in ADMIN_CALLS:
        status, answer, _ = await admin.send(method, path, body, origin=SAME_ORIGIN)
        assert status == 403 and "not logged in" in answer["error"]["message"], (route, answer)


async def test_the_sessions_auth_client_is_closed_at_logout_and_expiry(
        cluster: Cluster, admin: Browser) -> None:
    sessions = cluster.proxy.sessions
    await _users(admin)
    [client] = [c.client for c in sessions._clients.values()]
    await _users(admin)
    assert [c.client for c in sessions._clients.values()] == [client]  # one per session, kept
    await _ok(admin, "DELETE", "/webapi/sessions/web", {})
    assert not sessions._clients
    other = await _browser(cluster, "root2", ["admin"])
    await _users(other)
    assert len(sessions._clients) == 1
    cluster.clock.advance(timedelta(minutes=11))  # idle past the session's expiry
    status, _, _ = await other.send("GET", "/webapi/users")
    assert status == 403 and not sessions._clients


async def test_a_state_change_from_another_origin_is_refused(
        cluster: Cluster, admin: Browser) -> None:
    for method, path, body, route in [c for c in ADMIN_CALLS if c[0] != "GET"]:
        before = len(cluster.emitter.events)
        status, answer, _ = await admin.send(method, path, body, origin=EVIL)
        assert status == 403 and "cross-origin" in answer["error"]["message"], (route, answer)
        assert len(cluster.emitter.events) == before  # never reached the auth server
    assert "root" in await _users(admin) and "mallory" not in await _users(admin)
