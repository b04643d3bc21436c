"""The proxy's HTTPS edge (3080) against a real auth API: deadlines, headers, JSON-only state
changes, a per-address login rate limit, one-line 400s, and one audit event per failed login."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from datetime import timedelta

import aiohttp
import pytest

from teleport.api import httpserver
from teleport.client.webapi import WebClient
from teleport.errors import AccessDenied, LimitExceeded
from teleport.proxy import web as web_proxy
from tests.integration.proxy import test_web as web_suite
from tests.integration.proxy.test_web import PASSWORD, Cluster, ClusterFactory, _keys

# The web suite's fixtures: a real auth API and web proxy on loopback.
make_cluster = web_suite.make_cluster
cluster = web_suite.cluster

ONE_LINE_ERROR = re.compile(r'\{"error": \{"code": "[a-z_]+", "message": "[^"\n]+"\}\}')
Reply = tuple[int, dict[str, str], str]


async def _send(cluster: Cluster, method: str, path: str, body: bytes | None = None,
                content_type: str | None = "application/json") -> Reply:
    """Send a request the way a browser form or a broken client would."""
    headers = {"Content-Type": content_type} if content_type and body is not None else {}
    async with aiohttp.ClientSession() as session, session.request(
            method, f"https://{cluster.addr}{path}", data=body, headers=headers,
            ssl=False) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def _open_raw(cluster: Cluster) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return await asyncio.open_connection("127.0.0.1", cluster.proxy.port, ssl=ctx)


def _login_body(user: str, password: str, **extra: object) -> bytes:
    keys = _keys()
    return json.dumps({"user": user, "password": password, "otp_token": "000000",
                       "pub_key": keys.ssh_public, "tls_pub_key": keys.tls_public,
                       **extra}).encode()


@pytest.fixture
async def quick(make_cluster: ClusterFactory) -> Cluster:
    """A proxy with one-second read deadlines, so that tests can watch them fire."""
    return await make_cluster(deadlines=httpserver.Deadlines(headers=1.0, body=1.0))


# --- finding 9: read deadlines -------------------------------------------------------------

async def test_a_slow_request_head_is_disconnected_at_the_deadline(quick: Cluster) -> None:
    for partial in (b"", b"GET /webapi/pi", b"GET /webapi/ping HTTP/1.1\r\nHost: x\r\n"):
        reader, writer = await _open_raw(quick)
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.write(partial)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        assert loop.time() - started < 3, partial
        writer.close()
    async with quick.client() as web_client:  # a prompt client is served as usual
        assert (await web_client.ping()).cluster_name == quick.auth.cluster_name


async def test_a_slow_request_body_is_answered_408_at_the_deadline(quick: Cluster) -> None:
    reader, writer = await _open_raw(quick)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"POST /webapi/ssh/certs HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 300\r\n\r\n{\"user\": ")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    assert loop.time() - started < 3
    assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head
    writer.close()


# --- finding 10: banner, HSTS, JSON-only state changes -------------------------------------

async def test_no_server_banner_and_no_hsts_with_the_self_signed_certificate(
        cluster: Cluster) -> None:
    for method, path in (("GET", "/webapi/ping"), ("GET", "/"), ("GET", "/web/newuser/abc"),
                         ("GET", "/webapi/nope"), ("DELETE", "/webapi/ping")):
        status, headers, _ = await _send(cluster, method, path)
        assert status in (200, 404, 405)
        assert "Server" not in headers, (path, headers["Server"])
        assert "Strict-Transport-Security" not in headers


async def test_hsts_with_a_configured_certificate(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(hsts=True)
    for path in ("/webapi/ping", "/", "/webapi/nope"):
        _, headers, _ = await _send(cluster, "GET", path)
        assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


async def test_cross_site_form_posts_cannot_drive_a_lockout(cluster: Cluster) -> None:
    totp = await cluster.signup("alice")
    body = _login_body("alice", "wrong password")
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=x", None):
        for _ in range(2):
            status, _, text = await _send(cluster, "POST", "/webapi/ssh/certs", body,
                                          content_type)
            assert status == 415 and ONE_LINE_ERROR.fullmatch(text), text
            assert "application/json" in text
    status, _, _ = await _send(cluster, "PUT", "/webapi/users/password/token",
                               b'{"token": "abc", "password": "x"}', "text/plain")
    assert status == 415
    assert cluster.emitter.of_type("auth") == []  # no attempt reached the auth server
    await cluster.login("alice", totp, _keys())  # eight form posts later, not locked


# --- finding 2 (HTTP part): a login rate limit per client address --------------------------

async def test_bursts_of_logins_from_one_address_get_429(cluster: Cluster) -> None:
    statuses = []
    for _ in range(web_proxy.LOGIN_BURST + 3):
        status, _, text = await _send(cluster, "POST", "/webapi/ssh/certs", b"{}")
        statuses.append(status)
    assert statuses[:web_proxy.LOGIN_BURST] == [400] * web_proxy.LOGIN_BURST
    assert statuses[web_proxy.LOGIN_BURST:] == [429] * 3
    assert ONE_LINE_ERROR.fullmatch(text) and "too many requests" in text
    # Signups share the bucket: they check a password and a one-time code too.
    status, _, _ = await _send(cluster, "PUT", "/webapi/users/password/token", b"{}")
    assert status == 429
    async with cluster.client() as web_client:
        keys = _keys()
        with pytest.raises(LimitExceeded, match="too many requests"):
            await web_client.ssh_login("bob", PASSWORD, "", keys.ssh_public, keys.tls_public, None)
        assert (await web_client.ping()).cluster_name  # other routes are not limited
    cluster.clock.advance(timedelta(seconds=60 // web_proxy.LOGIN_RATE_PER_MINUTE + 1))
    status, _, _ = await _send(cluster, "POST", "/webapi/ssh/certs", b"{}")
    assert status == 400  # the bucket refills with time


# --- finding 11 (HTTP part): malformed bodies ----------------------------------------------

async def test_malformed_login_bodies_are_one_line_400s(cluster: Cluster) -> None:
    cases = [
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (b'{"user": {"a": ' * 40 + b"1" + b"}" * 80, "nested too deeply"),
        (_login_body("x", "p", ttl=7), "'ttl'"),
        (_login_body("x", "p", otp_token=123456), "'otp_token'"),
        (json.dumps({"user": 5, "password": "p"}).encode(), "'user'"),
        (json.dumps({"user": "x", "password": ["p"]}).encode(), "'password'"),
        (b'{"user": "\\udfff"}', "not valid Unicode"),
        (b'{"user": Infinity}', "not valid JSON"),
    ]
    for body, message in cases:
        cluster.clock.advance(timedelta(minutes=1))  # stay under the rate limit
        status, _, text = await _send(cluster, "POST", "/webapi/ssh/certs", body)
        assert status == 400, (body[:40], text)
        assert ONE_LINE_ERROR.fullmatch(text) and message in text, text
    status, _, text = await _send(cluster, "PUT", "/webapi/users/password/token",
                                  json.dumps({"token": "abc", "password": 5}).encode())
    assert status == 400 and "'password'" in text


# --- finding 14b: one audit event per failed web login -------------------------------------

async def test_a_failed_web_login_is_audited_once_under_the_user(cluster: Cluster) -> None:
    totp = await cluster.signup("carol")
    with pytest.raises(AccessDenied):
        await cluster.login("carol", totp, _keys(), password="wrong password")
    events = cluster.emitter.of_type("auth")
    assert len(events) == 1, events
    assert events[0]["user"] == "carol" and events[0]["success"] is False
    assert events[0]["addr.remote"].startswith("127.0.0.1:")


async def test_tsh_still_logs_in(cluster: Cluster) -> None:
    totp = await cluster.signup("dave")
    resp = await cluster.login("dave", totp, _keys())
    assert resp.cluster_name == cluster.auth.cluster_name
    async with WebClient(cluster.addr, insecure=True) as web_client:
        assert (await web_client.ping()).cluster_name == cluster.auth.cluster_name
