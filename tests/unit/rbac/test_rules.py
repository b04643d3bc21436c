"""Today's access rules, one question at a time, without servers (teleport.rbac)."""

from __future__ import annotations

from typing import Any

import pytest

from teleport.errors import AccessDenied
from teleport.keys.identity import Identity
from teleport.rbac import rules
from teleport.rbac.roles import RoleSet
from teleport.rbac.subject import Caller, Subject
from teleport.types.presets import PRESETS as PRESETS_LIST

PRESETS = {r.metadata.name: r for r in PRESETS_LIST}
ALICE = Subject.user("alice", ("access",), RoleSet.of(("access",), PRESETS))
ADMIN_USER = Subject.user("root", ("admin",), RoleSet.of(("admin",), PRESETS))
AUDITOR = Subject.user("ann", ("auditor",), RoleSet.of(("auditor",), PRESETS))
MALLORY = Subject.user("mallory", ("access",), RoleSet.of(("access",), PRESETS))
TCTL = Subject(Caller.ADMIN, "admin")
NODE = Subject(Caller.NODE, "node-1")
PROXY = Subject(Caller.PROXY, "proxy-1")


def test_a_route_admits_only_the_kinds_it_names() -> None:
    rules.check_route(TCTL, {Caller.ADMIN}, "GET", "/v1/users")
    for caller in (ALICE, ADMIN_USER, NODE, PROXY):
        with pytest.raises(AccessDenied, match=r"may not GET /v1/users"):
            rules.check_route(caller, {Caller.ADMIN}, "GET", "/v1/users")


def test_a_user_route_asks_the_users_roles_for_its_rule() -> None:
    # The web UI's admin pages and tctl through a user's profile call with the user's own
    # certificate: the rule decides, whichever role grants it.
    rules.check_route(ADMIN_USER, {Caller.ADMIN, Caller.USER}, "DELETE", "/v1/users/x",
                      ("user", "delete"))
    editor = Subject.user("ed", ("editor",), RoleSet.of(("editor",), PRESETS))
    rules.check_route(editor, {Caller.ADMIN, Caller.USER}, "GET", "/v1/users", ("user", "list"))
    for caller in (ALICE, AUDITOR, Subject.user("bob", ("admin",))):  # bob: roles not loaded
        with pytest.raises(AccessDenied, match="user"):
            rules.check_route(caller, {Caller.ADMIN, Caller.USER}, "GET", "/v1/users",
                              ("user", "list"))


def test_the_admin_role_opens_no_route_that_is_not_for_users() -> None:
    for allowed in ({Caller.PROXY}, {Caller.NODE, Caller.PROXY}, {Caller.ANONYMOUS}):
        with pytest.raises(AccessDenied, match="user 'root' may not POST /v1/events"):
            rules.check_route(ADMIN_USER, allowed, "POST", "/v1/events")


def test_resource_rules_admit_tctl_and_users_whose_roles_allow_them() -> None:
    rules.check_rule(TCTL, "role", "delete")
    rules.check_rule(ADMIN_USER, "role", "delete")
    for subject in (ALICE, AUDITOR, NODE, PROXY):
        with pytest.raises(AccessDenied):
            rules.check_rule(subject, "role", "delete")


def test_a_login_must_be_one_the_certificate_was_issued_for() -> None:
    rules.check_login(("alice", "deploy"), "deploy")
    with pytest.raises(AccessDenied, match="login 'root' is not in the certificate's principals"):
        rules.check_login(("alice", "deploy"), "root")


def test_recordings_are_played_by_their_owner_and_roles_allowing_session_read() -> None:
    for viewer in (ALICE, ADMIN_USER, AUDITOR, TCTL):
        rules.check_play(viewer, "alice", "sid-1")
    for viewer in (MALLORY, NODE, Subject(Caller.NODE, "alice")):
        with pytest.raises(AccessDenied, match="only 'alice' and roles allowing session read"):
            rules.check_play(viewer, "alice", "sid-1")


def test_live_sessions_are_joined_by_their_owner_and_join_sessions_roles() -> None:
    rules.check_join(ALICE, "alice", ("access",), "sid-1")
    rules.check_join(ADMIN_USER, "alice", ("access",), "sid-1")
    for joiner in (MALLORY, AUDITOR):  # an auditor watches lists, it does not type into shells
        with pytest.raises(AccessDenied, match="allows joining alice's session sid-1"):
            rules.check_join(joiner, "alice", ("access",), "sid-1")


def test_session_lists_show_a_user_their_own_and_roles_allowing_more_all() -> None:
    owners = ["alice", "bob"]
    assert [o for o in owners if rules.may_list_recording(ALICE, o)] == ["alice"]
    for viewer in (ADMIN_USER, AUDITOR, TCTL):
        assert [o for o in owners if rules.may_list_recording(viewer, o)] == owners
        assert [o for o in owners if rules.may_list_live_session(viewer, o, ("access",))] == owners
    assert [o for o in owners if rules.may_list_live_session(ALICE, o, ("access",))] == ["alice"]
    assert [o for o in owners if rules.may_list_recording(PROXY, o)] == []


def test_a_host_announces_only_itself_under_its_own_kind() -> None:
    rules.check_announces_itself(NODE, "node", "node-1")
    rules.check_announces_itself(PROXY, "proxy", "proxy-1")
    for kind, name in (("node", "node-2"), ("proxy", "node-1"), ("auth_server", "node-1")):
        with pytest.raises(AccessDenied, match="a host may only announce itself"):
            rules.check_announces_itself(NODE, kind, name)


def test_a_node_uploads_only_its_own_sessions_a_proxy_any() -> None:
    assert rules.recorded_server(NODE) == "node-1"
    assert rules.recorded_server(PROXY) is None


def test_subjects_come_from_verified_certificates() -> None:
    host = Identity(username="node-1", system_role="Node", host_uuid="node-1")
    assert Subject.of(host) == NODE
    user = Identity(username="alice", roles=("access",))
    assert Subject.of(user, ALICE.access) == ALICE
    with pytest.raises(AccessDenied, match="unknown system role 'Root'"):
        Subject.of(Identity(username="x", system_role="Root"))


def test_a_tunnel_peer_is_what_its_host_certificate_says_and_only_itself() -> None:
    node = ("Node", "c.test", "uuid-1", ("uuid-1", "natted"))
    rules.check_tunnel_peer(*node, allowed=(Caller.NODE,), cluster="c.test", login="uuid-1")
    rules.check_tunnel_peer("Proxy", "c.test", "p-1", ("p-1",), allowed=(Caller.PROXY,),
                            cluster="c.test")
    refused: list[tuple[tuple[str, str, str, tuple[str, ...]], dict[str, Any], str]] = [
        ((*node,), dict(allowed=(Caller.PROXY,), login=None), "a node certificate cannot serve as a proxy"),
        (("", "c.test", "uuid-1", ("uuid-1",)), {}, "a no role certificate cannot serve"),
        (("Auth", "c.test", "uuid-1", ("uuid-1",)), {}, "an? auth certificate cannot serve"),
        (("Node", "other.test", "uuid-1", ("uuid-1",)), {}, "cluster 'other.test', not 'c.test'"),
        (("Node", "c.test", "uuid-1", ("natted",)), {}, "does not name its host UUID"),
        (("Node", "c.test", "", ("",)), {}, "does not name its host UUID"),
        ((*node,), dict(login="uuid-2"), "host uuid-1 may tunnel only as itself, not as 'uuid-2'"),
        ((*node,), dict(login=""), "may tunnel only as itself"),
    ]
    for args, kwargs, reason in refused:
        options: dict[str, Any] = {"allowed": (Caller.NODE,), "login": "uuid-1", **kwargs}
        with pytest.raises(AccessDenied, match=reason):
            rules.check_tunnel_peer(*args, cluster="c.test", **options)
