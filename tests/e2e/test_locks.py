"""Locks end to end, with the real CLIs and stock OpenSSH: `tctl lock` stops a user, a role or a
node at once, live sessions included, and removing the lock (or its expiry) lets them back in.

One cluster (auth, proxy and node `e2e-node` in one process). Users, each with a tsh home of
their own: joe (`access` plus `joe-only`, a role no one else holds) and ann (`access`). The tests
run in order: each one leaves no lock behind, but the node lock comes last all the same.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster
from tests.e2e.people import Person, env_of, login_as, sign_up, tsh_as
from tests.e2e.test_interactive import Terminal

PASSWORD = "locks stop everything"
MESSAGE = "security review"
#: The issue's bound: a lock ends live sessions within this many seconds of `tctl lock`.
CUT_WITHIN = 5.0
#: How long a node or proxy may take to learn of a lock's removal (it polls every 3 s).
LEARN_WITHIN = 10.0
JOE_ONLY = yaml.safe_dump({"kind": "role", "version": "v5", "metadata": {"name": "joe-only"},
                           "spec": {"allow": {}, "deny": {}}}, sort_keys=False)


@pytest.fixture(scope="module")
def people(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Person]:
    """joe and ann, signed up and logged in with tsh."""
    root = tmp_path_factory.mktemp("people")
    cluster.tctl("create", input=JOE_ONLY)
    made = {}
    for name, roles in (("joe", "access,joe-only"), ("ann", "access")):
        made[name] = sign_up(cluster, name, "root", roles, root, PASSWORD)
        out = login_as(cluster, made[name], PASSWORD)
        assert out.returncode == 0, out.stderr
    return made


def ssh_echo(cluster: Cluster, who: Person) -> subprocess.CompletedProcess[str]:
    return tsh_as(cluster, who, "ssh", f"root@{NODENAME}", "echo", "reached")


def reached(out: subprocess.CompletedProcess[str]) -> bool:
    return out.returncode == 0 and out.stdout == "reached\n"


def refused_with(out: subprocess.CompletedProcess[str], reason: str) -> None:
    """Assert a CLI run failed with reason on stderr, in one clean message."""
    assert out.returncode != 0, out.stdout
    assert reason in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr


def eventually(check: Callable[[], bool], what: str, timeout: float = LEARN_WITHIN) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what} within {timeout}s"
        time.sleep(0.3)
    return time.monotonic() - started


def events_since(cluster: Cluster, kind: str, since: float) -> list[dict[str, Any]]:
    found = []
    for event in cluster.audit_events():
        when = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        if event["event"] == kind and when >= since - 1:
            found.append(event)
    return found


def lock(cluster: Cluster, *flags: str) -> str:
    """Run `tctl lock` with flags; return the new lock's name."""
    out = cluster.tctl("lock", *flags).stdout
    match = re.fullmatch(r'Created a lock with name "([0-9a-f-]{36})"\.\n', out)
    assert match, out
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# Live sessions: an interactive `tsh ssh` and a stock `ssh` through the proxy


def live_tsh(who: Person) -> Terminal:
    """Open an interactive `tsh ssh` shell and wait until it answers."""
    term = Terminal([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"],
                    {**env_of(who), "TERM": "xterm"})
    term.type("echo LIVE-$((40+2))\n")
    term.expect("LIVE-42")
    return term


def live_openssh(cluster: Cluster, who: Person) -> subprocess.Popen[bytes]:
    """Start stock `ssh` through the proxy (`-W`, what `-J` does) with who's tsh key and
    certificate, running a command that stays; return once the node ran it."""
    key = who.home / "tsh" / "keys" / "127.0.0.1" / who.name
    opts = ["-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", f"IdentityFile={key}",
            "-o", f"CertificateFile={key}-cert.pub", "-o", "IdentitiesOnly=yes"]
    # Default LogLevel: ssh prints the server's disconnect reason at INFO.
    jump = "ssh " + " ".join(opts) + f" -p {cluster.ports['proxy_ssh']} -W %h:%p {who.name}@127.0.0.1"
    proc = subprocess.Popen(["ssh", *opts, "-o", f"ProxyCommand={jump}", "-p", "3022",
                             f"root@{NODENAME}.{CLUSTER}", "echo READY; exec sleep 120"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if ready else b""
    if line != b"READY\n":
        proc.kill()
        raise AssertionError(f"stock ssh did not start: {line!r} {proc.communicate()[1]!r}")
    return proc


def screen(term: Terminal) -> str:
    """Read what is left on an ended session's terminal; return all it showed."""
    while select.select([term.master], [], [], 0.5)[0]:
        try:
            chunk = os.read(term.master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        term.output += chunk
    return term.output.decode(errors="replace")


# ---------------------------------------------------------------------------------------------
# A user lock: joe's live sessions are cut, and he is refused until the lock goes


@dataclass
class Cut:
    """What `tctl lock` did to live sessions: how long they outlived it, and what users saw."""

    since: float  # time.time() before the lock
    took: float  # seconds from `tctl lock` returning until every client exited (or gave up)
    alive: list[str]  # the clients still running when the test gave up
    shown: dict[str, str]  # client -> its terminal or stderr


def cut(cluster: Cluster, clients: dict[str, Terminal | subprocess.Popen[bytes]],
        *flags: str) -> Cut:
    """Lock with flags while clients are live; wait CUT_WITHIN for them to exit; end them."""
    since = time.time()
    lock(cluster, *flags)
    locked = time.monotonic()
    procs = {name: c.proc if isinstance(c, Terminal) else c for name, c in clients.items()}
    deadline = locked + CUT_WITHIN
    while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    took = time.monotonic() - locked
    alive = [name for name, p in procs.items() if p.poll() is None]
    shown = {}
    for name, client in clients.items():
        if isinstance(client, Terminal):
            text = screen(client)
            if client.proc.poll() is None:
                client.proc.kill()
            client.close()
        else:
            if client.poll() is None:
                client.kill()
            text = client.communicate()[1].decode(errors="replace")
        shown[name] = text
    return Cut(since, took, alive, shown)


@pytest.fixture(scope="module")
def joe_locked(cluster: Cluster, people: dict[str, Person]) -> Cut:
    """joe in an interactive `tsh ssh` shell and in a stock `ssh` command, then `tctl lock --user=joe`."""
    joe = people["joe"]
    term = live_tsh(joe)
    try:
        openssh = live_openssh(cluster, joe)
    except BaseException:
        term.proc.kill()
        term.close()
        raise
    return cut(cluster, {"tsh ssh": term, "ssh": openssh}, "--user=joe", f"--message={MESSAGE}")


USER_REASON = f"lock targeting user=joe is in force: {MESSAGE}"


def test_user_lock_ends_live_tsh_and_openssh_sessions_within_5s(joe_locked: Cut) -> None:
    assert not joe_locked.alive, f"{joe_locked.alive} outlived the lock by {joe_locked.took:.1f}s"


def test_user_lock_is_audited_with_creator_target_and_disconnect_reason(
        cluster: Cluster, joe_locked: Cut) -> None:
    created = events_since(cluster, "lock.created", joe_locked.since)
    assert len(created) == 1, created
    assert created[0]["target"] == {"user": "joe"} and created[0]["message"] == MESSAGE
    assert created[0]["user"], created[0]  # who made it
    cut_off = [e for e in events_since(cluster, "client.disconnect", joe_locked.since)
               if e.get("user") == "joe"]
    assert cut_off and all(USER_REASON in e["reason"] for e in cut_off), cut_off


def test_cut_sessions_show_the_lock_reason(joe_locked: Cut) -> None:
    for client, text in joe_locked.shown.items():
        assert USER_REASON in text, f"{client} showed:\n{text[-1500:]}"


def test_user_lock_refuses_new_tsh_ssh_login_and_listing(
        cluster: Cluster, people: dict[str, Person], joe_locked: Cut) -> None:
    joe = people["joe"]
    ssh = ssh_echo(cluster, joe)
    assert ssh.returncode != 0 and "reached" not in ssh.stdout, ssh.stdout
    assert "Traceback" not in ssh.stderr
    refused_with(tsh_as(cluster, joe, "ls"), USER_REASON)
    refused_with(login_as(cluster, joe, PASSWORD), USER_REASON)
    # The lock is joe's alone: ann goes on working.
    assert reached(ssh_echo(cluster, people["ann"]))


def test_refused_tsh_ssh_names_the_lock(cluster: Cluster, people: dict[str, Person],
                                        joe_locked: Cut) -> None:
    refused_with(ssh_echo(cluster, people["joe"]), USER_REASON)


def test_removing_the_lock_lets_the_user_back_in(
        cluster: Cluster, people: dict[str, Person], joe_locked: Cut) -> None:
    joe = people["joe"]
    locks = json.loads(cluster.tctl("get", "locks", "--format=json").stdout)
    assert [(lk["spec"]["target"]["user"], lk["spec"]["message"]) for lk in locks] == [("joe", MESSAGE)]
    name = locks[0]["metadata"]["name"]
    since = time.time()
    cluster.tctl("rm", f"lock/{name}")
    assert [e["name"] for e in events_since(cluster, "lock.deleted", since)] == [name]
    assert json.loads(cluster.tctl("get", "locks", "--format=json").stdout) == []
    # With the certificate he held all along: the node and proxy learn within one refresh.
    eventually(lambda: reached(ssh_echo(cluster, joe)), "joe reaches the node again")
    assert tsh_as(cluster, joe, "ls").returncode == 0


@pytest.fixture
def unlocked(cluster: Cluster, people: dict[str, Person]) -> None:
    """Start from no lock, whatever an earlier failed test left (then wait for the node)."""
    left = json.loads(cluster.tctl("get", "locks", "--format=json").stdout)
    for lk in left:
        cluster.tctl("rm", f"lock/{lk['metadata']['name']}")
    if left:
        eventually(lambda: all(reached(ssh_echo(cluster, p)) for p in people.values()),
                   "everyone back in")


# ---------------------------------------------------------------------------------------------
# A role lock, and a lock that expires


def test_role_lock_refuses_its_holders_only(cluster: Cluster, people: dict[str, Person],
                                            unlocked: None) -> None:
    joe, ann = people["joe"], people["ann"]
    name = lock(cluster, "--role=joe-only", "--message=role under review")
    try:
        reason = "lock targeting role=joe-only is in force: role under review"
        # The auth server refuses at once; the node within one refresh of its list.
        refused_with(tsh_as(cluster, joe, "ls"), reason)
        eventually(lambda: not reached(ssh_echo(cluster, joe)), "the node refuses joe")
        # ann holds no joe-only: untouched.
        assert reached(ssh_echo(cluster, ann))
        assert tsh_as(cluster, ann, "ls").returncode == 0
    finally:
        cluster.tctl("rm", f"lock/{name}")
    eventually(lambda: reached(ssh_echo(cluster, joe)), "joe back in after the role lock")


def test_lock_with_ttl_stops_holding_by_itself(cluster: Cluster, people: dict[str, Person],
                                               unlocked: None) -> None:
    joe = people["joe"]
    lock(cluster, "--user=joe", "--ttl=3s", "--message=brief pause")
    refused_with(tsh_as(cluster, joe, "ls"), "lock targeting user=joe is in force: brief pause")
    # No `tctl rm`: the lock's expiry alone lets joe back in.
    eventually(lambda: tsh_as(cluster, joe, "ls").returncode == 0, "the 3 s lock expired")
    eventually(lambda: reached(ssh_echo(cluster, joe)), "joe reaches the node after the expiry")


def test_unlocked_user_logs_in_again(cluster: Cluster, people: dict[str, Person]) -> None:
    # After the role and TTL tests on purpose: joe's refused login spent an OTP code, and
    # codes come three per 30 s window; by now a fresh one is ready without waiting.
    joe = people["joe"]
    out = login_as(cluster, joe, PASSWORD)
    assert out.returncode == 0, out.stderr
    assert reached(ssh_echo(cluster, joe))


# ---------------------------------------------------------------------------------------------
# A node lock (last: the node serves no one while it holds)


@pytest.fixture(scope="module")
def node_locked(cluster: Cluster, people: dict[str, Person]) -> Iterator[tuple[str, Cut]]:
    """ann in a live `tsh ssh` shell, then `tctl lock --node=<the node's UUID from tctl nodes ls>`;
    the lock is removed after the module's last test."""
    table = cluster.tctl("nodes", "ls").stdout
    row = next(line.split() for line in table.splitlines() if line.startswith(NODENAME))
    host_uuid = next(word for word in row if re.fullmatch(r"[0-9a-f-]{36}", word))
    assert host_uuid == (cluster.data_dir / "host_uuid").read_text().strip()
    since = time.time()
    try:
        yield host_uuid, cut(cluster, {"tsh ssh": live_tsh(people["ann"])},
                             f"--node={host_uuid}", "--message=node maintenance")
    finally:
        for lk in json.loads(cluster.tctl("get", "locks", "--format=json").stdout):
            cluster.tctl("rm", f"lock/{lk['metadata']['name']}")
        assert events_since(cluster, "lock.created", since)


def test_node_lock_ends_live_sessions_on_the_node(node_locked: tuple[str, Cut]) -> None:
    _, done = node_locked
    assert not done.alive, f"ann's session outlived the node lock by {done.took:.1f}s"


def test_node_lock_refuses_every_users_new_session(
        cluster: Cluster, people: dict[str, Person], node_locked: tuple[str, Cut]) -> None:
    for who in people.values():
        out = ssh_echo(cluster, who)
        assert out.returncode != 0 and "reached" not in out.stdout, (who.name, out.stdout)
        assert "Traceback" not in out.stderr
    # A node lock is no user lock: both still reach the cluster.
    assert tsh_as(cluster, people["joe"], "ls").returncode == 0


def test_node_lock_refusals_and_cut_name_the_lock(
        cluster: Cluster, people: dict[str, Person], node_locked: tuple[str, Cut]) -> None:
    host_uuid, done = node_locked
    reason = f"lock targeting node={host_uuid} is in force: node maintenance"
    assert reason in done.shown["tsh ssh"], done.shown["tsh ssh"][-1500:]
    for who in people.values():
        refused_with(ssh_echo(cluster, who), reason)
