"""CA rotation on the auth server: which keys sign and which are trusted in every phase, the
refusals an admin gets, automatic mode on the clock, and the audit trail (`cert.rotate`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied, BadParameter
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.types.resource import Metadata
from teleport.types.resources import CertAuthority, User, UserSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api


@dataclass
class Cluster:
    auth: AuthServer
    addr: HostPort
    clock: FakeClock
    emitter: MemoryEmitter

    async def client(self, role: str) -> AuthClient:
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid=f"{role.lower()}-1", nodename=role.lower(), system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                           [c.encode() for c in certs.tls_ca_certs])
        return AuthClient([self.addr], ctx, timeout=10, cluster=self.auth.cluster_name)

    async def ca(self, ca_type: str) -> CertAuthority:
        return await self.auth.certs.get_ca(ca_type)

    async def user_cert(self) -> str:
        user = User(metadata=Metadata(name="alice"), spec=UserSpec(roles=["access"]))
        key = sshkeys.generate_private_key()
        issued = await self.auth.certs.issue_user_certs(
            user, sshkeys.public_key_of(key), tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()),
            timedelta(hours=1))
        return issued.ssh_cert


async def _cluster(signature_algo: str | None = None) -> tuple[Cluster, object]:
    clock = FakeClock(datetime.now(timezone.utc))
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(clock), emitter, clock,
                      AuthSettings(cluster_name="rot.test", ca_signature_algo=signature_algo))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    return Cluster(auth, addr, clock, emitter), runner


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    made, runner = await _cluster()
    try:
        yield made
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


def _signed_by(cert: str, ca_key: str, now: datetime) -> bool:
    try:
        sshkeys.verify_cert(cert, [ca_key], now=now, cert_type="user")
    except AccessDenied:
        return False
    return True


async def test_manual_rotation_moves_signing_and_trust_phase_by_phase(cluster: Cluster) -> None:
    old = (await cluster.ca("user")).spec.active_keys.ssh[0].public_key
    async with await cluster.client("Admin") as admin:
        [ca] = await admin.rotate("user", mode="manual", phase="init", grace_period="1h")
        assert ca.spec.rotation.phase == "init" and ca.spec.rotation.state == "in_progress"
        assert ca.spec.rotation.mode == "manual" and ca.spec.rotation.grace_period == timedelta(hours=1)
        new = ca.spec.additional_trusted_keys.ssh[0].public_key
        assert new != old and ca.trusted_ssh_public_keys() == [old, new]
        assert not ca.spec.active_keys.ssh[0].private_key  # the API hands out public parts only
        # init: the old key still signs, the new one is only trusted.
        now = cluster.clock.now()
        assert _signed_by(await cluster.user_cert(), old, now)

        await admin.rotate("user", mode="manual", phase="update_clients", grace_period=None)
        ca = await cluster.ca("user")
        assert ca.trusted_ssh_public_keys() == [new, old]
        assert _signed_by(await cluster.user_cert(), new, now)

        await admin.rotate("user", mode="manual", phase="update_servers", grace_period=None)
        assert (await cluster.ca("user")).trusted_ssh_public_keys() == [new, old]

        [ca] = await admin.rotate("user", mode="manual", phase="standby", grace_period=None)
        assert ca.trusted_ssh_public_keys() == [new]  # the old key is gone
        assert ca.spec.rotation.state == "standby" and ca.spec.rotation.last_rotated == now
    # The other CAs were not touched.
    assert (await cluster.ca("host")).spec.rotation.phase == "standby"
    assert not (await cluster.ca("host")).spec.additional_trusted_keys.ssh


async def test_rollback_makes_the_old_key_sign_again_and_drops_the_new_one(cluster: Cluster) -> None:
    old = (await cluster.ca("host")).spec.active_keys.ssh[0].public_key
    async with await cluster.client("Admin") as admin:
        await admin.rotate("host", mode="manual", phase="init", grace_period=None)
        await admin.rotate("host", mode="manual", phase="update_clients", grace_period=None)
        new = (await cluster.ca("host")).spec.active_keys.ssh[0].public_key
        [ca] = await admin.rotate("host", mode="manual", phase="rollback", grace_period=None)
        assert ca.spec.active_keys.ssh[0].public_key == old  # signs again
        assert ca.trusted_ssh_public_keys() == [old, new]  # hosts can still re-issue
        [ca] = await admin.rotate("host", mode="manual", phase="standby", grace_period=None)
        assert ca.trusted_ssh_public_keys() == [old]
        assert ca.spec.rotation.last_rotated.year == 1  # a rollback rotated nothing
        # From init too (the old key never stopped signing), and from update_servers.
        for steps in (["init"], ["init", "update_clients", "update_servers"]):
            for phase in steps:
                await admin.rotate("host", mode="manual", phase=phase, grace_period=None)
            [ca] = await admin.rotate("host", mode="manual", phase="rollback", grace_period=None)
            assert ca.spec.active_keys.ssh[0].public_key == old
            [ca] = await admin.rotate("host", mode="manual", phase="standby", grace_period=None)
            assert ca.trusted_ssh_public_keys() == [old]


async def test_refusals_name_the_problem_and_change_nothing(cluster: Cluster) -> None:
    async with await cluster.client("Admin") as admin:
        with pytest.raises(BadParameter, match="not being rotated: start with --phase=init"):
            await admin.rotate("user", mode="manual", phase="update_clients", grace_period=None)
        with pytest.raises(BadParameter, match="--phase needs --manual"):
            await admin.rotate("user", mode="auto", phase="standby", grace_period=None)
        with pytest.raises(BadParameter, match="--manual needs --phase"):
            await admin.rotate("user", mode="manual", phase=None, grace_period=None)
        with pytest.raises(BadParameter, match="at least 3s"):
            await admin.rotate("user", mode="auto", phase=None, grace_period="1s")
        with pytest.raises(BadParameter, match="invalid duration"):
            await admin.rotate("user", mode="auto", phase=None, grace_period="two days")
        await admin.rotate("host", mode="manual", phase="init", grace_period=None)
        before = {t: await cluster.ca(t) for t in ("user", "host", "tls")}
        # A rotation in progress blocks a new one, for `all` too: nothing at all changes.
        with pytest.raises(BadParameter, match="rotation of the host CA is in progress"):
            await admin.rotate("all", mode="auto", phase=None, grace_period=None)
        with pytest.raises(BadParameter, match="next phase is update_clients or rollback, not standby"):
            await admin.rotate("host", mode="manual", phase="standby", grace_period=None)
        assert {t: await cluster.ca(t) for t in ("user", "host", "tls")} == before
    async with await cluster.client("Node") as node:
        with pytest.raises(AccessDenied):
            await node.rotate("user", mode="auto", phase=None, grace_period=None)
    assert (await cluster.ca("user")).spec.rotation.phase == "standby"


async def test_automatic_mode_walks_the_phases_over_the_grace_period(cluster: Cluster) -> None:
    async with await cluster.client("Admin") as admin:
        changed = await admin.rotate("all", mode="auto", phase=None, grace_period="30h")
    assert [c.spec.type for c in changed] == ["user", "host", "tls"]
    rotations = cluster.auth.rotations
    seen = []
    for _ in range(4):
        await rotations.advance_due()  # not due yet: nothing moves
        seen.append((await cluster.ca("tls")).spec.rotation.phase)
        cluster.clock.advance(timedelta(hours=10))
    await rotations.advance_due()
    assert seen == ["init", "update_clients", "update_servers", "standby"]
    assert (await cluster.ca("tls")).spec.rotation.state == "standby"
    assert len((await cluster.ca("tls")).trusted_tls_certs()) == 1
    # Audited: who started it and every phase the clock moved, per CA.
    events = [(e["user"], e["ca_type"], e["phase"], e["mode"]) for e in cluster.emitter.of_type("cert.rotate")]
    assert events[:3] == [("admin-1", t, "init", "auto") for t in ("user", "host", "tls")]
    assert [(e[1], e[2]) for e in events[3:]] == [
        (t, p) for p in ("update_clients", "update_servers", "standby") for t in ("user", "host", "tls")]
    assert {e[0] for e in events[3:]} == {"system"}


async def test_the_tls_ca_rotation_changes_what_signs_host_and_user_certificates(cluster: Cluster) -> None:
    old = (await cluster.ca("tls")).spec.active_keys.tls[0].cert
    async with await cluster.client("Admin") as admin:
        await admin.rotate("tls", mode="manual", phase="init", grace_period=None)
        new = (await cluster.ca("tls")).spec.additional_trusted_keys.tls[0].cert
        await admin.rotate("tls", mode="manual", phase="update_clients", grace_period=None)
    key = tlskeys.generate_tls_key()
    issued = await cluster.auth.certs.issue_host_certs(
        host_uuid="n1", nodename="n1", system_role="Node",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(key), addresses=[])
    assert _verifies(issued.tls_cert, new) and not _verifies(issued.tls_cert, old)
    assert issued.tls_ca_certs == [new, old]  # the host trusts both until the rotation ends


async def test_ca_signature_algo_moves_an_rsa_cluster_to_rsa_sha2_512() -> None:
    cluster, runner = await _cluster("rsa-sha2-256")
    try:
        assert (await cluster.ca("user")).spec.signing_alg == "rsa-sha2-256"
        assert _ssh_signature_algorithm(await cluster.user_cert()) == "rsa-sha2-256"
        # The admin sets ca_signature_algo and restarts the auth server on the same store.
        cluster.auth.ctx.settings = AuthSettings(cluster_name="rot.test",
                                                 ca_signature_algo="rsa-sha2-512")
        async with await cluster.client("Admin") as admin:
            await admin.rotate("user", mode="manual", phase="init", grace_period=None)
            await admin.rotate("user", mode="manual", phase="update_clients", grace_period=None)
        ca = await cluster.ca("user")
        assert ca.spec.signing_alg == "rsa-sha2-512"
        assert ca.spec.active_keys.ssh[0].public_key.startswith("ssh-rsa ")
        cert = await cluster.user_cert()
        assert _ssh_signature_algorithm(cert) == "rsa-sha2-512"
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


def _ssh_signature_algorithm(cert: str) -> str:
    """What `ssh-keygen -L` says the certificate's CA signed it with."""
    import re
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix="-cert.pub") as f:
        f.write(cert)
        f.flush()
        shown = subprocess.run(["ssh-keygen", "-L", "-f", f.name], capture_output=True,
                               text=True, check=True).stdout
    match = re.search(r"Signing CA: .*\(using ([\w@.-]+)\)", shown)
    assert match, shown
    return match.group(1)


def _verifies(cert_pem: str, ca_pem: str) -> bool:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
