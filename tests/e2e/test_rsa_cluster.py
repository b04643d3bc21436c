"""A cluster with `ca_signature_algo: rsa-sha2-512`: RSA CAs whose certificates OpenSSH accepts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import CLUSTER, NODENAME, Cluster, make_cluster


@pytest.fixture(scope="module")
def rsa_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = make_cluster(tmp_path_factory.mktemp("rsa"))
    text = cluster.config.read_text()
    cluster.config.write_text(text.replace("teleport:\n", "teleport:\n  ca_signature_algo: rsa-sha2-512\n", 1))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_rsa_cas_sign_with_sha512_and_work_end_to_end(rsa_cluster: Cluster, tmp_path: Path) -> None:
    exported = rsa_cluster.tctl("auth", "export", "--type=user").stdout
    assert exported.startswith("ssh-rsa ")
    totp = rsa_cluster.signup("ann", "root", "rsa password")
    rsa_cluster.login("ann", "rsa password", totp)
    cert = Path(rsa_cluster.env["TELEPORT_HOME"]) / "keys" / "127.0.0.1" / "ann-cert.pub"
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True,
                             check=True).stdout
    assert "Signing CA: RSA" in listing and "rsa-sha2-512" in listing
    assert rsa_cluster.tsh("ssh", f"root@{NODENAME}", "echo", "rsa-ok").stdout == "rsa-ok\n"
    config = tmp_path / "ssh_config"
    config.write_text(rsa_cluster.tsh("config").stdout)
    out = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", f"root@{NODENAME}.{CLUSTER}",
                          "echo", "openssh-rsa-ok"], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL, env={**os.environ, **rsa_cluster.env})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "openssh-rsa-ok\n"
