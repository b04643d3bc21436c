"""Trusted clusters at the SSH layer, without servers: which tunnel agents a root's proxy takes
(the signing CA decides, not what a certificate claims), and the cluster dial line."""

from __future__ import annotations

import pytest

from teleport.errors import AccessDenied, BadParameter
from teleport.keys.ssh import generate_private_key, parse_cert, public_key_of, sign_host_cert
from teleport.sshutils.clusterdial import DialRequest
from teleport.sshutils.reversetunnel import check_agent

ROOT, LEAF = "root.example", "leaf.example"
ROOT_CA, LEAF_CA = generate_private_key(), generate_private_key()


def _host_cert(ca: bytes, *, cluster: str, role: str, uuid: str = "host-1") -> object:
    key = public_key_of(generate_private_key())
    cert = sign_host_cert(ca, key, host_uuid=uuid, nodename="n", cluster=cluster,
                          principals=[uuid, f"{uuid}.{cluster}"], system_role=role,
                          valid_before=None)
    return parse_cert(cert)


ACCEPT = check_agent(ROOT, lambda: {LEAF: [public_key_of(LEAF_CA)]})


def test_our_nodes_and_proxies_and_a_leafs_proxy_may_open_tunnels() -> None:
    ACCEPT(_host_cert(ROOT_CA, cluster=ROOT, role="Node"), "host-1")  # type: ignore[arg-type]
    ACCEPT(_host_cert(ROOT_CA, cluster=ROOT, role="Proxy"), "host-1")  # type: ignore[arg-type]
    ACCEPT(_host_cert(LEAF_CA, cluster=LEAF, role="Proxy"), "host-1")  # type: ignore[arg-type]


@pytest.mark.parametrize(("role", "claimed", "why"), [
    ("Node", ROOT, "a node certificate cannot serve as a proxy"),
    ("Proxy", ROOT, "of cluster 'root.example', not 'leaf.example'"),
    ("Node", LEAF, "a node certificate cannot serve as a proxy"),
])
def test_a_leaf_cannot_pass_for_one_of_our_hosts_nor_tunnel_a_node(role: str, claimed: str,
                                                                    why: str) -> None:
    # Signed by the leaf's host CA: whatever cluster or role it claims, it is the leaf's
    # proxy or nothing (a leaf's node never tunnels to the root).
    with pytest.raises(AccessDenied, match=why):
        ACCEPT(_host_cert(LEAF_CA, cluster=claimed, role=role), "host-1")  # type: ignore[arg-type]


def test_a_leaf_no_longer_trusted_is_nobody_here() -> None:
    # The listener's CA check refuses its new connections; on a tunnel still open, the rule
    # (run again on each channel) no longer finds the leaf's CA and refuses its authority.
    forgotten = check_agent(ROOT, dict)
    with pytest.raises(AccessDenied, match="of cluster 'leaf.example', not 'root.example'"):
        forgotten(_host_cert(LEAF_CA, cluster=LEAF, role="Proxy"), "host-1")  # type: ignore[arg-type]
    # One of ours whose key a rotation has since dropped keeps its live tunnel.
    check_agent(ROOT, dict)(_host_cert(generate_private_key(), cluster=ROOT, role="Node"),
                            "host-1")  # type: ignore[arg-type]


def test_a_leaf_proxy_tunnels_only_as_itself() -> None:
    with pytest.raises(AccessDenied, match="may tunnel only as itself"):
        ACCEPT(_host_cert(LEAF_CA, cluster=LEAF, role="Proxy"), "host-2")  # type: ignore[arg-type]


def test_a_dial_request_round_trips_and_bad_lines_are_one_line_errors() -> None:
    want = DialRequest("node-1", 3022, ("10.0.0.5", 51000))
    line = want.encode()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert DialRequest.decode(line.rstrip(b"\n")) == want
    for bad in (b"SSH-2.0-x", b"Teleport-Dial !!!", b"Teleport-Dial e30=",
                DialRequest("n", 70000).encode().rstrip()):
        with pytest.raises(BadParameter):
            DialRequest.decode(bad)
