"""A leaf's role map: which local roles a root user's roles become (exact, glob, regex, captures)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teleport.errors import BadParameter
from teleport.rbac.rolemap import check_role_map, fixed_local_roles, map_roles
from teleport.types.trusted import RoleMapping

LAWS = settings(max_examples=200, deadline=None, database=None)


def m(remote: str, *local: str) -> RoleMapping:
    return RoleMapping(remote=remote, local=list(local))


def test_an_exact_remote_role_maps_only_itself() -> None:
    role_map = [m("admin", "access", "editor")]
    assert map_roles(role_map, ["admin"]) == ["access", "editor"]
    assert map_roles(role_map, ["admins", "Admin", "dev"]) == []


def test_a_glob_is_literal_but_for_its_stars() -> None:
    assert map_roles([m("*", "access")], ["anything", "else"]) == ["access"]
    assert map_roles([m("dev-*", "access")], ["dev-web", "prod-web"]) == ["access"]
    assert map_roles([m("a.c", "x")], ["abc"]) == []  # `.` is no regex in a glob
    assert map_roles([m("a.c", "x")], ["a.c"]) == ["x"]
    assert map_roles([m("^admin", "x")], ["admin", "^admin"]) == ["x"]  # no `$`: a glob
    assert map_roles([m("*-dev", "$1-access")], ["web-dev"]) == ["web-access"]  # `*` captures


def test_a_regex_captures_fill_the_local_role() -> None:
    role_map = [m("^(.*)-dev$", "$1-access")]
    assert map_roles(role_map, ["web-dev", "db-dev", "admin"]) == ["web-access", "db-access"]
    assert map_roles([m("^(.*)-dev$", "${1}access")], ["web-dev"]) == ["webaccess"]
    assert map_roles([m("^(?P<team>\\w+)-dev$", "$team-x", "${team}")], ["db-dev"]) == ["db-x", "db"]
    assert map_roles([m("^(.*)-dev$", "$0!")], ["web-dev"]) == ["web-dev!"]


def test_a_regex_matches_the_whole_role() -> None:
    assert map_roles([m("^dev$", "access")], ["dev", "devops", "xdev"]) == ["access"]
    assert map_roles([m("^a|b$", "x")], ["ac", "cb", "ab"]) == []  # not a search for `^a` or `b$`
    assert map_roles([m("^a|b$", "x")], ["b"]) == ["x"]


@pytest.mark.parametrize("local, expected", [
    ("$2-x", "-x"),        # no group 2: the reference is empty
    ("$2", None),          # ... and a role left empty is dropped
    ("${nope}", None),     # no such named group
    ("$1_x", None),        # Go reads `$1_x` as group "1_x": write `${1}_x`
    ("${1}_x", "web_x"),
    ("$$1", "$1"),         # `$$` is a literal `$`
    ("a$", "a$"),          # a `$` starting no reference stays as written
    ("a$-b", "a$-b"),
    ("${1", "${1"),        # no closing brace: literal
])
def test_references_expand_as_go_expands_them(local: str, expected: str | None) -> None:
    assert map_roles([m("^(.*)-dev$", local)], ["web-dev"]) == ([expected] if expected else [])


def test_mappings_apply_in_order_and_each_role_appears_once() -> None:
    role_map = [m("admin", "editor", "access"), m("^(.*)-dev$", "access", "$1"),
                m("*", "auditor", "access")]
    assert map_roles(role_map, ["web-dev", "admin"]) == ["editor", "access", "web", "auditor"]


def test_a_user_with_no_remote_role_is_matched_by_a_star_only() -> None:
    assert map_roles([m("*", "access")], []) == ["access"]
    assert map_roles([m("^.*$", "access")], []) == ["access"]
    assert map_roles([m("admin", "access"), m("^.+$", "x")], []) == []
    assert map_roles([m("*", "$1")], []) == []  # the empty capture makes no role


def test_no_role_map_maps_nothing() -> None:
    assert map_roles([], ["admin"]) == []


@pytest.mark.parametrize("role_map, message", [
    ([m("^(.*$", "x")], "role_map remote '^(.*$' is not a valid regular expression"),
    ([m("admin", "a"), m("dev", "b"), m("admin", "c")], "role_map remote 'admin' is mapped twice"),
    ([m("*", "a"), m("*", "b")], "role_map remote '*' is mapped twice"),
])
def test_a_bad_role_map_is_refused_in_one_line(role_map: list[RoleMapping], message: str) -> None:
    with pytest.raises(BadParameter, match="^" + re.escape(message)) as err:
        check_role_map(role_map)
    assert "\n" not in str(err.value)


def test_a_good_role_map_passes_and_an_invalid_regex_fails_mapping_too() -> None:
    check_role_map([m("admin", "access"), m("^(.*)-dev$", "$1"), m("*", "auditor")])
    check_role_map([])
    with pytest.raises(BadParameter, match="not a valid regular expression"):
        map_roles([m("^[$", "x")], ["admin"])


def test_fixed_local_roles_are_those_without_a_reference() -> None:
    role_map = [m("admin", "access", "editor"), m("^(.*)-dev$", "$1-access", "access"),
                m("*", "${1}")]
    assert fixed_local_roles(role_map) == {"access", "editor"}
    assert fixed_local_roles([]) == set()


# Role names from an alphabet with regex metacharacters but no glob `*` or regex anchors, so an
# exact mapping stays exact; the map's locals hold no `$`.
names = st.text(alphabet="ab.+?()[]{}|\\-_", min_size=1, max_size=4)
exact_maps = st.lists(st.builds(lambda r, ls: m(r, *ls), names, st.lists(names, min_size=1,
                                                                         max_size=3)), max_size=4)


@LAWS
@given(exact_maps, st.lists(names, max_size=5))
def test_an_exact_map_maps_only_the_roles_it_names(role_map: list[RoleMapping],
                                                   remote: list[str]) -> None:
    expected = [local for mapping in role_map for role in remote if role == mapping.remote
                for local in mapping.local]
    assert map_roles(role_map, remote) == list(dict.fromkeys(expected))


@LAWS
@given(st.lists(names, max_size=5), names)
def test_a_star_maps_every_user_to_its_roles(remote: list[str], local: str) -> None:
    assert map_roles([m("*", local)], remote) == [local]
    assert map_roles([m("^(.*)$", "$1")], remote) == list(dict.fromkeys(remote))
