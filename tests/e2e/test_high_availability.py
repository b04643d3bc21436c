"""Two auth servers on one real etcd (and on PostgreSQL), a proxy and two nodes, each its own
`teleport` process: either auth server dying (SIGKILL) leaves `tsh login`, `tsh ssh` and
`tctl users add` working through the other within seconds, and a role changed through one auth
server takes effect on the nodes within a second, whichever auth server they follow.

The auth servers have the same config but for their names and data dirs; two started at the same
time on an empty store make one cluster. The proxy and one node join while A is the only auth
server and learn B from the cluster when it comes (`data_dir/authservers.json`); the other node
lists both.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.ha import HA, login, make_ha, signup
from tests.etcd_server import EtcdServer
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.slow

TOKEN = "ha-e2e-static-token"
#: A role change must reach the nodes within this long (they follow the auth API's watch).
PROPAGATION = 1.0
#: How long a failover may take at most, for every command of a user or an admin.
FAILOVER = 10.0

ROLE = """\
kind: role
version: v5
metadata:
  name: ops
spec:
  allow:
    logins: [root]
    node_labels: {"*": "*"}
"""
ROLE_DENYING_ROOT = ROLE + """\
  deny:
    logins: [root]
"""


def _storage(kind: str, root: Path) -> Iterator[str]:
    """Start the store; yield the `storage:` lines of the teleport section."""
    if kind == "etcd":
        with EtcdServer(root / "etcd") as etcd:
            yield (f"  storage:\n    type: etcd\n    peers: [\"{etcd.url}\"]\n"
                   f"    prefix: /teleport/\n")
    else:
        with PostgresServer() as postgres:
            dsn = postgres.dsn(postgres.create_database())
            yield f"  storage:\n    type: postgresql\n    conn_string: \"{dsn}\"\n"


@pytest.fixture(params=["etcd", "postgresql"])
def ha(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HA]:
    storage_lines = _storage(request.param, tmp_path)
    storage = next(storage_lines)
    ha = make_ha(tmp_path, storage, TOKEN, {"proxy": ["auth-a"], "node-1": ["auth-a", "auth-b"],
                                            "node-2": ["auth-a"]})
    try:
        yield ha
    finally:
        ha.stop_all()
        storage_lines.close()


def _ca_pin(tools: Cluster) -> str:
    out = tools.tctl("status").stdout
    return next(line.split()[-1] for line in out.splitlines() if line.startswith("CA pin"))


def test_auth_servers_starting_at_once_on_an_empty_store_make_one_cluster(ha: HA) -> None:
    ha.start("auth-a", "auth-b")
    a, b = ha.tools["auth-a"], ha.tools["auth-b"]
    assert _ca_pin(a) == _ca_pin(b)  # one TLS CA, whichever server answers
    for kind in ("cert_authority", "roles"):
        assert a.tctl("get", kind).stdout == b.tctl("get", kind).stdout


def test_either_auth_server_dying_leaves_the_cluster_working(ha: HA) -> None:
    d, a, b = ha.daemons, ha.tools["auth-a"], ha.tools["auth-b"]
    # The proxy and node-2 join while A is the only auth server: they learn B when it comes.
    ha.start("auth-a")
    ha.start("proxy", "node-2")
    ha.start("auth-b")
    ha.start("node-1")  # configured with both
    assert _ca_pin(a) == _ca_pin(b)

    a.tctl("create", input=ROLE)
    signup(b, "joe", "root", roles="ops")  # through B, the link on the proxy
    assert login(a, "joe").returncode == 0

    def ssh_ok(node: str, word: str) -> bool:
        out = a.tsh("ssh", f"root@{node}", "echo", word, check=False, timeout=20)
        return out.returncode == 0 and out.stdout == f"{word}\n"

    def ssh_refused(node: str) -> bool:
        out = a.tsh("ssh", f"root@{node}", "true", check=False, timeout=20)
        return out.returncode != 0

    ha.eventually(lambda: all(n in a.tsh("ls", check=False).stdout for n in ("node-1", "node-2")),
                  "both nodes listed")
    assert ssh_ok("node-1", "one") and ssh_ok("node-2", "two")

    # The proxy and node-2 knew A alone: they learn B (and keep it for their next start).
    addr = {name: f"127.0.0.1:{d[name].ports['auth']}" for name in ("auth-a", "auth-b")}
    for name in ("proxy", "node-2"):
        ha.eventually(lambda name=name: addr["auth-b"] in d[name].learned(),
                      f"{name} learning auth B", timeout=15)

    def role_change_reaches_nodes(through: Cluster) -> None:
        """Deny root in ops through one auth server: both nodes refuse at once; allow it
        again: both let joe in at once."""
        through.tctl("create", "-f", input=ROLE_DENYING_ROOT)
        time.sleep(PROPAGATION)
        assert ssh_refused("node-1") and ssh_refused("node-2")
        through.tctl("create", "-f", input=ROLE)
        time.sleep(PROPAGATION)
        assert ssh_ok("node-1", "back") and ssh_ok("node-2", "back")

    # Every host follows A's watch stream: a change written through B reaches them through
    # the store's watch on A.
    role_change_reaches_nodes(b)

    def still_working(alive: Cluster, n: int) -> None:
        last: list[subprocess.CompletedProcess[str]] = []

        def logged_in() -> bool:
            last.append(login(alive, "joe"))
            return last[-1].returncode == 0

        took = ha.eventually(logged_in, "tsh login through the other auth server",
                             detail=lambda: " | ".join(r.stderr for r in last))
        assert took < FAILOVER
        ha.eventually(lambda: ssh_ok("node-1", f"n1-{n}") and ssh_ok("node-2", f"n2-{n}"),
                      "tsh ssh to both nodes", timeout=FAILOVER)
        added = alive.tctl("users", "add", f"user{n}", "--roles=access", check=False)
        assert added.returncode == 0 and "/web/newuser/" in added.stdout, added.stderr
        role_change_reaches_nodes(alive)

    d["auth-a"].kill()
    still_working(b, 1)

    d["auth-a"].start()
    ha.eventually(lambda: a.tctl("status", check=False).returncode == 0, "auth A back")
    d["auth-b"].kill()
    still_working(a, 2)

    logs = "".join(d[n].output() for n in ("proxy", "node-1", "node-2"))
    assert "Traceback" not in logs
