"""Trusted and remote clusters: YAML/JSON round trip, the token kept secret, cluster names (no network)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from teleport.errors import BadParameter
from teleport.types.codec import dump_yaml, from_dict, parse_yaml, to_dict
from teleport.types.registry import KINDS_REGISTRY, lookup
from teleport.types.resources import CertAuthoritySpec
from teleport.types.trusted import RemoteCluster, RoleMapping, TrustedCluster

MANUAL_TRUSTED_CLUSTER = """\
kind: trusted_cluster
version: v2
metadata:
  name: root.example.com
spec:
  enabled: true
  token: join-token-secret
  web_proxy_addr: root.example.com:3080
  tunnel_addr: root.example.com:3024
  role_map:
  - remote: admin
    local: [access, editor]
  - remote: "^(.*)-dev$"
    local: ["$1-access"]
"""

REMOTE_CLUSTER = """\
kind: remote_cluster
version: v3
metadata:
  name: leaf.example.com
status:
  connection: online
  last_heartbeat: 2026-11-30T12:00:00Z
"""


def _trusted(name: str = "root", **spec: object) -> dict[str, object]:
    return {"kind": "trusted_cluster", "version": "v2", "metadata": {"name": name},
            "spec": {"web_proxy_addr": "root:3080", **spec}}


def test_a_trusted_cluster_round_trips_through_yaml_and_json() -> None:
    (cluster,) = parse_yaml(MANUAL_TRUSTED_CLUSTER)
    assert isinstance(cluster, TrustedCluster)
    assert cluster.spec.role_map == [RoleMapping(remote="admin", local=["access", "editor"]),
                                     RoleMapping(remote="^(.*)-dev$", local=["$1-access"])]
    assert parse_yaml(dump_yaml([cluster])) == [cluster]
    assert from_dict(json.loads(json.dumps(to_dict(cluster)))) == cluster


def test_a_trusted_cluster_takes_teleports_defaults() -> None:
    cluster = from_dict(_trusted())
    assert isinstance(cluster, TrustedCluster)
    assert cluster.spec.enabled and cluster.spec.token == "" and cluster.spec.role_map == []


def test_a_remote_cluster_round_trips_and_is_offline_until_heard_from() -> None:
    (cluster,) = parse_yaml(REMOTE_CLUSTER)
    assert isinstance(cluster, RemoteCluster)
    assert cluster.status.connection == "online"
    assert cluster.status.last_heartbeat == datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
    assert parse_yaml(dump_yaml([cluster])) == [cluster]
    assert from_dict(json.loads(json.dumps(to_dict(cluster)))) == cluster
    fresh = from_dict({"kind": "remote_cluster", "version": "v3", "metadata": {"name": "leaf"}})
    assert isinstance(fresh, RemoteCluster) and fresh.status.connection == "offline"
    assert to_dict(fresh)["status"]["last_heartbeat"] == "0001-01-01T00:00:00Z"


def test_the_join_token_is_a_secret() -> None:
    (cluster,) = parse_yaml(MANUAL_TRUSTED_CLUSTER)
    assert isinstance(cluster, TrustedCluster)
    public = cluster.without_secrets()
    assert public.spec.token == "" and cluster.spec.token == "join-token-secret"
    assert public.spec.model_copy(update={"token": cluster.spec.token}) == cluster.spec
    assert "join-token-secret" not in dump_yaml([public])
    assert KINDS_REGISTRY["trusted_cluster"].has_secrets


@pytest.mark.parametrize("kind", ["trusted_cluster", "remote_cluster"])
@pytest.mark.parametrize("name", ["a/b", "a b", "a\tb", "root:3080", "a\\b", ""])
def test_a_cluster_name_that_could_change_a_key_path_or_address_is_refused(
        kind: str, name: str) -> None:
    data = _trusted(name) if kind == "trusted_cluster" else {
        "kind": kind, "version": "v3", "metadata": {"name": name}}
    with pytest.raises(BadParameter, match="metadata") as err:
        from_dict(data)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("data, field", [
    (_trusted(bogus=1), "spec.bogus"),
    (_trusted(role_map=[{"remote": "a", "local": ["b"], "extra": 1}]), "spec.role_map.0.extra"),
    ({"kind": "remote_cluster", "version": "v3", "metadata": {"name": "leaf"},
      "spec": {}}, "spec"),
    ({"kind": "remote_cluster", "version": "v3", "metadata": {"name": "leaf"},
      "status": {"connection": "online", "tunnel": "x"}}, "status.tunnel"),
    ({"kind": "trusted_cluster", "version": "v2", "metadata": {"name": "root"}, "spec": {}},
     "spec.web_proxy_addr"),
    (_trusted(web_proxy_addr=""), "spec.web_proxy_addr"),
    (_trusted(role_map=[{"remote": "", "local": ["b"]}]), "spec.role_map.0.remote"),
    (_trusted(role_map=[{"remote": "a", "local": []}]), "spec.role_map.0.local"),
    (_trusted(role_map=[{"remote": "a", "local": ["b", ""]}]), "spec.role_map.0.local.1"),
    ({**_trusted(), "version": "v1"}, "version"),
])
def test_unknown_keys_and_missing_or_empty_fields_are_refused(
        data: dict[str, object], field: str) -> None:
    with pytest.raises(BadParameter, match=f": {data['kind']} {field}:"):
        from_dict(data)


@pytest.mark.parametrize("alias, kind", [
    ("tc", "trusted_cluster"), ("cluster", "trusted_cluster"), ("clusters", "trusted_cluster"),
    ("trusted_clusters", "trusted_cluster"), ("rc", "remote_cluster"),
    ("remote_clusters", "remote_cluster"), ("RC", "remote_cluster"),
])
def test_the_registry_knows_both_kinds_by_their_aliases(alias: str, kind: str) -> None:
    assert lookup(alias).name == kind


def test_a_remote_cluster_is_made_by_the_cluster_and_not_restored() -> None:
    remote = lookup("rc")
    assert (remote.creatable, remote.restored, remote.model) == (False, False, RemoteCluster)
    trusted = lookup("tc")
    assert (trusted.creatable, trusted.restored, trusted.model) == (True, False, TrustedCluster)
    order = list(KINDS_REGISTRY)  # `tctl get all` order: what must exist before what
    assert order.index("token") < order.index("trusted_cluster") < order.index("cert_authority")
    assert order.index("remote_cluster") == order.index("node") + 1


def test_a_cert_authority_keeps_a_role_map_empty_by_default() -> None:
    spec = CertAuthoritySpec(type="user", cluster_name="root")
    assert spec.role_map == []
    mapped = CertAuthoritySpec.model_validate(
        {"type": "user", "cluster_name": "root", "role_map": [{"remote": "*", "local": ["access"]}]})
    assert mapped.role_map == [RoleMapping(remote="*", local=["access"])]
