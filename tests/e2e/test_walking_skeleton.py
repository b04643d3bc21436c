"""The newcomer's path: add a user, sign up, log in, ssh with tsh and with stock OpenSSH."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster


def test_tsh_ssh_runs_commands_and_returns_exit_codes(cluster: Cluster, joe: dict[str, Any]) -> None:
    out = cluster.tsh("ssh", f"root@{NODENAME}", "echo", "hi")
    assert out.stdout == "hi\n"
    assert cluster.tsh("ssh", f"root@{NODENAME}", "false", check=False).returncode == 1
    assert cluster.tsh("ssh", f"root@{NODENAME}", "exit 42", check=False).returncode == 42


def test_tsh_ssh_reaches_node_by_uuid_and_address(cluster: Cluster, joe: dict[str, Any]) -> None:
    host_uuid = (cluster.data_dir / "host_uuid").read_text().strip()
    assert cluster.tsh("ssh", f"root@{host_uuid}", "echo", "by-uuid").stdout == "by-uuid\n"
    addr = f"127.0.0.1:{cluster.ports['node']}"
    assert cluster.tsh("ssh", f"root@{addr}", "echo", "by-addr").stdout == "by-addr\n"


def test_session_environment_names_teleport_user_and_session(cluster: Cluster, joe: dict[str, Any]) -> None:
    out = cluster.tsh("ssh", f"root@{NODENAME}", "echo $USER $SSH_TELEPORT_USER $SSH_SESSION_ID").stdout
    user, tele_user, sid = out.split()
    assert (user, tele_user) == ("root", "joe")
    assert len(sid) == 36
    status = cluster.tsh("ssh", f"root@{NODENAME}", f"{BIN / 'teleport'} status").stdout
    assert f"Cluster Name : {CLUSTER}" in status
    assert "Session ID   : " in status


def test_login_not_in_certificate_is_refused(cluster: Cluster, joe: dict[str, Any]) -> None:
    out = cluster.tsh("ssh", f"nobody@{NODENAME}", "true", check=False)
    assert out.returncode != 0
    assert "access denied" in out.stderr.lower()
    assert "Traceback" not in out.stderr


def test_unknown_node_is_a_clear_error(cluster: Cluster, joe: dict[str, Any]) -> None:
    out = cluster.tsh("ssh", "root@no-such-node", "true", check=False)
    assert out.returncode != 0
    assert "no-such-node" in out.stderr
    assert "Traceback" not in out.stderr


def test_tsh_status_ls_and_profile_files(cluster: Cluster, joe: dict[str, Any]) -> None:
    status = cluster.tsh("status").stdout
    assert "Logged in as: joe" in status
    assert f"Cluster:      {CLUSTER}" in status
    assert "root" in status
    ls = cluster.tsh("ls").stdout.splitlines()
    assert ls[0].split() == ["Node", "Name", "Address", "Labels"]
    assert any(NODENAME in line and "env=e2e" in line for line in ls[2:])
    home = Path(cluster.env["TELEPORT_HOME"])
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for path in (home / "keys").rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_stock_openssh_uses_tsh_config(cluster: Cluster, joe: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(cluster.tsh("config").stdout)
    out = subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", f"root@{NODENAME}.{CLUSTER}", "echo", "via-openssh"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, **cluster.env})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "via-openssh\n"


def test_stock_openssh_proxy_jump(cluster: Cluster, joe: dict[str, Any]) -> None:
    home = Path(cluster.env["TELEPORT_HOME"])
    key = home / "keys" / "127.0.0.1" / "joe"
    opts = ["-F", "none", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={home / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o", f"IdentityFile={key}",
            "-o", f"CertificateFile={key}-cert.pub"]
    # `-W` opens a direct-tcpip channel through the proxy, exactly what `ssh -J` does; spelled
    # as a ProxyCommand because -J does not pass -o options on to the jump hop.
    proxy_cmd = "ssh " + " ".join(opts) + f" -p {cluster.ports['proxy_ssh']} -W %h:%p joe@127.0.0.1"
    out = subprocess.run(["ssh", *opts, "-o", f"ProxyCommand={proxy_cmd}", "-p", "3022",
                          f"root@{NODENAME}.{CLUSTER}", "echo", "jumped"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "jumped\n"


def test_wrong_password_is_refused_and_audited(cluster: Cluster, tmp_path: Path) -> None:
    password = "wendy's password"
    totp = cluster.signup("wendy", "root", password)
    # A code inside the valid window that signup did not spend: only the password is wrong.
    code = totp.at(time.time() + 30)

    def login(secret: str) -> subprocess.CompletedProcess[str]:
        args = ("login", f"--proxy={cluster.web_addr}", "--user=wendy", "--insecure")
        # A profile of its own: the module's other tests keep joe's.
        return cluster._run("tsh", args, f"{secret}\n{code}\n", False, 60,
                            env={"TELEPORT_HOME": str(tmp_path / "tsh")})

    out = login("wrong password")
    assert out.returncode != 0
    assert "invalid" in out.stderr.lower()
    assert "Traceback" not in out.stderr
    failures = [e for e in cluster.audit_events() if e["event"] == "auth" and e.get("user") == "wendy"]
    assert failures and failures[-1]["success"] is False
    # The same code with the right password logs in: the refusal above was the password's.
    assert login(password).returncode == 0


def test_audit_log_records_login_and_exec(cluster: Cluster, joe: dict[str, Any]) -> None:
    cluster.tsh("ssh", f"root@{NODENAME}", "echo", "audited")
    events = cluster.audit_events()
    logins = [e for e in events if e["event"] == "user.login"]
    assert logins and logins[0]["user"] == "joe" and logins[0]["method"] == "local"
    execs = [e for e in events if e["event"] == "exec" and "audited" in e.get("command", "")]
    assert execs and execs[-1]["user"] == "joe" and execs[-1]["login"] == "root"
    assert execs[-1]["exitCode"] in (0, "0")
    log_dir = cluster.data_dir / "log"
    assert all(p.name.endswith(".00:00:00.log") for p in log_dir.glob("*.log"))


def test_tctl_users_and_resources(cluster: Cluster, joe: dict[str, Any], tmp_path: Path) -> None:
    table = cluster.tctl("users", "ls").stdout.splitlines()
    assert table[0].split() == ["User", "Allowed", "Logins", "Roles"]
    assert any(line.split()[:2] == ["joe", "joe,root"] for line in table[2:])
    dumped = cluster.tctl("get", "user/joe").stdout
    assert "kind: user" in dumped and "- root" in dumped
    edited = tmp_path / "joe.yaml"
    edited.write_text(dumped.replace("- root", "- root\n    - admin"))
    cluster.tctl("create", "-f", str(edited))
    assert "admin" in cluster.tctl("get", "user/joe").stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: user\nversion: v2\nmetadata: {name: x}\nspec:\n  bogus: 1\n")
    out = cluster.tctl("create", str(bad), check=False)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1
    assert "bogus" in out.stderr
    cluster.tctl("users", "add", "temp")
    cluster.tctl("rm", "user/temp")
    assert "temp" not in cluster.tctl("users", "ls").stdout
    assert cluster.tctl("get", "user/temp", check=False).returncode != 0


def test_tctl_status_and_tokens(cluster: Cluster) -> None:
    status = cluster.tctl("status").stdout
    assert f"Cluster  {CLUSTER}" in status
    assert "CA pin   sha256:" in status
    tokens = cluster.tctl("tokens", "ls").stdout
    assert "e2e-static-token" in tokens and "never" in tokens


def test_data_dir_secrets_are_private(cluster: Cluster) -> None:
    data = cluster.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in [*(data / "identity").iterdir(), *(data / "backend").glob("sqlite.db*")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
