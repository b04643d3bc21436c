"""File transfer with stock tools: scp (SFTP and legacy), sftp, rsync and paramiko, audited.

The node runs on this machine, so what a transfer did on the "remote" side is checked directly on
the filesystem: contents, modes, times and owners.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import paramiko
import pytest

from tests.e2e.cluster import CLUSTER, NODENAME, Cluster

OLD_MTIME = 1_500_000_000  # 2017: far from now, so a copy that loses it is caught


@pytest.fixture(scope="module")
def ssh(cluster: Cluster, joe: dict[str, Any],
        tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], str]]:
    """Stock OpenSSH options per route to the node: (options, host). Every tool takes `-o`."""
    home = Path(cluster.env["TELEPORT_HOME"])
    key = home / "keys" / "127.0.0.1" / "joe"
    config = tmp_path_factory.mktemp("ssh") / "ssh_config"
    config.write_text(cluster.tsh("config").stdout)
    ident = ["-o", "BatchMode=yes", "-o", f"IdentityFile={key}", "-o", f"CertificateFile={key}-cert.pub",
             "-o", "IdentitiesOnly=yes"]
    trusted = ["-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes"]
    # What `ssh -J` does (a direct-tcpip channel through the proxy), spelled as a ProxyCommand
    # because -J does not pass -o options on to the jump hop.
    jump = shlex.join(["ssh", "-F", "none", *ident, *trusted, "-p", str(cluster.ports["proxy_ssh"]),
                       "-W", "%h:%p", "joe@127.0.0.1"])
    return {
        "tsh-config": (["-F", str(config), "-o", "BatchMode=yes"], f"{NODENAME}.{CLUSTER}"),
        "jump": (["-F", "none", *ident, *trusted, "-o", f"ProxyCommand={jump}", "-o", "Port=3022"],
                 f"{NODENAME}.{CLUSTER}"),
        "direct": (["-F", "none", *ident, "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", f"Port={cluster.ports['node']}"],
                   "127.0.0.1"),
    }


def _run(argv: list[str], cluster: Cluster, check: bool = True,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, input=input,
                         stdin=None if input is not None else subprocess.DEVNULL,
                         env={**os.environ, **cluster.env})
    if check:
        assert out.returncode == 0, f"{argv} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def _events(cluster: Cluster, types: str) -> list[dict[str, Any]]:
    out = cluster.tctl("audit", "events", "--since=1h", "--format=json", f"--type={types}").stdout
    events: list[dict[str, Any]] = json.loads(out)
    return events


def _tree(root: Path) -> None:
    """A small tree with a private file, an executable and a nested folder, all dated 2017."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "plain.txt").write_text("plain\n")
    (root / "private.bin").write_bytes(os.urandom(70_000))
    (root / "sub" / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "sub" / "deeper" / "note").write_text("deep\n")
    os.chmod(root / "private.bin", 0o600)
    os.chmod(root / "sub" / "tool.sh", 0o751)
    for path in root.rglob("*"):
        os.utime(path, (OLD_MTIME, OLD_MTIME))


def _assert_same_tree(want: Path, got: Path, times: bool = True) -> None:
    names = sorted(p.relative_to(want) for p in want.rglob("*"))
    assert sorted(p.relative_to(got) for p in got.rglob("*")) == names
    for name in names:
        a, b = want / name, got / name
        if a.is_file():
            assert a.read_bytes() == b.read_bytes(), name
            assert a.stat().st_mode == b.stat().st_mode, name
            if times:
                assert int(b.stat().st_mtime) == OLD_MTIME, name


@pytest.mark.parametrize("route", ["tsh-config", "jump", "direct"])
@pytest.mark.parametrize("mode", ["sftp", "legacy"])
def test_scp_recursive_with_modes_and_times_both_ways(
        cluster: Cluster, ssh: dict[str, tuple[list[str], str]], tmp_path: Path,
        route: str, mode: str) -> None:
    opts, host = ssh[route]
    scp = ["scp", *opts, "-r", "-p", *(["-O"] if mode == "legacy" else [])]
    local = tmp_path / "tree"
    local.mkdir()
    _tree(local)
    remote = tmp_path / "on-node"
    remote.mkdir()
    _run([*scp, str(local), f"root@{host}:{remote}/"], cluster)
    _assert_same_tree(local, remote / "tree")
    back = tmp_path / "back"
    back.mkdir()
    _run([*scp, f"root@{host}:{remote}/tree", str(back)], cluster)
    _assert_same_tree(local, back / "tree")
    if mode == "sftp":  # OpenSSH 9's default spoke SFTP: the node audited each file it wrote
        opened = {e["path"] for e in _events(cluster, "sftp") if e["action"] == 1}
        assert f"{remote}/tree/sub/deeper/note" in opened


def test_sftp_batch_put_get_ls_rename_rm_is_audited_not_recorded(
        cluster: Cluster, ssh: dict[str, tuple[list[str], str]], tmp_path: Path) -> None:
    opts, host = ssh["tsh-config"]
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(300_000))
    remote = tmp_path / "on-node"
    remote.mkdir()
    got = tmp_path / "got.bin"
    batch = tmp_path / "batch"
    batch.write_text(f"""\
cd {remote}
put {payload} up.bin
mkdir folder
ls -1
rename up.bin folder/moved.bin
get folder/moved.bin {got}
rm folder/moved.bin
rmdir folder
""")
    out = _run(["sftp", *opts, "-b", str(batch), f"root@{host}"], cluster)
    assert "up.bin" in out.stdout and "folder" in out.stdout  # the listing
    assert got.read_bytes() == payload.read_bytes()
    assert list(remote.iterdir()) == []

    mine = [e for e in _events(cluster, "sftp,sftp_summary,subsystem")
            if str(remote) in json.dumps(e) or e["event"] == "subsystem"]
    sftp = [e for e in mine if e["event"] == "sftp"]
    done = [(e["action"], e["path"].removeprefix(f"{remote}/"), e.get("target_path", "").removeprefix(f"{remote}/"))
            for e in sftp]
    # open (write), mkdir, listing, rename, open (read), remove, rmdir: Teleport's numbering.
    assert done == [(1, "up.bin", ""), (12, "folder", ""), (10, str(remote), ""),
                    (16, "up.bin", "folder/moved.bin"), (1, "folder/moved.bin", ""),
                    (11, "folder/moved.bin", ""), (13, "folder", "")], done
    assert all(e["code"].startswith("TS") and e["code"].endswith("I") for e in sftp)
    assert all(e["user"] == "joe" and e["login"] == "root" for e in sftp)
    summary = next(e for e in mine if e["event"] == "sftp_summary")
    stats = {s["path"].removeprefix(f"{remote}/"): s for s in summary["file_transfer_stats"]}
    assert stats["up.bin"]["bytes_written"] == 300_000
    assert stats["folder/moved.bin"]["bytes_read"] == 300_000
    sid = summary["sid"]
    assert any(e["event"] == "subsystem" and e["sid"] == sid and e["name"] == "sftp" for e in mine)
    assert {e["sid"] for e in sftp} == {sid}
    # Recorded as these events, not as the bytes: no session recording has this session.
    assert not list((cluster.data_dir / "log").rglob(f"{sid}*"))
    assert sid not in cluster.tsh("recordings", "ls", check=False).stdout


def test_rsync_over_ssh_both_ways(cluster: Cluster, ssh: dict[str, tuple[list[str], str]],
                                  tmp_path: Path) -> None:
    if shutil.which("rsync") is None:
        pytest.fail("rsync is not installed (scripts/test installs it)")
    opts, host = ssh["tsh-config"]
    local = tmp_path / "tree"
    local.mkdir()
    _tree(local)
    remote = tmp_path / "on-node"
    rsh = shlex.join(["ssh", *opts])
    _run(["rsync", "-a", "-e", rsh, f"{local}/", f"root@{host}:{remote}/"], cluster)
    _assert_same_tree(local, remote)
    (local / "plain.txt").write_text("changed\n")
    os.utime(local / "plain.txt", (OLD_MTIME, OLD_MTIME + 60))
    _run(["rsync", "-a", "-e", rsh, f"{local}/", f"root@{host}:{remote}/"], cluster)
    assert (remote / "plain.txt").read_text() == "changed\n"
    back = tmp_path / "back"
    _run(["rsync", "-a", "-e", rsh, f"root@{host}:{remote}/", f"{back}/"], cluster)
    assert (back / "plain.txt").read_text() == "changed\n"
    assert (back / "sub" / "tool.sh").stat().st_mode & 0o777 == 0o751


def _paramiko_client(cluster: Cluster, login: str) -> tuple[paramiko.SSHClient, paramiko.SSHClient]:
    """Connect paramiko as `login` through the proxy with the certificate tsh issued: (node, proxy)."""
    key_path = Path(cluster.env["TELEPORT_HOME"]) / "keys" / "127.0.0.1" / "joe"
    key = paramiko.PKey.from_path(key_path)
    key.load_certificate(f"{key_path}-cert.pub")
    proxy = paramiko.SSHClient()
    proxy.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    proxy.connect("127.0.0.1", port=cluster.ports["proxy_ssh"], username="joe", pkey=key,
                  look_for_keys=False, allow_agent=False, timeout=20)
    transport = proxy.get_transport()
    assert transport is not None
    channel = transport.open_channel("direct-tcpip", (f"{NODENAME}.{CLUSTER}", 3022), ("127.0.0.1", 0))
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(f"{NODENAME}.{CLUSTER}", username=login, pkey=key, sock=channel,
                   look_for_keys=False, allow_agent=False, timeout=20)
    return client, proxy


def test_paramiko_sftp_client(cluster: Cluster, joe: dict[str, Any], tmp_path: Path) -> None:
    client, proxy = _paramiko_client(cluster, "root")
    remote = tmp_path / "on-node"
    remote.mkdir()
    data = os.urandom(200_000)
    try:
        with client.open_sftp() as sftp:
            with sftp.open(f"{remote}/p.bin", "wb") as f:
                f.write(data)
            assert sftp.stat(f"{remote}/p.bin").st_size == len(data)
            sftp.chmod(f"{remote}/p.bin", 0o640)
            sftp.rename(f"{remote}/p.bin", f"{remote}/q.bin")
            assert sftp.listdir(str(remote)) == ["q.bin"]
            with sftp.open(f"{remote}/q.bin", "rb") as f:
                assert f.read() == data
            sftp.remove(f"{remote}/q.bin")
            assert sftp.listdir(str(remote)) == []
    finally:
        client.close()
        proxy.close()


def test_sftp_writes_as_the_os_login_and_the_kernel_refuses_what_it_may_not(
        cluster: Cluster, ssh: dict[str, tuple[list[str], str]], os_joe: pwd.struct_passwd,
        tmp_path: Path) -> None:
    opts, host = ssh["tsh-config"]
    payload = tmp_path / "mine.txt"
    payload.write_text("joe's\n")
    name = f"sftp-{os.getpid()}.txt"
    # A relative path lands in the login's home: the server runs there, as joe.
    out = _run(["sftp", *opts, "-b", "-", f"joe@{host}"], cluster,
               input=f"put {payload} {name}\npwd\n")
    written = Path(os_joe.pw_dir) / name
    assert (written.stat().st_uid, written.stat().st_gid) == (os_joe.pw_uid, os_joe.pw_gid)
    assert written.read_text() == "joe's\n"
    assert os_joe.pw_dir in out.stdout
    # root's home is 0700: the kernel says no to joe, and the client hears it.
    forbidden = f"/root/{name}"
    out = _run(["sftp", *opts, "-b", "-", f"joe@{host}"], cluster, check=False,
               input=f"put {payload} {forbidden}\n")
    assert out.returncode != 0
    assert "Permission denied" in out.stderr
    assert not Path(forbidden).exists()
    refused = [e for e in _events(cluster, "sftp") if e["path"] == forbidden]
    assert refused and refused[-1]["code"] == "TS001E" and refused[-1]["login"] == "joe"
    assert refused[-1]["error"] == "Permission denied"
    # Same for the legacy protocol: scp -t runs as joe too.
    out = _run(["scp", "-O", *opts, str(payload), f"joe@{host}:{forbidden}"], cluster, check=False)
    assert out.returncode != 0 and "Permission denied" in out.stderr
    assert not Path(forbidden).exists()
