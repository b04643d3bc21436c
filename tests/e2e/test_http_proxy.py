"""`tsh` behind an HTTP CONNECT proxy: a real tinyproxy from Debian, `HTTPS_PROXY`, `NO_PROXY`.

Every test reads tinyproxy's own log to prove which connections went through it. Joining a node
through a proxy is not built yet (issue 12, the reverse tunnel), so only `tsh` is tested here.

As in Go, loopback is never proxied, so the cluster listens on an address of this test's own on
`lo` that is not loopback (root and `ip` needed, else the module is skipped); tinyproxy itself
stays on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.cluster import NODENAME, Cluster, make_cluster
from tests.ports import wait_listening

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tinyproxy") is None,
                                reason="needs Debian's tinyproxy (scripts/test installs it)")]

#: Candidates for the cluster's address on `lo`: private, unlikely to be in use, and several so
#: that two runs at once (or one killed before its teardown) each get their own.
_ADDRESSES = [f"10.213.57.{n}" for n in range(1, 31)]

#: Cleared so that the machine's own proxy settings never leak into a test.
_CLEAN = {name: "" for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                "NO_PROXY", "no_proxy")}


@dataclass
class Tinyproxy:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}{self.host}:{self.port}"

    def connects(self) -> list[str]:
        """The CONNECT targets tinyproxy logged, in order."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line.split("CONNECT ", 2)[2].split()[0] for line in text.splitlines()
                if "Request (file descriptor" in line and line.count("CONNECT ") >= 2]


@contextmanager
def tinyproxy(root: Path, connect_ports: list[int], basic_auth: str = "",
              host: str = "127.0.0.1") -> Iterator[Tinyproxy]:
    """Run tinyproxy on host allowing CONNECT to connect_ports only; stop it by its pid.

    tinyproxy cannot bind port 0, so a free port is picked right before it starts, and the start
    is retried if someone took the port meanwhile.
    """
    root.mkdir(parents=True, exist_ok=True)
    log = root / "tinyproxy.log"
    for _ in range(5):
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        conf = root / "tinyproxy.conf"
        conf.write_text("\n".join([
            f"Port {port}", f"Listen {host}", "Timeout 30", f'LogFile "{log}"',
            "LogLevel Connect", "MaxClients 50",
            *(f"ConnectPort {p}" for p in connect_ports),
            *([f"BasicAuth {basic_auth}"] if basic_auth else []), ""]))
        with open(root / "tinyproxy.out", "wb") as out:
            proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            if wait_listening(proc.pid, timeout=5) == port:
                break
        except AssertionError:
            pass
        proc.kill()
        proc.wait()
    else:
        raise AssertionError("tinyproxy did not start:\n"
                             + (root / "tinyproxy.out").read_text(errors="replace"))
    try:
        yield Tinyproxy(port, log, proc, host)
    finally:
        proc.kill()  # nothing of tinyproxy's is worth a graceful stop
        proc.wait()


@pytest.fixture(scope="module")
def lo_address() -> Iterator[str]:
    """Add a non-loopback address to `lo` for this module; remove it afterwards, even on failure."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and `ip` to add a non-loopback address to lo")
    for address in _ADDRESSES:
        added = subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"],
                               capture_output=True, text=True)
        if added.returncode == 0:
            break
        if "exists" not in added.stderr:  # refused (no CAP_NET_ADMIN...): not ours to force
            pytest.skip(f"cannot add {address} to lo: {added.stderr.strip()}")
    else:
        pytest.skip(f"every candidate address is already on lo: {_ADDRESSES[0]}...")
    try:
        yield address
    finally:
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True)


@pytest.fixture(scope="module")
def cluster(lo_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The all-in-one cluster on lo_address instead of 127.0.0.1 (conftest's is loopback)."""
    c = make_cluster(tmp_path_factory.mktemp("cluster"), host=lo_address)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def tsh(cluster: Cluster, env: dict[str, str], *args: str, input: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster._run("tsh", args, input, check, 60, env={**_CLEAN, **env})


@pytest.fixture(scope="module")
def logged_in(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tinyproxy]:
    """`tsh login` as a new user with HTTPS_PROXY set; yield the (running) proxy it went through."""
    password = "correct horse battery"
    totp = cluster.signup("pat", "root", password)
    web, ssh = cluster.ports["web"], cluster.ports["proxy_ssh"]
    with tinyproxy(tmp_path_factory.mktemp("tinyproxy"), [web, ssh]) as proxy:
        # The signup used the current OTP code, and each is accepted once: take the next one.
        tsh(cluster, {"HTTPS_PROXY": proxy.url()}, "login", f"--proxy={cluster.web_addr}",
            "--user=pat", "--insecure", input=f"{password}\n{totp.at(time.time() + 30)}\n")
        yield proxy


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_login_ls_and_ssh_go_through_the_proxy(cluster: Cluster, logged_in: Tinyproxy) -> None:
    web, ssh = cluster.ports["web"], cluster.ports["proxy_ssh"]
    proxy = logged_in
    assert proxy.connects() and set(proxy.connects()) == {f"{cluster.host}:{web}"}  # the login
    env = {"HTTPS_PROXY": proxy.url()}
    assert NODENAME in tsh(cluster, env, "ls").stdout
    assert tsh(cluster, env, "ssh", f"root@{NODENAME}", "echo", "via-proxy").stdout == \
        "via-proxy\n"
    assert f"{cluster.host}:{ssh}" in proxy.connects()


def test_host_port_value_and_http_proxy_fallback_for_ssh(cluster: Cluster, logged_in: Tinyproxy,
                                                          tmp_path: Path) -> None:
    """A bare host:port is http://host:port; the SSH dial falls back to HTTP_PROXY (Teleport)."""
    ssh = cluster.ports["proxy_ssh"]
    with tinyproxy(tmp_path, [ssh]) as proxy:
        env = {"HTTP_PROXY": f"127.0.0.1:{proxy.port}"}
        assert tsh(cluster, env, "ssh", f"root@{NODENAME}", "echo", "ok").stdout == "ok\n"
        assert tsh(cluster, env, "ls").returncode == 0  # web calls use HTTPS_PROXY only: direct
        assert proxy.connects() == [f"{cluster.host}:{ssh}"]


def test_a_proxy_that_refuses_the_port_is_one_clear_error(cluster: Cluster, logged_in: Tinyproxy,
                                                          tmp_path: Path) -> None:
    web, ssh = cluster.ports["web"], cluster.ports["proxy_ssh"]
    with tinyproxy(tmp_path, [1]) as proxy:
        env = {"HTTPS_PROXY": proxy.url()}
        line = one_error_line(tsh(cluster, env, "ls", check=False))
        assert f"HTTP proxy {proxy.url()} refused CONNECT {cluster.host}:{web}" in line
        assert "403" in line
        line = one_error_line(tsh(cluster, env, "ssh", f"root@{NODENAME}", "true", check=False))
        assert f"HTTP proxy {proxy.url()} refused CONNECT {cluster.host}:{ssh}" in line
        assert "403 Access violation" in line
        # NO_PROXY naming the cluster's address bypasses the same proxy: both work, and it saw
        # nothing new.
        before = proxy.connects()
        env["NO_PROXY"] = f"example.com, {cluster.host}"
        assert NODENAME in tsh(cluster, env, "ls").stdout
        assert tsh(cluster, env, "ssh", f"root@{NODENAME}", "echo", "direct").stdout == "direct\n"
        assert proxy.connects() == before


def test_proxy_credentials(cluster: Cluster, logged_in: Tinyproxy, tmp_path: Path) -> None:
    web, ssh = cluster.ports["web"], cluster.ports["proxy_ssh"]
    with tinyproxy(tmp_path, [web, ssh], basic_auth="alice s3cret") as proxy:
        # tinyproxy answers wrong credentials with 401, missing ones with 407.
        for userinfo, status, says in (("alice:wrong@", "401", "wrong proxy credentials"),
                                       ("", "407", "the proxy wants credentials")):
            env = {"HTTPS_PROXY": proxy.url(userinfo)}
            for args in (("ls",), ("ssh", f"root@{NODENAME}", "true")):
                line = one_error_line(tsh(cluster, env, *args, check=False))
                assert f"HTTP proxy {proxy.url()} refused CONNECT" in line
                assert status in line and says in line and "HTTPS_PROXY" in line
                assert "wrong" not in line.replace("wrong proxy", "")  # no password shown
        env = {"HTTPS_PROXY": proxy.url("alice:s3cr%65t@")}  # percent-decoded: s3cret
        assert NODENAME in tsh(cluster, env, "ls").stdout
        assert tsh(cluster, env, "ssh", f"root@{NODENAME}", "echo", "auth").stdout == "auth\n"
