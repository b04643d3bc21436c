"""Only trusted, unexpired user certificates for the requested login get in; refusals are audited."""

from __future__ import annotations

from datetime import timedelta

import asyncssh
import pytest

from teleport.events.emitter import AUTH, MemoryEmitter
from teleport.keys.ssh import generate_private_key
from teleport.srv import NodeServer
from tests.integration.srv.sshenv import Trust, run


def _refusals(emitter: MemoryEmitter) -> list[tuple[str, str]]:
    events = emitter.of_type(AUTH)
    assert all(e["success"] is False and e["addr.remote"].startswith("127.0.0.1:") for e in events)
    return [(e["user"], e["error"]) for e in events]


async def test_bare_key_refused(trust: Trust, node: NodeServer, emitter: MemoryEmitter) -> None:
    rc, _, err = await run(trust.ssh(None, node.port, "root", "true", key_path=trust.bare_key()))
    assert rc == 255 and "Permission denied (publickey)" in err
    assert _refusals(emitter) == [
        ("root", "a certificate is required: plain public keys are not accepted")]


async def test_cert_from_another_ca_refused(trust: Trust, node: NodeServer,
                                            emitter: MemoryEmitter) -> None:
    mallory = trust.user(["root"], name="mallory", ca=generate_private_key())
    rc, _, err = await run(trust.ssh(mallory, node.port, "root", "true"))
    assert rc == 255
    assert "teleport: certificate not signed by a trusted authority" in err
    assert ("mallory", "certificate not signed by a trusted authority") in _refusals(emitter)


async def test_expired_cert_refused(trust: Trust, node: NodeServer,
                                    emitter: MemoryEmitter) -> None:
    late = trust.user(["root"], name="late", valid_for=-timedelta(minutes=5))
    rc, _, err = await run(trust.ssh(late, node.port, "root", "true"))
    assert rc == 255 and "teleport: certificate expired" in err
    assert ("late", "certificate expired") in _refusals(emitter)


async def test_login_not_in_principals_refused(trust: Trust, node: NodeServer,
                                               emitter: MemoryEmitter) -> None:
    alice = trust.user(["alice"])
    rc, _, err = await run(trust.ssh(alice, node.port, "root", "true"))
    assert rc == 255
    reason = "login 'root' is not in the certificate's principals"
    assert reason in err
    assert ("alice", reason) in _refusals(emitter)


async def test_new_ca_takes_effect_without_restart(trust: Trust, node: NodeServer,
                                                   emitter: MemoryEmitter) -> None:
    """The trusted CAs are read per attempt, so a rotation only changes what the callable returns."""
    old = trust.user(["root"])
    trust.user_ca = generate_private_key()
    async with await trust.connect(trust.user(["root"]), node.port, "root") as conn:
        assert (await conn.run("true")).exit_status == 0
    with pytest.raises(asyncssh.PermissionDenied):
        await trust.connect(old, node.port, "root")


async def test_password_and_keyboard_interactive_not_offered(trust: Trust,
                                                             node: NodeServer) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect("127.0.0.1", node.port, username="root", password="hunter2",
                               known_hosts=None, client_keys=None, agent_path=None, config=None,
                               preferred_auth=["password", "keyboard-interactive"])
