"""Trusted clusters: a root user reaches a leaf cluster's node through the root's proxy alone.

Two all-in-one clusters (auth, proxy and node each). The leaf runs in a network namespace made
by the test (tests/e2e/netns.py): inside, 127.0.0.1 is its own loopback, and the one address
it reaches outside is the veth address where the root listens. So the test's user, in this
namespace, cannot reach the leaf at all: every `tsh` and `ssh` goes to the root's proxy, which
reaches the leaf's nodes over the tunnel the leaf's proxy keeps to it. The root's proxy serves a
certificate of the test's own CA, which the leaf trusts through `SSL_CERT_FILE` (as a real leaf
trusts a root's publicly issued certificate).
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from tests.e2e import people
from tests.e2e import test_web_ui as web_ui
from tests.e2e.browser import check_page, wait_text, wait_until, wait_visible
from tests.e2e.cluster import (
    BIN,
    CLUSTER,
    NODENAME,
    Cluster,
    make_cluster,
    pin_ports,
    wait_started,
)
from tests.e2e.netns import IsolatedHost, isolated_host
from tests.e2e.test_interactive import Terminal, open_session
from tests.e2e.webca import TestCA

LEAF = "leaf"
LEAF_NODE = "leafnode"
PASSWORD = "correct horse battery"


@dataclass
class Pair:
    root: Cluster
    leaf: Cluster
    host: IsolatedHost
    totp: pyotp.TOTP

    def leaf_tctl(self, *args: str, input: str | None = None,
                  check: bool = True) -> subprocess.CompletedProcess[str]:
        """tctl on the leaf's auth host (inside its namespace)."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.host.name, str(BIN / "tctl"), "-c",
             str(self.leaf.config), *args], input=input, capture_output=True, text=True,
            timeout=60, stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"leaf tctl {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def trust(self, token: str, *, enabled: bool = True, force: bool = False,
              name: str = CLUSTER) -> subprocess.CompletedProcess[str]:
        """Create (or with force, change) the leaf's trusted_cluster naming the root."""
        resource = {"kind": "trusted_cluster", "version": "v2", "metadata": {"name": name},
                    "spec": {"enabled": enabled, "token": token,
                             "web_proxy_addr": self.root.web_addr,
                             "role_map": [{"remote": "admin", "local": ["access"]}]}}
        return self.leaf_tctl("create", *(["-f"] if force else []), "-",
                              input=yaml.safe_dump(resource), check=False)

    def login_again(self) -> None:
        """`tsh login` once more, with a code no earlier login used (each is accepted once)."""
        used = getattr(self.totp, "_used", set())
        for offset in (0, -30, 30):
            code = self.totp.at(time.time() + offset)
            if code in used:
                continue
            used.add(code)
            self.totp._used = used  # type: ignore[attr-defined]
            out = self.root.tsh("login", f"--proxy={self.root.web_addr}", "--user=alice",
                                "--insecure", input=f"{PASSWORD}\n{code}\n", check=False)
            if out.returncode == 0:
                return
        raise AssertionError(f"tsh login failed: {out.stderr}")

    def ssh(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.root.tsh("ssh", *args, check=check, timeout=60)

    def clusters(self) -> dict[str, str]:
        """`tsh clusters` as {name: status}."""
        out = self.root.tsh("clusters", check=False).stdout
        return {line.split()[0]: line.split()[1] for line in out.splitlines()[2:] if line.split()}

    def ensure_trusted(self) -> None:
        """Make the leaf trust the root (again) unless it does, and wait for its tunnel."""
        if self.clusters().get(LEAF) == "online" and \
                CLUSTER in self.leaf_tctl("get", "tc", check=False).stdout:
            return
        result = self.trust(_token(self.root), force=True)
        assert result.returncode == 0, result.stderr + self.leaf.log()[-3000:]
        wait_for(lambda: self.clusters().get(LEAF) == "online", "the leaf online in tsh clusters")


def wait_for(predicate: Any, what: str, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _token(root: Cluster) -> str:
    out = root.tctl("tokens", "add", "--type=trusted_cluster", "--ttl=1h").stdout
    found = re.search(r"The cluster invite token: (\S+)", out)
    assert found, out
    return found.group(1)


@pytest.fixture
def trusted(pair: Pair) -> Pair:
    """The pair with the leaf trusting the root and its tunnel up (made again if a test
    removed it)."""
    pair.ensure_trusted()
    return pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("trusted")
    ca = TestCA()
    with isolated_host() as host:
        (base / "root").mkdir()
        certs = base / "certs"
        certs.mkdir()
        ca.issue([host.host_addr], certs / "web.key", certs / "web.crt")
        (certs / "ca.pem").write_bytes(ca.pem)
        # The root listens on the veth address: the test's user and the leaf both reach it.
        root = make_cluster(base / "root", host=host.host_addr)
        root.write_config(f"  https_keypairs:\n  - key_file: {certs / 'web.key'}\n"
                          f"    cert_file: {certs / 'web.crt'}\n")
        root.start()
        try:
            (base / "leaf").mkdir()
            leaf = make_cluster(base / "leaf")  # 127.0.0.1: the namespace's own loopback
            leaf.config.write_text(leaf.config.read_text()
                                   .replace(f"cluster_name: {CLUSTER}", f"cluster_name: {LEAF}")
                                   .replace(f"nodename: {NODENAME}", f"nodename: {LEAF_NODE}"))
            log = leaf.root / "teleport.log"
            with open(log, "ab") as out:
                proc = host.run([str(BIN / "teleport"), "start", "-c", str(leaf.config)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "SSL_CERT_FILE": str(certs / "ca.pem")})
            leaf.ports = wait_started(log, proc)
            pin_ports(leaf.config, leaf.ports)
            totp = root.signup("alice", "root,nobody", PASSWORD)
            root.login("alice", PASSWORD, totp)
            totp._used = {totp.at(time.time() + 30)}  # type: ignore[attr-defined]
            pair = Pair(root, leaf, host, totp)
            wait_for(lambda: pair.leaf_tctl("status", check=False).returncode == 0,
                     "the leaf's auth server")
            # The leaf's admin keeps the last word: its `access` allows the login root only.
            access = yaml.safe_load(pair.leaf_tctl("get", "role/access").stdout)
            access["spec"]["allow"]["logins"] = ["root"]
            pair.leaf_tctl("create", "-f", "-", input=yaml.safe_dump(access))
            pair.ensure_trusted()
            yield pair
        finally:
            root.stop()


def test_a_wrong_token_is_refused_in_one_line_and_audited_by_the_root(pair: Pair) -> None:
    result = pair.trust("not-the-right-token", force=True)
    assert result.returncode != 0
    assert "token" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    refused = [e for e in pair.root.audit_events() if e["event"] == "trusted_cluster_token.validate"]
    assert refused and refused[-1]["success"] is False and refused[-1]["user"] == LEAF


def test_a_resource_named_other_than_the_root_is_refused(pair: Pair) -> None:
    result = pair.trust(_token(pair.root), name="not-the-root")
    assert result.returncode != 0
    assert f"named {CLUSTER!r}" in result.stderr, result.stderr


def test_a_root_proxy_whose_certificate_the_leaf_does_not_trust_is_refused(pair: Pair) -> None:
    # The leaf's own proxy serves a self-signed certificate, which the leaf's host does not trust.
    resource = {"kind": "trusted_cluster", "version": "v2", "metadata": {"name": "selfsigned"},
                "spec": {"token": _token(pair.root),
                         "web_proxy_addr": f"127.0.0.1:{pair.leaf.ports['web']}",
                         "role_map": [{"remote": "admin", "local": ["access"]}]}}
    result = pair.leaf_tctl("create", "-", input=yaml.safe_dump(resource), check=False)
    assert result.returncode != 0
    assert "certificate verify failed" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    refused = [e for e in pair.leaf.audit_events() if e["event"] == "trusted_cluster.create"
               and e.get("name") == "selfsigned"]
    assert refused and refused[-1]["success"] is False


def test_the_leaf_joins_and_a_root_user_sees_both_clusters(trusted: Pair) -> None:
    pair = trusted
    assert pair.clusters() == {CLUSTER: "online", LEAF: "online"}
    remote = yaml.safe_load(pair.root.tctl("get", "rc").stdout)
    assert remote["kind"] == "remote_cluster" and remote["metadata"]["name"] == LEAF
    assert remote["status"]["connection"] == "online"
    table = pair.root.tctl("get", "rc", "--format=text").stdout.splitlines()
    assert re.fullmatch(r"Remote Cluster +Status +Last Heartbeat", table[0])
    assert re.match(rf"{LEAF} +online +\d{{4}}-\d\d-\d\d ", table[2]), table
    text = pair.leaf_tctl("get", "tc", "--format=text").stdout
    assert re.search(rf"{CLUSTER} +yes +{re.escape(pair.root.web_addr)} +admin -> access", text)
    # The leaf keeps the resource; its token is a secret `tctl get` does not print.
    trusted = yaml.safe_load(pair.leaf_tctl("get", "tc").stdout)
    assert trusted["spec"]["token"] == "" and trusted["spec"]["enabled"] is True


def test_a_root_user_runs_a_command_on_a_leaf_node(trusted: Pair) -> None:
    pair = trusted
    result = pair.ssh("--cluster=leaf", f"root@{LEAF_NODE}", "echo on $(hostname -s); exit 3")
    assert result.returncode == 3, result.stderr + pair.leaf.log()[-3000:]
    assert "on " in result.stdout
    # `<node>.<leaf>` names the leaf's node too, as it does for stock ssh; tsh learns the leaf
    # on the way (here its known_hosts starts without it).
    (pair.root.root / "tsh-home" / "known_hosts").unlink()
    named = pair.ssh(f"root@{LEAF_NODE}.{LEAF}", "echo by name")
    assert named.returncode == 0 and named.stdout == "by name\n", named.stderr


def test_stock_ssh_reaches_the_leaf_node_through_tsh_config(trusted: Pair) -> None:
    pair = trusted
    config = pair.root.root / "ssh_config"
    config.write_text(pair.root.tsh("config").stdout)
    result = subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", f"root@{LEAF_NODE}.{LEAF}",
         "echo stock ssh made it"], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, env={**os.environ, **pair.root.env})
    assert result.returncode == 0, result.stderr
    assert "stock ssh made it" in result.stdout


def test_a_login_the_mapped_role_does_not_allow_is_refused_by_the_leaf(trusted: Pair) -> None:
    pair = trusted
    # `nobody` is in alice's certificate (the root's admin role allows it); the leaf's
    # `access`, which the role map makes of admin, does not.
    result = pair.ssh("--cluster=leaf", f"nobody@{LEAF_NODE}", "true")
    assert result.returncode != 0
    assert "nobody" in result.stderr and "access" in result.stderr, result.stderr
    refused = [e for e in pair.leaf.audit_events() if e["event"] == "auth"
               and e.get("login") == "nobody" and e["user"] == "alice"]
    assert refused and refused[-1]["success"] is False and "access" in refused[-1]["error"]


def test_a_root_user_whose_roles_map_to_nothing_is_refused_by_the_leaf(
        trusted: Pair, tmp_path: Path) -> None:
    pair = trusted
    # `access` on the root: the role map names only admin.
    ann = people.sign_up(pair.root, "ann", "root", "access", tmp_path, PASSWORD)
    assert people.login_as(pair.root, ann, PASSWORD).returncode == 0
    assert people.tsh_as(pair.root, ann, "ssh", "root@" + NODENAME, "true").returncode == 0
    refused = people.tsh_as(pair.root, ann, "ssh", "--cluster=leaf", f"root@{LEAF_NODE}",
                            "true", timeout=60)
    assert refused.returncode != 0
    assert "map to no role of this cluster" in refused.stderr, refused.stderr
    audited = [e for e in pair.leaf.audit_events() if e["event"] == "auth"
               and e["user"] == "ann" and not e["success"]]
    assert audited and "map to no role" in audited[-1]["error"]
    listed = people.tsh_as(pair.root, ann, "ls", "--cluster=leaf", timeout=60)
    assert listed.returncode != 0 and "map to no role" in listed.stderr, listed.stderr


def test_a_lock_on_the_mapped_role_in_the_leaf_holds_for_root_users(trusted: Pair) -> None:
    pair = trusted
    out = pair.leaf_tctl("lock", "--role=access", "--message=leaf maintenance").stdout
    name = re.search(r'"(.+)"', out)[1]  # type: ignore[index]
    try:
        wait_for(lambda: "leaf maintenance" in pair.ssh(
            "--cluster=leaf", f"root@{LEAF_NODE}", "true").stderr, "the lock to hold",
            timeout=20)
    finally:
        pair.leaf_tctl("rm", f"lock/{name}")
    wait_for(lambda: pair.ssh("--cluster=leaf", f"root@{LEAF_NODE}", "true").returncode == 0,
             "the lock to lift", timeout=20)


def test_leaf_sessions_are_audited_in_the_leaf_not_the_root(trusted: Pair) -> None:
    pair = trusted
    marker = "recorded-in-the-leaf"
    result = pair.ssh("--cluster=leaf", f"root@{LEAF_NODE}", f"echo {marker}", check=True)
    assert marker in result.stdout
    started = [e for e in pair.leaf.audit_events() if e["event"] in ("session.start", "exec")
               and e.get("user") == "alice"]
    assert started, json.dumps(pair.leaf.audit_events()[-5:])
    assert not [e for e in pair.root.audit_events() if e["event"] in ("session.start", "exec")
                and e.get("server_hostname") == LEAF_NODE]


def test_a_root_user_lists_the_leafs_nodes_through_the_root(trusted: Pair) -> None:
    pair = trusted
    listed = pair.root.tsh("ls", "--cluster=leaf").stdout
    assert LEAF_NODE in listed and NODENAME not in listed, listed
    assert NODENAME in pair.root.tsh("ls").stdout


def test_a_leaf_session_is_played_from_the_root(trusted: Pair) -> None:
    pair = trusted
    result = pair.ssh("-t", "--cluster=leaf", f"root@{LEAF_NODE}",
                      "echo SID=$SSH_SESSION_ID; echo played-$((40+2))", check=True)
    sid = re.search(r"SID=([0-9a-f-]{36})", result.stdout)
    assert sid, result.stdout
    played: list[str] = []

    def replayed() -> bool:
        out = pair.root.tsh("play", "--cluster=leaf", "--format=json", sid.group(1), check=False)
        played[:] = [out.stdout + out.stderr]
        return out.returncode == 0 and "played-42" in out.stdout

    wait_for(replayed, f"the leaf's recording to replay from the root: {played}", timeout=30)
    # Kept by the leaf, not the root.
    assert list((pair.leaf.data_dir / "log" / "sessions" / "default").glob(f"{sid.group(1)}*"))
    assert not list(pair.root.data_dir.glob(f"**/{sid.group(1)}*"))


def test_tsh_scp_copies_to_and_from_a_leaf_node(trusted: Pair, tmp_path: Path) -> None:
    pair = trusted
    source = tmp_path / "up.txt"
    source.write_text("to the leaf and back\n")
    remote = f"/tmp/trusted-{os.getpid()}.txt"
    pair.root.tsh("scp", "--cluster=leaf", str(source), f"root@{LEAF_NODE}:{remote}", timeout=60)
    back = tmp_path / "back.txt"
    pair.root.tsh("scp", "--cluster=leaf", f"root@{LEAF_NODE}:{remote}", str(back), timeout=60)
    assert back.read_text() == "to the leaf and back\n"
    pair.ssh("--cluster=leaf", f"root@{LEAF_NODE}", f"rm -f {remote}", check=True)


def test_a_port_forward_leaves_from_the_leaf_node(trusted: Pair) -> None:
    # The leaf's own web port listens on the namespace's 127.0.0.1: reachable from the leaf
    # node only, so an answer naming the leaf proves the forward left from there.
    local = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "tsh"), "ssh", "--cluster=leaf", "-N", "-L",
         f"{local}:127.0.0.1:{trusted.leaf.ports['web']}", f"root@{LEAF_NODE}"],
        env={**os.environ, **trusted.root.env}, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        answer: list[Any] = []

        def pinged() -> bool:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{local}/webapi/ping",
                                            context=ctx, timeout=5) as resp:
                    answer[:] = [json.loads(resp.read())]
                return True
            except OSError:
                return False

        wait_for(pinged, "the forwarded port", timeout=30)
        assert answer[0]["cluster_name"] == LEAF
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_root_user_joins_their_live_session_on_a_leaf_node(trusted: Pair) -> None:
    env = {**os.environ, **trusted.root.env, "TERM": "xterm"}
    owner, sid = open_session([str(BIN / "tsh"), "ssh", "--cluster=leaf", f"root@{LEAF_NODE}"],
                              env)
    joiner: Terminal | None = None
    try:
        listed = trusted.root.tsh("sessions", "ls", "--cluster=leaf").stdout
        assert sid in listed and LEAF_NODE in listed, listed
        joiner = Terminal([str(BIN / "tsh"), "join", "--cluster=leaf", sid], env)
        time.sleep(1.0)
        owner.type("echo from-owner-$((40+2))\n")
        joiner.expect("from-owner-42")
        owner.type("exit\n")
    finally:
        assert owner.close() == 0
        if joiner is not None:
            joiner.close()


def test_the_web_ui_picks_the_leaf_and_opens_a_terminal_on_its_node(
        trusted: Pair, browser: webdriver.Chrome) -> None:
    pair = trusted
    totp = web_ui.sign_up(pair.root, "webby")
    web_ui.log_in(browser, pair.root, "webby", totp)
    picker = Select(wait_visible(browser, "#cluster-picker"))
    assert [o.text for o in picker.options] == [CLUSTER, LEAF]
    assert picker.first_selected_option.text == CLUSTER
    picker.select_by_value(LEAF)
    wait_until(browser, lambda d: d.current_url.endswith(f"/web/cluster/{LEAF}/nodes"),
               "picking the leaf did not open its nodes")
    row = wait_visible(browser, f'#nodes-table tr[data-node="{LEAF_NODE}"]')
    assert not browser.find_elements(By.CSS_SELECTOR, f'#nodes-table tr[data-node="{NODENAME}"]')
    # The leaf's admin pages are the leaf's: none offered here, nor its sessions yet.
    assert web_ui.nav_links(browser) == ["Nodes", "Account"]
    check_page(browser, "leaf-nodes", widths=("laptop",), schemes=("light",))
    node_id = row.get_attribute("data-node-id")
    browser.get(f"https://{pair.root.web_addr}/web/cluster/{LEAF}/console/node/{node_id}/root")
    wait_text(browser, "#status-state", "connected")
    web_ui.wait_screen_line(browser, r".*# ?")
    web_ui.type_in_terminal(browser, "echo leaf-$((6*7))\n")
    web_ui.wait_screen_line(browser, "leaf-42")
    web_ui.type_in_terminal(browser, "exit\n")
    wait_text(browser, "#status-state", "session ended (exit status 0)")


def test_disabling_the_trust_cuts_access_and_enabling_restores_it(trusted: Pair) -> None:
    pair = trusted
    token = _token(pair.root)
    assert pair.trust(token, enabled=False, force=True).returncode == 0
    wait_for(lambda: pair.ssh("--cluster=leaf", f"root@{LEAF_NODE}", "true").returncode != 0,
             "access cut", timeout=20)
    wait_for(lambda: pair.clusters().get(LEAF) == "offline", "the leaf offline", timeout=30)
    refused = pair.ssh("--cluster=leaf", f"root@{LEAF_NODE}", "true")
    assert "cluster 'leaf' is offline" in refused.stderr, refused.stderr
    listed = pair.root.tsh("ls", "--cluster=leaf", check=False)
    assert listed.returncode != 0 and "cluster 'leaf' is offline" in listed.stderr, listed.stderr
    unknown = pair.ssh("--cluster=nope", f"root@{LEAF_NODE}", "true")
    assert "cluster 'nope' is not a leaf of" in unknown.stderr, unknown.stderr
    assert pair.trust(token, enabled=True, force=True).returncode == 0
    wait_for(lambda: pair.ssh("--cluster=leaf", f"root@{LEAF_NODE}", "true").returncode == 0,
             "access back")


def test_removing_the_trust_refuses_root_users_within_seconds(trusted: Pair) -> None:
    pair = trusted
    env = {**os.environ, **pair.root.env, "TERM": "xterm"}
    live = Terminal([str(BIN / "tsh"), "ssh", "--cluster=leaf", f"root@{LEAF_NODE}"], env)
    try:
        live.expect("#")
        pair.leaf_tctl("rm", f"trusted_cluster/{CLUSTER}")
        removed = time.monotonic()
        wait_for(lambda: pair.ssh("--cluster=leaf", f"root@{LEAF_NODE}", "true").returncode != 0,
                 "root users refused", timeout=15)
        assert time.monotonic() - removed < 15
        # The session already open ends too (the node hangs it up, or the leaf's proxy closes
        # the tunnel it came through, whichever is first).
        wait_for(lambda: live.proc.poll() is not None, "the live session to end", timeout=20)
    finally:
        live.close()
    deleted = [e for e in pair.leaf.audit_events() if e["event"] == "trusted_cluster.delete"]
    assert deleted and deleted[-1]["name"] == CLUSTER


def test_removing_the_leaf_on_the_root_cuts_it_off(trusted: Pair) -> None:
    pair = trusted
    pair.root.tctl("rm", f"rc/{LEAF}")
    wait_for(lambda: pair.ssh("--cluster=leaf", f"root@{LEAF_NODE}", "true").returncode != 0,
             "root users refused", timeout=15)
    wait_for(lambda: LEAF not in pair.clusters(), "the leaf gone from tsh clusters", timeout=15)
    assert "rc" not in pair.root.tctl("get", "remote_clusters").stdout.split()
    deleted = [e for e in pair.root.audit_events() if e["event"] == "remote_cluster.delete"]
    assert deleted and deleted[-1]["name"] == LEAF


@pytest.mark.slow
def test_a_rotation_on_either_side_is_followed_by_the_other(trusted: Pair) -> None:
    """Every CA of the root, then of the leaf, stepped through every phase: after each, a root
    user still lists and reaches the leaf's node (new keys cross over the tunnel and the root
    proxy's public CA list before they sign anything)."""
    pair = trusted

    def reaches() -> bool:
        ran = pair.ssh("--cluster=leaf", f"root@{LEAF_NODE}", "echo rotated")
        listed = pair.root.tsh("ls", "--cluster=leaf", check=False)
        return ran.returncode == 0 and "rotated" in ran.stdout and LEAF_NODE in listed.stdout

    for side in ("root", "leaf"):
        for phase in ("init", "update_clients", "update_servers", "standby"):
            if side == "root":
                pair.root.tctl("auth", "rotate", "--manual", f"--phase={phase}")
            else:
                pair.leaf_tctl("auth", "rotate", "--manual", f"--phase={phase}")
            if side == "root" and phase == "standby":
                pair.login_again()  # the old user CA is gone
            wait_for(reaches, f"the leaf node after the {side}'s {phase}", timeout=60)
    assert pair.clusters()[LEAF] == "online"
    # A tunnel dialled afresh now presents the leaf proxy's re-issued certificate.
    token = _token(pair.root)
    assert pair.trust(token, enabled=False, force=True).returncode == 0
    wait_for(lambda: pair.clusters().get(LEAF) == "offline", "the leaf offline", timeout=30)
    assert pair.trust(token, enabled=True, force=True).returncode == 0
    wait_for(reaches, "the leaf node over a new tunnel", timeout=60)
