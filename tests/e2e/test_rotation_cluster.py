"""A whole cluster follows `tctl auth rotate` (the issue's "done when"): two more nodes, one
joined directly and one through the proxy's web port (reached over its reverse tunnel), a user
logged in with tsh and stock OpenSSH configured by `tsh config`, and a live session.

Automatic mode with a short grace period walks every phase while the test checks, in each, that
`tsh ssh` and stock `ssh` reach every node and that the live session still answers; afterwards the
nodes present host certificates of the new CA, the old user certificate is refused, a new login
works, the CA pin changed and a new node joins with it. Manual mode steps every phase and a
rollback brings back the old CA.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest

from tests.e2e.cluster import (
    BIN,
    CLUSTER,
    NODENAME,
    Cluster,
    make_cluster,
    start_node,
    stop_process,
    wait_started,
    write_node_config,
)
from tests.host_certs import host_ca

pytestmark = pytest.mark.slow

DIRECT, TUNNELLED = "direct-node", "tunnel-node"
NODES = (NODENAME, DIRECT, TUNNELLED)
PASSWORD = "rotation password"
#: Long enough for every host to follow each phase (they check at once on a CA change).
GRACE = 45


@dataclass
class Site:
    cluster: Cluster
    root: Path
    totp: pyotp.TOTP
    nodes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    used_codes: set[str] = field(default_factory=set)

    def login(self) -> None:
        """Log in again: a code no earlier login used (each is accepted once)."""
        for offset in (0, -30, 30):
            code = self.totp.at(time.time() + offset)
            if code in self.used_codes:
                continue
            self.used_codes.add(code)
            out = self.cluster.tsh("login", f"--proxy={self.cluster.web_addr}", "--user=rot",
                                   "--insecure", input=f"{PASSWORD}\n{code}\n", check=False)
            if out.returncode == 0:
                return
        raise AssertionError(f"tsh login failed: {out.stderr}")


def _token(cluster: Cluster) -> str:
    out = cluster.tctl("nodes", "add").stdout
    return re.search(r"The invite token: (\S+)", out).group(1)  # type: ignore[union-attr]


def _pin(cluster: Cluster) -> str:
    return next(line.split()[2] for line in cluster.tctl("status").stdout.splitlines()
                if line.startswith("CA pin"))


def _join(site: Site, name: str, via: str) -> None:
    config = write_node_config(site.root / f"{name}.yaml", name, site.root / f"{name}-data")
    log = site.root / f"{name}.log"
    proc = start_node(config, log, f"--token={_token(site.cluster)}",
                      f"--ca-pin={_pin(site.cluster)}", f"--auth-server={via}")
    site.nodes[name] = proc
    wait_started(log, proc, timeout=60)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("rotation-cluster")
    (root / "cluster").mkdir()
    cluster = make_cluster(root / "cluster")
    cluster.start()
    made = Site(cluster, root, pyotp.TOTP(pyotp.random_base32()))
    try:
        made.totp = cluster.signup("rot", "root", PASSWORD)
        made.used_codes.add(made.totp.now())
        _join(made, DIRECT, f"127.0.0.1:{cluster.ports['auth']}")
        _join(made, TUNNELLED, cluster.web_addr)  # through the proxy: a reverse tunnel
        _wait(lambda: all(n in cluster.tctl("nodes", "ls").stdout for n in NODES), "3 nodes")
        made.login()
        yield made
    finally:
        for proc in made.nodes.values():
            stop_process(proc)
        cluster.stop()


def _wait(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _phases(cluster: Cluster) -> dict[str, str]:
    found = {}
    for line in cluster.tctl("status").stdout.splitlines():
        if (m := re.match(r"(User|Host|TLS) CA\s+(.*)", line)):
            phase = re.search(r"phase (\w+)", m.group(2))
            found[m.group(1)] = phase.group(1) if phase else "standby"
    return found


def _reach_everything(site: Site, ssh_config: Path) -> None:
    """tsh ssh and stock ssh (tsh config) to every node: each must answer."""
    for node in NODES:
        out = site.cluster.tsh("ssh", f"root@{node}", "echo", f"tsh-{node}", check=False)
        assert out.stdout == f"tsh-{node}\n", f"tsh ssh {node}: {out.stderr}"
        stock = subprocess.run(
            ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", f"root@{node}.{CLUSTER}",
             "echo", f"ssh-{node}"], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL, env={**os.environ, **site.cluster.env})
        assert stock.stdout == f"ssh-{node}\n", f"ssh {node}: {stock.stderr}"


class LiveSession:
    """A `tsh ssh` session opened before the rotation: a shell loop that echoes lines."""

    def __init__(self, site: Site, node: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "tsh"), "ssh",
             f"root@{node}", "while read line; do echo got:$line; done"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **site.cluster.env})

    def answers(self, word: str) -> bool:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline() == f"got:{word}\n"

    def close(self) -> None:
        stop_process(self.proc)


def _host_ca_of(port: int) -> str:
    return asyncio.run(host_ca(port))


def _exported_host_key(cluster: Cluster) -> str:
    lines = cluster.tctl("auth", "export", "--type=host").stdout.splitlines()
    assert len(lines) == 1, lines
    return " ".join(lines[0].split()[2:4])


def test_an_automatic_rotation_of_every_ca_keeps_the_cluster_working(
        site: Site, tmp_path: Path) -> None:
    cluster = site.cluster
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(cluster.tsh("config").stdout)
    _reach_everything(site, ssh_config)
    old_pin = _pin(cluster)
    old_host = _exported_host_key(cluster)
    assert _host_ca_of(cluster.ports["node"]) == old_host
    live = LiveSession(site, DIRECT)
    try:
        assert live.answers("before")
        cluster.tctl("auth", "rotate", f"--grace-period={GRACE}s")
        seen = []
        deadline = time.monotonic() + GRACE + 30
        while time.monotonic() < deadline:
            phase = _phases(cluster)["TLS"]
            if not seen or seen[-1] != phase:
                seen.append(phase)
                if phase == "standby":
                    # The grace period is over: the old user certificate is refused, with the
                    # reason; a new login works.
                    refused = cluster.tsh("ssh", f"root@{DIRECT}", "true", check=False)
                    assert refused.returncode != 0, refused.stdout
                    assert "run 'tsh login'" in refused.stderr, refused.stderr
                    site.login()
                _reach_everything(site, ssh_config)
                assert live.answers(phase), f"the live session died in phase {phase}"
            if phase == "standby" and len(seen) > 1:
                break
            time.sleep(1)
        assert seen == ["init", "update_clients", "update_servers", "standby"], seen
    finally:
        live.close()
    # Nodes present certificates of the new host CA; the CA pin changed; a node joins with it.
    new_host = _exported_host_key(cluster)
    assert new_host != old_host
    assert _host_ca_of(cluster.ports["node"]) == new_host
    assert _pin(cluster) != old_pin
    _join(site, "late-node", f"127.0.0.1:{cluster.ports['auth']}")
    _wait(lambda: "late-node" in cluster.tctl("nodes", "ls").stdout, "the late node")
    out = cluster.tsh("ssh", "root@late-node", "echo", "late", check=False)
    assert out.stdout == "late\n", out.stderr


def test_manual_mode_steps_every_phase_and_rollback_restores_the_old_ca(
        site: Site, tmp_path: Path) -> None:
    cluster = site.cluster
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(cluster.tsh("config").stdout)
    old = cluster.tctl("auth", "export", "--type=host").stdout
    old_pin = _pin(cluster)
    for phase in ("init", "update_clients", "update_servers"):
        cluster.tctl("auth", "rotate", "--manual", f"--phase={phase}")
        time.sleep(2)  # hosts follow within a second or two
        _reach_everything(site, ssh_config)
    cluster.tctl("auth", "rotate", "--manual", "--phase=rollback")
    time.sleep(2)
    _reach_everything(site, ssh_config)
    cluster.tctl("auth", "rotate", "--manual", "--phase=standby")
    time.sleep(2)
    assert cluster.tctl("auth", "export", "--type=host").stdout == old
    assert _pin(cluster) == old_pin
    _reach_everything(site, ssh_config)
    assert " ".join(old.split()[2:4]) == _host_ca_of(cluster.ports["node"])
