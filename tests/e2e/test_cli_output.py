"""What the real CLIs print for small things admins copy and paste: versions, exported CAs, logins."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pyotp

from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster

VERSION = re.compile(r"^Teleport v\d+\.\d+\.\d+ python\d+\.\d+\n$")


def test_every_tool_prints_its_version_without_a_cluster() -> None:
    for tool, args in [("tctl", ["version"]), ("tsh", ["version"]), ("teleport", ["version"])]:
        out = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "HOME": "/nonexistent"}, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr
        assert VERSION.match(out.stdout), out.stdout
        assert out.stdout.endswith(f"python{sys.version_info.major}.{sys.version_info.minor}\n")


def test_auth_export_prints_a_trusted_user_ca_key_and_a_known_hosts_line(cluster: Cluster) -> None:
    user = cluster.tctl("auth", "export", "--type=user").stdout.splitlines()
    host = cluster.tctl("auth", "export", "--type=host").stdout.splitlines()
    assert len(user) == 1 and len(host) == 1
    # sshd's TrustedUserCAKeys: `<type> <base64> [comment]`, no authorized_keys options.
    key_type, blob, comment = user[0].split(" ")
    assert key_type.startswith(("ssh-", "ecdsa-")) and len(blob) > 60
    assert comment == f"clustername={CLUSTER}&type=user"
    # known_hosts: the marker and the host pattern belong to the host CA only.
    assert host[0].startswith(f"@cert-authority *.{CLUSTER} ssh-") and host[0].endswith(" type=host")
    both = cluster.tctl("auth", "export").stdout.splitlines()
    assert sorted(both) == sorted(user + host)


def test_tsh_login_prints_each_login_once(cluster: Cluster) -> None:
    out = cluster.tctl("users", "add", "dupe", "dupe,root,dupe,root").stdout
    assert re.search(r"^dupe +dupe,root +access$", cluster.tctl("users", "ls").stdout, re.MULTILINE)
    token = next(w for w in out.split() if "/web/newuser/" in w).rsplit("/", 1)[1]
    totp = pyotp.TOTP(cluster.web("GET", f"/webapi/users/password/token/{token}")["otp_secret"])
    cluster.web("PUT", "/webapi/users/password/token",
                {"token": token, "password": "dupe's password", "second_factor_token": totp.now()})
    env = {**os.environ, **cluster.env, "TELEPORT_HOME": str(cluster.root / "tsh-dupe")}
    login = subprocess.run(
        [str(BIN / "tsh"), "login", f"--proxy={cluster.web_addr}", "--user=dupe", "--insecure"],
        input=f"dupe's password\n{totp.at(time.time() + 30)}\n", capture_output=True, text=True,
        env=env, timeout=60)
    assert login.returncode == 0, login.stderr
    assert "  Logins:       dupe, root\n" in login.stdout, login.stdout


def test_tsh_ls_lists_nodes_without_loading_pydantic_or_the_ssh_stack(cluster: Cluster) -> None:
    """`tsh ls` decodes its listing into plain dataclasses and opens no SSH connection (issue
    20: pydantic's import and schema build were more than half of its start-up)."""
    totp = cluster.signup("lister", "root", "lister's password")
    cluster.login("lister", "lister's password", totp)
    cluster.tsh("ls")  # the first command after a login may refresh the CAs
    probe = ("import sys; sys.argv = ['tsh', 'ls']; from teleport.cli.tsh import main; "
             "code = main(); sys.stdout.flush(); print('heavy:', sorted({m.split('.')[0] for m "
             "in sys.modules} & {'pydantic', 'asyncssh', 'cryptography', 'yaml'}), "
             "file=sys.stderr); sys.exit(code)")
    result = subprocess.run([str(BIN / "python"), "-c", probe], capture_output=True, text=True,
                            timeout=60, env={**os.environ, **cluster.env},
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert NODENAME in result.stdout
    assert "heavy: []" in result.stderr, result.stderr


def test_tctl_lists_nodes_and_users_without_loading_pydantic_or_x509(cluster: Cluster) -> None:
    """On the auth host, `tctl nodes ls` and `users ls` read teleport.yaml's remembered answer,
    the cluster name kept in the Admin identity and the records as listings (issue 20:
    pydantic, the config schema and cryptography's X.509 were three quarters of their start-up)."""
    cluster.tctl("nodes", "ls")  # the first call after a change to the file validates it
    for command, expected in ((["nodes", "ls"], NODENAME), (["users", "ls"], "User")):
        probe = (f"import sys; sys.argv = ['tctl', '-c', {str(cluster.config)!r}, *{command!r}]; "
                 "from teleport.cli.tctl import main; code = main(); sys.stdout.flush(); "
                 "print('heavy:', sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', "
                 "'cryptography', 'yaml', 'asyncssh'}), file=sys.stderr); sys.exit(code)")
        result = subprocess.run([str(BIN / "python"), "-c", probe], capture_output=True,
                                text=True, timeout=60, env={**os.environ, **cluster.env},
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout
        assert "heavy: []" in result.stderr, result.stderr
