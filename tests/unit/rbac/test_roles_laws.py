"""The laws of the role evaluator on random roles (hypothesis): deny wins, access is monotone.

Small alphabets make collisions (the same label, login, resource) likely, so each law is
exercised on roles that actually overlap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from teleport.errors import AccessDenied
from teleport.rbac.roles import RoleSet, labels_match
from teleport.types.roles import Role

LAWS = settings(max_examples=200, deadline=None, database=None)

KEYS = ["env", "team"]
VALUES = ["prod", "staging", "web", "p"]
PATTERNS = [*VALUES, "*", "^p.*$", "^(prod|web)$", "^.*g$", "^p|web$"]
LOGINS = ["root", "ubuntu", "alice", "{{internal.logins}}", "{{external.unix}}"]
NODE_LOGINS = ["root", "ubuntu", "alice", "bob"]
RESOURCES = ["user", "role", "session", "*"]
VERBS = ["list", "read", "update", "*"]
OWNER_ROLES = ["dev", "admin", "*"]

node_labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2)
selectors = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), st.lists(st.sampled_from(PATTERNS), min_size=1,
                                                    max_size=3, unique=True), max_size=2),
    st.just({"*": ["*"]}),
)
traits = st.fixed_dictionaries({
    "logins": st.lists(st.sampled_from(["alice", "bob", "", "a b", "x,y"]), max_size=3),
    "unix": st.lists(st.sampled_from(["bob", "root"]), max_size=2),
})
# Rules and join policies drawn from every small combination, built once (drawing nested
# lists is what costs time in hypothesis).
RULES = [{"resources": [r, *extra], "verbs": [v]}
         for r in RESOURCES for extra in ([], ["session"]) for v in VERBS if r != "session" or not extra]
JOINS = [{"roles": roles, "kinds": kinds} for roles in (["dev"], ["admin"], ["*"], ["dev", "admin"])
         for kinds in (["ssh"], ["*"])]
rules = st.lists(st.sampled_from(RULES), max_size=2)
joins = st.lists(st.sampled_from(JOINS), max_size=1)
conditions = st.fixed_dictionaries({
    "logins": st.lists(st.sampled_from(LOGINS), max_size=3, unique=True),
    "node_labels": selectors,
    "rules": rules,
    "join_sessions": joins,
})
_counter = iter(range(10**9))


def _role(allow: dict[str, Any] | None, deny: dict[str, Any] | None) -> Role:
    spec = {"allow": allow or {}, "deny": deny or {}}
    return Role.model_validate({"kind": "role", "version": "v5",
                                "metadata": {"name": f"r{next(_counter)}"}, "spec": spec})


allow_roles = conditions.map(lambda c: _role(c, None))
deny_roles = conditions.map(lambda c: _role(None, c))
any_roles = st.builds(_role, conditions, conditions)
role_lists = st.lists(any_roles, max_size=3)
questions = st.tuples(node_labels, st.sampled_from(NODE_LOGINS), st.sampled_from(RESOURCES[:-1]),
                      st.sampled_from(VERBS[:-1]),
                      st.sets(st.sampled_from(OWNER_ROLES[:-1]), max_size=2))


def reference_labels_match(selector: Mapping[str, Sequence[str]], labels: Mapping[str, str]) -> bool:
    """The matching rule written out plainly, to check the real one against."""
    if len(selector) == 0:
        return False
    results = []
    for key in selector:
        if key == "*":
            results.append("*" in selector[key])
            continue
        if key not in labels:
            results.append(False)
            continue
        hit = False
        for pattern in selector[key]:
            if pattern == "*" or pattern == labels[key]:
                hit = True
            elif len(pattern) > 1 and pattern[0] == "^" and pattern[-1] == "$":
                hit = hit or re.fullmatch(pattern, labels[key]) is not None
        results.append(hit)
    return all(results)


def access(roles: RoleSet, question: tuple[Any, ...]) -> dict[str, Any]:
    """Everything the role set answers about one node, login, rule and session owner."""
    labels, login, resource, verb, owners = question
    try:
        roles.check_node_login("n1", labels, login)
        login_ok = True
    except AccessDenied:
        login_ok = False
    return {"logins": set(roles.logins()), "node_logins": set(roles.node_logins(labels)),
            "login_ok": login_ok, "see": roles.can_see_node(labels),
            "rule": roles.allows(resource, verb), "join": roles.may_join(owners)}


def at_most(less: dict[str, Any], more: dict[str, Any]) -> None:
    """Assert `less` grants nothing `more` does not."""
    assert less["logins"] <= more["logins"]
    assert less["node_logins"] <= more["node_logins"]
    for key in ("login_ok", "see", "rule", "join"):
        assert more[key] or not less[key], key


@LAWS
@given(st.one_of(selectors, st.just({"*": ["prod"]})), node_labels)
def test_labels_match_agrees_with_the_reference(selector: dict[str, list[str]],
                                                labels: dict[str, str]) -> None:
    assert labels_match(selector, labels) == reference_labels_match(selector, labels)


@LAWS
@given(role_lists, allow_roles, traits, questions)
def test_adding_an_allow_role_never_removes_access(roles: list[Role], extra: Role,
                                                   user_traits: dict[str, list[str]],
                                                   question: tuple[Any, ...]) -> None:
    at_most(access(RoleSet(roles, user_traits), question),
            access(RoleSet([*roles, extra], user_traits), question))


@LAWS
@given(role_lists, deny_roles, traits, questions)
def test_adding_a_deny_role_never_grants_access(roles: list[Role], extra: Role,
                                                user_traits: dict[str, list[str]],
                                                question: tuple[Any, ...]) -> None:
    at_most(access(RoleSet([*roles, extra], user_traits), question),
            access(RoleSet(roles, user_traits), question))


@LAWS
@given(role_lists, traits, questions, st.booleans())
def test_a_role_denying_something_wins_over_every_allow(roles: list[Role],
                                                        user_traits: dict[str, list[str]],
                                                        question: tuple[Any, ...],
                                                        by_labels: bool) -> None:
    labels, login, resource, verb, owners = question
    deny: dict[str, Any] = {"logins": [login],
                            "rules": [{"resources": [resource], "verbs": [verb]}],
                            "join_sessions": [{"roles": sorted(owners) or ["*"]}]}
    if by_labels:  # deny the whole node by its labels instead of the login everywhere
        deny = dict(deny, logins=[], node_labels={k: [v] for k, v in labels.items()} or {"*": ["*"]})
    denied = RoleSet([*roles, _role(None, deny)], user_traits)
    got = access(denied, question)
    assert not got["login_ok"] and login not in got["node_logins"]
    assert not got["rule"] and not got["join"]
    if by_labels:
        assert not got["see"] and got["node_logins"] == set()
    else:
        assert login not in got["logins"]


@LAWS
@given(role_lists, traits, questions)
def test_node_access_is_the_contracts_formula(roles: list[Role], user_traits: dict[str, list[str]],
                                              question: tuple[Any, ...]) -> None:
    """Access(N, L) = some allow selects N and lists L, and no deny matches (N, L)."""
    labels, login, *_ = question

    def expanded(values: list[str]) -> set[str]:
        out: set[str] = set()
        for value in values:
            if value.startswith("{{"):
                trait = value.strip("{}").split(".")[1]
                out |= {v for v in user_traits.get(trait, []) if v and " " not in v and "," not in v}
            else:
                out.add(value)
        return out

    allowed = any(reference_labels_match(r.spec.allow.node_labels, labels)
                  and login in expanded(r.spec.allow.logins) for r in roles)
    denied = False
    for r in roles:
        d = r.spec.deny
        if d.node_labels:
            denied |= reference_labels_match(d.node_labels, labels) and (
                not d.logins or login in expanded(d.logins))
        else:
            denied |= login in expanded(d.logins)
    assert access(RoleSet(roles, user_traits), question)["login_ok"] == (allowed and not denied)
    assert (login in RoleSet(roles, user_traits).node_logins(labels)) == (allowed and not denied)
