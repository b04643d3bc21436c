"""A real `teleport` with a configured HTTPS certificate: HSTS on 3080, no banner on 3080 and
3025, and a form post to the login route refused."""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from teleport.keys import tls as tlskeys
from tests.e2e.cluster import Cluster, make_cluster


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster whose proxy serves a certificate from proxy_service.https_keypairs."""
    root = tmp_path_factory.mktemp("keypair")
    key, cert = tlskeys.self_signed_web_cert(["127.0.0.1"], now=datetime.now(timezone.utc))
    (root / "web.key").write_bytes(key)
    (root / "web.key").chmod(0o600)
    (root / "web.crt").write_bytes(cert)
    cluster = make_cluster(root)
    cluster.write_config(f"  https_keypairs:\n  - key_file: {root / 'web.key'}\n"
                         f"    cert_file: {root / 'web.crt'}\n")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _request(cluster: Cluster, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, dict[str, str]]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(f"https://{cluster.web_addr}{path}", data=body, method=method,
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


def test_configured_certificate_gets_hsts_and_no_banner(configured: Cluster) -> None:
    for path in ("/webapi/ping", "/", "/webapi/nope"):
        status, headers = _request(configured, "GET", path)
        assert status in (200, 404)
        assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
        assert "Server" not in headers


def test_form_posts_to_the_login_route_are_refused(configured: Cluster) -> None:
    status, _ = _request(configured, "POST", "/webapi/ssh/certs",
                         b"user=joe&password=guess", "application/x-www-form-urlencoded")
    assert status == 415


def test_auth_port_sends_no_banner(configured: Cluster) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", configured.ports["auth"]), timeout=10) as raw, \
            ctx.wrap_socket(raw) as tls:
        tls.sendall(b"GET /v1/ping HTTP/1.1\r\nHost: auth\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := tls.recv(4096):
            reply += chunk
    head = reply.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 403 ")  # no client certificate
    assert "\r\nserver:" not in head.lower()
