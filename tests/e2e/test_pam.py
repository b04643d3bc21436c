"""PAM integration (issue 11, item 5): a node with `ssh_service.pam` runs the account and session
stacks of a service file this test writes into /etc/pam.d, for every session, with libpam's stock
modules (pam_exec, pam_env, pam_deny, pam_limits, pam_umask, pam_loginuid)."""

from __future__ import annotations

import os
import pwd
import resource
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import BIN, NODENAME, Cluster, make_cluster

PAM_DIR = Path("/etc/pam.d")
#: The node's bound on the account and session stacks (teleport.srv.pam.OPEN_TIMEOUT_SECONDS).
PAM_TIMEOUT = 10


def _wait_for(check: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def pam_service() -> Iterator[Path]:
    """A PAM service file of our own, removed afterwards; each test writes its stacks."""
    if os.geteuid() != 0 or not (PAM_DIR / "sshd").parent.is_dir():
        pytest.skip("PAM sessions need a root node and /etc/pam.d")
    path = PAM_DIR / f"teleport-e2e-{uuid.uuid4().hex[:8]}"
    path.write_text("account required pam_permit.so\n")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pam_service: Path) -> Iterator[Cluster]:
    """An all-in-one cluster whose node sends every session through `pam_service`."""
    c = make_cluster(tmp_path_factory.mktemp("pam-cluster"))
    c.config.write_text(c.config.read_text().replace(
        "ssh_service:\n  enabled: yes\n",
        f"ssh_service:\n  enabled: yes\n  pam:\n    enabled: yes\n"
        f"    service_name: {pam_service.name}\n"))
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_session_stack_runs_and_its_environment_reaches_the_command(
        cluster: Cluster, joe: dict[str, Any], pam_service: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    script = tmp_path / "mark.sh"
    script.write_text(f'#!/bin/sh\necho "$PAM_TYPE $PAM_USER $TELEPORT_USERNAME" >> {marker}\n')
    script.chmod(0o755)
    envfile = tmp_path / "env"
    envfile.write_text("PAM_E2E_GREETING=set-by-pam-env\n")
    pam_service.write_text(
        "account required pam_permit.so\n"
        f"session optional pam_exec.so {script}\n"
        f"session required pam_env.so readenv=1 envfile={envfile} conffile=/dev/null "
        "user_readenv=0\n")
    out = cluster.tsh("ssh", f"root@{NODENAME}", "echo $PAM_E2E_GREETING")
    assert out.stdout == "set-by-pam-env\n"
    assert marker.read_text().splitlines()[0] == "open_session root joe"
    # the session is closed through PAM too once the command has ended
    assert _wait_for(lambda: "close_session root joe" in marker.read_text()), marker.read_text()


def test_a_shell_shows_what_session_modules_say_and_a_command_does_not(
        cluster: Cluster, joe: dict[str, Any], pam_service: Path) -> None:
    pam_service.write_text("account required pam_permit.so\n"
                           "session optional pam_echo.so Welcome, %u, from PAM\n")
    shell = cluster.tsh("ssh", f"root@{NODENAME}", input="echo shell-ran\nexit\n", timeout=20)
    assert shell.stdout.startswith("Welcome, root, from PAM\n")
    assert "shell-ran" in shell.stdout
    command = cluster.tsh("ssh", f"root@{NODENAME}", "echo", "command-ran")
    assert command.stdout == "command-ran\n"


def test_sftp_subsystem_goes_through_pam_with_a_clean_protocol(
        cluster: Cluster, joe: dict[str, Any], pam_service: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    pam_service.write_text("account required pam_permit.so\n"
                           "session optional pam_echo.so this would corrupt sftp\n"
                           f"session optional pam_exec.so /usr/bin/touch {marker}\n")
    (tmp_path / "upload.txt").write_text("through PAM\n")
    (tmp_path / "batch").write_text(f"put {tmp_path / 'upload.txt'} {tmp_path / 'arrived.txt'}\n")
    key = Path(cluster.env["TELEPORT_HOME"]) / "keys" / "127.0.0.1" / "joe"
    out = subprocess.run(
        ["sftp", "-F", "none", "-o", "BatchMode=yes", "-o", f"IdentityFile={key}",
         "-o", f"CertificateFile={key}-cert.pub", "-o", "IdentitiesOnly=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-P", str(cluster.ports["node"]), "-b", str(tmp_path / "batch"), "root@127.0.0.1"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, **cluster.env})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "arrived.txt").read_text() == "through PAM\n"
    assert marker.exists()


def test_account_failure_refuses_the_session_with_pams_message(
        cluster: Cluster, joe: dict[str, Any], pam_service: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    pam_service.write_text("account requisite pam_deny.so\n"
                           f"session optional pam_exec.so /usr/bin/touch {marker}\n")
    out = cluster.tsh("ssh", f"root@{NODENAME}", "echo", "should-not-run", check=False)
    assert out.returncode != 0
    assert "should-not-run" not in out.stdout
    assert "PAM account check for root failed: Authentication failure" in out.stderr
    assert "Traceback" not in out.stderr
    assert not marker.exists()  # no session was opened
    assert _wait_for(lambda: any(
        e["event"] == "auth" and e.get("success") is False and e.get("user") == "joe"
        and "PAM account check for root failed" in e.get("error", "")
        for e in cluster.audit_events()))


def test_hanging_module_is_refused_after_the_timeout_and_the_node_serves_others(
        cluster: Cluster, joe: dict[str, Any], pam_service: Path, tmp_path: Path) -> None:
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\nsleep 600\necho never\n")
    hang.chmod(0o755)
    pam_service.write_text("account required pam_permit.so\n"
                           f"session optional pam_exec.so {hang}\n")
    started = time.monotonic()
    stuck = subprocess.Popen(
        [str(BIN / "tsh"), "ssh", f"root@{NODENAME}", "echo", "should-not-run"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, **cluster.env})
    try:
        assert _wait_for(lambda: _running(str(hang)))
        # While that session waits on PAM, others get through (libpam reads the file per session).
        pam_service.write_text("account required pam_permit.so\n")
        assert cluster.tsh("ssh", f"root@{NODENAME}", "echo", "served").stdout == "served\n"
        assert stuck.poll() is None
        out, err = stuck.communicate(timeout=PAM_TIMEOUT + 20)
    finally:
        if stuck.poll() is None:
            stuck.kill()
        for pid in _pids(str(hang)):  # only if the node failed to: leave nothing behind
            os.kill(pid, 9)
    assert stuck.returncode != 0
    assert time.monotonic() - started >= PAM_TIMEOUT - 1
    assert "should-not-run" not in out
    assert f"did not answer within {PAM_TIMEOUT}s" in err
    # the module and what it started are gone, not left behind on the node
    assert _wait_for(lambda: not _running(str(hang)), 5)
    assert any(e["event"] == "auth" and "did not answer" in e.get("error", "")
               for e in cluster.audit_events())


#: What a session reports about its process: open files, umask, niceness, audit login uid, limits.
SESSION_ATTRS = ("ulimit -n; ulimit -Hn; umask; nice; cat /proc/self/loginuid; echo; "
                 "cat /proc/self/limits")


def _session_attrs(cluster: Cluster, login: str) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """Run SESSION_ATTRS as login: its first five lines, and (soft, hard) per /proc limit name."""
    lines = cluster.tsh("ssh", f"{login}@{NODENAME}", SESSION_ATTRS).stdout.splitlines()
    limits = {line[:26].strip(): (line[26:].split()[0], line[26:].split()[1])
              for line in lines[6:]}  # after /proc/self/limits' header line
    return lines[:5], limits


def _sftp_put(cluster: Cluster, login: str, local: Path, remote: str) -> None:
    """Upload with stock sftp, straight to the node (the proxy route is test_sftp's)."""
    key = Path(cluster.env["TELEPORT_HOME"]) / "keys" / "127.0.0.1" / "joe"
    out = subprocess.run(
        ["sftp", "-F", "none", "-o", "BatchMode=yes", "-o", f"IdentityFile={key}",
         "-o", f"CertificateFile={key}-cert.pub", "-o", "IdentitiesOnly=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-P", str(cluster.ports["node"]), "-b", "-", f"{login}@127.0.0.1"],
        input=f"put {local} {remote}\n", capture_output=True, text=True, timeout=60,
        env={**os.environ, **cluster.env})
    assert out.returncode == 0, out.stderr


def _can_set_loginuid() -> bool:
    """Whether this kernel lets a fresh root process set its audit login uid (audit support)."""
    return subprocess.run(["sh", "-c", "echo 0 > /proc/self/loginuid"],
                          capture_output=True).returncode == 0


def _can_raise(limit: str, value: int) -> bool:
    """Whether root may raise this hard limit here (containers often drop CAP_SYS_RESOURCE)."""
    return subprocess.run(["prlimit", f"--{limit}={value}:{value}", "true"],
                          capture_output=True).returncode == 0


def test_session_modules_set_the_limits_umask_and_login_uid_of_the_session(
        cluster: Cluster, joe: dict[str, Any], os_joe: pwd.struct_passwd, pam_service: Path,
        tmp_path: Path) -> None:
    # The node inherited our limits. nofile and nproc go down; the priority goes up and
    # msgqueue's hard limit too (where the kernel lets root): only root may do either, so PAM's
    # attributes must be applied before the child drops to joe.
    queue = resource.getrlimit(resource.RLIMIT_MSGQUEUE)[1]
    raised = queue + 4096 if queue != resource.RLIM_INFINITY and \
        _can_raise("msgqueue", queue + 4096) else None
    conf = tmp_path / "limits.conf"
    conf.write_text("* soft nofile 1234\n* hard nofile 4321\n* soft nproc 555\n"
                    "* hard nproc 777\n* - priority -5\n"
                    + (f"* soft msgqueue {raised}\n* hard msgqueue {raised}\n" if raised else ""))
    pam_service.write_text("account required pam_permit.so\n"
                           f"session required pam_limits.so conf={conf}\n"
                           "session optional pam_umask.so umask=0027\n"
                           "session optional pam_loginuid.so\n")
    first, limits = _session_attrs(cluster, "joe")
    assert first[:4] == ["1234", "4321", "0027", "-5"]
    assert limits["Max open files"] == ("1234", "4321")
    assert limits["Max processes"] == ("555", "777")
    if raised is not None:
        assert limits["Max msgqueue size"] == (str(raised), str(raised))
    if _can_set_loginuid():
        assert first[4] == str(os_joe.pw_uid)
    # sftp-server runs with PAM's umask too: a 0644 upload lands as 0640.
    local = tmp_path / "upload.txt"
    local.write_text("masked\n")
    local.chmod(0o644)
    remote = Path(os_joe.pw_dir) / f"pam-umask-{uuid.uuid4().hex[:8]}.txt"
    try:
        _sftp_put(cluster, "joe", local, str(remote))
        assert remote.read_text() == "masked\n"
        assert remote.stat().st_mode & 0o777 == 0o640
        assert remote.stat().st_uid == os_joe.pw_uid
    finally:
        remote.unlink(missing_ok=True)


def test_without_session_modules_the_session_has_the_nodes_limits_and_umask(
        cluster: Cluster, joe: dict[str, Any], os_joe: pwd.struct_passwd,
        pam_service: Path) -> None:
    pam_service.write_text("account required pam_permit.so\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the node inherited ours
    mask = os.umask(0)
    os.umask(mask)
    first, limits = _session_attrs(cluster, "joe")
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    assert first[:4] == [str(soft), str(hard), f"{mask:04o}", str(nice)]
    assert first[4] == Path("/proc/self/loginuid").read_text().strip()
    assert limits["Max processes"] == tuple(
        "unlimited" if v == resource.RLIM_INFINITY else str(v)
        for v in resource.getrlimit(resource.RLIMIT_NPROC))


def _pids(needle: str) -> list[int]:
    """The processes whose command line mentions needle (a path unique to this test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _running(needle: str) -> bool:
    return bool(_pids(needle))
