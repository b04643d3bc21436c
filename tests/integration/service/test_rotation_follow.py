"""Hosts follow a CA rotation without a restart: a real auth+proxy process and a node process
that joined it with a token. The phases are stepped in manual mode (with the real `tctl auth
rotate`, or on the auth server); after each one we look at what a user sees: which CA signed the
host certificate the node and the proxy show a new SSH client, which signed the auth server's
TLS certificate, whether the node's auth client still works, whether a live SSH session opened
before the rotation still runs commands, and whether `tctl` (the auth host's Admin identity)
still works. (Not ssh-keyscan: it waits for the server to speak first, and a node waits for the
client's first bytes, which may be a proxy's signed address line.)"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from teleport.auth.client import AuthClient
from teleport.auth.identity_file import IdentityFile
from teleport.auth.server import AuthServer
from teleport.config import StartFlags, load_config
from teleport.errors import ConnectionProblem
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.service.process import TeleportProcess
from teleport.types.resource import Metadata
from teleport.types.resources import User, UserSpec
from teleport.types.rotation import Mode, Phase
from teleport.utils.addr import HostPort
from tests.host_certs import host_ca
from tests.integration.service.conftest import LoopbackConfig

TOKEN = "rotation-static-token"
CLUSTER = "rotation.test"
BIN = Path(sys.executable).parent
#: How long hosts may take to follow a phase: CA changes reach them within a second.
FOLLOW = 8.0


def _config(path: Path, text: str) -> Any:
    path.write_text(text)
    return load_config(StartFlags(config_path=str(path)))


@dataclass
class Cluster:
    tmp: Path
    main: TeleportProcess
    node: TeleportProcess | None = None

    @property
    def auth(self) -> AuthServer:
        assert self.main.auth is not None
        return self.main.auth

    def node_config(self) -> Any:
        return _config(self.tmp / "node.yaml", f"""\
teleport:
  nodename: rot-node
  data_dir: {self.tmp / "node"}
  auth_token: {TOKEN}
  auth_servers: ["127.0.0.1:{self.main.ports['auth']}"]
auth_service:
  enabled: no
proxy_service:
  enabled: no
ssh_service:
  enabled: yes
  listen_addr: 127.0.0.1:0
""")

    async def start_node(self) -> TeleportProcess:
        node = TeleportProcess(self.node_config())
        await node.__aenter__()
        self.node = node
        return node

    async def stop_node(self) -> None:
        if self.node is not None:
            node, self.node = self.node, None
            await node.close()

    async def rotate(self, phase: Phase) -> None:
        await self.auth.rotations.rotate("admin", ["host", "tls"], Mode.MANUAL, phase,
                                         timedelta(hours=1))

    async def keys(self) -> tuple[list[str], list[str]]:
        """The host CA's signing key and the TLS CA's signing certificate now."""
        host = await self.auth.certs.get_ca("host")
        tls = await self.auth.certs.get_ca("tls")
        return ([k.public_key for k in host.spec.active_keys.ssh],
                [k.cert for k in tls.spec.active_keys.tls])

    def node_client(self) -> AuthClient:
        """The node process's own auth client (the one its heartbeat and watch use)."""
        assert self.node is not None and self.node._revocations is not None
        return self.node._revocations.client

    async def tctl_rotate(self, phase: Phase) -> None:
        """Step every CA (user, host, tls) with the real `tctl auth rotate --manual`."""
        code, out = await asyncio.to_thread(self.tctl, "auth", "rotate", "--manual",
                                            f"--phase={phase}")
        assert code == 0, out

    def tctl(self, *args: str) -> tuple[int, str]:
        """Run the real tctl on the auth host, with its Admin identity."""
        config = self.tmp / "tctl.yaml"
        config.write_text(f"""\
teleport:
  data_dir: {self.tmp / "main"}
auth_service:
  enabled: yes
  listen_addr: 127.0.0.1:{self.main.ports['auth']}
""")
        done = subprocess.run([str(BIN / "tctl"), "-c", str(config), *args], text=True,
                              capture_output=True, timeout=30, env={**os.environ})
        return done.returncode, done.stdout + done.stderr


def signed_by(cert: str, ca_keys: list[str]) -> bool:
    return sshkeys.parse_cert(cert).signature_key.split()[:2] in [k.split()[:2] for k in ca_keys]


async def auth_tls_cert(port: int) -> bytes:
    """The certificate the auth server presents to a new TLS connection (DER)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                              server_hostname="teleport.cluster.local")
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return bytes(der)


def tls_signed_by(der: bytes, ca_certs: list[str]) -> bool:
    return tlskeys.issued_by(der, [c.encode() for c in ca_certs])


async def until(check: Callable[[], Any], within: float = FOLLOW) -> None:
    """Wait until the (async) check holds; fail with its last answer after within seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not within {within}s: {check}")
        await asyncio.sleep(0.1)


async def presents(port: int, keys: list[str]) -> bool:
    """Tell whether the SSH server on port presents a host certificate signed by one of keys."""
    signer = (await host_ca(port)).split()[:2]
    return signer in [k.split()[:2] for k in keys]


@pytest.fixture
async def cluster(tmp_path: Path, loopback: LoopbackConfig) -> AsyncIterator[Cluster]:
    main = TeleportProcess(loopback("rot-auth", CLUSTER, data="main", ssh=False,
                                    tokens=[f"node:{TOKEN}"]))
    async with main:
        made = Cluster(tmp_path, main)
        try:
            await made.start_node()
            yield made
        finally:
            await made.stop_node()


async def _user_session(cluster: Cluster) -> asyncssh.SSHClientConnection:
    """Log a user in to the node over SSH, trusting the host CA's keys as they are now."""
    user = User(metadata=Metadata(name="alice"),
                spec=UserSpec(roles=["access"], traits={"logins": ["root"]}))
    await cluster.auth.accounts.upsert_user(user, actor="test")
    key = sshkeys.generate_private_key()
    issued = await cluster.auth.certs.issue_user_certs(
        user, sshkeys.public_key_of(key),
        tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()), timedelta(hours=1))
    host = await cluster.auth.certs.get_ca("host")
    assert cluster.node is not None
    port = cluster.node.ports["node"]
    await until(lambda: cluster.node is not None and cluster.node._revocations is not None
                and cluster.node._revocations.roles is not None)
    return await asyncssh.connect(
        "127.0.0.1", port, username="root",
        client_keys=[(asyncssh.import_private_key(key), asyncssh.import_certificate(issued.ssh_cert))],
        known_hosts=([], [asyncssh.import_public_key(k) for k in host.trusted_ssh_public_keys()], []),
        agent_path=None, config=None, preferred_auth=["publickey"])


async def _runs(conn: asyncssh.SSHClientConnection, text: str) -> None:
    result = await asyncio.wait_for(conn.run(f"echo {text}", check=True), 10)
    assert result.stdout == f"{text}\n"


async def test_node_proxy_and_auth_follow_a_rotation_without_a_restart(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "teleport.rotation")
    assert cluster.node is not None
    node_port, proxy_port = cluster.node.ports["node"], cluster.main.ports["proxy_ssh"]
    auth_port = cluster.main.ports["auth"]
    old_ssh, old_tls = await cluster.keys()
    live = await _user_session(cluster)
    await _runs(live, "before")
    client = cluster.node_client()

    await cluster.tctl_rotate(Phase.INIT)
    # Nothing is re-issued; the node's auth client trusts the new TLS CA next to the old one.
    await until(lambda: len(client.tls_ca_pems) == 2)
    assert await presents(node_port, old_ssh) and await presents(proxy_port, old_ssh)

    await cluster.tctl_rotate(Phase.UPDATE_CLIENTS)
    new_ssh, new_tls = await cluster.keys()
    assert new_ssh != old_ssh
    # The node uses new certificates as a client, and still presents the old ones.
    await until(lambda: (cluster.tmp / "node" / "identity" / "node.next.json").exists())
    next_cert = cluster.node.rotation["Node"].client_identity.tls_cert.encode()
    assert tls_signed_by(next_cert, new_tls)
    assert await presents(node_port, old_ssh) and await presents(proxy_port, old_ssh)
    assert tls_signed_by(await auth_tls_cert(auth_port), old_tls)
    await client.ping()

    await cluster.tctl_rotate(Phase.UPDATE_SERVERS)
    # Every server presents the new CA's certificates to new connections.
    await until(lambda: presents(node_port, new_ssh))
    await until(lambda: presents(proxy_port, new_ssh))
    await until(async_tls(auth_port, new_tls))
    assert not (cluster.tmp / "node" / "identity" / "node.next.json").exists()
    saved = IdentityFile.load(cluster.tmp / "node", "Node")
    assert signed_by(saved.ssh_cert, new_ssh)

    await cluster.tctl_rotate(Phase.STANDBY)
    await until(lambda: client.tls_ca_pems == [c.encode() for c in new_tls])
    # The old CA is gone: the node's client, the live session, a new session and tctl work.
    await client.ping()
    await _runs(live, "after")
    fresh = await _user_session(cluster)
    await _runs(fresh, "again")
    fresh.close()
    code, out = await asyncio.to_thread(cluster.tctl, "status")
    assert code == 0, out
    admin = IdentityFile.load(cluster.tmp / "main", "Admin")
    assert tls_signed_by(admin.tls_cert.encode(), new_tls)
    assert admin.tls_ca_certs == new_tls
    live.close()
    steps = [r.getMessage() for r in caplog.records if r.name == "teleport.rotation"]
    assert any("Re-issued the node certificates" in m and "as a client" in m for m in steps)
    assert any("Presenting the node certificates of the new CA" in m for m in steps)


def async_tls(port: int, certs: list[str]) -> Callable[[], Any]:
    async def check() -> bool:
        return tls_signed_by(await auth_tls_cert(port), certs)

    return check


async def test_a_rollback_puts_the_old_ca_back_everywhere(cluster: Cluster) -> None:
    assert cluster.node is not None
    node_port, proxy_port = cluster.node.ports["node"], cluster.main.ports["proxy_ssh"]
    auth_port = cluster.main.ports["auth"]
    old_ssh, old_tls = await cluster.keys()
    for phase in (Phase.INIT, Phase.UPDATE_CLIENTS, Phase.UPDATE_SERVERS):
        await cluster.rotate(phase)
    new_ssh, _ = await cluster.keys()
    await until(lambda: presents(node_port, new_ssh))
    before = IdentityFile.load(cluster.tmp / "node", "Node")

    await cluster.rotate(Phase.ROLLBACK)
    await until(lambda: presents(node_port, old_ssh))
    await until(lambda: presents(proxy_port, old_ssh))
    await until(async_tls(auth_port, old_tls))
    after = IdentityFile.load(cluster.tmp / "node", "Node")
    assert after.ssh_private_key != before.ssh_private_key  # re-issued, fresh keys
    await cluster.rotate(Phase.STANDBY)
    client = cluster.node_client()
    await until(lambda: client.tls_ca_pems == [c.encode() for c in old_tls])
    await client.ping()
    assert await presents(node_port, old_ssh)
    code, out = await asyncio.to_thread(cluster.tctl, "status")
    assert code == 0, out


async def test_a_node_restarted_mid_rotation_keeps_presenting_the_old_certificate(
        cluster: Cluster) -> None:
    old_ssh, _ = await cluster.keys()
    await cluster.rotate(Phase.INIT)
    await cluster.rotate(Phase.UPDATE_CLIENTS)
    new_ssh, new_tls = await cluster.keys()
    next_file = cluster.tmp / "node" / "identity" / "node.next.json"
    await until(next_file.exists)
    assert oct(next_file.stat().st_mode & 0o777) == "0o600"
    await cluster.stop_node()

    node = await cluster.start_node()
    assert await presents(node.ports["node"], old_ssh)
    # As a client it is the new CA's at once: its auth client works with the kept certificate.
    assert tls_signed_by(node.rotation["Node"].client_identity.tls_cert.encode(), new_tls)
    await cluster.node_client().ping()
    await cluster.rotate(Phase.UPDATE_SERVERS)
    await until(lambda: presents(node.ports["node"], new_ssh))


async def test_a_node_away_for_a_whole_rotation_says_why_in_one_line(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    await cluster.stop_node()
    for phase in (Phase.INIT, Phase.UPDATE_CLIENTS, Phase.UPDATE_SERVERS, Phase.STANDBY):
        await cluster.rotate(phase)
    caplog.set_level(logging.INFO, "teleport.rotation")
    node = await cluster.start_node()

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "teleport.rotation" and r.levelno == logging.ERROR]

    await until(said)
    [line] = said()
    assert "rotated while this node was away" in line and "new token" in line
    assert "\n" not in line
    assert "node certificates" in node.health.problems()


async def test_the_auth_servers_tls_listener_drops_a_client_ca_at_standby(
        cluster: Cluster) -> None:
    """A certificate of the dropped TLS CA is refused by the auth server after standby."""
    old_tls_key = tlskeys.generate_tls_key()
    old = await cluster.auth.certs.issue_host_certs(
        host_uuid="old-host", nodename="old-host", system_role="Node",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(old_tls_key), addresses=[])
    for phase in (Phase.INIT, Phase.UPDATE_CLIENTS, Phase.UPDATE_SERVERS):
        await cluster.rotate(phase)
    _, new_tls = await cluster.keys()
    addr = [HostPort("127.0.0.1", cluster.main.ports["auth"])]
    trusting_both = [c.encode() for c in (await cluster.auth.certs.get_ca("tls")).trusted_tls_certs()]
    async with AuthClient.from_tls(old.tls_cert.encode(), old_tls_key, trusting_both, addr) as stale:
        await stale.ping()  # both CAs are still trusted in update_servers
    await cluster.rotate(Phase.STANDBY)
    await until(lambda: cluster.main.rotation["Auth"]._trusted_tls == [c.encode() for c in new_tls])
    async with AuthClient.from_tls(old.tls_cert.encode(), old_tls_key, trusting_both, addr) as stale:
        with pytest.raises(ConnectionProblem) as refused:
            await stale.ping()
    # TLS 1.3 checks the client's certificate after the handshake: the server hangs up.
    assert "hung up" in str(refused.value) or "alert" in str(refused.value)


async def test_a_node_behind_the_proxy_dials_its_tunnel_with_the_new_certificate(
        cluster: Cluster) -> None:
    tunnels = cluster.main.tunnels
    assert tunnels is not None
    config = _config(cluster.tmp / "tunnel.yaml", f"""\
teleport:
  nodename: rot-tunnel
  data_dir: {cluster.tmp / "tunnel"}
  auth_token: {TOKEN}
  auth_servers: ["127.0.0.1:{cluster.main.ports['proxy_web']}"]
auth_service:
  enabled: no
proxy_service:
  enabled: no
ssh_service:
  enabled: yes
""")
    async with TeleportProcess(config) as behind:
        uuid = behind.host_uuid
        await until(lambda: tunnels.has(uuid))
        old_ssh, _ = await cluster.keys()
        await cluster.rotate(Phase.INIT)
        await cluster.rotate(Phase.UPDATE_CLIENTS)
        new_ssh, _ = await cluster.keys()
        # Re-issued through the auth API, reached over the tunnel itself.
        await until((cluster.tmp / "tunnel" / "identity" / "node.next.json").exists)

        async def redial() -> str:
            """Drop the node's tunnel; return which CA signed the certificate it dials back with."""
            old = tunnels.tunnels[uuid]
            old.close()
            await until(lambda: tunnels.tunnels.get(uuid) not in (None, old))
            conn = tunnels.tunnels[uuid]
            assert conn.identity is not None
            return conn.identity.cert.signature_key

        assert signed_key(await redial(), new_ssh)
        for phase in (Phase.UPDATE_SERVERS, Phase.STANDBY):
            await cluster.rotate(phase)
        await until(lambda: not (cluster.tmp / "tunnel" / "identity" / "node.next.json").exists())
        # The old CA is gone: the proxy accepts the tunnel only with the new certificate.
        assert signed_key(await redial(), new_ssh)
        assert not signed_key(tunnels.tunnels[uuid].identity.cert.signature_key, old_ssh)  # type: ignore[union-attr]


def signed_key(signer: str, keys: list[str]) -> bool:
    return signer.split()[:2] in [k.split()[:2] for k in keys]


async def test_a_rollback_from_update_clients_leaves_one_fresh_identity(cluster: Cluster) -> None:
    """The client certificates of the new CA go; the node re-issues once from the old CA."""
    assert cluster.node is not None
    old_ssh, old_tls = await cluster.keys()
    next_file = cluster.tmp / "node" / "identity" / "node.next.json"
    before = IdentityFile.load(cluster.tmp / "node", "Node")
    await cluster.rotate(Phase.INIT)
    await cluster.rotate(Phase.UPDATE_CLIENTS)
    await until(next_file.exists)
    await cluster.rotate(Phase.ROLLBACK)
    await until(lambda: not next_file.exists())
    after = IdentityFile.load(cluster.tmp / "node", "Node")
    assert after.ssh_private_key != before.ssh_private_key
    assert signed_by(after.ssh_cert, old_ssh) and tls_signed_by(after.tls_cert.encode(), old_tls)
    assert cluster.node.rotation["Node"].client_identity == after
    await cluster.node_client().ping()
