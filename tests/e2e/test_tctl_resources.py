"""`tctl` resources, locks and user administration with the real CLIs on a real cluster (issue 14).

Roles round-trip through `create`/`get`/`rm` and a bad role changes nothing; `get all` re-creates
roles, users and tokens in a fresh cluster; every `--format` is honoured; locks are created,
listed and removed; `users update/reset/unlock/add --ttl` say what they did; and away from the
auth host `tctl` acts as the `tsh` user, whose roles decide.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pyotp
import pytest
import yaml

from tests.e2e.cluster import Cluster, make_cluster

PASSWORD = "correct horse battery"

DEV_ROLE = """\
kind: role
version: v5
metadata:
  name: dev
spec:
  allow:
    logins: [ubuntu]
    node_labels:
      env: staging
    rules:
    - resources: [session]
      verbs: [list, read]
  deny: {}
"""


def _one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("ERROR: "), out.stderr
    return lines[0]


def _tctl_as(cluster: Cluster, tsh_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run tctl with a data dir holding no admin identity, as the tsh user of tsh_home."""
    empty = tsh_home.parent / "no-admin-data"
    empty.mkdir(exist_ok=True)
    return cluster._run("tctl", ("--data-dir", str(empty), *args), None, False, 30,
                        env={"TELEPORT_HOME": str(tsh_home)})


def _code(totp: pyotp.TOTP) -> str:
    """Return a code the auth server takes now (one window either side) and has not seen.

    Each code is accepted once; the signup used the window it happened in (`_signed_up`)."""
    used: set[int] = totp.__dict__.setdefault("_used", set())
    while True:
        now = int(time.time() // 30)
        free = [w for w in (now + 1, now, now - 1) if w not in used]
        if free:
            used.add(free[0])
            return totp.at(free[0] * 30)
        time.sleep(30 - time.time() % 30 + 0.5)


def _signed_up(totp: pyotp.TOTP) -> pyotp.TOTP:
    """Mark the windows around now as used: the signup just took one of them."""
    now = int(time.time() // 30)
    totp.__dict__.setdefault("_used", set()).update({now, now - 1})
    return totp


def _login(cluster: Cluster, name: str, password: str, totp: pyotp.TOTP | None, home: Path,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """`tsh login` as name with its own TELEPORT_HOME (so several users can be logged in);
    without totp, with a wrong code."""
    code = _code(totp) if totp is not None else "000000"
    return cluster._run("tsh", ("login", f"--proxy={cluster.web_addr}", f"--user={name}",
                                "--insecure"), f"{password}\n{code}\n", check, 60,
                        env={"TELEPORT_HOME": str(home)})


def _complete(cluster: Cluster, url: str, password: str) -> pyotp.TOTP:
    """Set a password and OTP device through a signup or reset link; return the OTP."""
    token = url.rsplit("/", 1)[1]
    info = cluster.web("GET", f"/webapi/users/password/token/{token}")
    totp = pyotp.TOTP(info["otp_secret"])
    cluster.web("PUT", "/webapi/users/password/token",
                {"token": token, "password": password, "second_factor_token": totp.now()})
    return _signed_up(totp)


def _link(out: str, part: str) -> str:
    return next(w for w in out.split() if part in w)


# --- roles: create, get, rm ----------------------------------------------------------------------

def test_role_round_trip_and_a_bad_role_changes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "dev.yaml"
    path.write_text(DEV_ROLE)
    assert cluster.tctl("create", str(path)).stdout.strip() == 'role "dev" has been created'
    stored = yaml.safe_load(cluster.tctl("get", "role/dev").stdout)
    assert stored["kind"] == "role" and stored["spec"]["allow"]["logins"] == ["ubuntu"]
    assert stored["spec"]["allow"]["node_labels"] == {"env": ["staging"]}

    again = cluster.tctl("create", str(path), check=False)
    assert again.returncode == 1
    assert 'role "dev" already exists' in _one_error_line(again)
    path.write_text(DEV_ROLE.replace("[ubuntu]", "[ubuntu, deploy]"))
    assert cluster.tctl("create", "-f", str(path)).stdout.strip() == 'role "dev" has been updated'

    # A bad verb, an unknown field, a bad regex: one line naming the field, the role untouched.
    for bad, field in [(DEV_ROLE.replace("[list, read]", "[list, fly]"), "verbs"),
                       (DEV_ROLE.replace("deny: {}", "deny: {colour: red}"), "colour"),
                       (DEV_ROLE.replace("env: staging", "env: '^(unclosed$'"), "node_labels")]:
        path.write_text(bad)
        out = cluster.tctl("create", "-f", str(path), check=False)
        assert out.returncode == 2
        assert field in _one_error_line(out)
    after = yaml.safe_load(cluster.tctl("get", "role/dev").stdout)
    assert after["spec"]["allow"]["logins"] == ["ubuntu", "deploy"]
    assert after["spec"]["allow"]["rules"] == [{"resources": ["session"], "verbs": ["list", "read"]}]

    assert cluster.tctl("rm", "role/dev").stdout.strip() == 'role "dev" has been deleted'
    gone = cluster.tctl("get", "role/dev", check=False)
    assert gone.returncode == 1 and "not found" in _one_error_line(gone)
    unknown = cluster.tctl("get", "widgets", check=False)
    assert unknown.returncode == 2 and "unsupported resource 'widgets'" in _one_error_line(unknown)


def test_get_formats(cluster: Cluster) -> None:
    as_json = json.loads(cluster.tctl("get", "roles", "--format=json").stdout)
    assert {"access", "editor", "auditor", "admin"} <= {r["metadata"]["name"] for r in as_json}
    as_yaml = list(yaml.safe_load_all(cluster.tctl("get", "roles", "--format=yaml").stdout))
    assert [r["metadata"]["name"] for r in as_yaml] == [r["metadata"]["name"] for r in as_json]
    text = cluster.tctl("get", "roles", "--format=text").stdout.splitlines()
    assert re.fullmatch(r"Role +Allowed to login as +Node Labels +Access to resources", text[0])
    access = next(line for line in text if line.startswith("access "))
    assert "{{internal.logins}}" in access and "<all nodes>" in access
    editor = next(line for line in text if line.startswith("editor "))
    assert ("user,role,token,lock,github,oidc,trusted_cluster,remote_cluster:"
            "list,read,create,update,delete") in editor
    # `get all` as text: one table per kind.
    everything = cluster.tctl("get", "all", "--format=text").stdout
    for header in ("User", "Role", "Token", "Cluster Name", "ID", "Host"):
        assert re.search(rf"^{header}\s", everything, re.MULTILINE), header
    assert "BEGIN" not in everything and "PRIVATE" not in everything


# --- get all into a fresh cluster ----------------------------------------------------------------

def test_get_all_then_create_recreates_roles_users_and_tokens(
        cluster: Cluster, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path / "dev.yaml"
    path.write_text(DEV_ROLE.replace("name: dev", "name: backup-dev"))
    cluster.tctl("create", str(path))
    cluster.tctl("users", "add", "backup-joe", "--roles=backup-dev,access")
    cluster.tctl("nodes", "add", "--token=backup-token-1", "--ttl=1h")
    state = cluster.tctl("get", "all").stdout
    assert "PRIVATE KEY" not in state  # no CA's private key leaves the auth server
    kinds = {d["kind"] for d in yaml.safe_load_all(state)}
    assert {"user", "role", "token", "cert_authority", "node"} <= kinds

    fresh = make_cluster(tmp_path_factory.mktemp("fresh"))
    fresh.start()
    try:
        (fresh.root / "state.yaml").write_text(state)
        out = fresh.tctl("create", "-f", str(fresh.root / "state.yaml"))
        skipped = out.stderr.strip().splitlines()
        assert skipped and all(line.startswith(("skipping cert_authority", "skipping node"))
                               for line in skipped), out.stderr
        assert 'role "backup-dev" has been created' in out.stdout
        assert 'user "backup-joe" has been created' in out.stdout
        assert 'token "backup-token-1" has been created' in out.stdout
        role = yaml.safe_load(fresh.tctl("get", "role/backup-dev").stdout)
        assert role["spec"]["allow"]["node_labels"] == {"env": ["staging"]}
        user = yaml.safe_load(fresh.tctl("get", "user/backup-joe").stdout)
        assert user["spec"]["roles"] == ["backup-dev", "access"]
        assert "backup-token-1" in fresh.tctl("tokens", "ls").stdout
    finally:
        fresh.stop()
    cluster.tctl("users", "rm", "backup-joe")
    cluster.tctl("rm", "role/backup-dev")
    cluster.tctl("rm", "token/backup-token-1")


# --- locks ---------------------------------------------------------------------------------------

def test_lock_create_list_rm(cluster: Cluster) -> None:
    out = cluster.tctl("lock", "--user=lockee", "--message=under investigation", "--ttl=1h")
    match = re.fullmatch(r'Created a lock with name "([0-9a-f-]{36})"\.', out.stdout.strip())
    assert match, out.stdout
    name = match[1]
    text = cluster.tctl("get", "locks", "--format=text").stdout.splitlines()
    assert re.fullmatch(r"ID +Target +Message +Expires", text[0])
    row = next(line for line in text if line.startswith(name))
    assert "user=lockee" in row and "under investigation" in row and "UTC" in row
    stored = yaml.safe_load(cluster.tctl("get", f"lock/{name}").stdout)
    assert stored["spec"]["target"]["user"] == "lockee"
    assert cluster.tctl("rm", f"lock/{name}").stdout.strip() == f'lock "{name}" has been deleted'
    assert name not in cluster.tctl("get", "locks", "--format=text").stdout

    until = cluster.tctl("lock", "--role=auditor", "--expires=2099-01-02T03:04:05Z").stdout
    other = re.search(r'"(.+)"', until)[1]  # type: ignore[index]
    assert "02 Jan 99 03:04 UTC" in cluster.tctl("get", "locks", "--format=text").stdout
    cluster.tctl("rm", f"lock/{other}")

    for args, problem in [(("--message=x",), "one of the arguments"),
                          (("--user=a", "--role=b"), "not allowed with"),
                          (("--user=a", "--ttl=soon"), "--ttl"),
                          (("--user=a", "--expires=2001-01-01T00:00:00Z"), "in the past")]:
        bad = cluster.tctl("lock", *args, check=False)
        assert bad.returncode == 2, bad
        assert problem in bad.stderr and "Traceback" not in bad.stderr


# --- users ---------------------------------------------------------------------------------------

def test_users_add_ttl_update_and_ls(cluster: Cluster) -> None:
    out = cluster.tctl("users", "add", "ttl-user", "--ttl=2h").stdout
    assert "valid for 2h0m0s" in out and "/web/newuser/" in out
    token = _link(out, "/web/newuser/").rsplit("/", 1)[1]
    listed = cluster.tctl("tokens", "ls").stdout
    assert token in listed
    too_long = cluster.tctl("users", "add", "ttl-user-2", "--ttl=49h", check=False)
    assert too_long.returncode == 2 and "--ttl" in _one_error_line(too_long)

    out = cluster.tctl("users", "update", "ttl-user", "--set-roles=editor,access",
                       "--set-logins=deploy,ubuntu").stdout
    assert out.splitlines() == ["User ttl-user has been updated:", "\tNew roles: editor,access",
                                "\tNew logins: deploy,ubuntu"]
    user = yaml.safe_load(cluster.tctl("get", "user/ttl-user").stdout)
    assert user["spec"]["roles"] == ["editor", "access"]
    assert user["spec"]["traits"]["logins"] == ["deploy", "ubuntu"]
    table = cluster.tctl("users", "ls").stdout.splitlines()
    assert table[0].split() == ["User", "Allowed", "Logins", "Roles"]
    assert any(line.split() == ["ttl-user", "deploy,ubuntu", "editor,access"] for line in table)

    nothing = cluster.tctl("users", "update", "ttl-user", check=False)
    assert nothing.returncode == 2 and "--set-roles" in _one_error_line(nothing)
    missing = cluster.tctl("users", "update", "ttl-user", "--set-roles=no-such-role", check=False)
    assert missing.returncode != 0 and "no-such-role" in _one_error_line(missing)
    cluster.tctl("users", "rm", "ttl-user")


def test_users_reset_and_unlock(cluster: Cluster, tmp_path: Path) -> None:
    home = tmp_path / "tsh-resetee"
    totp = _signed_up(cluster.signup("resetee", "resetee", PASSWORD, roles="access"))
    # Five wrong passwords lock the user out; unlock lets the right one in again.
    for _ in range(5):
        _login(cluster, "resetee", "wrong password", None, home, check=False)
    locked = _login(cluster, "resetee", PASSWORD, totp, home, check=False)
    assert locked.returncode != 0
    out = cluster.tctl("users", "unlock", "resetee").stdout
    assert out.strip() == 'User "resetee" has been unlocked'
    _login(cluster, "resetee", PASSWORD, totp, home)

    out = cluster.tctl("users", "reset", "resetee").stdout
    assert "valid for 8h0m0s" in out
    url = _link(out, "/web/reset/")
    assert url == f"https://{cluster.web_addr}/web/reset/{url.rsplit('/', 1)[1]}"
    # The old password no longer works; the link sets a new one and a new second factor.
    assert _login(cluster, "resetee", PASSWORD, None, home, check=False).returncode != 0
    new_totp = _complete(cluster, url, "a brand new password")
    _login(cluster, "resetee", "a brand new password", new_totp, home)
    cluster.tctl("users", "rm", "resetee")


# --- tctl as the tsh user ------------------------------------------------------------------------

def test_tctl_through_a_tsh_profile(cluster: Cluster, tmp_path: Path) -> None:
    editor_home, viewer_home = tmp_path / "tsh-editor", tmp_path / "tsh-viewer"
    totp = _signed_up(cluster.signup("prof-editor", "prof-editor", PASSWORD, roles="editor,access"))
    _login(cluster, "prof-editor", PASSWORD, totp, editor_home)
    out = _tctl_as(cluster, editor_home, "get", "roles", "--format=json")
    assert out.returncode == 0, out.stderr
    assert "editor" in {r["metadata"]["name"] for r in json.loads(out.stdout)}

    totp = _signed_up(cluster.signup("prof-viewer", "prof-viewer", PASSWORD, roles="access"))
    _login(cluster, "prof-viewer", PASSWORD, totp, viewer_home)
    refused = _tctl_as(cluster, viewer_home, "get", "roles")
    assert refused.returncode == 1
    line = _one_error_line(refused)
    assert "list" in line and "'role'" in line and "access" in line  # the rule that refused

    nobody = _tctl_as(cluster, tmp_path / "tsh-nobody", "get", "roles")
    assert nobody.returncode == 1
    line = _one_error_line(nobody)
    assert "no admin identity" in line and "auth server" in line and "tsh login" in line
    cluster.tctl("users", "rm", "prof-editor")
    cluster.tctl("users", "rm", "prof-viewer")
