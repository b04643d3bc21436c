"""`tctl auth rotate` and `tctl status` on a running cluster: a user CA rotated in manual mode,
phase by phase, with the user's old and new certificates judged by the node in each phase."""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from tests.e2e.cluster import NODENAME, Cluster, make_cluster


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = make_cluster(tmp_path_factory.mktemp("rotation"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _get(cluster: Cluster, path: str) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with urllib.request.urlopen(f"https://{cluster.web_addr}{path}", context=ctx, timeout=10) as resp:
        return str(resp.read().decode())


def _authorities_status(cluster: Cluster, etag: str = "") -> tuple[int, str]:
    """GET the public CA records (conditionally when etag is given): status and tag."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(f"https://{cluster.web_addr}/webapi/authorities",
                                 headers={"If-None-Match": etag} if etag else {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            json.loads(resp.read())
            return resp.status, str(resp.headers["ETag"])
    except urllib.error.HTTPError as err:
        return err.code, str(err.headers["ETag"])


def _status(cluster: Cluster) -> dict[str, str]:
    rows = [line.split(None, 2) for line in cluster.tctl("status").stdout.splitlines()]
    return {f"{r[0]} {r[1]}": r[2] for r in rows if len(r) == 3 and r[1] == "CA"}


def _ssh_until(cluster: Cluster, ok: bool, timeout: float = 5.0) -> str:
    """Run `tsh ssh` until the node answers as expected (it follows a CA change within a
    second or so); return the last error output."""
    deadline = time.monotonic() + timeout
    while True:
        out = cluster.tsh("ssh", f"root@{NODENAME}", "echo", "in", check=False)
        if (out.returncode == 0 and out.stdout == "in\n") == ok or time.monotonic() > deadline:
            assert (out.returncode == 0) == ok, out.stderr
            return out.stderr
        time.sleep(0.2)


def _login_again(cluster: Cluster, user: str, password: str, totp: pyotp.TOTP) -> None:
    """A second login: each code is accepted once and signup and the first login took two of
    the three the server accepts now (which two depends on when the clock turned)."""
    for offset in (-30, 0, 30):
        out = cluster.tsh("login", f"--proxy={cluster.web_addr}", f"--user={user}", "--insecure",
                          input=f"{password}\n{totp.at(time.time() + offset)}\n", check=False)
        if out.returncode == 0:
            return
    raise AssertionError(out.stderr)


def test_a_user_ca_rotation_step_by_step(rotating: Cluster) -> None:
    cluster = rotating
    assert _status(cluster)["User CA"] == "never updated"
    totp = cluster.signup("rita", "root", "rotation password")
    cluster.login("rita", "rotation password", totp)
    _ssh_until(cluster, ok=True)
    old_key = cluster.tctl("auth", "export", "--type=user").stdout.split()[:2]
    # The CA records come with a tag: a client that holds them is told they did not change.
    status, before = _authorities_status(cluster)
    assert status == 200 and before.startswith('"'), before
    assert _authorities_status(cluster, before) == (304, before)

    out = cluster.tctl("auth", "rotate", "--type=user", "--manual", "--phase=init",
                       "--grace-period=1h")
    assert out.stdout == ('Updated rotation phase of the user CA to "init". '
                          "To check status use 'tctl status'\n")
    status = _status(cluster)["User CA"]
    assert re.fullmatch(r"rotating in manual mode, phase init, started \S+ \S+ UTC, "
                        r"grace period ends \S+ \S+ UTC", status), status
    assert _status(cluster)["Host CA"] == "never updated"
    status, during = _authorities_status(cluster, before)  # a new phase: new records, new tag
    assert status == 200 and during != before
    # During the grace period a stock sshd can trust both keys: export prints both.
    exported = cluster.tctl("auth", "export", "--type=user").stdout.splitlines()
    assert len(exported) == 2 and exported[0].split()[:2] == old_key
    _ssh_until(cluster, ok=True)  # the old key still signs

    cluster.tctl("auth", "rotate", "--type=user", "--manual", "--phase=update_clients")
    warned = _ssh_until(cluster, ok=True)  # an old certificate is still trusted
    # ... and tsh says it will not be for long.
    assert re.fullmatch(r"Your SSH certificate was issued by the user CA that is being rotated "
                        r"out; it stops working at \S+ \S+ UTC: run 'tsh login' to get a new one.\n",
                        warned), warned
    # The next command is told the records did not change: the warning stays all the same.
    assert cluster.tsh("ls").stderr == warned
    cluster.tsh("logout")
    _login_again(cluster, "rita", "rotation password", totp)  # a certificate of the new key
    assert _ssh_until(cluster, ok=True) == ""  # the node trusts the new key too; no warning

    cluster.tctl("auth", "rotate", "--type=user", "--manual", "--phase=update_servers")
    cluster.tctl("auth", "rotate", "--type=user", "--manual", "--phase=standby")
    assert _status(cluster)["User CA"].startswith("rotated ")
    exported = cluster.tctl("auth", "export", "--type=user").stdout.splitlines()
    assert len(exported) == 1 and exported[0].split()[:2] != old_key
    _ssh_until(cluster, ok=True)  # the new certificate outlives the old key


def test_an_old_certificate_is_refused_once_the_rotation_ends(rotating: Cluster) -> None:
    cluster = rotating
    totp = cluster.signup("olga", "root", "rotation password")
    cluster.login("olga", "rotation password", totp)
    _ssh_until(cluster, ok=True)
    for phase in ("init", "update_clients", "update_servers"):
        cluster.tctl("auth", "rotate", "--type=user", "--manual", f"--phase={phase}")
        _ssh_until(cluster, ok=True)
    cluster.tctl("auth", "rotate", "--type=user", "--manual", "--phase=standby")
    error = _ssh_until(cluster, ok=False).splitlines()
    assert error == [
        "Your SSH certificate was issued by a user CA this cluster no longer trusts (it was "
        "rotated): run 'tsh login' to get a new one.",
        f"ERROR: access denied to root connecting to {NODENAME}: certificate not signed by a "
        "trusted authority"], error


def test_rollback_and_refusals(rotating: Cluster) -> None:
    cluster = rotating
    bad = cluster.tctl("auth", "rotate", "--type=user", "--manual", "--phase=update_servers",
                       check=False)
    assert bad.returncode != 0 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "ERROR: the user CA is not being rotated: start with --phase=init"]
    cluster.tctl("auth", "rotate", "--type=host", "--manual", "--phase=init")
    # tsh trusts the new host key as soon as it talks to the cluster, for stock OpenSSH too;
    # a stock sshd can be given both through the proxy's export, as Teleport serves it.
    cluster.tsh("ls")
    known = Path(cluster.env["TELEPORT_HOME"], "known_hosts").read_text().splitlines()
    exported = _get(cluster, "/webapi/auth/export?type=host").splitlines()
    assert len(known) == 2 and len(exported) == 2
    assert [line.split()[2:4] for line in known] == [line.split()[2:4] for line in exported]
    again = cluster.tctl("auth", "rotate", check=False)
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1
    assert "rotation of the host CA is in progress (phase init)" in again.stderr
    bad = cluster.tctl("auth", "rotate", "--phase=standby", check=False)
    assert bad.returncode != 0 and "--phase needs --manual" in bad.stderr
    bad = cluster.tctl("auth", "rotate", "--grace-period=soon", check=False)
    assert bad.returncode != 0 and "invalid duration 'soon'" in bad.stderr
    cluster.tctl("auth", "rotate", "--type=host", "--manual", "--phase=rollback")
    assert _status(cluster)["Host CA"].startswith("rotating in manual mode, phase rollback")
    cluster.tctl("auth", "rotate", "--type=host", "--manual", "--phase=standby")
    assert _status(cluster)["Host CA"] == "never updated"
    cluster.tsh("ls")
    assert [line.split()[2:4] for line in
            Path(cluster.env["TELEPORT_HOME"], "known_hosts").read_text().splitlines()] == [known[0].split()[2:4]]
    # Every step is audited with the admin who made it and the phase.
    out = cluster.tctl("audit", "events", "--type=cert.rotate", "--format=json", "--limit=100")
    events = json.loads(out.stdout)
    assert [(e["phase"], e["previous_phase"], e["mode"]) for e in events if e["ca_type"] == "host"] \
        == [("init", "standby", "manual"), ("rollback", "init", "manual"),
            ("standby", "rollback", "manual")]
    assert [e["phase"] for e in events if e["ca_type"] == "user"] == [
        "init", "update_clients", "update_servers", "standby"] * 2
    assert len({e["user"] for e in events}) == 1 and events[0]["user"]  # tctl's Admin identity
