"""The proxy's web API and pages, driven over HTTPS by WebClient against a real auth API."""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pyotp
import pytest

from teleport.api.web_models import LoginResponse
from teleport.auth import api as auth_api
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.client.webapi import WebClient
from teleport.errors import AccessDenied, BadParameter, ConnectionProblem, LimitExceeded, NotFound
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.proxy.web import MAX_BODY, WebProxy
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.ports import refused_port

PASSWORD = "correct horse battery"
CLUSTER = "example.com"


@dataclass
class Keys:
    """A user's fresh key pair, as tsh makes before a login."""

    ssh_private: bytes
    ssh_public: str
    tls_private: bytes
    tls_public: str


@dataclass
class Cluster:
    auth: AuthServer
    clock: FakeClock
    emitter: MemoryEmitter
    proxy: WebProxy
    web_cert: bytes
    tls_cas: list[bytes]
    proxy_cert: tuple[bytes, bytes]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"

    def client(self, **kwargs: Any) -> WebClient:
        kwargs.setdefault("insecure", True)
        return WebClient(self.addr, **kwargs)

    async def signup(self, name: str, logins: list[str] | None = None) -> pyotp.TOTP:
        token = await self.auth.accounts.create_user_signup(name, logins or [name], [], created_by="admin")
        async with self.client() as web_client:
            info = await web_client.signup_info(token.metadata.name)
            totp = pyotp.TOTP(info.otp_secret)
            # The code of the cluster's (fake) clock: real time may already be a window ahead.
            assert await web_client.complete_signup(token.metadata.name, PASSWORD,
                                                    totp.at(self.clock.now())) == name
        return totp

    def otp(self, totp: pyotp.TOTP) -> str:
        """Return a code not used before: each is accepted once, so step the clock a window."""
        self.clock.advance(timedelta(seconds=30))
        return totp.at(self.clock.now())

    async def login(self, name: str, totp: pyotp.TOTP, keys: Keys,
                    password: str = PASSWORD) -> LoginResponse:
        async with self.client() as web_client:
            return await web_client.ssh_login(name, password, self.otp(totp),
                                              keys.ssh_public, keys.tls_public, None)


def _keys() -> Keys:
    ssh_private = sshkeys.generate_private_key()
    tls_private = tlskeys.generate_tls_key()
    return Keys(ssh_private, sshkeys.public_key_of(ssh_private), tls_private,
                tlskeys.tls_public_key_pem(tls_private).decode())


async def _host_identity(auth: AuthServer, role: str) -> tuple[bytes, bytes, list[bytes]]:
    """Issue a host's X.509 cert and key the way joining does; return them with the CAs."""
    ssh_key = sshkeys.generate_private_key()
    tls_key = tlskeys.generate_tls_key()
    certs = await auth.certs.issue_host_certs(
        host_uuid=f"{role.lower()}-uuid", nodename=role.lower(), system_role=role,
        ssh_public_key=sshkeys.public_key_of(ssh_key),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=["127.0.0.1", "localhost"])
    return certs.tls_cert.encode(), tls_key, [c.encode() for c in certs.tls_ca_certs]


ClusterFactory = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def make_cluster() -> AsyncIterator[ClusterFactory]:
    """Start auth API + web proxy on loopback port 0 with the given auth and proxy settings."""
    cleanups: list[Callable[[], Awaitable[Any]]] = []

    async def start(second_factor: str = "otp", **proxy_options: Any) -> Cluster:
        clock = FakeClock(datetime.now(timezone.utc).replace(microsecond=0))
        emitter = MemoryEmitter()
        backend = MemoryBackend(clock)
        cleanups.append(backend.close)
        auth = AuthServer(backend, emitter, clock,
                          AuthSettings(cluster_name=CLUSTER, second_factor=second_factor))
        await auth.init()
        cert, key, cas = await _host_identity(auth, "Auth")
        runner = await auth_api.serve(
            auth, tlsconfig.ssl_server_context(cert, key, cas, require_client_cert=True),
            "127.0.0.1", 0)
        cleanups.append(runner.cleanup)
        proxy_cert, proxy_key, _ = await _host_identity(auth, "Proxy")
        auth_client = AuthClient([HostPort("127.0.0.1", runner.addresses[0][1])],
                                 tlsconfig.ssl_client_context(proxy_cert, proxy_key, cas),
                                 cluster=auth.cluster_name)
        cleanups.append(auth_client.close)
        web_key, web_cert = tlskeys.self_signed_web_cert(["localhost", "127.0.0.1"],
                                                         now=clock.now())
        proxy = WebProxy(auth=auth_client, cluster_name=auth.cluster_name, keypairs=[(web_key, web_cert)],
                         client_ca_pems=lambda: cas,
                         public_addr="proxy.example.com:3080",
                         ssh_public_addr="proxy.example.com:3023", clock=clock,
                         **proxy_options)
        cleanups.append(proxy.close)
        await proxy.start("127.0.0.1", 0)
        return Cluster(auth, clock, emitter, proxy, web_cert, cas, (proxy_cert, proxy_key))

    try:
        yield start
    finally:
        for cleanup in reversed(cleanups):
            await cleanup()


@pytest.fixture
async def cluster(make_cluster: ClusterFactory) -> Cluster:
    return await make_cluster()


async def _raw(cluster: Cluster, method: str, path: str,
               data: bytes | None = None) -> tuple[int, dict[str, str], str]:
    """Send a request the way a browser or a broken client would, without WebClient."""
    headers = {"Content-Type": "application/json"} if data is not None else {}
    async with aiohttp.ClientSession() as session, session.request(
            method, f"https://{cluster.addr}{path}", data=data, headers=headers,
            ssl=False) as resp:
        return resp.status, dict(resp.headers), await resp.text()


# --- ping and transport ------------------------------------------------------------------------

async def test_ping_needs_no_credentials(cluster: Cluster) -> None:
    async with cluster.client() as web_client:
        ping = await web_client.ping()
    assert ping.cluster_name == CLUSTER
    assert ping.server_version
    assert (ping.auth.type, ping.auth.second_factor) == ("local", "otp")
    assert ping.proxy.ssh.public_addr == "proxy.example.com:3023"


async def test_self_signed_certificate_needs_insecure_or_its_ca(cluster: Cluster) -> None:
    async with cluster.client(insecure=False) as web_client:
        with pytest.raises(ConnectionProblem, match="--insecure") as info:
            await web_client.ping()
    assert "\n" not in str(info.value)
    async with cluster.client(insecure=False, ca_pems=[cluster.web_cert]) as web_client:
        assert (await web_client.ping()).cluster_name == CLUSTER


async def test_unreachable_proxy_is_a_connection_problem() -> None:
    with refused_port() as port:
        async with WebClient(f"127.0.0.1:{port}", insecure=True) as web_client:
            with pytest.raises(ConnectionProblem, match=f"cannot connect to proxy 127.0.0.1:{port}"):
                await web_client.ping()


async def test_listener_wants_tls_1_2_and_optional_client_certs(cluster: Cluster) -> None:
    ctx = cluster.proxy.ssl_context()
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_OPTIONAL


# --- signup ------------------------------------------------------------------------------------

async def test_signup_then_login_returns_certificates_that_parse(cluster: Cluster) -> None:
    totp = await cluster.signup("alice", ["alice", "root"])
    keys = _keys()
    resp = await cluster.login("alice", totp, keys)
    assert resp.cluster_name == CLUSTER
    info = sshkeys.verify_cert(resp.cert, resp.user_ca_keys, now=cluster.clock.now(),
                               cert_type="user", principal="root")
    assert info.key_id == "alice" and set(info.principals) == {"alice", "root"}
    identity = tlskeys.identity_from_cert(resp.tls_cert.encode())
    assert (identity.username, identity.cluster) == ("alice", CLUSTER)
    assert resp.host_signers == (await cluster.auth.certs.get_ca("host")).trusted_ssh_public_keys()
    assert resp.trusted_ca == [c.decode() for c in cluster.tls_cas]
    login = cluster.emitter.of_type("user.login")[-1]
    assert login["user"] == "alice" and login["addr.remote"].startswith("127.0.0.1:")


async def test_login_ttl_is_passed_as_a_go_duration(cluster: Cluster) -> None:
    totp = await cluster.signup("bob")
    keys = _keys()
    async with cluster.client() as web_client:
        resp = await web_client.ssh_login("bob", PASSWORD, cluster.otp(totp),
                                          keys.ssh_public, keys.tls_public, timedelta(hours=2))
    info = sshkeys.parse_cert(resp.cert)
    assert info.valid_before - cluster.clock.now() == timedelta(hours=2)


async def test_signup_token_is_single_use(cluster: Cluster) -> None:
    token = await cluster.auth.accounts.create_user_signup("carol", [], [], created_by="admin")
    async with cluster.client() as web_client:
        info = await web_client.signup_info(token.metadata.name)
        assert info.user == "carol" and info.second_factor == "otp"
        assert info.otp_uri.startswith("otpauth://totp/")
        assert info.qr_svg.startswith("<svg") and info.expires
        code = pyotp.TOTP(info.otp_secret).now()
        with pytest.raises(BadParameter, match="password must be"):
            await web_client.complete_signup(token.metadata.name, "short", code)
        with pytest.raises(AccessDenied, match="one-time password"):
            await web_client.complete_signup(token.metadata.name, PASSWORD, "000000")
        await web_client.complete_signup(token.metadata.name, PASSWORD, code)
        with pytest.raises(NotFound):
            await web_client.signup_info(token.metadata.name)
        with pytest.raises(NotFound):
            await web_client.complete_signup(token.metadata.name, PASSWORD, code)


async def test_unknown_token_is_not_found(cluster: Cluster) -> None:
    async with cluster.client() as web_client:
        for token in ("0123abcd", "..", "a%2Fb"):
            with pytest.raises(NotFound, match="not found"):
                await web_client.signup_info(token)
    status, headers, text = await _raw(cluster, "GET", "/web/newuser/0123abcd")
    assert status == 404 and headers["Content-Type"].startswith("text/html")
    assert "invalid or has expired" in text


async def test_signup_page_shows_user_secret_and_qr_code(cluster: Cluster) -> None:
    # The auth server allows markup characters in names; the page must escape them.
    name = "eve<b>&'"
    token = await cluster.auth.accounts.create_user_signup(name, ["eve"], [], created_by="admin")
    info = await cluster.auth.accounts.get_signup_info(token.metadata.name)
    status, headers, text = await _raw(cluster, "GET", f"/web/newuser/{token.metadata.name}")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "eve&lt;b&gt;&amp;&#x27;" in text and "<b>" not in text
    assert "<svg" in text and info.otp_secret in text
    assert f'data-token="{token.metadata.name}"' in text
    assert 'data-proxy="proxy.example.com:3080"' in text
    assert 'name="password"' in text and 'name="confirm"' in text and 'name="otp"' in text
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
    assert "unsafe-inline" not in csp and "connect-src 'self'" in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    scripts = re.findall(r"<script>(.*?)</script>", text, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp


async def test_without_second_factor_there_is_no_otp(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(second_factor="off")
    token = (await cluster.auth.accounts.create_user_signup("dan", [], [], created_by="admin")).metadata.name
    status, _, text = await _raw(cluster, "GET", f"/web/newuser/{token}")
    assert status == 200 and "<svg" not in text and 'name="otp"' not in text
    keys = _keys()
    async with cluster.client() as web_client:
        assert (await web_client.ping()).auth.second_factor == "off"
        info = await web_client.signup_info(token)
        assert info.otp_secret == info.qr_svg == ""
        await web_client.complete_signup(token, PASSWORD, "")
        resp = await web_client.ssh_login("dan", PASSWORD, "", keys.ssh_public,
                                          keys.tls_public, None)
    assert tlskeys.identity_from_cert(resp.tls_cert.encode()).username == "dan"


# --- login failures ----------------------------------------------------------------------------

async def test_bad_password_or_otp_is_denied(cluster: Cluster) -> None:
    totp = await cluster.signup("frank")
    keys = _keys()
    with pytest.raises(AccessDenied, match="invalid username, password or second factor"):
        await cluster.login("frank", totp, keys, password="wrong password")
    async with cluster.client() as web_client:
        with pytest.raises(AccessDenied, match="invalid username, password or second factor"):
            await web_client.ssh_login("frank", PASSWORD, "123456", keys.ssh_public,
                                       keys.tls_public, None)
        with pytest.raises(AccessDenied):
            await web_client.ssh_login("nobody", PASSWORD, "123456", keys.ssh_public,
                                       keys.tls_public, None)
        with pytest.raises(BadParameter, match="invalid user name"):
            await web_client.ssh_login("../../signup", PASSWORD, "123456", keys.ssh_public,
                                       keys.tls_public, None)


async def test_five_failures_lock_the_user(cluster: Cluster) -> None:
    totp = await cluster.signup("gina")
    keys = _keys()
    for _ in range(5):
        with pytest.raises(AccessDenied):
            await cluster.login("gina", totp, keys, password="wrong password")
    with pytest.raises(AccessDenied, match="locked"):
        await cluster.login("gina", totp, keys)
    cluster.clock.advance(timedelta(minutes=21))
    resp = await cluster.login("gina", totp, keys)
    assert resp.cluster_name == CLUSTER


# --- nodes -------------------------------------------------------------------------------------

async def _add_node(cluster: Cluster, uuid: str, hostname: str, labels: dict[str, str]) -> None:
    await cluster.auth.hosts.upsert_server(Server(
        kind="node", metadata=Metadata(name=uuid, labels=labels),
        spec=ServerSpec(addr=f"10.0.0.{len(uuid)}:3022", hostname=hostname)))


async def test_node_listing_requires_a_user_certificate(cluster: Cluster) -> None:
    await _add_node(cluster, "uuid-2", "sun", {"env": "prod"})
    await _add_node(cluster, "uuid-11", "luna", {"env": "dev"})
    totp = await cluster.signup("hana")
    keys = _keys()
    resp = await cluster.login("hana", totp, keys)

    async with cluster.client() as web_client:
        with pytest.raises(AccessDenied, match="client certificate is required"):
            await web_client.list_nodes(CLUSTER)
    async with cluster.client(client_cert=cluster.proxy_cert) as web_client:
        with pytest.raises(AccessDenied, match="users, not hosts"):
            await web_client.list_nodes(CLUSTER)
    user_cert = (resp.tls_cert.encode(), keys.tls_private)
    async with cluster.client(client_cert=user_cert) as web_client:
        nodes = await web_client.list_nodes(CLUSTER)
        with pytest.raises(NotFound, match="cluster 'elsewhere' not found"):
            await web_client.list_nodes("elsewhere")
    assert [asdict(n) for n in nodes] == [
        {"name": "luna", "id": "uuid-11", "addr": "10.0.0.7:3022", "labels": {"env": "dev"},
         "tunnel": False},
        {"name": "sun", "id": "uuid-2", "addr": "10.0.0.6:3022", "labels": {"env": "prod"},
         "tunnel": False},
    ]
    cluster.clock.advance(timedelta(hours=13))
    async with cluster.client(client_cert=user_cert) as web_client:
        with pytest.raises(AccessDenied, match="expired"):
            await web_client.list_nodes(CLUSTER)


async def test_certificate_of_another_cluster_is_refused(cluster: Cluster,
                                                        make_cluster: ClusterFactory) -> None:
    other = await make_cluster()
    totp = await other.signup("ivan")
    keys = _keys()
    resp = await other.login("ivan", totp, keys)
    async with cluster.client(client_cert=(resp.tls_cert.encode(), keys.tls_private)) as client:
        # The TLS layer already refuses a certificate from an unknown CA.
        with pytest.raises(ConnectionProblem, match="refused your certificate"):
            await client.list_nodes(CLUSTER)


# --- malformed requests ------------------------------------------------------------------------

async def test_garbage_json_is_a_one_line_400(cluster: Cluster) -> None:
    for body in (b"{nope", b"\xff\xfe", b"[1, 2]"):
        status, headers, text = await _raw(cluster, "POST", "/webapi/ssh/certs", body)
        assert status == 400 and headers["Content-Type"].startswith("application/json")
        assert re.fullmatch(r'\{"error": \{"code": "bad_parameter", "message": "[^"\n]+"\}\}',
                            text), text
    status, _, text = await _raw(cluster, "POST", "/webapi/ssh/certs", b'{"user": "x"}')
    assert status == 400 and "missing or invalid field 'password'" in text
    status, _, text = await _raw(cluster, "POST", "/webapi/ssh/certs",
                                 b'{"user": "x", "password": "p", "pub_key": "k", '
                                 b'"tls_pub_key": "t", "ttl": "forever"}')
    assert status == 400 and "invalid duration" in text


async def test_unknown_paths_and_methods_are_json(cluster: Cluster) -> None:
    status, headers, text = await _raw(cluster, "GET", "/webapi/nope")
    assert status == 404 and '"code": "not_found"' in text
    assert headers["Content-Type"].startswith("application/json")
    status, _, text = await _raw(cluster, "DELETE", "/webapi/ping")
    assert status == 405 and '"code": "bad_parameter"' in text


async def test_large_bodies_are_refused(cluster: Cluster) -> None:
    status, _, text = await _raw(cluster, "PUT", "/webapi/users/password/token",
                                 b"{" + b" " * MAX_BODY + b"}")
    assert status == 413 and '"code": "limit_exceeded"' in text
    async with cluster.client() as web_client:
        with pytest.raises(LimitExceeded):
            await web_client.complete_signup("0" * 32, "x" * MAX_BODY, "")


async def test_root_leads_a_stranger_to_the_login_page_of_the_ui(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://{cluster.addr}/", ssl=False,
                               allow_redirects=False) as resp:
            assert (resp.status, resp.headers["Location"]) == (302, "/web")
        async with session.get(f"https://{cluster.addr}/web/cluster/{CLUSTER}/nodes?q=a",
                               ssl=False, allow_redirects=False) as resp:
            assert resp.status == 302
            login = urlsplit(resp.headers["Location"])
            assert login.path == "/web/login"
            assert parse_qs(login.query) == {"redirect": [f"/web/cluster/{CLUSTER}/nodes?q=a"]}
    status, headers, text = await _raw(cluster, "GET", "/")
    assert status == 200 and f'<meta name="teleport-cluster" content="{CLUSTER}">' in text
    assert '<meta name="teleport-bearer" content="">' in text
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert headers["X-Frame-Options"] == "DENY"


async def test_auth_server_down_is_a_502(cluster: Cluster) -> None:
    await cluster.proxy.auth.close()
    cluster.proxy.auth.addrs = [HostPort("127.0.0.1", 1)]
    async with cluster.client() as web_client:
        with pytest.raises(ConnectionProblem, match="cannot reach the auth server"):
            await web_client.ping()
