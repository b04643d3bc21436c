"""A real `teleport` probed with stock `openssl s_client`, as an auditor's scanner does: the web
port (and its multiplexer, also when it relays TLS to the auth server) and the auth API speak
Mozilla's "intermediate" profile: no TLS 1.1, no CBC, AEAD suites, X25519 without a
HelloRetryRequest, no X448 or P-521; and the auth server's certificate lives a year, not ten."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509

from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.keys.authname import auth_server_name
from tests.e2e.cluster import CLUSTER, Cluster, make_cluster

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

#: (port name, server name sent): the web port, the auth API, the auth API through the web port.
TARGETS = [("web", None), ("auth", None), ("web", auth_server_name(CLUSTER))]
IDS = ["web", "auth", "auth-via-web"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = make_cluster(tmp_path_factory.mktemp("tls"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _s_client(cluster: Cluster, target: tuple[str, str | None], *args: str) -> tuple[bool, str]:
    """Handshake with `openssl s_client`; (whether a suite was agreed, its whole output)."""
    port, name = target
    sni = ["-servername", name] if name else ["-noservername"]
    run = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{cluster.ports[port]}", *sni, *args],
        input="", capture_output=True, text=True, timeout=30)
    out = run.stdout + run.stderr
    assert "CONNECTED(" in out, out  # a refusal below is the handshake's, not the socket's
    agreed = run.returncode == 0 and "Cipher is (NONE)" not in out and ", Cipher is " in out
    return agreed, out


#: How a refused handshake ends: an alert, or asyncio's TLS closing without one.
REFUSED = ("handshake failure", "protocol version", "unexpected eof")


def _refused(out: str) -> bool:
    return "Cipher is (NONE)" in out and any(r in out for r in REFUSED)


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_tls_1_1_is_refused(cluster: Cluster, target: tuple[str, str | None]) -> None:
    agreed, out = _s_client(cluster, target, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert not agreed and _refused(out), out


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_cbc_suites_are_refused(cluster: Cluster, target: tuple[str, str | None]) -> None:
    """The suites sslyze found accepted, with TLS 1.2 at most (TLS 1.3 has no CBC)."""
    agreed, out = _s_client(cluster, target, "-tls1_2", "-cipher",
                            "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:"
                            "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384")
    assert not agreed and _refused(out), out


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_aead_suites_are_accepted_with_x25519(cluster: Cluster,
                                              target: tuple[str, str | None]) -> None:
    agreed, out = _s_client(cluster, target, "-tls1_2", "-cipher",
                            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
    assert agreed and "Cipher is ECDHE-" in out and "-AES128-GCM-SHA256" in out, out
    agreed, out = _s_client(cluster, target, "-tls1_2", "-cipher",
                            "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
    assert agreed and "CHACHA20-POLY1305" in out, out
    # TLS 1.3 as OpenSSL offers it: X25519 at once, no HelloRetryRequest round trip.
    agreed, out = _s_client(cluster, target, "-tls1_3", "-msg")
    assert agreed and "New, TLSv1.3, Cipher is TLS_" in out, out
    assert "Server Temp Key: X25519" in out and "HelloRetryRequest" not in out, out


@pytest.mark.parametrize("group", ["X448", "P-521"])
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_groups_outside_the_profile_are_refused(cluster: Cluster, target: tuple[str, str | None],
                                                version: str, group: str) -> None:
    """TLS 1.2 also offers P-256 (second): without it an ECDSA P-256 certificate is unusable
    and any server refuses, whatever its groups; the client's order decides (no server order)."""
    groups = group if version == "-tls1_3" else f"{group}:P-256"
    agreed, out = _s_client(cluster, target, version, "-groups", groups)
    assert not agreed and _refused(out), out


def test_the_auth_server_certificate_lives_a_year(cluster: Cluster) -> None:
    """Mozilla's profiles allow 366 days at most; it used to be 3,650."""
    ctx = tlsconfig.unverified_client_context()
    with socket.create_connection(("127.0.0.1", cluster.ports["auth"]), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=auth_server_name(CLUSTER)) as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    lifespan = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=364) < lifespan <= timedelta(days=366), lifespan
    assert tlskeys.identity_from_cert(der).system_role == "Auth"
    assert ssl.DER_cert_to_PEM_cert(der)  # a certificate, read as a client sees it
