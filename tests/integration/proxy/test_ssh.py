"""The proxy's SSH server: user certificates in, bytes spliced to nodes by name, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import uvloop

from teleport.api.proxydial import connect_tcp
from teleport.errors import NotFound
from teleport.events.emitter import AUTH, EXEC, MemoryEmitter
from teleport.proxy.ssh import ProxySSHServer, parse_subsystem
from teleport.srv import NodeServer
from tests.integration.srv.sshenv import CLUSTER, NODENAME, Trust, make_node, peak_rss_while, run

SIZE = 200 * 1024 * 1024
MAX_GROWTH = 64 * 1024 * 1024


@dataclass
class Site:
    trust: Trust
    node: NodeServer
    proxy: ProxySSHServer
    node_events: MemoryEmitter
    proxy_events: MemoryEmitter


@contextlib.asynccontextmanager
async def open_site(tmp_path: Path) -> AsyncIterator[Site]:
    """Start a node and a proxy that resolves `node1` and the node's UUID, with or without `.cluster`."""
    trust = Trust(tmp_path)
    node_events, proxy_events = MemoryEmitter(), MemoryEmitter()
    async with make_node(trust, node_events) as node:
        await node.start("127.0.0.1", 0)

        async def dial(host: str, port: int, orig: tuple[str, int]) -> socket.socket:
            if host.removesuffix(f".{CLUSTER}") in (NODENAME, node.server_id):
                return await connect_tcp("127.0.0.1", node.port)
            raise NotFound(f"node {host!r} is not registered in cluster {CLUSTER!r}")

        key, cert, _ = trust.host_identity("proxy", role="Proxy")
        async with ProxySSHServer(host_private_key=key, host_cert=cert,
                                  trusted_user_cas=trust.user_cas, cluster_name=CLUSTER,
                                  dial=dial, emitter=proxy_events) as proxy:
            await proxy.start("127.0.0.1", 0)
            yield Site(trust, node, proxy, node_events, proxy_events)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with open_site(tmp_path) as started:
        yield started


def _jump(site: Site, creds: object, *args: str, target: str = NODENAME) -> list[str]:
    argv = site.trust.ssh(creds, 3022, "root", *args, host=target)  # type: ignore[arg-type]
    return [argv[0], "-J", f"alice@127.0.0.1:{site.proxy.port}", *argv[1:]]


def _proxy_command(site: Site, creds: object, *args: str, target: str = NODENAME) -> list[str]:
    argv = site.trust.ssh(creds, 3022, "root", *args, host=target)  # type: ignore[arg-type]
    config = argv[2]
    command = f"ssh -F {config} -p {site.proxy.port} alice@127.0.0.1 -s proxy:%h:%p"
    return [argv[0], "-o", f"ProxyCommand={command}", *argv[1:]]


@pytest.mark.parametrize("run_loop", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_every_way_in_on_both_loops(tmp_path: Path, run_loop: Callable[[Any], None]) -> None:
    """The daemon runs uvloop, whose transports start reading only after connection_made."""

    async def every_way_in() -> None:
        async with open_site(tmp_path) as site:
            alice = site.trust.user(["root"])
            assert (await run(_jump(site, alice, "echo 1")))[1] == "1\n"
            assert (await run(_proxy_command(site, alice, "echo 2")))[1] == "2\n"
            async with await site.trust.connect(alice, site.proxy.port, "alice") as proxy_conn:
                async with await site.trust.connect(alice, 3022, "root", tunnel=proxy_conn,
                                                    host=NODENAME) as conn:
                    assert (await conn.run("echo 3")).stdout == "3\n"

    run_loop(every_way_in())


async def test_openssh_jump_to_node(site: Site) -> None:
    alice = site.trust.user(["root"])
    rc, out, err = await run(_jump(site, alice, "echo via jump; exit 5"))
    assert (rc, out) == (5, "via jump\n"), err
    event, = site.node_events.of_type(EXEC)
    assert event["user"] == "alice" and event["exitCode"] == 5


async def test_openssh_proxy_command_subsystem(site: Site) -> None:
    alice = site.trust.user(["root"])
    rc, out, err = await run(_proxy_command(site, alice, "echo via subsystem",
                                            target=f"{site.node.server_id}.{CLUSTER}"))
    assert (rc, out) == (0, "via subsystem\n"), err


async def test_asyncssh_tunnel_with_any_login_at_the_proxy(site: Site) -> None:
    alice = site.trust.user(["root"])
    async with await site.trust.connect(alice, site.proxy.port, "alice") as proxy_conn:
        async with await site.trust.connect(alice, 3022, "root", tunnel=proxy_conn,
                                            host=site.node.server_id) as conn:
            result = await conn.run("echo $SSH_TELEPORT_USER")
    assert result.stdout == "alice\n"


async def test_unknown_node_is_reported(site: Site) -> None:
    alice = site.trust.user(["root"])
    rc, _, err = await run(_jump(site, alice, "true", target="nowhere"))
    assert rc == 255 and "'nowhere' is not registered" in err
    rc, _, err = await run(_proxy_command(site, alice, "true", target="nowhere"))
    assert rc == 255 and "teleport: cannot reach nowhere" in err


async def test_no_shell_or_command_at_the_proxy(site: Site) -> None:
    alice = site.trust.user(["root"])
    rc, _, err = await run(site.trust.ssh(alice, site.proxy.port, "alice", "uname"))
    assert rc == 1 and "this is a proxy, it runs no shells or commands" in err


async def test_proxy_refuses_and_audits_bad_certificates(site: Site) -> None:
    late = site.trust.user(["root"], name="late", valid_for=-timedelta(minutes=1))
    rc, _, err = await run(_jump(site, late, "true"))
    assert rc == 255 and "teleport: certificate expired" in err
    errors = [(e["user"], e["error"]) for e in site.proxy_events.of_type(AUTH)]
    assert ("late", "certificate expired") in errors
    with pytest.raises(asyncssh.PermissionDenied):
        await site.trust.connect(site.trust.user(["root"], ca=site.trust.host_ca),
                                 site.proxy.port, "alice")


async def test_upload_through_proxy_to_slow_child_stays_bounded(site: Site) -> None:
    """Both the proxy and the node run here, so this bounds their memory together."""
    alice = site.trust.user(["root"])
    ssh = shlex.join(_jump(site, alice, "sleep 1; wc -c"))
    (rc, out, err), growth = await peak_rss_while(
        run(["sh", "-c", f"head -c {SIZE} /dev/zero | {ssh}"]))
    assert rc == 0 and int(out) == SIZE, err
    assert growth < MAX_GROWTH, f"proxy and node RSS grew by {growth >> 20} MiB"


def test_parse_subsystem() -> None:
    assert parse_subsystem("proxy:node1:3022") == ("node1", 3022, "")
    assert parse_subsystem("proxy:node1") == ("node1", 0, "")
    assert parse_subsystem("proxy:[::1]:3022@leaf") == ("::1", 3022, "leaf")
    with pytest.raises(Exception, match="unknown subsystem"):
        parse_subsystem("sftp")
