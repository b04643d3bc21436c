"""Nothing of a session outlives it: after many sessions the node and proxy hold what they held
before (issue 20: node RSS flat across 1,000 sequential sessions).

One whole process (auth, proxy, node) in this test, its real wiring: audit through the buffered
emitter, terminal sessions recorded and announced to the auth server, the revocation watch. The
counts are of what a leak would keep (tasks, connections, registries keyed by session id), not
RSS, which other tests and the allocator move.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncssh
import pytest

from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.service.process import TeleportProcess
from teleport.types.resource import Metadata
from teleport.types.resources import User, UserSpec
from tests.integration.service.conftest import LoopbackConfig

CLUSTER = "state.example"
#: Enough to tell "kept per session" from a cache filled once.
SESSIONS = 12
#: Tasks of the process's own loops (heartbeat, watches) that may be running at the moment.
SLACK_TASKS = 3
#: How long the background ends of a session (audit, recording upload, unlisting) may take.
SETTLE_SECONDS = 15.0


@pytest.fixture
async def process(loopback: LoopbackConfig) -> AsyncIterator[TeleportProcess]:
    async with TeleportProcess(loopback("state-node", CLUSTER)) as proc:
        yield proc


async def _login(process: TeleportProcess) -> dict[str, object]:
    """Issue alice a certificate for `root`; return asyncssh options reaching the node."""
    assert process.auth is not None
    user = User(metadata=Metadata(name="alice"),
                spec=UserSpec(roles=["access"], traits={"logins": ["root"]}))
    await process.auth.accounts.upsert_user(user, actor="test")
    key = sshkeys.generate_private_key()
    issued = await process.auth.certs.issue_user_certs(
        user, sshkeys.public_key_of(key),
        tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()), timedelta(hours=1))
    host = await process.auth.certs.get_ca("host")
    return {"username": "root", "agent_path": None, "config": None,
            "preferred_auth": ["publickey"],
            "client_keys": [(asyncssh.import_private_key(key),
                             asyncssh.import_certificate(issued.ssh_cert))],
            "known_hosts": ([], [asyncssh.import_public_key(k)
                                 for k in host.trusted_ssh_public_keys()], [])}


async def _until(check: object, within: float = SETTLE_SECONDS) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():  # type: ignore[operator]
        if loop.time() > deadline:
            return
        await asyncio.sleep(0.1)


def _work(process: TeleportProcess) -> dict[str, int]:
    """What a session adds while it lives: one-shot tasks, connections, entries by session id."""
    node, proxy = process.node, process.proxy_ssh
    assert node is not None and proxy is not None
    return {
        "node tasks": len([n for n in node.tasks.names() if n not in _loops(node.tasks)]),
        "node connections": len(node.connections),
        "node children": len(node.children),
        "node live sessions": len(node.live),
        "node recorders": len(node.recordings.active) if node.recordings is not None else 0,
        "proxy tasks": len([n for n in proxy.tasks.names() if n not in _loops(proxy.tasks)]),
        "proxy connections": len(proxy.connections),
        "asyncio tasks": len(asyncio.all_tasks()),
    }


def _loops(tasks: object) -> set[str]:
    return {t.get_name() for t, loop in tasks._tasks.items() if loop}  # type: ignore[attr-defined]


async def test_sessions_leave_no_state_behind(process: TeleportProcess) -> None:
    options = await _login(process)
    node = process.node
    assert node is not None
    port = process.ports["node"]
    await _until(lambda: process._revocations is not None  # noqa: SLF001
                 and process._revocations.roles is not None)  # noqa: SLF001

    async def session(i: int) -> None:
        async with asyncssh.connect("127.0.0.1", port, **options) as conn:  # type: ignore[arg-type]
            if i % 2:  # a terminal: recorded, listed for `tsh sessions ls`, joinable
                result = await conn.run("exit 3", term_type="xterm")
                assert result.exit_status == 3
            else:
                result = await conn.run("echo ok", check=True)
                assert result.stdout == "ok\n"

    await session(0)
    await session(1)  # the first of each kind fills caches
    await _until(lambda: not node.live and not node.children and not node.connections)
    base = _work(process)
    for i in range(SESSIONS):
        await session(i)
    await _until(lambda: _work(process) == base)
    grown = {k: v - base[k] for k, v in _work(process).items() if v > base[k]}
    # A leak keeps one per session (12 here); the process's own loops may be mid-tick.
    assert all(k == "asyncio tasks" and v <= SLACK_TASKS for k, v in grown.items()), grown
