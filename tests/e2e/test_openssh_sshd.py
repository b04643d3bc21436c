"""A stock sshd that trusts the exported user CA accepts tsh-issued certificates."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Cluster

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture
def sshd(cluster: Cluster, tmp_path: Path) -> Iterator[int]:
    if not os.path.exists(SSHD):
        pytest.fail("sshd is not installed (scripts/test installs openssh-server)")
    # `tctl auth export --type=user` goes into TrustedUserCAKeys as is, as an admin would put it.
    ca_keys = tmp_path / "user_ca.pub"
    ca_keys.write_text(cluster.tctl("auth", "export", "--type=user").stdout)
    host_key = tmp_path / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    Path("/run/sshd").mkdir(exist_ok=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"""\
HostKey {host_key}
PidFile {tmp_path / 'sshd.pid'}
TrustedUserCAKeys {ca_keys}
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
""")
    # sshd refuses `Port 0`: the test listens on port 0 itself and runs `sshd -i` (inetd mode)
    # on each connection, so no port is chosen ahead and left for another process to take.
    listener = socket.create_server(("127.0.0.1", 0))
    served: list[subprocess.Popen[bytes]] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed at teardown
                return
            with conn:
                served.append(subprocess.Popen([SSHD, "-i", "-e", "-f", str(config)],
                                               stdin=conn, stdout=conn,
                                               stderr=subprocess.DEVNULL))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)
        for proc in served:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(10)


def _ssh(cluster: Cluster, port: int, login: str) -> subprocess.CompletedProcess[str]:
    key = Path(cluster.env["TELEPORT_HOME"]) / "keys" / "127.0.0.1" / "joe"
    return subprocess.run(
        ["ssh", "-F", "none", "-p", str(port), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", f"IdentityFile={key}", "-o", f"CertificateFile={key}-cert.pub",
         "-o", "IdentitiesOnly=yes", f"{login}@127.0.0.1", "echo", "sshd-ok"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_sshd_accepts_tsh_certificate(cluster: Cluster, joe: dict[str, Any], sshd: int) -> None:
    out = _ssh(cluster, sshd, "root")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "sshd-ok\n"


def test_sshd_refuses_login_outside_principals(cluster: Cluster, joe: dict[str, Any], sshd: int) -> None:
    out = _ssh(cluster, sshd, "daemon")
    assert out.returncode == 255
    assert "Permission denied" in out.stderr
