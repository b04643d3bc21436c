"""`teleport.connection_limits.max_connections` refuses the connection over the limit, clearly."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cluster import free_ports, make_cluster


def test_third_connection_is_refused_with_a_reason(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    (diag,) = free_ports(1)
    text = cluster.config.read_text().replace(
        "teleport:\n", f"teleport:\n  diag_addr: 127.0.0.1:{diag}\n"
                       "  connection_limits:\n    max_connections: 2\n", 1)
    cluster.config.write_text(text)
    cluster.start()
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
