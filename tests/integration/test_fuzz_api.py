"""Fuzz every JSON body of both HTTP APIs (auth API 3025, proxy web API 3080) with Hypothesis.

Bodies are arbitrary JSON, the routes' real fields with values of any type, a few lone
surrogates and raw bytes, sent to real servers on loopback as each caller that may use the
route (Admin, Proxy, Node, no certificate). Whatever arrives, the answer is never a 500, every
error is one line of JSON, and nothing is logged at ERROR or with a traceback. Bounded: a few
hundred examples per API, well under a minute.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pyotp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teleport.api import httpserver
from teleport.auth import api as auth_api
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.keys.authname import auth_server_name
from teleport.proxy.web import WebProxy
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api

CLUSTER = "fuzz.test"
ROLES = (auth_api.ADMIN, auth_api.PROXY, auth_api.NODE, auth_api.ANONYMOUS)
ONE_LINE_ERROR = re.compile(r'\{"error": \{"code": "[a-z_]+", "message": "[^\n]*"\}\}')
FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# --- strategies ------------------------------------------------------------------------------

_surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                      min_size=1, max_size=2)
_text = st.text(max_size=20) | st.sampled_from(
    ["", "node", "proxy", "Node", "1h", "30m", "-5m", "0", "99999999999999999h", "root",
     "admin", "../x", "a/b", "\x00", "ssh-ed25519 AAAA", "-----BEGIN PUBLIC KEY-----"])
_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
            | st.integers(min_value=10**30) | _text | _surrogates)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(_text, children, max_size=4),
    max_leaves=12)


def fields_of(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies with some of a route's real fields, each a string, a list of them, or any JSON."""
    value = _text | st.lists(_text, max_size=3) | json_values
    return st.fixed_dictionaries({}, optional={name: value for name in names})


def _nodes(value: Any) -> list[tuple[Any, Any]]:
    """List (container, key) of every value inside a JSON structure."""
    found: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        keys: Any = item.keys() if isinstance(item, dict) else \
            range(len(item)) if isinstance(item, list) else []
        for key in keys:
            found.append((item, key))
            stack.append(item[key])
    return found


def _mutate(args: tuple[Any, int, Any]) -> Any:
    """Replace the n-th value inside a body with another JSON value (often of a wrong type)."""
    body, n, replacement = args
    nodes = _nodes(body)
    if nodes:
        container, key = nodes[n % len(nodes)]
        container[key] = replacement
    return body


def shaped(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A well-formed body, as is or with one value swapped for any JSON."""
    return good | st.tuples(good, st.integers(0, 1000), json_values).map(_mutate)


def valid(names: list[str], lists: tuple[str, ...] = ()) -> st.SearchStrategy[Any]:
    """Well-typed bodies of a route (strings, or lists of them), as is or mutated."""
    return shaped(st.fixed_dictionaries(
        {n: st.lists(_text, max_size=3) if n in lists else _text for n in names}))


_labels = st.dictionaries(_text, _text, max_size=2)
_user = st.fixed_dictionaries({
    "kind": st.just("user"), "version": st.just("v2"),
    "metadata": st.fixed_dictionaries({"name": _text},
                                      optional={"labels": _labels, "expires": _text}),
    "spec": st.fixed_dictionaries({}, optional={
        "logins": st.lists(_text, max_size=2), "roles": st.lists(_text, max_size=2),
        "traits": st.dictionaries(_text, st.lists(_text, max_size=2), max_size=2),
        "status": st.fixed_dictionaries({}, optional={"is_locked": st.booleans(),
                                                      "lock_expires": _text})})})
_server = st.fixed_dictionaries({
    "kind": st.sampled_from(["node", "proxy"]), "version": st.just("v2"),
    "metadata": st.fixed_dictionaries(
        {"name": st.sampled_from(["node-uuid", "proxy-uuid"]) | _text},
        optional={"labels": _labels, "expires": _text}),
    "spec": st.fixed_dictionaries({"addr": _text, "hostname": _text},
                                  optional={"public_addr": _text, "version": _text,
                                            "cmd_labels": json_values})})
_RESOURCE = ["kind", "version", "metadata", "spec"]
_LOGIN = ["password", "otp_code", "ssh_public_key", "tls_public_key", "ttl", "remote_addr"]
_JOIN = ["token", "host_uuid", "nodename", "role", "ssh_public_key", "tls_public_key",
         "addresses"]
_SESSION = ["user", "login", "server_hostname", "created", "parties"]
_EVENT = ["event", "user", "login", "time", "uid", "server_id", "sid", "addr.remote", "code"]
_WEB_LOGIN = ["user", "password", "otp_token", "pub_key", "tls_pub_key", "ttl"]
#: Real fields per route; a route not listed here still gets arbitrary JSON.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "/v1/users": shaped(_user) | fields_of(_RESOURCE),
    "/v1/servers": shaped(_server) | fields_of(_RESOURCE),
    "/v1/users/signup": valid(["name", "logins", "roles"], ("logins", "roles")),
    "/v1/signup/{token}/complete": valid(["password", "otp_code"]),
    "/v1/users/{name}/ssh/authenticate": valid(_LOGIN) | fields_of(_LOGIN),
    "/v1/events": valid(_EVENT) | fields_of(_EVENT),
    "/v1/tokens": valid(["roles", "ttl", "token"], ("roles",)),
    "/v1/join": valid(_JOIN, ("addresses",)) | fields_of(_JOIN),
    "/v1/proxy/hostcert": valid(["node", "public_key"]),
    "/v1/proxy/usercert": valid(["cert", "public_key"]),
    "/v1/active_sessions/{sid}": valid(_SESSION, ("parties",)) | fields_of(_SESSION),
    "/webapi/ssh/certs": valid(_WEB_LOGIN) | fields_of(_WEB_LOGIN),
    "/webapi/users/password/token": valid(["token", "password", "second_factor_token"]),
}
_PATH_PARAM = re.compile(r"\{(\w+)\}")
_param_values = st.sampled_from(["bob", "0f3c8a5e-8c1b-4d4e-9a57-5c2d1f0e6b7a", "x"]) | _text


def body_for(path: str) -> st.SearchStrategy[bytes]:
    """Encode a body for path: mostly the route's fields, sometimes anything, or raw bytes."""
    fields = FIELDS.get(path, json_values).map(lambda v: json.dumps(v).encode())
    anything = json_values.map(lambda v: json.dumps(v).encode())
    return st.one_of(fields, fields, fields, anything, st.binary(max_size=40))


def fill(path: str, values: list[str]) -> str:
    """Put quoted values into a route's {placeholders}."""
    parts = iter(values)
    return _PATH_PARAM.sub(
        lambda _: quote(next(parts, "x").encode("utf-8", "surrogatepass"), safe="") or "x", path)


# --- servers -------------------------------------------------------------------------------

@dataclass
class Target:
    auth: AuthServer
    clock: FakeClock
    auth_addr: HostPort
    web_addr: str
    sessions: dict[str, aiohttp.ClientSession] = field(default_factory=dict)


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[Target]:
    """Serve a real auth API and web proxy, with a client session for each identity."""
    clock = FakeClock(datetime.now(timezone.utc))
    backend = MemoryBackend(clock)
    auth = AuthServer(backend, MemoryEmitter(), clock,
                      AuthSettings(cluster_name=CLUSTER, recordings_dir=tmp_path / "rec"))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    cas = [c.encode() for c in (await auth.certs.get_ca("tls")).trusted_tls_certs()]
    contexts: dict[str, ssl.SSLContext] = {}
    for role in ROLES:
        if role == auth_api.ANONYMOUS:
            contexts[role] = tlsconfig.ssl_client_context(None, None, cas)
            continue
        key = tlskeys.generate_tls_key()
        certs = await auth.certs.issue_host_certs(
            host_uuid=f"{role.lower()}-uuid", nodename=role.lower(), system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(key), addresses=["127.0.0.1"])
        contexts[role] = tlsconfig.ssl_client_context(certs.tls_cert.encode(), key, cas)
    proxy_client = AuthClient([addr], contexts[auth_api.PROXY], cluster=CLUSTER)
    web_key, web_cert = tlskeys.self_signed_web_cert(["127.0.0.1"], now=clock.now())
    proxy = WebProxy(auth=proxy_client, cluster_name=CLUSTER, keypairs=[(web_key, web_cert)],
                     client_ca_pems=lambda: cas, public_addr="proxy.fuzz.test:3080",
                     ssh_public_addr="proxy.fuzz.test:3023", clock=clock)
    await proxy.start("127.0.0.1", 0)
    # A signed-up user "bob", so that logins reach the password and OTP checks, and a
    # certificate of his for the routes that need a login.
    signup = await auth.accounts.create_user_signup("bob", ["bob"], [], created_by="admin")
    info = await auth.accounts.get_signup_info(signup.metadata.name)
    await auth.accounts.complete_signup(signup.metadata.name, "correct horse battery",
                               pyotp.TOTP(info.otp_secret).at(clock.now()))
    user_key = tlskeys.generate_tls_key()
    user_certs = await auth.certs.issue_user_certs(
        await auth.accounts.get_user("bob"), sshkeys.public_key_of(sshkeys.generate_private_key()),
        tlskeys.tls_public_key_pem(user_key), None)
    web_contexts = {"web": ssl.create_default_context(), "web-user": ssl.create_default_context()}
    web_contexts["web-user"].load_cert_chain(*_pem_files(tmp_path, user_certs.tls_cert, user_key))
    for ctx in web_contexts.values():
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    target = Target(auth, clock, addr, f"127.0.0.1:{proxy.port}")
    for role, ctx in [*contexts.items(), *web_contexts.items()]:
        target.sessions[role] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
    try:
        yield target
    finally:
        for session in target.sessions.values():
            await session.close()
        await proxy.close()
        await proxy_client.close()
        await runner.cleanup()
        await backend.close()


def _pem_files(folder: Path, cert: str, key: bytes) -> tuple[Path, Path]:
    (folder / "user.crt").write_text(cert)
    (folder / "user.key").write_bytes(key)
    (folder / "user.key").chmod(0o600)
    return folder / "user.crt", folder / "user.key"


# --- checks --------------------------------------------------------------------------------

def _check(status: int, text: str, what: str) -> None:
    assert status != 500, f"{what}: {text}"
    if status >= 400 and text.startswith("{"):
        assert ONE_LINE_ERROR.fullmatch(text), f"{what}: {text}"


def _check_log(caplog: pytest.LogCaptureFixture, what: str) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    caplog.clear()
    assert not bad and "Traceback" not in caplog.text, f"{what}: {bad[0].getMessage()}"


_AUTH_ROUTES = sorted(
    (method, path, role)
    for method, path, allow, _rule, _ in auth_api.ROUTES
    if method in httpserver.STATE_CHANGING and (method, path) not in auth_api.RAW_BODY
    for role in ROLES if role in allow)


@FUZZ
@given(route=st.sampled_from(_AUTH_ROUTES), params=st.lists(_param_values, max_size=3),
       data=st.data())
async def test_auth_api_json_bodies(target: Target, caplog: pytest.LogCaptureFixture,
                                    route: tuple[str, str, str], params: list[str],
                                    data: st.DataObject) -> None:
    caplog.set_level(logging.INFO)
    caplog.clear()  # a failed example may have left records behind
    method, path, role = route
    body = data.draw(body_for(path), label="body")
    target.clock.advance(timedelta(minutes=1))  # refills the join rate limit
    url = f"https://{target.auth_addr}{fill(path, params)}"
    async with target.sessions[role].request(
            method, url, data=body, headers={"Content-Type": "application/json"},
            server_hostname=auth_server_name(CLUSTER)) as resp:
        status, text = resp.status, await resp.text()
    what = f"{role} {method} {path} {body[:200]!r}"
    _check(status, text, what)
    _check_log(caplog, what)


_WEB_ROUTES = [("POST", "/webapi/ssh/certs"), ("PUT", "/webapi/users/password/token")]
_WEB_GETS = ["/webapi/users/password/token/{token}", "/web/newuser/{token}",
             "/webapi/sites/{cluster}/nodes", "/webapi/sites/{cluster}/sessions",
             "/webapi/sites/{cluster}/sessions/{sid}/stream",
             "/webapi/sites/{cluster}/active_sessions"]


@FUZZ
@given(route=st.sampled_from(_WEB_ROUTES + [("GET", p) for p in _WEB_GETS]),
       params=st.lists(_param_values | st.just(CLUSTER), max_size=3),
       caller=st.sampled_from(["web", "web-user"]), data=st.data())
async def test_web_api_json_bodies(target: Target, caplog: pytest.LogCaptureFixture,
                                   route: tuple[str, str], params: list[str], caller: str,
                                   data: st.DataObject) -> None:
    caplog.set_level(logging.INFO)
    caplog.clear()  # a failed example may have left records behind
    method, path = route
    body = data.draw(body_for(path), label="body") if method != "GET" else None
    target.clock.advance(timedelta(minutes=1))  # refills the login rate limit
    url = f"https://{target.web_addr}{fill(path, params)}"
    async with target.sessions[caller].request(
            method, url, data=body, headers={"Content-Type": "application/json"}) as resp:
        status, text = resp.status, await resp.text()
    what = f"{caller} {method} {path} {params!r} {body[:200] if body else b''!r}"
    _check(status, text, what)
    _check_log(caplog, what)
