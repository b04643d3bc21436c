"""Roles end to end, with the real CLIs and stock OpenSSH: who sees and reaches which node as whom.

One cluster: its own node is `staging-node` (env=staging), a second process `prod-node`
(env=prod). Roles are loaded with `tctl create -f` as an administrator would. Users, each with a
tsh home of their own:

- joe: `dev` (staging only, login ubuntu, port forwarding not granted, max_session_ttl 1h);
- kim: `dev` plus `no-staging` (a deny on env=staging);
- ada: the `access` preset (every node, her own logins, forwarding granted);
- aud: the `auditor` preset (recordings and the audit log, no node).

The role that changes (`dev`, widened to prod and back) is changed last, by the last test.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import (
    BIN,
    CLUSTER,
    Cluster,
    make_cluster,
    start_node,
    write_node_config,
)
from tests.e2e.people import Person, env_of, login_as, sign_up, tsh_as
from tests.e2e.test_interactive import Terminal
from tests.ports import wait_listening

LOGIN = "ubuntu"  # the dev role's login; created on this machine when missing
STAGING = "staging-node"
PROD = "prod-node"
PASSWORD = "roles are least privilege"
#: How long a node may take to apply a role change: it hears of it on its watch stream (the
#: issue's bound); its 3 s poll alone would mostly miss it.
ROLE_WATCHED = 1.0


def _role(name: str, *, allow: dict[str, Any] | None = None, deny: dict[str, Any] | None = None,
          options: dict[str, Any] | None = None) -> str:
    spec: dict[str, Any] = {"allow": allow or {}, "deny": deny or {}}
    if options:
        spec["options"] = options
    return yaml.safe_dump({"kind": "role", "version": "v5", "metadata": {"name": name},
                           "spec": spec}, sort_keys=False)


def _dev_role(*envs: str) -> str:
    return _role("dev", allow={"logins": [LOGIN], "node_labels": {"env": list(envs)}},
                 options={"max_session_ttl": "1h"})


NO_STAGING = _role("no-staging", deny={"node_labels": {"env": "staging"}})


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def os_login() -> Iterator[str]:
    """The OS account the dev role logs in as (created if missing, removed if we created it)."""
    try:
        pwd.getpwnam(LOGIN)
        yield LOGIN
        return
    except KeyError:
        pass
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip(f"the OS user {LOGIN} is missing and creating it needs root and useradd")
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", LOGIN], check=True,
                   capture_output=True)
    try:
        yield LOGIN
    finally:
        subprocess.run(["userdel", "--remove", "--force", LOGIN], capture_output=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, os_login: str) -> Iterator[Cluster]:
    """Auth, proxy and the staging node in one process; the prod node in a second one, started
    here and waited for by `people` (it joins while the users sign up)."""
    root = tmp_path_factory.mktemp("roles")
    c = make_cluster(root)
    text = c.config.read_text().replace("  nodename: e2e-node\n", f"  nodename: {STAGING}\n")
    c.config.write_text(text.replace("    env: e2e\n", "    env: staging\n"))
    c.start()
    prod: subprocess.Popen[str] | None = None
    try:
        config = write_node_config(
            root / "prod.yaml", PROD, root / "prod-data", labels={"env": "prod"},
            teleport_extra=f"  auth_token: e2e-static-token\n"
                           f"  auth_servers: [\"127.0.0.1:{c.ports['auth']}\"]\n")
        prod = start_node(config, root / "prod.log")
        yield c
    finally:
        if prod is not None:
            prod.terminate()
            prod.wait(15)
        c.stop()


USERS = (  # name, logins, roles, extra `tsh login` flags
    # joe asks for 12 hours; his role allows one (test_max_session_ttl_caps_login_ttl).
    ("joe", f"{LOGIN},root", "dev", ("--ttl=720",)),
    ("kim", LOGIN, "dev,no-staging", ()),
    ("ada", LOGIN, "access", ()),
    ("aud", f"{LOGIN},root", "auditor", ()),
)


@pytest.fixture(scope="module")
def people(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Person]:
    """The roles (through `tctl create -f`) and the four users, each logged in with tsh."""
    root = tmp_path_factory.mktemp("people")
    path = root / "roles.yaml"
    path.write_text(_dev_role("staging") + "---\n" + NO_STAGING)
    cluster.tctl("create", "-f", str(path))

    def arrive(name: str, logins: str, roles: str, flags: tuple[str, ...]) -> Person:
        person = sign_up(cluster, name, logins, roles, root, PASSWORD)
        out = login_as(cluster, person, PASSWORD, *flags)
        assert out.returncode == 0, out.stderr
        return person

    # Side by side: each is a few CLI starts, and the prod node joins meanwhile.
    with ThreadPoolExecutor(len(USERS)) as pool:
        made = {p.name: p for p in pool.map(lambda u: arrive(*u), USERS)}
    deadline = time.monotonic() + 20
    while PROD not in cluster.tctl("nodes", "ls").stdout:
        assert time.monotonic() < deadline, (cluster.root / "prod.log").read_text()
        time.sleep(0.3)
    return made


def _refusals(cluster: Cluster, user: str, login: str, since: float) -> list[dict[str, Any]]:
    """The failed `auth` events of user logging in as login, recorded after `since`."""
    found = []
    for event in cluster.audit_events():
        if event["event"] != "auth" or event.get("success") is not False:
            continue
        if event.get("user") != user or event.get("login") != login:
            continue
        when = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        if when >= since - 1:
            found.append(event)
    return found


def _wait_refusal(cluster: Cluster, user: str, login: str, since: float) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while not (found := _refusals(cluster, user, login, since)):
        assert time.monotonic() < deadline, \
            f"no failed auth event for {user} as {login}:\n" + "\n".join(
                json.dumps(e) for e in cluster.audit_events()[-15:])
        time.sleep(0.2)
    return found[-1]


def _listed_names(text: str) -> set[str]:
    """The node names of a `tsh ls` or `tctl nodes ls` table (first column, after the rule)."""
    lines = text.splitlines()
    return {line.split()[0] for line in lines[2:] if line.strip()}


def _refused(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode != 0, out.stdout
    assert "access denied" in out.stderr.lower(), out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------------------------
# A dev role sees and reaches staging only, as ubuntu


def test_tsh_ls_lists_only_nodes_the_role_reaches(cluster: Cluster, people: dict[str, Person]) -> None:
    assert _listed_names(tsh_as(cluster, people["joe"], "ls").stdout) == {STAGING}
    # The same call as an `access` user lists both: the filter is joe's role, not the nodes.
    assert _listed_names(tsh_as(cluster, people["ada"], "ls").stdout) == {STAGING, PROD}


def test_tctl_nodes_ls_through_own_identity_lists_only_staging(
        cluster: Cluster, people: dict[str, Person], tmp_path: Path) -> None:
    joe = people["joe"]
    # tctl away from the auth host: an empty data dir (no Admin identity), joe's tsh profile.
    empty = tmp_path / "no-admin"
    empty.mkdir()
    out = cluster._run("tctl", ("--data-dir", str(empty), "nodes", "ls"), None, False, 30,
                       env=joe.env)
    if out.returncode != 0 and "no admin identity" in out.stderr:
        pytest.skip("tctl through a tsh profile is not there yet: " + out.stderr.strip())
    assert out.returncode == 0, out.stderr
    assert _listed_names(out.stdout) == {STAGING}


def _web_nodes(cluster: Cluster, who: Person) -> list[dict[str, Any]]:
    """List nodes as the web UI does: a browser session (cookie and bearer token), no certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    base = f"https://{cluster.web_addr}"
    login = urllib.request.Request(
        f"{base}/webapi/sessions/web", method="POST",
        data=json.dumps({"user": who.name, "pass": PASSWORD,
                         "second_factor_token": who.code()}).encode(),
        headers={"Content-Type": "application/json", "Origin": base})
    with urllib.request.urlopen(login, context=ctx, timeout=10) as resp:
        token = json.loads(resp.read())["token"]
        cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
    listing = urllib.request.Request(f"{base}/webapi/sites/{CLUSTER}/nodes", headers={
        "Cookie": cookie, "Authorization": f"Bearer {token}", "Origin": base})
    with urllib.request.urlopen(listing, context=ctx, timeout=10) as resp:
        nodes: list[dict[str, Any]] = json.loads(resp.read())
    return nodes


def test_web_node_list_shows_only_staging(cluster: Cluster, people: dict[str, Person]) -> None:
    nodes = _web_nodes(cluster, people["joe"])
    assert [n["name"] for n in nodes] == [STAGING]
    assert nodes[0]["labels"]["env"] == "staging"


def test_dev_reaches_staging_as_its_login(cluster: Cluster, people: dict[str, Person]) -> None:
    out = tsh_as(cluster, people["joe"], "ssh", f"{LOGIN}@{STAGING}", "id -un")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{LOGIN}\n"


def test_dev_refused_as_root_on_staging_and_audited_with_the_role(
        cluster: Cluster, people: dict[str, Person]) -> None:
    since = time.time()
    _refused(tsh_as(cluster, people["joe"], "ssh", f"root@{STAGING}", "true"))
    event = _wait_refusal(cluster, "joe", "root", since)
    # The refusal names what decided: joe's role, not only the certificate's principals.
    assert "dev" in event["error"], event


def test_dev_refused_on_prod_and_audited_with_the_role(
        cluster: Cluster, people: dict[str, Person]) -> None:
    since = time.time()
    _refused(tsh_as(cluster, people["joe"], "ssh", f"{LOGIN}@{PROD}", "true"))
    event = _wait_refusal(cluster, "joe", LOGIN, since)
    assert "dev" in event["error"] and PROD in event["error"], event


# ---------------------------------------------------------------------------------------------
# A deny beats an allow


def test_deny_role_beats_the_allow_of_another(cluster: Cluster, people: dict[str, Person]) -> None:
    kim = people["kim"]
    since = time.time()
    # dev allows ubuntu on staging; no-staging denies staging: the deny wins.
    _refused(tsh_as(cluster, kim, "ssh", f"{LOGIN}@{STAGING}", "true"))
    event = _wait_refusal(cluster, "kim", LOGIN, since)
    assert "no-staging" in event["error"], event
    assert STAGING not in _listed_names(tsh_as(cluster, kim, "ls").stdout)


# ---------------------------------------------------------------------------------------------
# max_session_ttl caps tsh login --ttl


def test_max_session_ttl_caps_login_ttl(cluster: Cluster, people: dict[str, Person]) -> None:
    # joe logged in with --ttl=720 (12 h); his role's max_session_ttl is 1h.
    status = tsh_as(cluster, people["joe"], "status").stdout
    match = re.search(r"Valid until:\s+(\S+ \S+) UTC", status)
    assert match, status
    until = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    left = until - datetime.now(timezone.utc)
    assert timedelta(minutes=50) < left <= timedelta(hours=1), status


# ---------------------------------------------------------------------------------------------
# An auditor plays recordings and reaches no node


def _recorded_session(cluster: Cluster, who: Person, login: str, node: str) -> str:
    """Run an interactive shell (recorded: it has a terminal); return its session ID."""
    term = Terminal([str(BIN / "tsh"), "ssh", f"{login}@{node}"], {**env_of(who), "TERM": "xterm"})
    try:
        term.type("echo SID=$SSH_SESSION_ID; echo recorded-$((6*7))\n")
        out = term.expect("recorded-42")
        term.type("exit\n")
    finally:
        assert term.close() == 0
    match = re.search(r"SID=([0-9a-f-]{36})", out)
    assert match, out
    return match.group(1)


def test_auditor_plays_another_users_recording(cluster: Cluster, people: dict[str, Person]) -> None:
    sid = _recorded_session(cluster, people["ada"], LOGIN, STAGING)
    aud = people["aud"]
    deadline = time.monotonic() + 20
    while True:  # the recording is uploaded when the session ends
        out = tsh_as(cluster, aud, "play", "--format=json", sid)
        if out.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert out.returncode == 0, out.stderr
    events = json.loads(out.stdout)
    assert events[0]["event"] == "session.start" and events[0]["user"] == "ada"
    assert "recorded-42" in "".join(e["data"] for e in events if e["event"] == "print")
    # Playing is the auditor's role, not anyone's: kim (dev, no session rule) may not.
    refused = tsh_as(cluster, people["kim"], "play", "--format=json", sid)
    assert refused.returncode != 0 and "recorded-42" not in refused.stdout


def test_auditor_cannot_ssh_and_has_no_logins(cluster: Cluster, people: dict[str, Person]) -> None:
    aud = people["aud"]
    status = tsh_as(cluster, aud, "status").stdout
    assert re.search(r"Logins:\s+\(none", status), status
    for login, node in ((LOGIN, STAGING), ("root", PROD)):
        _refused(tsh_as(cluster, aud, "ssh", f"{login}@{node}", "true"))


# ---------------------------------------------------------------------------------------------
# Port forwarding follows the role's port_forwarding option


def _through_local_forward(who: Person, echo_port: int) -> bytes:
    """Run `tsh ssh -N -L 0:127.0.0.1:echo ubuntu@staging`; send a line through; return the answer."""
    proc = subprocess.Popen(
        [str(BIN / "tsh"), "ssh", "-N", "-L", f"0:127.0.0.1:{echo_port}", f"{LOGIN}@{STAGING}"],
        env=env_of(who), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        local = wait_listening(proc.pid)
        with socket.create_connection(("127.0.0.1", local), 5) as conn:
            conn.settimeout(10)
            conn.sendall(b"hello")
            try:
                return conn.recv(100)
            except ConnectionResetError:
                return b""
    finally:
        proc.terminate()
        proc.wait(10)


def test_port_forwarding_refused_without_the_role_option(
        cluster: Cluster, people: dict[str, Person], echo_server: int) -> None:
    since = time.time()
    assert _through_local_forward(people["joe"], echo_server) == b""
    deadline = time.monotonic() + 10
    while not [e for e in cluster.audit_events()
               if e["event"] == "port" and e.get("success") is False and e.get("user") == "joe"
               and datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() >= since - 1]:
        assert time.monotonic() < deadline, "no refused port event for joe"
        time.sleep(0.2)


def test_port_forwarding_granted_by_the_access_preset(
        cluster: Cluster, people: dict[str, Person], echo_server: int) -> None:
    assert _through_local_forward(people["ada"], echo_server) == b"echo:hello"


# ---------------------------------------------------------------------------------------------
# Stock OpenSSH through the proxy: the node decides with the role, whatever the client


def _openssh_jump(cluster: Cluster, who: Person, login: str, node: str) -> subprocess.CompletedProcess[str]:
    """`ssh -J` to node through the proxy with who's tsh key and certificate."""
    key = who.home / "tsh" / "keys" / "127.0.0.1" / who.name
    opts = ["-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", f"IdentityFile={key}", "-o", f"CertificateFile={key}-cert.pub",
            "-o", "IdentitiesOnly=yes"]
    # -W is what -J does; spelled as a ProxyCommand because -J does not pass -o on to the hop.
    jump = "ssh " + " ".join(opts) + f" -p {cluster.ports['proxy_ssh']} -W %h:%p {who.name}@127.0.0.1"
    return subprocess.run(["ssh", *opts, "-o", f"ProxyCommand={jump}", "-p", "3022",
                           f"{login}@{node}.{CLUSTER}", "id", "-un"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_openssh_jump_refused_on_prod(cluster: Cluster, people: dict[str, Person]) -> None:
    joe = people["joe"]
    ok = _openssh_jump(cluster, joe, LOGIN, STAGING)  # the same path works where the role allows
    assert ok.returncode == 0 and ok.stdout == f"{LOGIN}\n", ok.stderr
    since = time.time()
    out = _openssh_jump(cluster, joe, LOGIN, PROD)
    assert out.returncode == 255, out.stdout
    assert "Permission denied" in out.stderr
    assert "dev" in _wait_refusal(cluster, "joe", LOGIN, since)["error"]


# ---------------------------------------------------------------------------------------------
# A role change reaches nodes without a new login (last: it changes dev)


def test_role_change_applies_without_new_login(cluster: Cluster, people: dict[str, Person],
                                               tmp_path: Path) -> None:
    joe = people["joe"]
    cert = joe.home / "tsh" / "keys" / "127.0.0.1" / "joe-cert.pub"
    before = cert.read_bytes()

    def reaches_prod() -> bool:
        out = tsh_as(cluster, joe, "ssh", f"{LOGIN}@{PROD}", "id -un")
        return out.returncode == 0 and out.stdout == f"{LOGIN}\n"

    assert not reaches_prod()
    path = tmp_path / "dev.yaml"
    path.write_text(_dev_role("staging", "prod"))
    cluster.tctl("create", "-f", str(path))
    # The prod node (its own process) hears of the change on its watch stream, not its poll.
    time.sleep(ROLE_WATCHED)
    assert reaches_prod(), f"joe's old certificate reaches prod {ROLE_WATCHED} s after the change"
    assert PROD in _listed_names(tsh_as(cluster, joe, "ls").stdout)
    # And back: narrowing the role shuts prod again, still with the same certificate.
    path.write_text(_dev_role("staging"))
    cluster.tctl("create", "-f", str(path))
    time.sleep(ROLE_WATCHED)
    assert not reaches_prod(), f"prod is refused again {ROLE_WATCHED} s after the change"
    assert cert.read_bytes() == before, "the test must not have logged joe in again"
