"""Host X.509 certificates live a year and a running host renews its own through the rotation
follower (the re-issue a rotation uses), two thirds into their life, with no rotation; a
ten-year certificate of an older version is renewed at once; an expired one says to join again."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from teleport.auth.identity_file import IdentityFile
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.events.emitter import MemoryEmitter
from teleport.keys import tls as tlskeys
from teleport.keys.identity import Identity
from teleport.service.identities import issue_local_identity
from teleport.service.rotation import IdentityFollower
from teleport.utils.clock import FakeClock
from tests.unit.service.issuers import Counted

YEAR = timedelta(days=365)


@pytest.fixture
async def auth(tmp_path: Path) -> AuthServer:
    clock = FakeClock()
    server = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                        AuthSettings(cluster_name="renew.test", recordings_dir=tmp_path / "rec"))
    await server.init()
    return server


async def _follower(auth: AuthServer, data_dir: Path, issue: Counted,
                    identity: IdentityFile | None = None,
                    on_lost: Callable[[str | None], None] | None = None) -> IdentityFollower:
    if identity is None:
        identity = await issue_local_identity(auth, data_dir, "Node", "node-1", "node1", [])
    return IdentityFollower(identity, data_dir, fetch_ca=auth.certs.get_ca, issue=issue,
                            now=auth.clock.now, interval=0.05, on_lost=on_lost)


def _clock(auth: AuthServer) -> FakeClock:
    assert isinstance(auth.clock, FakeClock)
    return auth.clock


async def test_host_tls_certificates_live_a_year(auth: AuthServer, tmp_path: Path) -> None:
    """Not ten years: within the 366 days Mozilla's profiles (and sslyze) allow."""
    identity = await issue_local_identity(auth, tmp_path, "Auth", "auth-1", "auth1", [])
    start, end = tlskeys.validity(identity.tls_cert.encode())
    assert YEAR <= end - start < YEAR + timedelta(minutes=5)
    assert end - auth.clock.now() <= YEAR


async def test_a_running_host_renews_its_certificate_before_it_expires(
        auth: AuthServer, tmp_path: Path) -> None:
    issue = Counted(auth)
    follower = await _follower(auth, tmp_path, issue)
    served: list[IdentityFile] = []
    used: list[IdentityFile] = []
    follower.on_server(served.append)
    follower.on_client(used.append)
    old_end = tlskeys.validity(follower.current.tls_cert.encode())[1]

    _clock(auth).advance(timedelta(days=240))  # less than two thirds of the year
    await follower.check()
    assert issue.calls == 0 and not served

    _clock(auth).advance(timedelta(days=5))
    for _ in range(3):
        await follower.check()
    assert issue.calls == 1  # once, not at every check
    assert served == used == [follower.current]
    start, end = tlskeys.validity(follower.current.tls_cert.encode())
    assert end > old_end and end - auth.clock.now() > YEAR - timedelta(days=1)
    # Kept on disk before it is used: a restart presents the renewed certificate.
    assert IdentityFile.load(tmp_path, "Node").tls_cert == follower.current.tls_cert


async def test_a_ten_year_certificate_of_an_older_version_is_renewed_at_once(
        auth: AuthServer, tmp_path: Path) -> None:
    issue = Counted(auth)
    identity = await issue_local_identity(auth, tmp_path, "Node", "node-1", "node1", [])
    ca = await auth.certs.get_ca("tls", with_secrets=True)
    pair = ca.spec.active_keys.tls[0]
    now = auth.clock.now()
    long_lived = tlskeys.issue_tls_cert(
        pair.key.encode(), pair.cert.encode(),
        tlskeys.tls_public_key_pem(identity.tls_private_key.encode()),
        Identity(username="node-1", roles=("Node",), cluster="renew.test", system_role="Node",
                 host_uuid="node-1"), now=now, not_after=now + 10 * YEAR)
    identity = dataclasses.replace(identity, tls_cert=long_lived.decode())
    follower = await _follower(auth, tmp_path, issue, identity)
    await follower.check()
    await follower.check()
    assert issue.calls == 1
    start, end = tlskeys.validity(follower.current.tls_cert.encode())
    assert end - start < YEAR + timedelta(minutes=5)


async def test_an_expired_certificate_says_to_join_again(
        auth: AuthServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A host away for longer than its certificate lives cannot renew it: one clear line."""
    issue = Counted(auth, refuse=True)
    lost: list[str | None] = []
    said = asyncio.Event()

    def on_lost(reason: str | None) -> None:
        lost.append(reason)
        said.set()

    follower = await _follower(auth, tmp_path, issue, on_lost=on_lost)
    _clock(auth).advance(YEAR + timedelta(days=1))
    task = asyncio.create_task(follower.run())
    try:
        async with asyncio.timeout(5):
            await said.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert lost[0] is not None and "TLS certificate expired on" in lost[0]
    assert "Join again" in lost[0] and "tctl tokens add" in lost[0]
    assert any("expired" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
