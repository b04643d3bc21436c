"""What auditors' own scanners say of a default cluster: ssh-audit and sslyze find nothing to fail.

The scanners run from their own virtualenv (scripts/install-scanners) against a cluster this
module starts on loopback: ssh-audit on the node's and the proxy's SSH ports (server mode) and
on `tsh` (client mode: it plays the proxy's SSH port and judges what tsh offers), sslyze
against Mozilla's "intermediate" profile on the web port and the auth API.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import NODENAME, Cluster, make_cluster
from tests.ports import wait_listening

ROOT = Path(__file__).resolve().parents[2]
SCANNERS = ROOT / ".cache" / "scanners" / "bin"
PASSWORD = "scanner-pass-123"

@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    assert (SCANNERS / "sslyze").exists(), "run scripts/install-scanners (the README's test command does)"
    cluster = make_cluster(tmp_path_factory.mktemp("scanned"))
    cluster.start()
    try:
        totp = cluster.signup("auditor", "root", PASSWORD)
        cluster.login("auditor", PASSWORD, totp)
        yield cluster
    finally:
        cluster.stop()


def ssh_audit(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCANNERS / "ssh-audit"), "--no-colors", *args],
                          capture_output=True, text=True, timeout=timeout)


def failures(report: str) -> list[str]:
    """The lines ssh-audit marks `[fail]`, each with the algorithm it judged."""
    found, subject = [], ""
    for line in report.splitlines():
        if line.startswith("("):
            subject = line.split(" -- ")[0].strip()
        if "[fail]" in line:
            found.append(f"{subject}: {line.split('[fail]', 1)[1].strip()}")
    return found


@pytest.mark.parametrize("service", ["node", "proxy_ssh"])
def test_ssh_audit_fails_nothing_on_the_node_and_proxy_ports(audited: Cluster,
                                                             service: str) -> None:
    result = ssh_audit("-p", str(audited.ports[service]), "127.0.0.1")
    assert "banner: SSH-2.0-" in result.stdout, result.stdout + result.stderr
    assert failures(result.stdout) == []
    # Its exit codes: 3 failures found, 2 warnings only (e.g. curve25519's "no post-quantum
    # protection", kept for OpenSSH before 9.9; mlkem768x25519 comes first), 1 no connection.
    assert result.returncode in (0, 2), result.stdout
    # Its DHEat rate test (run when a finite-field DH exchange is offered) found throttling.
    assert "DHEat" not in result.stdout, result.stdout


# ssh-audit's client mode listens on every interface at a fixed port; tests bind loopback on a
# port the kernel picks, so it runs with socket.bind narrowed to that (its IPv6 socket refused).
CLIENT_AUDIT = """
import socket, sys
_bind = socket.socket.bind
def bind(sock, addr):
    if addr[0] != "0.0.0.0":
        raise OSError("this test's scanner listens on 127.0.0.1 only")
    return _bind(sock, ("127.0.0.1", 0))
socket.socket.bind = bind
from ssh_audit.ssh_audit import main
sys.exit(main())
"""


def test_ssh_audit_fails_nothing_in_what_tsh_offers(audited: Cluster) -> None:
    scanner = subprocess.Popen([str(SCANNERS / "python"), "-c", CLIENT_AUDIT, "--no-colors", "-c",
                                "-p", "2222", "-t", "30"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = wait_listening(scanner.pid)
        # tsh dials the proxy's SSH address from its profile: point it at the scanner.
        profile_path = Path(audited.env["TELEPORT_HOME"]) / "profile"
        saved = profile_path.read_text()
        profile = json.loads(saved)
        profile["ssh_proxy_addr"] = f"127.0.0.1:{port}"
        profile_path.write_text(json.dumps(profile))
        try:
            # The scanner hangs up after the key exchange offer: tsh fails, as it should.
            audited.tsh("ssh", f"root@{NODENAME}", "true", check=False, timeout=60)
        finally:
            profile_path.write_text(saved)
        report, _ = scanner.communicate(timeout=60)
    finally:
        if scanner.poll() is None:
            scanner.kill()
            scanner.wait()
    assert "client IP: 127.0.0.1" in report, report
    assert failures(report) == []
    assert scanner.returncode in (0, 2), report


COMPLIANCE = re.compile(r"^\s+127\.0\.0\.1:\d+: (?P<verdict>.*)$", re.MULTILINE)
ISSUE = re.compile(r"^\s+\* (?P<check>\w+): (?P<why>.*)$", re.MULTILINE)


@pytest.mark.parametrize("service", ["web", "auth"])
def test_sslyze_finds_the_tls_ports_compliant_with_mozilla_intermediate(audited: Cluster,
                                                                        service: str) -> None:
    result = subprocess.run([str(SCANNERS / "sslyze"), "--mozilla_config=intermediate",
                             f"127.0.0.1:{audited.ports[service]}"],
                            capture_output=True, text=True, timeout=180)
    compliance = result.stdout.partition("COMPLIANCE AGAINST")[2]
    assert COMPLIANCE.search(compliance) is not None, result.stdout + result.stderr
    issues = {m["check"]: m["why"] for m in ISSUE.finditer(compliance)}
    # The default certificates are self-signed (the cluster's own CA): no public path to
    # validate, which is the one thing the profile may find.
    issues.pop("certificate_path_validation", None)
    assert issues == {}, compliance

