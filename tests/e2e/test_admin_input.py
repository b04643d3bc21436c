"""Admin and user input with the real CLIs (issue 9): findings 13, 11b and 14e.

A broken `teleport.yaml` (control character, alias bomb) is one line and exit 2, at once;
`tctl create` applies nothing of a file with a bad document; `tsh login --ttl` far too long is
one ERROR line; `--insecure` is not saved: a login with it pins the proxy's certificate, and a
later command against a proxy presenting another certificate is refused.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from tests.e2e.cluster import BIN, Cluster, make_cluster
from tests.unit.config.test_yaml_safety import ALIAS_BOMB


def _start(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "teleport"), "start", "-c", str(config)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def _one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


# --- teleport.yaml ------------------------------------------------------------------------------

def test_control_character_in_config_is_one_line_with_its_line_number(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("teleport:\n  nodename: node\x01one\n")
    out = _start(bad)
    assert out.returncode == 2
    line = _one_error_line(out)
    assert f"{bad}:2:" in line and "control character U+0001" in line
    assert "ReaderError" not in line and "internal error" not in line


def test_alias_bomb_config_is_refused_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "bomb.yaml"
    bad.write_text(ALIAS_BOMB)
    started = time.monotonic()
    out = _start(bad)
    assert time.monotonic() - started < 15  # the CLI's start-up, not an expansion
    assert out.returncode == 2
    line = _one_error_line(out)
    assert f"{bad}:3:" in line and "aliases" in line


# --- tctl create --------------------------------------------------------------------------------

def _user_doc(name: str) -> str:
    return f"kind: user\nversion: v2\nmetadata:\n  name: {name}\nspec:\n  roles: [admin]\n"


def _users(cluster: Cluster) -> list[str]:
    lines = cluster.tctl("users", "ls").stdout.splitlines()[2:]
    return [line.split()[0] for line in lines if line.strip()]


@pytest.mark.parametrize(("second", "code", "problem"), [
    (_user_doc("admin-existing"), 1, "already exists"),  # applied one by one, doc 1 got in
    (_user_doc("'bad name'"), 2, "invalid user name"),
    ("kind: user\nmetadata: &m {name: x}\n", 2, "aliases"),
    ("kind: role\nversion: v5\nmetadata: {name: r}\nspec:\n  allow:\n    rules:\n"
     "    - {resources: [role], verbs: [fly]}\n", 2, "unknown verb 'fly'"),
])
def test_tctl_create_applies_nothing_of_a_file_with_a_bad_document(
        cluster: Cluster, tmp_path: Path, second: str, code: int, problem: str) -> None:
    if "admin-existing" not in _users(cluster):
        cluster.tctl("users", "add", "admin-existing")
    path = tmp_path / "users.yaml"
    path.write_text(_user_doc("fresh-user") + "---\n" + second)
    out = cluster.tctl("create", str(path), check=False)
    assert out.returncode == code
    assert problem in _one_error_line(out)
    assert "fresh-user" not in _users(cluster)
    # The same file without its bad document is applied whole.
    path.write_text(_user_doc("fresh-user") + "---\n" + _user_doc("fresh-user-2"))
    cluster.tctl("create", str(path))
    assert {"fresh-user", "fresh-user-2"} <= set(_users(cluster))
    cluster.tctl("users", "rm", "fresh-user")
    cluster.tctl("users", "rm", "fresh-user-2")


# --- tsh login --ttl ----------------------------------------------------------------------------

def test_tsh_login_with_an_absurd_ttl_is_one_error_line(cluster: Cluster) -> None:
    for ttl in ("99999999999999999h", "99999999999999999999"):
        out = cluster.tsh("login", f"--proxy={cluster.web_addr}", "--user=nobody", "--insecure",
                          f"--ttl={ttl}", input="password\n123456\n", check=False)
        assert out.returncode == 2
        assert _one_error_line(out).startswith("ERROR: duration ") and "too long" in out.stderr
    # The proxy refuses it too, as a bad request rather than a 500.
    body = {"user": "nobody", "password": "x" * 8, "otp_token": "123456", "pub_key": "k",
            "tls_pub_key": "k", "ttl": "99999999999999999h"}
    with pytest.raises(urllib.error.HTTPError) as info:
        cluster.web("POST", "/webapi/ssh/certs", body)
    assert info.value.code == 400
    assert "Traceback" not in cluster.log()


# --- tsh --insecure -----------------------------------------------------------------------------

@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own: the test restarts it, which gives its proxy a new certificate."""
    cluster = make_cluster(tmp_path)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_insecure_is_not_saved_but_the_accepted_certificate_is_pinned(own_cluster: Cluster) -> None:
    cluster = own_cluster
    totp = cluster.signup("pat", "root", "pat's password")
    cluster.login("pat", "pat's password", totp)  # tsh login --insecure
    home = Path(cluster.env["TELEPORT_HOME"])
    assert "insecure" not in json.loads((home / "profile").read_text())
    # Later commands need no --insecure: the proxy presents the certificate accepted at login.
    assert "e2e-node" in cluster.tsh("ls").stdout
    # The proxy keeps its self-signed certificate across restarts: the pin still holds.
    cluster.stop()
    cluster.start()
    assert "e2e-node" in cluster.tsh("ls").stdout
    # Another certificate, as a machine in the middle would present, is refused.
    cluster.stop()
    (cluster.data_dir / "webproxy_cert.pem").unlink()
    cluster.start()
    out = cluster.tsh("ls", check=False)
    assert out.returncode == 1
    assert "other than the one accepted at 'tsh login --insecure'" in _one_error_line(out)
    # --insecure on a command counts for that command only.
    assert "e2e-node" in cluster.tsh("ls", "--insecure").stdout
    assert cluster.tsh("ls", check=False).returncode == 1
    # Logging in again with --insecure accepts (and pins) the new certificate (another user:
    # the helper's one-time codes for pat are spent).
    cluster.login("sam", "sam's password", cluster.signup("sam", "root", "sam's password"))
    assert "e2e-node" in cluster.tsh("ls").stdout


def test_a_profile_saved_by_an_older_tsh_with_insecure_still_loads(cluster: Cluster,
                                                                     tmp_path: Path) -> None:
    totp: pyotp.TOTP = cluster.signup("old-tsh", "root", "old tsh password")
    env = {"TELEPORT_HOME": str(tmp_path / "tsh")}
    code = totp.at(time.time() + 30)
    cluster._run("tsh", ("login", f"--proxy={cluster.web_addr}", "--user=old-tsh", "--insecure"),
                 f"old tsh password\n{code}\n", True, 60, env)
    profile = tmp_path / "tsh" / "profile"
    profile.write_text(json.dumps({**json.loads(profile.read_text()), "insecure": True}))
    status = cluster._run("tsh", ("status",), None, True, 30, env)
    assert "Logged in as: old-tsh" in status.stdout
