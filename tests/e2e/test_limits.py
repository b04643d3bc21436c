"""`teleport.connection_limits.max_connections` refuses the connection over the limit, clearly."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cluster import BIN, NODENAME, make_cluster


def test_third_connection_is_refused_with_a_reason(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    text = cluster.config.read_text().replace(
        "teleport:\n", "teleport:\n  diag_addr: 127.0.0.1:0\n"
                       "  connection_limits:\n    max_connections: 2\n", 1)
    cluster.config.write_text(text)
    cluster.start()
    diag = cluster.ports["diag"]
    held = []
    try:
        for _ in range(2):
            held.append(socket.create_connection(("127.0.0.1", cluster.ports["proxy_ssh"]), 5))
            held[-1].recv(64)  # the server's SSH banner: the connection is accepted and counted
        out = subprocess.run(
            ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-p", str(cluster.ports["proxy_ssh"]),
             "joe@127.0.0.1", "true"], capture_output=True, text=True, timeout=30,
            stdin=subprocess.DEVNULL)
        assert out.returncode == 255
        assert "too many connections" in out.stderr, out.stderr
        held.pop().close()
        time.sleep(0.5)
        again = socket.create_connection(("127.0.0.1", cluster.ports["proxy_ssh"]), 5)
        assert again.recv(64).startswith(b"SSH-2.0-"), "a freed slot is usable again"
        again.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{diag}/metrics", timeout=5) as resp:
            families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
        refused = [s.value for s in families["teleport_connections_refused"].samples
                   if s.name == "teleport_connections_refused_total" and s.labels["service"] == "proxy"]
        assert refused == [1.0]
    finally:
        for sock in held:
            sock.close()
        cluster.stop()


def test_max_users_admits_known_users_and_refuses_a_new_one(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    text = cluster.config.read_text().replace(
        "teleport:\n", "teleport:\n  connection_limits:\n    max_users: 1\n", 1)
    cluster.config.write_text(text)
    cluster.start()
    holder = None
    try:
        ann = cluster.signup("ann", "root", "ann password")
        bob = cluster.signup("bob", "root", "bob password")
        bob_home = {"TELEPORT_HOME": str(tmp_path / "bob-tsh")}
        cluster.login("ann", "ann password", ann)
        original = dict(cluster.env)
        cluster.env.update(bob_home)
        cluster.login("bob", "bob password", bob)
        cluster.env = original
        holder = subprocess.Popen([str(BIN / "tsh"), "ssh", "-N", f"root@{NODENAME}"],
                                  env={**os.environ, **cluster.env}, stdin=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        time.sleep(2)  # ann's connection is up and counted
        assert holder.poll() is None
        assert cluster.tsh("ssh", f"root@{NODENAME}", "echo", "ann-again").stdout == "ann-again\n"
        cluster.env.update(bob_home)
        refused = cluster.tsh("ssh", f"root@{NODENAME}", "true", check=False)
        cluster.env = original
        assert refused.returncode != 0
        assert "too many users" in refused.stderr, refused.stderr
    finally:
        if holder is not None:
            holder.terminate()
            holder.wait(10)
        cluster.stop()
