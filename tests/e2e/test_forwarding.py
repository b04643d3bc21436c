"""Remote (`-R`), dynamic (`-D`) and agent (`-A`) forwarding through the proxy, with stock OpenSSH
and with tsh; each refused, with a message and a `port` audit event, for a user whose role turns
it off (the certificate then lacks the matching `permit-*` extension)."""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster
from tests.e2e.people import env_of, login_as, sign_up, tsh_as
from tests.ports import listening_ports, wait_listening

ALLOCATED = re.compile(r"Allocated port (\d+) for remote forward")


def _ping(port: int, payload: bytes = b"hello") -> bytes:
    with socket.create_connection(("127.0.0.1", port), 5) as conn:
        conn.sendall(payload)
        conn.settimeout(10)
        return conn.recv(100)


def _socks5_ping(socks_port: int, dest_port: int) -> bytes:
    """CONNECT to 127.0.0.1:dest_port through a SOCKS5 server and exchange one message."""
    with socket.create_connection(("127.0.0.1", socks_port), 5) as conn:
        conn.settimeout(10)
        conn.sendall(b"\x05\x01\x00")
        assert conn.recv(2) == b"\x05\x00"
        conn.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", dest_port))
        reply = conn.recv(10)
        if len(reply) < 2 or reply[1] != 0:
            return b""
        conn.sendall(b"socks")
        return conn.recv(100)


class Background:
    """A forwarding client left running (-N); its stderr is read line by line."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []

    def expect(self, pattern: re.Pattern[str], timeout: float = 20) -> re.Match[str]:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            if found := pattern.search(line):
                return found
        raise AssertionError(f"no {pattern.pattern!r} in {self.lines}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def ssh_config(cluster: Cluster, joe: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ssh") / "config"
    path.write_text(cluster.tsh("config").stdout)
    return path


def _ssh(config: Path, *args: str) -> list[str]:
    return ["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
            *args]


NODE = f"root@{NODENAME}.{CLUSTER}"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A test ssh-agent holding one key; yields the environment that points at it."""
    tmp = tmp_path_factory.mktemp("agent")
    sock = tmp / "agent.sock"
    key = tmp / "id_forwarded"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "forwarded-test-key",
                    "-f", str(key)], check=True)
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(key)], env=env, check=True, capture_output=True)
        yield {"SSH_AUTH_SOCK": str(sock)}
    finally:
        proc.terminate()
        proc.wait(10)


def _port_events(cluster: Cluster, addr_part: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in cluster.audit_events()
                 if e["event"] == "port" and addr_part in str(e.get("addr", ""))]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


# --- granted ------------------------------------------------------------------------------------

def test_openssh_remote_forward(cluster: Cluster, ssh_config: Path, echo_server: int) -> None:
    client = Background(_ssh(ssh_config, "-N", "-R", f"0:127.0.0.1:{echo_server}", NODE),
                        {**os.environ, **cluster.env})
    try:
        port = int(client.expect(ALLOCATED)[1])
        assert _ping(port) == b"echo:hello"
    finally:
        client.stop()
    event, = _port_events(cluster, f"127.0.0.1:{port}")
    assert event["success"] is True and event["user"] == "joe" and event["login"] == "root"


def test_tsh_remote_forward(cluster: Cluster, joe: dict[str, Any], echo_server: int) -> None:
    client = Background([str(BIN / "tsh"), "ssh", "-N", "-R", f"0:127.0.0.1:{echo_server}",
                         f"root@{NODENAME}"], {**os.environ, **cluster.env})
    try:
        port = int(client.expect(ALLOCATED)[1])
        assert _ping(port, b"from the node") == b"echo:from the node"
    finally:
        client.stop()
    assert _port_events(cluster, f"127.0.0.1:{port}")


def _openssh_socks(config: Path, env: dict[str, str]) -> tuple[Background, int]:
    """Start `ssh -N -D port`; return it and its SOCKS port.

    OpenSSH refuses `-D 0`, so the port is one the kernel just handed out and released; should
    another process take it meanwhile, ssh exits (ExitOnForwardFailure) and we try another.
    """
    for _ in range(5):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        client = Background(_ssh(config, "-N", "-D", f"127.0.0.1:{port}", NODE), env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and client.proc.poll() is None:
            if port in listening_ports(client.proc.pid):
                return client, port
            time.sleep(0.1)
        client.stop()
    raise AssertionError("ssh -D did not start listening")


def test_openssh_dynamic_forward(cluster: Cluster, ssh_config: Path, echo_server: int) -> None:
    client, socks = _openssh_socks(ssh_config, {**os.environ, **cluster.env})
    try:
        assert _socks5_ping(socks, echo_server) == b"echo:socks"
    finally:
        client.stop()
    assert _port_events(cluster, f"127.0.0.1:{echo_server}")


def test_tsh_dynamic_forward(cluster: Cluster, joe: dict[str, Any], echo_server: int) -> None:
    client = Background([str(BIN / "tsh"), "ssh", "-N", "-D", "0", f"root@{NODENAME}"],
                        {**os.environ, **cluster.env})
    try:
        socks = wait_listening(client.proc.pid)
        assert _socks5_ping(socks, echo_server) == b"echo:socks"
    finally:
        client.stop()


LIST_AGENT = 'ssh-add -l; stat -c "%U %a" "$(dirname "$SSH_AUTH_SOCK")" "$SSH_AUTH_SOCK"'


def test_openssh_agent_forwarding(cluster: Cluster, ssh_config: Path, agent: dict[str, str]) -> None:
    out = subprocess.run(_ssh(ssh_config, "-A", NODE, LIST_AGENT), capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL, env={**os.environ, **cluster.env, **agent})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "forwarded-test-key" in lines[0]
    # The socket and its directory belong to the login and nobody else may use them.
    assert lines[1:] == ["root 700", "root 600"]
    assert _port_events(cluster, "agent:")


def test_tsh_agent_forwarding(cluster: Cluster, joe: dict[str, Any], agent: dict[str, str]) -> None:
    env = {**os.environ, **cluster.env, **agent}
    out = subprocess.run([str(BIN / "tsh"), "ssh", "-A", f"root@{NODENAME}", "ssh-add -l"],
                         capture_output=True, text=True, timeout=60, env=env,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "forwarded-test-key" in out.stdout
    out = subprocess.run([str(BIN / "tsh"), "ssh", f"root@{NODENAME}", "echo sock=$SSH_AUTH_SOCK"],
                         capture_output=True, text=True, timeout=60, env=env,
                         stdin=subprocess.DEVNULL)
    assert out.stdout == "sock=\n"  # without -A the agent stays home


# --- refused ------------------------------------------------------------------------------------

NO_FORWARDING = """\
kind: role
version: v5
metadata:
  name: no-forwarding
spec:
  allow:
    logins: ['{{internal.logins}}']
    node_labels: {'*': '*'}
  options:
    port_forwarding: false
    forward_agent: false
"""
#: The user whose only role turns both kinds of forwarding off.
RESTRICTED = "noah"


@pytest.fixture(scope="module")
def restricted(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of noah, logged in with tsh, whose role `no-forwarding` (loaded with
    `tctl create -f`) reaches every node as root but grants neither forwarding: his certificate
    has no `permit-port-forwarding` or `permit-agent-forwarding`, and the node is under test.
    SSH_CONFIG: his `tsh config` for stock ssh."""
    root = tmp_path_factory.mktemp("restricted")
    role = root / "no-forwarding.yaml"
    role.write_text(NO_FORWARDING)
    cluster.tctl("create", "-f", str(role))
    password = "forwarding is off for me"
    noah = sign_up(cluster, RESTRICTED, "root", "no-forwarding", root, password)
    out = login_as(cluster, noah, password)
    assert out.returncode == 0, out.stderr
    config = root / "ssh_config"
    out = tsh_as(cluster, noah, "config")
    assert out.returncode == 0, out.stderr
    config.write_text(out.stdout)
    return {**env_of(noah), "SSH_CONFIG": str(config)}


def test_remote_forward_refused_without_permission(cluster: Cluster, restricted: dict[str, str],
                                                   echo_server: int) -> None:
    config = Path(restricted["SSH_CONFIG"])
    out = subprocess.run(_ssh(config, "-N", "-R", f"0:127.0.0.1:{echo_server}", NODE),
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                         env=restricted)
    assert out.returncode == 255
    assert "remote port forwarding failed" in out.stderr
    out = subprocess.run([str(BIN / "tsh"), "ssh", "-N", "-R", f"0:127.0.0.1:{echo_server}",
                          f"root@{NODENAME}"], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL, env=restricted)
    assert out.returncode != 0
    assert "the node refused -R localhost:0: port forwarding is not permitted" in out.stderr
    assert "Traceback" not in out.stderr
    refused = [e for e in _port_events(cluster, "0") if e.get("success") is False
               and e.get("error") == "port forwarding is not permitted by your role"]
    assert len(refused) >= 2


def test_dynamic_forward_refused_without_permission(cluster: Cluster, restricted: dict[str, str],
                                                    echo_server: int) -> None:
    client = Background([str(BIN / "tsh"), "ssh", "-N", "-D", "0", f"root@{NODENAME}"], restricted)
    try:
        socks = wait_listening(client.proc.pid)
        assert _socks5_ping(socks, echo_server) == b""
    finally:
        client.stop()
    refused = [e for e in _port_events(cluster, f"127.0.0.1:{echo_server}")
               if e.get("success") is False]
    assert refused and refused[-1]["user"] == RESTRICTED


def test_agent_forwarding_refused_without_permission(cluster: Cluster, restricted: dict[str, str],
                                                     agent: dict[str, str]) -> None:
    config = Path(restricted["SSH_CONFIG"])
    out = subprocess.run(_ssh(config, "-A", NODE, "echo sock=$SSH_AUTH_SOCK"), capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL, env={**restricted, **agent})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "sock=\n"
    assert "agent forwarding refused: agent forwarding is not permitted by your role" in out.stderr
    out = subprocess.run([str(BIN / "tsh"), "ssh", "-A", f"root@{NODENAME}", "ssh-add -l"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                         env={**restricted, **agent})
    assert "forwarded-test-key" not in out.stdout
    assert "agent forwarding is not permitted by your role" in out.stderr
    refused = [e for e in _port_events(cluster, "agent") if e.get("success") is False]
    assert len(refused) >= 2


@pytest.mark.parametrize("flags", [["-R", "8080"], ["-R", "1:2:3:4:5"], ["-R", "99999:h:1"],
                                   ["-D", "socks"]])
def test_bad_forward_spec_is_one_line_error(cluster: Cluster, flags: list[str]) -> None:
    out = cluster.tsh("ssh", *flags, f"root@{NODENAME}", "true", check=False)
    assert out.returncode == 2
    assert out.stderr.startswith(f"ERROR: invalid {flags[0]} {flags[1]!r}: expected ")
    assert out.stderr.count("\n") == 1
