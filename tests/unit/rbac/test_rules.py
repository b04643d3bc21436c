"""Today's access rules, one question at a time, without servers (teleport.rbac)."""

from __future__ import annotations

from typing import Any

import pytest

from teleport.errors import AccessDenied
from teleport.keys.identity import Identity
from teleport.rbac import rules
from teleport.rbac.subject import Caller, Subject

ALICE = Subject.user("alice", ("user",))
ADMIN_USER = Subject.user("root", ("admin",))
TCTL = Subject(Caller.ADMIN, "admin")
NODE = Subject(Caller.NODE, "node-1")
PROXY = Subject(Caller.PROXY, "proxy-1")


def test_a_route_admits_only_the_kinds_it_names() -> None:
    rules.check_route(TCTL, {Caller.ADMIN}, "GET", "/v1/users")
    for caller in (ALICE, NODE, PROXY):
        with pytest.raises(AccessDenied, match=r"may not GET /v1/users"):
            rules.check_route(caller, {Caller.ADMIN}, "GET", "/v1/users")


def test_an_admin_route_admits_a_user_with_the_admin_role() -> None:
    # The web UI's admin pages call the auth API with the user's own certificate.
    rules.check_route(ADMIN_USER, {Caller.ADMIN}, "DELETE", "/v1/users/x")
    rules.check_route(ADMIN_USER, {Caller.ADMIN, Caller.PROXY}, "GET", "/v1/users")


def test_the_admin_role_opens_no_route_that_is_not_for_admins() -> None:
    for allowed in ({Caller.PROXY}, {Caller.NODE, Caller.PROXY}, {Caller.ANONYMOUS}):
        with pytest.raises(AccessDenied, match="user 'root' may not POST /v1/events"):
            rules.check_route(ADMIN_USER, allowed, "POST", "/v1/events")


def test_only_the_admin_role_makes_a_user_an_admin() -> None:
    for roles in ((), ("user",), ("Admin",), ("admins",), ("editor", "access")):
        with pytest.raises(AccessDenied, match="user 'bob' may not GET /v1/users"):
            rules.check_route(Subject.user("bob", roles), {Caller.ADMIN}, "GET", "/v1/users")


def test_a_login_must_be_one_the_certificate_was_issued_for() -> None:
    rules.check_login(("alice", "deploy"), "deploy")
    with pytest.raises(AccessDenied, match="login 'root' is not in the certificate's principals"):
        rules.check_login(("alice", "deploy"), "root")


def test_users_log_in_as_their_logins_trait_or_their_own_name() -> None:
    assert rules.allowed_logins("alice", ["deploy", "www"]) == ["deploy", "www"]
    assert rules.allowed_logins("alice", []) == ["alice"]


def test_each_login_is_a_principal_once() -> None:
    assert rules.allowed_logins("root", ["root", "root", "www", "root"]) == ["root", "www"]


def test_recordings_are_played_by_their_owner_and_admins_only() -> None:
    for viewer in (ALICE, ADMIN_USER, TCTL):
        rules.check_play(viewer, "alice", "sid-1")
    for viewer in (Subject.user("mallory", ("user",)), NODE, Subject(Caller.NODE, "alice")):
        with pytest.raises(AccessDenied, match="only 'alice' and admins may play session sid-1"):
            rules.check_play(viewer, "alice", "sid-1")


def test_live_sessions_are_joined_by_their_owner_and_admins_only() -> None:
    rules.check_join(ALICE, "alice", "sid-1")
    rules.check_join(ADMIN_USER, "alice", "sid-1")
    with pytest.raises(AccessDenied, match="only alice and admins may join session sid-1"):
        rules.check_join(Subject.user("mallory", ("user",)), "alice", "sid-1")


def test_session_lists_show_a_user_their_own_and_an_admin_all() -> None:
    owners = ["alice", "bob"]
    assert [o for o in owners if rules.may_see_session(ALICE, o)] == ["alice"]
    assert [o for o in owners if rules.may_see_session(ADMIN_USER, o)] == owners
    assert [o for o in owners if rules.may_see_session(TCTL, o)] == owners
    assert [o for o in owners if rules.may_see_session(PROXY, o)] == []


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
    user = Identity(username="alice", roles=("user",))
    assert Subject.of(user) == ALICE
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
