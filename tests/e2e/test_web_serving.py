"""How the web port serves: real certificates (picked by name, reloaded when their files change),
the self-signed default, and plain HTTP behind a TLS-terminating balancer (--insecure-no-tls)."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.e2e.cluster import Cluster, make_cluster
from tests.e2e.webca import TestCA

pytestmark = pytest.mark.slow

RELOAD_WAIT = 15  # the proxy looks at its files every 5 s


def _served_serial(port: int, name: str, ca: TestCA) -> int:
    """Connect as a browser would to `name` (SNI) and return the served certificate's serial."""
    ctx = ssl.create_default_context(cadata=ca.pem.decode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _get(url: str, ctx: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
        return resp.status, dict(resp.headers), resp.read()


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> Iterator[Cluster]:
    """A cluster whose proxy serves two certificates of the test CA (two public names)."""
    root = tmp_path_factory.mktemp("certified")
    certs = root / "certs"
    certs.mkdir()
    ca.issue(["localhost", "teleport.localhost"], certs / "a.key", certs / "a.crt")
    ca.issue(["other.localhost"], certs / "b.key", certs / "b.crt")
    cluster = make_cluster(root)
    cluster.write_config(f"""\
  https_keypairs:
  - key_file: {certs / 'a.key'}
    cert_file: {certs / 'a.crt'}
  - key_file: {certs / 'b.key'}
    cert_file: {certs / 'b.crt'}
""")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_configured_certificates_are_served_by_name_with_hsts(certified: Cluster,
                                                              ca: TestCA) -> None:
    port = certified.ports["web"]
    ctx = ssl.create_default_context(cadata=ca.pem.decode())
    status, headers, _ = _get(f"https://localhost:{port}/webapi/ping", ctx)
    assert status == 200
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    default = _served_serial(port, "localhost", ca)
    assert _served_serial(port, "teleport.localhost", ca) == default
    assert _served_serial(port, "other.localhost", ca) != default
    assert "self-signed" not in certified.log()


def test_a_renewed_certificate_is_served_without_a_restart(certified: Cluster, ca: TestCA,
                                                           tmp_path: Path) -> None:
    port = certified.ports["web"]
    certs = certified.root / "certs"
    pid = certified.process.pid if certified.process else 0
    # A broken renewal (key and certificate that do not match) keeps the old certificate.
    before = _served_serial(port, "localhost", ca)
    ca.issue(["localhost"], tmp_path / "stray.key", tmp_path / "unused.crt")
    (certs / "a.key").write_bytes((tmp_path / "stray.key").read_bytes())
    deadline = time.monotonic() + RELOAD_WAIT
    while "cannot be used" not in certified.log() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "https_keypairs changed but cannot be used" in certified.log()
    assert _served_serial(port, "localhost", ca) == before
    # A good renewal is served to new connections.
    renewed = ca.issue(["localhost", "teleport.localhost"], certs / "a.key", certs / "a.crt")
    deadline = time.monotonic() + RELOAD_WAIT
    while _served_serial(port, "localhost", ca) != renewed:
        assert time.monotonic() < deadline, "the renewed certificate was not served"
        time.sleep(0.3)
    assert certified.process is not None and certified.process.pid == pid


def test_the_default_is_a_kept_self_signed_certificate_and_the_log_says_so(
        cluster: Cluster) -> None:
    assert "Serving a self-signed certificate for 127.0.0.1" in cluster.log()
    assert (cluster.data_dir / "webproxy_cert.pem").is_file()


def test_insecure_no_tls_serves_plain_http_for_a_balancer(
        tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    cluster.web_scheme = "http"
    cluster.start_args = ["--insecure-no-tls"]
    cluster.write_config()
    cluster.start()
    try:
        port = cluster.ports["web"]
        status, headers, body = _get(f"http://127.0.0.1:{port}/webapi/ping")
        assert status == 200 and json.loads(body)["cluster_name"]
        assert "Strict-Transport-Security" not in headers
        status, _, page = _get(f"http://127.0.0.1:{port}/web/login")
        assert status == 200 and b'<meta name="teleport-cluster"' in page
        assert "plain HTTP (--insecure-no-tls)" in cluster.log()
        assert "self-signed" not in cluster.log()
        # TLS to the web server is not spoken here any more (TLS for the auth server still is).
        ctx = ssl._create_unverified_context()
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)), \
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost"):
            pass
    finally:
        cluster.stop()
