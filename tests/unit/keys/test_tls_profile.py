"""Our TLS profile (Mozilla's "intermediate"), handshaking in memory: servers refuse TLS 1.1,
CBC suites and the groups outside X25519, and accept AEAD suites; our clients offer only what
the profile allows and meet the servers' one group without a HelloRetryRequest."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from teleport.client import webapi
from teleport.keys import tls, tlsconfig
from teleport.keys.authname import auth_server_name
from teleport.keys.identity import Identity
from tests.unit.keys import memory_tls

NOW = datetime.now(timezone.utc)
CLUSTER = "profile.test"
#: The probes set TLS 1.0 and 1.1 on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")


@pytest.fixture(scope="module", params=["ecdsa", "rsa"])
def served(request: pytest.FixtureRequest) -> tuple[bytes, bytes, bytes]:
    """(CA cert, auth server cert, key) of either key type (web key pairs may be RSA)."""
    ca_key, ca_cert = tls.generate_tls_ca(CLUSTER, algo=request.param, now=NOW)
    key = tls.generate_tls_key(request.param)
    identity = Identity(username="auth-1", roles=("Auth",), cluster=CLUSTER, system_role="Auth",
                        host_uuid="auth-1")
    cert = tls.issue_tls_cert(ca_key, ca_cert, tls.tls_public_key_pem(key), identity, now=NOW,
                              not_after=NOW + timedelta(days=1))
    return ca_cert, cert, key


def _server(served: tuple[bytes, bytes, bytes]) -> ssl.SSLContext:
    ca_cert, cert, key = served
    return tlsconfig.ssl_server_context(cert, key, [ca_cert], require_client_cert=False)


def _raw_client(*, ciphers: str | None = None, group: str | None = None,
                versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None) -> ssl.SSLContext:
    """A scanner's client: anything OpenSSL can still offer, narrowed to what is probed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if versions is not None:
        ctx.minimum_version, ctx.maximum_version = versions
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if group is not None:
        ctx.set_ecdh_curve(group)
    return ctx


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
               server_hostname: str = auth_server_name(CLUSTER)) -> tuple[str, str, int]:
    """Handshake through memory buffers; return (version, suite, flights the client sent)."""
    done = memory_tls.handshake(server_ctx, client_ctx, server_hostname)
    cipher = done.client.cipher()
    assert cipher is not None
    return cipher[1], cipher[0], done.flights


def test_servers_refuse_tls_1_1(served: tuple[bytes, bytes, bytes]) -> None:
    old = _raw_client(ciphers="ALL:@SECLEVEL=0",
                      versions=(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1))
    with pytest.raises(ssl.SSLError, match="UNSUPPORTED_PROTOCOL|PROTOCOL_VERSION"):
        _handshake(_server(served), old)


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256",
                                   "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384",
                                   "AES128-GCM-SHA256", "DHE-RSA-AES128-GCM-SHA256"])
def test_servers_refuse_cbc_and_non_ecdhe_suites(served: tuple[bytes, bytes, bytes],
                                                 suite: str) -> None:
    """The CBC suites sslyze found, RSA key exchange (no forward secrecy), and DHE."""
    client = _raw_client(ciphers=suite,
                         versions=(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2))
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE|NO_SHARED_CIPHER"):
        _handshake(_server(served), client)


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-GCM-SHA256+ECDHE-RSA-AES128-GCM-SHA256",
                                   "ECDHE-ECDSA-AES256-GCM-SHA384+ECDHE-RSA-AES256-GCM-SHA384",
                                   "ECDHE-ECDSA-CHACHA20-POLY1305+ECDHE-RSA-CHACHA20-POLY1305"])
def test_servers_accept_aead_suites_of_tls_1_2(served: tuple[bytes, bytes, bytes],
                                               suite: str) -> None:
    client = _raw_client(ciphers=suite.replace("+", ":"),
                         versions=(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2))
    version, negotiated, _ = _handshake(_server(served), client)
    assert version == "TLSv1.2" and negotiated in suite.split("+")


def test_servers_let_the_client_choose_the_suite(served: tuple[bytes, bytes, bytes]) -> None:
    """No server order (the profile's choice): a client without AES hardware gets ChaCha20."""
    client = _raw_client(ciphers="ECDHE+CHACHA20:ECDHE+AESGCM",
                         versions=(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2))
    assert "CHACHA20" in _handshake(_server(served), client)[1]


@pytest.mark.parametrize("group", ["X448", "secp521r1", "secp384r1", "prime256v1"])
def test_servers_accept_one_group_alone(served: tuple[bytes, bytes, bytes], group: str) -> None:
    """X448 and P-521 are outside the profile; P-256 and P-384 are in it, but Python 3.11 sets
    one group only, and X25519 is the one every client offers first."""
    for versions in ((ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
                     (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)):
        with pytest.raises(ssl.SSLError):
            _handshake(_server(served), _raw_client(group=group, versions=versions))
    assert _handshake(_server(served), _raw_client(group="X25519"))[0] == "TLSv1.3"


def _client_contexts(ca_cert: bytes) -> dict[str, Callable[[], ssl.SSLContext]]:
    return {
        "auth client": lambda: tlsconfig.ssl_client_context(None, None, [ca_cert]),
        "unverified": tlsconfig.unverified_client_context,
        "tsh web client": lambda: webapi._client_context(True, [ca_cert], None),
        "tsh pinned web client": lambda: webapi._pinned_context(ca_cert, None),
    }


def test_our_clients_offer_only_the_profile(served: tuple[bytes, bytes, bytes]) -> None:
    """Every client of ours refuses TLS 1.1 and CBC from a server (an interceptor) offering
    nothing better, and meets our servers' group at once: no HelloRetryRequest round trip."""
    ca_cert = served[0]
    cbc = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE+AES+SHA256:ECDHE+AES+SHA384:!AESGCM")
    tlsconfig.load_cert_chain(cbc, served[1], served[2])
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    tlsconfig.load_cert_chain(old, served[1], served[2])
    p256 = _server(served)
    p256.set_ecdh_curve("prime256v1")
    for name, make in _client_contexts(ca_cert).items():
        with pytest.raises(ssl.SSLError):
            _handshake(cbc, make())
        with pytest.raises(ssl.SSLError):
            _handshake(old, make())
        version, _, flights = _handshake(_server(served), make())
        assert (version, flights) == ("TLSv1.3", 2), name
        # The count does see a HelloRetryRequest: a server of another group costs one more.
        assert _handshake(p256, make())[2] == 3, name
