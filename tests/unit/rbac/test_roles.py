"""The role evaluator, one example per rule of the language (teleport.rbac.roles)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from teleport.errors import AccessDenied
from teleport.rbac.roles import RoleSet, labels_match
from teleport.types.presets import PRESETS
from teleport.types.roles import DEFAULT_MAX_SESSION_TTL, Role

STAGING = {"env": "staging", "team": "web"}
PROD = {"env": "prod", "team": "db"}


def role(name: str, version: str = "v5", **spec: Any) -> Role:
    return Role.model_validate({"kind": "role", "version": version,
                                "metadata": {"name": name}, "spec": spec})


DEV = role("dev", allow={"logins": ["ubuntu"], "node_labels": {"env": "staging"}})


# --- labels -------------------------------------------------------------------------------

def test_an_exact_label_value_selects_only_that_value() -> None:
    assert labels_match({"env": ["staging"]}, STAGING)
    assert not labels_match({"env": ["staging"]}, PROD)
    assert not labels_match({"env": ["staging"]}, {})


def test_a_wildcard_value_needs_the_label_to_exist() -> None:
    assert labels_match({"env": ["*"]}, PROD)
    assert not labels_match({"env": ["*"]}, {"team": "db"})


def test_a_regex_value_must_match_the_whole_value() -> None:
    assert labels_match({"env": ["^prod|staging$"]}, PROD)
    assert labels_match({"env": ["^st.*$"]}, STAGING)
    assert not labels_match({"env": ["^st$"]}, STAGING)
    assert not labels_match({"env": ["^prod$"]}, {"env": "prod2"})
    assert not labels_match({"env": ["^prod|staging$"]}, {"env": "prod2"})


def test_the_wildcard_key_selects_every_node_even_without_labels() -> None:
    assert labels_match({"*": ["*"]}, {})
    assert labels_match({"*": ["*"]}, PROD)
    assert not labels_match({"*": ["prod"]}, PROD)  # the role loader refuses this selector


def test_an_empty_selector_selects_nothing() -> None:
    assert not labels_match({}, {})
    assert not labels_match({}, PROD)


def test_keys_are_anded_and_values_ored() -> None:
    selector = {"env": ["staging", "prod"], "team": ["web"]}
    assert labels_match(selector, STAGING)
    assert not labels_match(selector, PROD)  # env matches, team does not
    assert labels_match(selector, {"env": "prod", "team": "web"})


# --- logins and nodes ---------------------------------------------------------------------

def test_a_role_reaches_only_the_nodes_its_labels_select_as_its_logins() -> None:
    roles = RoleSet([DEV])
    assert roles.logins() == ["ubuntu"]
    assert roles.can_see_node(STAGING) and not roles.can_see_node(PROD)
    assert roles.node_logins(STAGING) == ["ubuntu"] and roles.node_logins(PROD) == []
    roles.check_node_login("web1", STAGING, "ubuntu")
    with pytest.raises(AccessDenied) as err:
        roles.check_node_login("web1", STAGING, "root")
    assert str(err.value) == "no role allows login 'root' on node 'web1' (roles: dev)"
    with pytest.raises(AccessDenied, match="no role allows login 'ubuntu' on node 'db1'"):
        roles.check_node_login("db1", PROD, "ubuntu")


def test_templates_expand_from_traits_each_value_once_and_bad_values_drop() -> None:
    own = role("own", allow={"logins": ["{{internal.logins}}", "{{external.unix}}", "deploy"],
                             "node_labels": {"*": "*"}})
    traits = {"logins": ["alice", "", "al ice", "a,b", "alice", "root"], "unix": ["alice", "svc"]}
    assert RoleSet([own], traits).logins() == ["alice", "root", "svc", "deploy"]
    assert RoleSet([own]).logins() == ["deploy"]  # no traits: the templates give nothing


def test_label_templates_expand_from_traits() -> None:
    team = role("team", allow={"logins": ["ubuntu"], "node_labels": {"team": "{{internal.team}}"}})
    assert RoleSet([team], {"team": ["web"]}).can_see_node(STAGING)
    assert not RoleSet([team], {"team": ["ops"]}).can_see_node(STAGING)
    assert not RoleSet([team]).can_see_node(STAGING)  # no trait: the key selects nothing


def test_deny_logins_are_removed_from_the_certificate_and_refused_everywhere() -> None:
    no_root = role("no-root", deny={"logins": ["root"]})
    access = role("ops", allow={"logins": ["root", "ubuntu"], "node_labels": {"*": "*"}})
    roles = RoleSet([access, no_root])
    assert roles.logins() == ["ubuntu"]
    assert roles.node_logins(PROD) == ["ubuntu"]
    assert roles.can_see_node(PROD)
    with pytest.raises(AccessDenied) as err:
        roles.check_node_login("db1", PROD, "root")
    assert str(err.value) == "role 'no-root' denies login 'root' on node 'db1' (deny.logins)"


def test_a_deny_by_labels_alone_hides_the_node_and_refuses_every_login() -> None:
    no_prod = role("no-prod", deny={"node_labels": {"env": "prod"}})
    everything = role("all", allow={"logins": ["ubuntu"], "node_labels": {"*": "*"}})
    roles = RoleSet([everything, no_prod])
    assert roles.can_see_node(STAGING) and not roles.can_see_node(PROD)
    assert roles.node_logins(PROD) == []
    assert roles.logins() == ["ubuntu"]
    with pytest.raises(AccessDenied) as err:
        roles.check_node_login("db1", PROD, "ubuntu")
    assert str(err.value) == ("role 'no-prod' denies login 'ubuntu' on node 'db1' "
                              "(deny.node_labels env=prod)")


def test_a_deny_by_labels_and_logins_refuses_only_those_logins_there() -> None:
    no_prod_root = role("no-prod-root", deny={"logins": ["root"], "node_labels": {"env": "prod"}})
    everything = role("all", allow={"logins": ["root", "ubuntu"], "node_labels": {"*": "*"}})
    roles = RoleSet([everything, no_prod_root])
    assert roles.can_see_node(PROD)  # only one login is denied there
    assert roles.node_logins(PROD) == ["ubuntu"]
    assert roles.node_logins(STAGING) == ["root", "ubuntu"]
    with pytest.raises(AccessDenied, match=r"role 'no-prod-root' denies login 'root' .*deny.logins"):
        roles.check_node_login("db1", PROD, "root")


def test_v3_roles_with_logins_and_no_labels_reach_every_node() -> None:
    old = role("old", version="v3", allow={"logins": ["ubuntu"]})
    assert old.version == "v5"
    assert old.spec.allow.node_labels == {"*": ["*"]}
    assert RoleSet([old]).can_see_node({}) and RoleSet([old]).node_logins(PROD) == ["ubuntu"]
    # a v5 role without labels reaches no node
    assert not RoleSet([role("new", allow={"logins": ["ubuntu"]})]).can_see_node(PROD)


def test_unknown_role_names_grant_nothing_and_names_keep_order_once() -> None:
    lookup = {"dev": DEV, "auditor": role("auditor")}
    roles = RoleSet.of(["auditor", "gone", "dev", "auditor"], lookup)
    assert roles.names == ("auditor", "dev")
    assert roles == RoleSet([lookup["auditor"], DEV]) and hash(roles) == hash(RoleSet.of(["auditor", "dev"], lookup))
    assert roles != RoleSet([lookup["auditor"], DEV], {"logins": ["x"]})
    assert RoleSet.of(["gone"], lookup).logins() == []
    with pytest.raises(AccessDenied, match=r"\(roles: none\)"):
        RoleSet.of(["gone"], lookup).check_node_login("web1", STAGING, "ubuntu")


# --- rules --------------------------------------------------------------------------------

def test_rules_grant_named_resources_and_verbs_and_wildcards_grant_all() -> None:
    editor = role("ed", allow={"rules": [{"resources": ["role", "user"], "verbs": ["list", "read"]}]})
    roles = RoleSet([editor])
    assert roles.allows("role", "read") and roles.allows("user", "list")
    assert not roles.allows("role", "delete") and not roles.allows("token", "read")
    with pytest.raises(AccessDenied) as err:
        roles.check_rule("role", "delete")
    assert str(err.value) == "no role allows delete on 'role' (roles: ed)"
    root = RoleSet([role("root", allow={"rules": [{"resources": ["*"], "verbs": ["*"]}]})])
    assert root.allows("session", "delete") and root.allows("event", "list")
    verbs = RoleSet([role("v", allow={"rules": [{"resources": ["lock"], "verbs": ["*"]}]})])
    assert verbs.allows("lock", "create") and not verbs.allows("user", "create")


def test_a_deny_rule_beats_an_allow_rule() -> None:
    admin = role("admin", allow={"rules": [{"resources": ["*"], "verbs": ["*"]}]})
    no_roles = role("no-roles", deny={"rules": [{"resources": ["role"], "verbs": ["create", "update"]}]})
    roles = RoleSet([admin, no_roles])
    assert roles.allows("role", "read") and roles.allows("user", "update")
    with pytest.raises(AccessDenied) as err:
        roles.check_rule("role", "update")
    assert str(err.value) == "role 'no-roles' denies update on 'role' (deny.rules)"
    nothing = role("nothing", deny={"rules": [{"resources": ["*"], "verbs": ["*"]}]})
    assert not RoleSet([admin, nothing]).allows("node", "list")


# --- sessions -----------------------------------------------------------------------------

def test_may_join_follows_join_sessions_and_deny_wins() -> None:
    peer = role("peer", allow={"join_sessions": [{"name": "j", "roles": ["dev"]}]})
    assert RoleSet([peer]).may_join({"dev", "other"})
    assert not RoleSet([peer]).may_join({"access"})
    anyone = role("any", allow={"join_sessions": [{"roles": ["*"], "kinds": ["*"]}]})
    assert RoleSet([anyone]).may_join({"access"}) and RoleSet([anyone]).may_join(set())
    no_admin = role("no-admin", deny={"join_sessions": [{"roles": ["admin"]}]})
    assert not RoleSet([anyone, no_admin]).may_join({"admin"})
    assert RoleSet([anyone, no_admin]).may_join({"dev"})
    assert not RoleSet([DEV]).may_join({"dev"})


# --- options ------------------------------------------------------------------------------

def test_options_combine_to_the_strictest() -> None:
    a = role("a", options={"max_session_ttl": "8h", "forward_agent": True, "port_forwarding": True,
                           "client_idle_timeout": "30m", "disconnect_expired_cert": False})
    b = role("b", options={"max_session_ttl": "1h", "port_forwarding": False,
                           "client_idle_timeout": "1h"})
    c = role("c", options={"disconnect_expired_cert": True})
    ab = RoleSet([a, b])
    assert ab.max_session_ttl == timedelta(hours=1)
    assert ab.forward_agent is True  # b leaves it unset
    assert ab.port_forwarding is False  # b says false
    assert ab.client_idle_timeout == timedelta(minutes=30)
    assert ab.disconnect_expired_cert is False
    assert RoleSet([a, c]).disconnect_expired_cert is True


def test_unset_options_grant_nothing_and_leave_the_cluster_setting() -> None:
    empty = RoleSet([role("plain")])
    assert empty.forward_agent is False and empty.port_forwarding is False
    assert empty.client_idle_timeout is None and empty.disconnect_expired_cert is None
    assert empty.max_session_ttl == DEFAULT_MAX_SESSION_TTL
    assert RoleSet([]).max_session_ttl == DEFAULT_MAX_SESSION_TTL


def test_presets_give_what_their_names_say() -> None:
    presets = {r.metadata.name: r for r in PRESETS}
    traits = {"logins": ["alice"]}
    access = RoleSet.of(["access"], presets, traits)
    assert access.logins() == ["alice"] and access.can_see_node(PROD)
    assert access.forward_agent and access.port_forwarding and not access.allows("role", "list")
    auditor = RoleSet.of(["auditor"], presets, traits)
    assert auditor.allows("session", "read") and auditor.logins() == []
    assert not auditor.allows("session", "delete") and not auditor.can_see_node(PROD)
    admin = RoleSet.of(["admin"], presets, traits)
    assert admin.allows("role", "delete") and admin.may_join({"access"})
