"""The identity follower's decisions, against a real auth server in memory: one re-issue per
phase and rotation however often it checks, kept across a restart, hooks called at the right
phase, and a kept next identity that is not ours ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teleport.auth.identity_file import IdentityFile
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.events.emitter import MemoryEmitter
from teleport.service.identities import issue_local_identity
from teleport.service.rotation import IdentityFollower, next_path, state_path
from teleport.types.rotation import Mode, Phase
from teleport.utils.clock import RealClock
from tests.unit.service.issuers import Counted


@pytest.fixture
async def auth(tmp_path: Path) -> AuthServer:
    clock = RealClock()
    server = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                        AuthSettings(cluster_name="follow.test", recordings_dir=tmp_path / "rec"))
    await server.init()
    return server


async def _follower(auth: AuthServer, data_dir: Path, issue: Counted) -> IdentityFollower:
    try:
        identity = IdentityFile.load(data_dir, "Node")
    except Exception:
        identity = await issue_local_identity(auth, data_dir, "Node", "node-1", "node1", [])
    return IdentityFollower(identity, data_dir, fetch_ca=auth.certs.get_ca, issue=issue,
                            now=auth.clock.now)


async def _rotate(auth: AuthServer, phase: Phase) -> None:
    await auth.rotations.rotate("admin", ["host", "tls"], Mode.MANUAL, phase, None)


async def test_each_phase_costs_one_reissue_however_often_it_checks(
        auth: AuthServer, tmp_path: Path) -> None:
    issue = Counted(auth)
    follower = await _follower(auth, tmp_path, issue)
    served: list[IdentityFile] = []
    used: list[IdentityFile] = []
    trusted: list[list[bytes]] = []
    follower.on_server(served.append)
    follower.on_client(used.append)
    follower.on_trust(trusted.append)
    original = follower.current

    await _rotate(auth, Phase.INIT)
    for _ in range(3):
        await follower.check()
    assert issue.calls == 0 and not served and not used
    assert len(trusted) == 1 and len(trusted[0]) == 2  # the new TLS CA is trusted at once

    await _rotate(auth, Phase.UPDATE_CLIENTS)
    for _ in range(3):
        await follower.check()
    assert issue.calls == 1 and not served and used == [follower.next]
    assert follower.current.ssh_cert == original.ssh_cert  # still presented
    kept = json.loads(next_path(tmp_path, "Node").read_text())
    tls = await auth.certs.get_ca("tls")
    assert kept["rotation"]["tls"] == {"current_id": tls.spec.rotation.current_id,
                                       "phase": "update_clients"}
    assert oct(next_path(tmp_path, "Node").stat().st_mode & 0o777) == "0o600"

    # A restart in update_clients: the kept next identity, and still no second re-issue.
    follower = await _follower(auth, tmp_path, issue)
    assert follower.next is not None and follower.client_identity == follower.next
    await follower.check()
    assert issue.calls == 1

    await _rotate(auth, Phase.UPDATE_SERVERS)
    follower.on_server(served.append)
    for _ in range(3):
        await follower.check()
    assert issue.calls == 1  # promoted, not issued again
    assert len(served) == 1 and follower.next is None
    assert IdentityFile.load(tmp_path, "Node").ssh_cert == served[0].ssh_cert

    await _rotate(auth, Phase.STANDBY)
    follower.on_trust(trusted.append)
    await follower.check()
    await follower.check()
    assert issue.calls == 1 and trusted[-1] == [c.encode() for c in tls.trusted_tls_certs()[:1]]
    assert IdentityFile.load(tmp_path, "Node").tls_ca_certs == [tls.spec.active_keys.tls[0].cert]
    state = json.loads(state_path(tmp_path, "Node").read_text())
    assert state["host"]["phase"] == "standby"


async def test_a_rollback_reissues_once_per_rotation(auth: AuthServer, tmp_path: Path) -> None:
    issue = Counted(auth)
    follower = await _follower(auth, tmp_path, issue)
    await _rotate(auth, Phase.INIT)
    await follower.check()
    await _rotate(auth, Phase.ROLLBACK)
    for _ in range(3):
        await follower.check()
    assert issue.calls == 1
    follower = await _follower(auth, tmp_path, issue)  # a restart: the rollback was followed
    await follower.check()
    assert issue.calls == 1


async def test_a_kept_next_identity_of_another_host_is_ignored(
        auth: AuthServer, tmp_path: Path) -> None:
    issue = Counted(auth)
    follower = await _follower(auth, tmp_path, issue)
    other = await issue_local_identity(auth, tmp_path / "other", "Node", "node-2", "node2", [])
    next_path(tmp_path, "Node").write_text(json.dumps(
        {"rotation": {}, "identity": {**other.__dict__}}))
    follower = await _follower(auth, tmp_path, issue)
    assert follower.next is None
    next_path(tmp_path, "Node").write_text("{not json")
    follower = await _follower(auth, tmp_path, issue)
    assert follower.next is None
