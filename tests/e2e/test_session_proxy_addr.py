"""A session names the proxy it can be joined through, even on a node that started first.

`teleport status` in a session prints the Session URL from `SSH_SESSION_WEBPROXY_ADDR`, the
public address of a proxy the node read from the cluster. Here the node starts (with the auth
server) before any proxy exists, and the proxy joins afterwards: the node must learn it then.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.cluster import (
    BIN,
    NODENAME,
    Cluster,
    make_cluster,
    pin_ports,
    start_node,
    stop_process,
    wait_started,
    write_proxy_config,
)

PROXY_TOKEN = "proxy-join-token-1"
PASSWORD = "proxy-addr-pass-1"


@pytest.fixture(scope="module")
def late_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Auth and node in one process, then a proxy process that joins once they run."""
    cluster = make_cluster(tmp_path_factory.mktemp("late-proxy"))
    text = cluster.config.read_text()
    text = text.replace('  - "node:e2e-static-token"',
                        f'  - "node:e2e-static-token"\n  - "proxy:{PROXY_TOKEN}"')
    text = text[:text.index("proxy_service:")] + "proxy_service:\n  enabled: no\n"
    cluster.config.write_text(text)
    log = cluster.root / "teleport.log"
    with open(log, "ab") as out:
        # Not Cluster.start(): it waits for a web port, which only the proxy below brings.
        cluster.process = subprocess.Popen([str(BIN / "teleport"), "start", "-c", str(cluster.config)],
                                           stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL)
    proxy_proc: subprocess.Popen[str] | None = None
    try:
        cluster.ports = wait_started(log, cluster.process)
        pin_ports(cluster.config, cluster.ports)
        proxy_root = cluster.root / "proxy"
        proxy_root.mkdir()
        config = write_proxy_config(proxy_root / "teleport.yaml", "late-proxy", proxy_root / "data",
                                    auth_port=cluster.ports["auth"], token=PROXY_TOKEN)
        proxy_proc = start_node(config, proxy_root / "teleport.log")
        cluster.ports["web"] = wait_started(proxy_root / "teleport.log", proxy_proc)["web"]
        yield cluster
    finally:
        stop_process(proxy_proc)
        cluster.stop()


def test_a_node_started_before_any_proxy_names_the_proxy_in_its_sessions(
        late_proxy: Cluster) -> None:
    totp = late_proxy.signup("ada", "root", PASSWORD)
    late_proxy.login("ada", PASSWORD, totp)
    out = late_proxy.tsh("ssh", f"root@{NODENAME}", 'echo "proxy=[$SSH_SESSION_WEBPROXY_ADDR]"')
    assert "proxy=[127.0.0.1:" in out.stdout, out.stdout + out.stderr
