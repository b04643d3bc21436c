"""Stock OpenSSH meets the SSH algorithms teleport.yaml chooses: SHA-1 key exchange is refused
by default on the node and the proxy, and works once `teleport.kex_algos` lists it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster, make_cluster

PASSWORD = "algorithms-pass-123"
SHA1_KEX = "diffie-hellman-group14-sha1"
NO_MATCH = "no matching key exchange method found"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A default cluster with user joe logged in (tsh's key and certificate for stock ssh)."""
    c = make_cluster(tmp_path_factory.mktemp("algorithms"))
    c.start()
    try:
        c.login("joe", PASSWORD, c.signup("joe", "root", PASSWORD))
        yield c
    finally:
        c.stop()


def _opts(cluster: Cluster, *extra: str) -> list[str]:
    home = Path(cluster.env["TELEPORT_HOME"])
    key = home / "keys" / "127.0.0.1" / "joe"
    return ["-F", "none", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={home / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o", f"IdentityFile={key}",
            "-o", f"CertificateFile={key}-cert.pub", "-o", "IdentitiesOnly=yes", *extra]


def _ssh(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def _to_node(cluster: Cluster, *extra: str) -> subprocess.CompletedProcess[str]:
    """ssh straight to the node's port, as root, running `echo`."""
    return _ssh([*_opts(cluster, *extra), "-o", f"HostKeyAlias={NODENAME}.{CLUSTER}",
                 "-p", str(cluster.ports["node"]), "root@127.0.0.1", "echo", "direct"])


def _through_proxy(cluster: Cluster, *extra: str) -> subprocess.CompletedProcess[str]:
    """ssh to the node through the proxy's SSH port (`ssh -J` spelled as a ProxyCommand so that
    the -o options reach the proxy hop too)."""
    opts = _opts(cluster, *extra)
    jump = "ssh " + " ".join(opts) + f" -p {cluster.ports['proxy_ssh']} -W %h:%p joe@127.0.0.1"
    return _ssh([*opts, "-o", f"ProxyCommand={jump}", "-p", "3022",
                 f"root@{NODENAME}.{CLUSTER}", "echo", "jumped"])


def test_default_offer_works_for_stock_ssh(cluster: Cluster) -> None:
    out = _through_proxy(cluster)
    assert (out.returncode, out.stdout) == (0, "jumped\n"), out.stderr
    out = _to_node(cluster)
    assert (out.returncode, out.stdout) == (0, "direct\n"), out.stderr


def test_sha1_key_exchange_is_refused_by_default(cluster: Cluster) -> None:
    only_sha1 = ("-o", f"KexAlgorithms={SHA1_KEX}")
    for out in (_to_node(cluster, *only_sha1), _through_proxy(cluster, *only_sha1)):
        assert out.returncode == 255
        assert NO_MATCH in out.stderr, out.stderr
        assert out.stdout == ""
    # What the servers offer instead, as OpenSSH reports it (its "Their offer:").
    offer = _to_node(cluster, *only_sha1).stderr
    assert "Their offer: mlkem768x25519-sha256,curve25519-sha256,curve25519-sha256@libssh.org" \
        in offer, offer


def test_kex_algos_in_teleport_yaml_lets_sha1_key_exchange_in(cluster: Cluster) -> None:
    data = yaml.safe_load(cluster.config.read_text())
    data["teleport"]["kex_algos"] = ["curve25519-sha256", SHA1_KEX]
    cluster.config.write_text(yaml.safe_dump(data, sort_keys=False))
    cluster.stop()
    cluster.start()
    only_sha1 = ("-o", f"KexAlgorithms={SHA1_KEX}")
    out = _to_node(cluster, *only_sha1)
    assert (out.returncode, out.stdout) == (0, "direct\n"), out.stderr
    # Both hops (proxy, then node through it) speak it; tsh keeps its own modern defaults.
    out = _through_proxy(cluster, *only_sha1, "-v")
    assert (out.returncode, out.stdout) == (0, "jumped\n"), out.stderr
    assert f"kex: algorithm: {SHA1_KEX}" in out.stderr
    assert cluster.tsh("ssh", f"root@{NODENAME}", "echo", "tsh").stdout == "tsh\n"


def test_a_broken_algorithm_in_teleport_yaml_stops_the_start(tmp_path: Path) -> None:
    config = tmp_path / "teleport.yaml"
    config.write_text(f"teleport:\n  data_dir: {tmp_path / 'data'}\n"
                      "  mac_algos:\n  - hmac-sha2-256-etm@openssh.com\n  - hmac-md5\n")
    out = subprocess.run([str(BIN / "teleport"), "start", "-c", str(config)],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"ERROR: {config}:3: teleport.mac_algos: hmac-md5 is refused as insecure"], out.stderr
