"""`tunnel_listen_addr` equal to `web_listen_addr`: the web port also speaks the proxy's SSH."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from teleport.proxy.mux import DETECT_TIMEOUT
from tests.e2e.cluster import CLUSTER, NODENAME, Cluster, make_cluster
from tests.e2e.test_graceful_restart import _alive, _wait

MULTIPLEXING = "multiplexing is on"


@pytest.fixture(scope="module")
def muxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """An all-in-one cluster whose tunnel address is its web address, started with -d."""
    c = make_cluster(tmp_path_factory.mktemp("mux"))
    c.write_config("  tunnel_listen_addr: 127.0.0.1:0\n")
    c.start_args = ["-d"]
    c.start()
    try:
        yield c
    finally:
        _stop(c)


def _stop(c: Cluster) -> None:
    """Stop the daemon, and the successor a HUP started (which is not our child)."""
    c.stop()
    pid_file = c.root / "teleport.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            _wait(lambda: not _alive(pid), 15, "the successor to stop")


@pytest.fixture(scope="module")
def ann(muxed: Cluster) -> dict[str, Any]:
    password = "correct horse battery"
    totp = muxed.signup("ann", "root", password)
    muxed.login("ann", password, totp)
    return {"password": password, "totp": totp}


def test_debug_log_says_multiplexing_is_on(muxed: Cluster) -> None:
    assert MULTIPLEXING in muxed.log()
    assert "tunnel_listen_addr: 127.0.0.1:" in muxed.config.read_text()  # pinned to the web port


def test_tsh_works_over_the_web_port(muxed: Cluster, ann: dict[str, Any]) -> None:
    assert NODENAME in muxed.tsh("ls").stdout
    assert muxed.tsh("ssh", f"root@{NODENAME}", "echo", "hi").stdout == "hi\n"


def _jump_via_web_port(c: Cluster, text: str) -> None:
    home = Path(c.env["TELEPORT_HOME"])
    key = home / "keys" / "127.0.0.1" / "ann"
    opts = ["-F", "none", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={home / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o", f"IdentityFile={key}",
            "-o", f"CertificateFile={key}-cert.pub"]
    # What `ssh -J ann@127.0.0.1:<web port>` does, spelled as a ProxyCommand with -W because -J
    # does not pass -o options on to the jump hop.
    proxy_cmd = "ssh " + " ".join(opts) + f" -p {c.ports['web']} -W %h:%p ann@127.0.0.1"
    out = subprocess.run(["ssh", *opts, "-o", f"ProxyCommand={proxy_cmd}", "-p", "3022",
                          f"root@{NODENAME}.{CLUSTER}", "echo", text],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{text}\n"


def test_stock_ssh_jumps_through_the_web_port(muxed: Cluster, ann: dict[str, Any]) -> None:
    _jump_via_web_port(muxed, "via-web-port")


def test_silent_connection_to_the_web_port_is_closed(muxed: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", muxed.ports["web"]), timeout=DETECT_TIMEOUT + 5) as s:
        start = time.monotonic()
        assert s.recv(10) == b""
        elapsed = time.monotonic() - start
    assert DETECT_TIMEOUT - 0.5 <= elapsed < DETECT_TIMEOUT + 3


def test_without_multiplexing_the_web_port_speaks_no_ssh(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A tunnel address of its own (3024 by default): SSH there, none on the web port."""
    c = make_cluster(tmp_path_factory.mktemp("apart"))
    c.write_config("  tunnel_listen_addr: 127.0.0.2:0\n")  # not the web address: apart
    c.start()
    try:
        assert c.ports["tunnel"] not in (0, c.ports["web"])
        with socket.create_connection(("127.0.0.1", c.ports["web"]), timeout=10) as s:
            s.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            try:
                answer = s.recv(100)
            except ConnectionResetError:  # the multiplexer closes what it does not serve
                answer = b""
        assert not answer.startswith(b"SSH-")
        with socket.create_connection(("127.0.0.2", c.ports["tunnel"]), timeout=10) as s:
            assert s.recv(100).startswith(b"SSH-2.0-")  # the reverse tunnel server
        assert MULTIPLEXING not in c.log()
    finally:
        _stop(c)


def test_hup_hands_the_multiplexed_port_over(muxed: Cluster, ann: dict[str, Any]) -> None:
    pid_file = muxed.root / "teleport.pid"
    old_pid = int(pid_file.read_text())
    os.kill(old_pid, signal.SIGHUP)
    _wait(lambda: int(pid_file.read_text() or 0) != old_pid, 30, "the successor's pid file")
    _wait(lambda: not _alive(old_pid), 30, "the old daemon to exit")
    _jump_via_web_port(muxed, "after-hup")
    assert NODENAME in muxed.tsh("ls").stdout


def test_proxy_ssh_listen_addr_may_be_the_web_port(muxed: Cluster, ann: dict[str, Any]) -> None:
    _stop(muxed)
    web = muxed.ports["web"]
    text = muxed.config.read_text()
    # SSH on the web port through listen_addr alone: the tunnel address back at its default.
    text = text.replace(f"tunnel_listen_addr: 127.0.0.1:{web}", "tunnel_listen_addr: 0.0.0.0:3024")
    muxed.config.write_text(text.replace(f"  listen_addr: 127.0.0.1:{muxed.ports['proxy_ssh']}",
                                         f"  listen_addr: 127.0.0.1:{web}"))
    muxed.start()
    assert muxed.ports["proxy_ssh"] == web
    # tsh is told the SSH proxy is the web port, and stock ssh reaches the node through it.
    assert muxed.web("GET", "/webapi/ping")["proxy"]["ssh"]["public_addr"] == f"127.0.0.1:{web}"
    _jump_via_web_port(muxed, "one-port")
