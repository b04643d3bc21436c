"""`tsh ssh login@k=v`: run on every node with matching labels, prefixed with the node's name."""

from __future__ import annotations

from typing import Any

from tests.e2e.cluster import NODENAME, Cluster


def test_command_runs_on_matching_nodes_with_prefixed_output(cluster: Cluster, joe: dict[str, Any]) -> None:
    out = cluster.tsh("ssh", "root@env=e2e", "echo hi; echo oops >&2; printf no-newline")
    assert out.stdout == f"[{NODENAME}] hi\n[{NODENAME}] no-newline\n"
    assert out.stderr == f"[{NODENAME}] oops\n"


def test_exit_status_is_propagated(cluster: Cluster, joe: dict[str, Any]) -> None:
    out = cluster.tsh("ssh", "root@env=e2e", "sh -c 'exit 7'", check=False)
    assert out.returncode == 7


def test_no_match_is_a_one_line_error(cluster: Cluster, joe: dict[str, Any]) -> None:
    out = cluster.tsh("ssh", "root@env=nope", "true", check=False)
    assert out.returncode != 0
    assert out.stdout == ""
    assert out.stderr == "ERROR: no nodes match labels env=nope\n"


def test_refused_login_names_the_node(cluster: Cluster, joe: dict[str, Any]) -> None:
    out = cluster.tsh("ssh", "nobody@env=e2e", "true", check=False)
    assert out.returncode == 255
    assert out.stderr.startswith(f"[{NODENAME}] error: access denied")
    assert len(out.stderr.splitlines()) == 1


def test_session_without_command_goes_to_the_one_match(cluster: Cluster, joe: dict[str, Any]) -> None:
    out = cluster.tsh("ssh", "-T", "root@env=e2e", input="echo from-shell\nexit 3\n", check=False)
    assert out.stdout == "from-shell\n"
    assert out.returncode == 3
