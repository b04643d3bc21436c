"""The auth API's HTTP edge over real mutual TLS: deadlines, no banner, JSON-only bodies,
one-line JSON errors for every malformed input, and audit of the refusals it makes itself."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from teleport.api import httpserver
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.keys.authname import auth_server_name
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api

CLUSTER = "edge.test"
ONE_LINE_ERROR = re.compile(r'\{"error": \{"code": "[a-z_]+", "message": "[^"\n]+"\}\}')
Reply = tuple[int, dict[str, str], str]


@dataclass
class Api:
    auth: AuthServer
    addr: HostPort
    emitter: MemoryEmitter

    async def context(self, role: str | None) -> ssl.SSLContext:
        """Return a client TLS context holding a fresh identity of role (None: no certificate)."""
        cas = [c.encode() for c in (await self.auth.certs.get_ca("tls")).trusted_tls_certs()]
        if role is None:
            return tlsconfig.ssl_client_context(None, None, cas)
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid=f"{role.lower()}-1", nodename=role.lower(), system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        return tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key, cas)

    async def send(self, role: str | None, method: str, path: str, body: bytes | None = None,
                   content_type: str | None = "application/json") -> Reply:
        """Send one request as role, the way a broken or hostile client would."""
        headers = {"Content-Type": content_type} if content_type and body is not None else {}
        connector = aiohttp.TCPConnector(ssl=await self.context(role))
        async with aiohttp.ClientSession(connector=connector) as session, session.request(
                method, f"https://{self.addr}{path}", data=body, headers=headers,
                server_hostname=auth_server_name(CLUSTER)) as resp:
            return resp.status, dict(resp.headers), await resp.text()

    async def open_raw(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a TLS connection without a certificate, to write HTTP by hand."""
        return await asyncio.open_connection(
            self.addr.host, self.addr.port, ssl=await self.context(None),
            server_hostname=auth_server_name(CLUSTER))


async def _start(deadlines: httpserver.Deadlines, data: Path) -> tuple[Api, web.AppRunner]:
    clock = FakeClock(datetime.now(timezone.utc))
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(clock), emitter, clock,
                      AuthSettings(cluster_name=CLUSTER, recordings_dir=data / "recordings"))
    await auth.init()
    runner, addr = await serve_auth_api(auth, deadlines)
    return Api(auth, addr, emitter), runner


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    api, runner = await _start(httpserver.DEFAULT_DEADLINES, tmp_path)
    try:
        yield api
    finally:
        await runner.cleanup()


@pytest.fixture
async def quick_api(tmp_path: Path) -> AsyncIterator[Api]:
    """The API with one-second deadlines, so that tests can watch them fire."""
    api, runner = await _start(httpserver.Deadlines(headers=1.0, body=1.0), tmp_path)
    try:
        yield api
    finally:
        await runner.cleanup()


# --- finding 9: read deadlines -------------------------------------------------------------

async def test_a_slow_request_head_is_disconnected_at_the_deadline(quick_api: Api) -> None:
    reader, writer = await quick_api.open_raw()
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"GET /v1/join/ca HT")  # half a request line, then nothing
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    assert loop.time() - started < 3
    writer.close()
    # A client that sends its request in time is served as usual.
    status, _, text = await quick_api.send(None, "GET", "/v1/join/ca")
    assert status == 200 and json.loads(text)["cluster_name"] == CLUSTER


async def test_a_slow_request_body_is_answered_408_at_the_deadline(quick_api: Api) -> None:
    reader, writer = await quick_api.open_raw()
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"POST /v1/join HTTP/1.1\r\nHost: auth\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 200\r\n\r\n{\"token\": ")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    assert loop.time() - started < 3
    assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head
    writer.close()


# --- finding 10: no banner, JSON-only state changes ----------------------------------------

async def test_no_server_banner(api: Api) -> None:
    for role, method, path in ((None, "GET", "/v1/join/ca"), ("Admin", "GET", "/v1/ping"),
                               ("Admin", "GET", "/v1/nope"), ("Node", "GET", "/v1/users")):
        status, headers, _ = await api.send(role, method, path)
        assert status in (200, 403, 404)
        assert "Server" not in headers, (path, headers["Server"])


async def test_json_routes_refuse_other_content_types(api: Api) -> None:
    body = json.dumps({"roles": ["node"], "ttl": "5m", "token": "form-posted-token"}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        status, _, text = await api.send("Admin", "POST", "/v1/tokens", body, content_type)
        assert status == 415, text
        assert ONE_LINE_ERROR.fullmatch(text) and "application/json" in text
    provision, _ = await api.auth.hosts.list_tokens()
    assert provision == []
    status, _, _ = await api.send("Admin", "POST", "/v1/tokens", body)
    assert status == 200


async def test_recording_uploads_are_exempt_by_declaration(api: Api) -> None:
    sid = str(uuid.uuid4())
    status, _, text = await api.send("Node", "PUT", f"/v1/sessions/{sid}/recording/events",
                                     b'{"event": "print"}\n', "application/octet-stream")
    assert status == 200, text


# --- finding 11: every malformed input is a one-line 400 -----------------------------------

async def test_unknown_routes_and_methods_are_json(api: Api) -> None:
    status, headers, text = await api.send("Admin", "GET", "/v1/nope")
    assert status == 404 and headers["Content-Type"].startswith("application/json")
    assert ONE_LINE_ERROR.fullmatch(text) and '"code": "not_found"' in text
    status, headers, text = await api.send("Admin", "PATCH", "/v1/ping", b"{}")
    assert status == 405 and headers["Content-Type"].startswith("application/json")
    assert ONE_LINE_ERROR.fullmatch(text) and "method not allowed" in text


async def test_malformed_join_is_refused_before_the_token_check(api: Api) -> None:
    good = {"token": "t", "host_uuid": "h", "nodename": "n", "role": "Node",
            "ssh_public_key": "k", "tls_public_key": "k", "addresses": []}
    cases = [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (json.dumps({**good, "token": {"a": [1]}}).encode(), "'token'"),
        (json.dumps({**good, "addresses": "10.0.0.1"}).encode(), "'addresses'"),
        (json.dumps({**good, "addresses": [7]}).encode(), "'addresses.0'"),
        (json.dumps({**good, "role": None}).encode(), "'role'"),
        (b'{"token": NaN}', "not valid JSON"),
        (b'{"token": ' + b"1" * 5000 + b"}", "not valid JSON"),
        (b'{"token": "\\ud800"}', "not valid Unicode"),
    ]
    for body, message in cases:
        status, _, text = await api.send(None, "POST", "/v1/join", body)
        assert status == 400, (body[:40], text)
        assert ONE_LINE_ERROR.fullmatch(text) and message in text, text
    # None of them reached the token check, which audits every failed join.
    assert api.emitter.of_type("auth") == []


async def test_wrong_types_in_admin_and_proxy_bodies_name_the_field(api: Api) -> None:
    cases = [
        ("Admin", "POST", "/v1/users/signup", {"name": "x", "logins": 5}, "'logins'"),
        ("Admin", "POST", "/v1/users/signup", {"name": ["x"]}, "'name'"),
        ("Admin", "POST", "/v1/tokens", {"ttl": 7}, "'ttl'"),
        ("Admin", "POST", "/v1/tokens", {"roles": "node"}, "'roles'"),
        ("Admin", "PUT", "/v1/users", {"kind": "user", "metadata": 5}, "metadata"),
        ("Proxy", "POST", "/v1/users/bob/ssh/authenticate",
         {"password": "p", "ssh_public_key": "k", "tls_public_key": "k", "ttl": 7}, "'ttl'"),
        ("Proxy", "POST", "/v1/signup/abc/complete", {"password": 12345678}, "'password'"),
        ("Proxy", "POST", "/v1/proxy/hostcert", {"node": 5, "public_key": "k"}, "'node'"),
        ("Proxy", "POST", "/v1/proxy/usercert", {"cert": "c"}, "'public_key'"),
        ("Node", "PUT", "/v1/servers", {"kind": "node", "spec": "x"}, "node"),
    ]
    for role, method, path, body, field in cases:
        status, _, text = await api.send(role, method, path, json.dumps(body).encode())
        assert status == 400, (path, body, text)
        assert ONE_LINE_ERROR.fullmatch(text) and field in text, text


async def test_garbage_on_the_port_is_logged_in_one_line(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await api.open_raw()
    writer.write(b"GET /v1/ping HTTP/1.1\r\nHost: auth\r\nBad Header\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    assert head.startswith(b"HTTP/1.1 400 ") or head.startswith(b"HTTP/1.0 400 ")
    writer.close()
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert "bad HTTP request" in caplog.text


async def test_a_client_leaving_mid_body_is_not_an_error(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, writer = await api.open_raw()
    writer.write(b"POST /v1/join HTTP/1.1\r\nHost: auth\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 200\r\n\r\n{\"token\": ")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    for _ in range(50):
        if "client gone" in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert "client gone" in caplog.text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_an_unexpected_failure_is_a_generic_json_500_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    # No input should reach this (the fuzz suite checks that); a bug in a handler still must
    # not show a traceback to the caller.
    app = httpserver.make_app(component="auth server", max_body=1024,
                              deadlines=httpserver.DEFAULT_DEADLINES)

    async def broken(request: web.Request) -> web.Response:
        raise KeyError("secret detail")

    app.router.add_get("/broken", broken)
    runner = httpserver.make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{port}/broken") as resp:
            status, text = resp.status, await resp.text()
    finally:
        await runner.cleanup()
    assert status == 500 and ONE_LINE_ERROR.fullmatch(text)
    assert "internal error, see the auth server log" in text and "secret" not in text
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1 and failures[0].exc_info is not None


# --- finding 14b: the API audits only its own refusals -------------------------------------

async def test_refusals_of_the_api_itself_are_audited(api: Api) -> None:
    status, _, _ = await api.send("Node", "GET", "/v1/users")
    assert status == 403
    status, _, _ = await api.send(None, "GET", "/v1/users")
    assert status == 403
    refusals = api.emitter.of_type("auth")
    assert [e["user"] for e in refusals] == ["node-1", ""]
    assert "may not GET /v1/users" in refusals[0]["error"]
    assert "client certificate is required" in refusals[1]["error"]


async def test_a_failed_login_is_audited_once_under_the_user(api: Api) -> None:
    await api.auth.accounts.create_user_signup("carol", ["carol"], [], created_by="admin")
    body = {"password": "wrong password", "otp_code": "000000", "ssh_public_key": "k",
            "tls_public_key": "k", "remote_addr": "198.51.100.7:5555"}
    status, _, text = await api.send("Proxy", "POST", "/v1/users/carol/ssh/authenticate",
                                     json.dumps(body).encode())
    assert status == 403, text
    events = api.emitter.of_type("auth")
    assert len(events) == 1, events
    assert events[0]["user"] == "carol" and events[0]["success"] is False
