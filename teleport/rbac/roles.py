"""Evaluate a user's roles: which nodes, logins, resources and sessions they give, and what options.

Pure (no I/O): callers hand in the roles as stored now and the user's traits, and the auth
server, the node and the proxy ask the same `RoleSet`, so one role means the same everywhere.
Deny always wins, and every answer is monotone: adding an allow role never takes access away,
adding a deny role never gives any (the property tests in tests/unit/rbac/test_roles_laws.py
hold this). A refusal is an `AccessDenied` whose one-line message names the role and the rule
that decided, for the audit log and the user.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from teleport.errors import AccessDenied
from teleport.types.roles import (
    DEFAULT_MAX_SESSION_TTL,
    WILDCARD,
    JoinPolicy,
    Role,
    Rule,
    parse_template,
)

__all__ = ["RoleSet", "expand_template", "labels_match"]

Traits = Mapping[str, Sequence[str]]
Selector = Mapping[str, Sequence[str]]


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None  # refused when the role is loaded; here it matches nothing


def _value_matches(pattern: str, value: str) -> bool:
    if pattern == WILDCARD:
        return True
    if len(pattern) >= 2 and pattern.startswith("^") and pattern.endswith("$"):
        regex = _regex(pattern)
        return regex is not None and regex.fullmatch(value) is not None
    return pattern == value


def labels_match(selector: Selector, labels: Mapping[str, str]) -> bool:
    """Tell whether a role's `node_labels` select a node with these labels.

    Every key must match (AND) and a key's values are alternatives (OR): `*` (the label must
    exist), `^...$` (a regular expression the whole value matches) or an exact value. `{'*':
    ['*']}` selects every node, even one without labels; an empty selector selects none, so a
    role that says nothing about nodes reaches none.
    """
    if not selector:
        return False
    for key, values in selector.items():
        if key == WILDCARD:
            if WILDCARD not in values:
                return False
            continue
        value = labels.get(key)
        if value is None or not any(_value_matches(p, value) for p in values):
            return False
    return True


def _usable(value: str) -> bool:
    return bool(value) and not any(c.isspace() or c == "," for c in value)


def expand_template(value: str, traits: Traits) -> list[str]:
    """Expand `{{internal.x}}` / `{{external.x}}` to the user's trait x; a literal stays as is.

    An expanded value that is empty or holds whitespace or a comma is dropped: it could not be
    a login, and a comma would split a certificate principal list.
    """
    parsed = parse_template(value)
    if parsed is None:
        return [value]
    out: list[str] = []
    for item in traits.get(parsed[1], ()):
        if _usable(item) and item not in out:
            out.append(item)
    return out


def _expand_all(values: Iterable[str], traits: Traits) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for value in values:
        out.update(dict.fromkeys(expand_template(value, traits)))
    return tuple(out)


def _expand_labels(selector: Selector, traits: Traits) -> dict[str, tuple[str, ...]]:
    # A key whose values all expand to nothing keeps no alternatives, so it matches no node.
    return {key: _expand_all(values, traits) for key, values in selector.items()}


@dataclass(frozen=True)
class _Side:
    """One side (allow or deny) of one role, templates expanded."""

    logins: tuple[str, ...]
    #: Whether the role as written names logins: a deny naming only a template the user has no
    #: trait for denies no login, rather than every login on the nodes it selects.
    names_logins: bool
    node_labels: dict[str, tuple[str, ...]]
    rules: tuple[Rule, ...]
    join: tuple[JoinPolicy, ...]


def _rule_matches(rule: Rule, resource: str, verb: str) -> bool:
    return ((WILDCARD in rule.resources or resource in rule.resources)
            and (WILDCARD in rule.verbs or verb in rule.verbs))


def _join_matches(policy: JoinPolicy, owner_roles: Collection[str]) -> bool:
    return ((WILDCARD in policy.roles or any(r in policy.roles for r in owner_roles))
            and ("ssh" in policy.kinds or WILDCARD in policy.kinds)
            and "peer" in policy.modes)


def _label_text(selector: Mapping[str, Sequence[str]]) -> str:
    return ",".join(f"{k}={'|'.join(v)}" for k, v in selector.items())


class RoleSet:
    """The roles a user holds, evaluated together with the user's traits."""

    def __init__(self, roles: Sequence[Role], traits: Traits | None = None) -> None:
        traits = traits or {}
        self.roles: tuple[Role, ...] = tuple(roles)
        self._traits = {k: tuple(v) for k, v in traits.items()}
        #: The names of the roles that decide, in order (a deleted role is not among them).
        self.names: tuple[str, ...] = tuple(r.metadata.name for r in self.roles)
        self._allow: list[tuple[str, _Side]] = []
        self._deny: list[tuple[str, _Side]] = []
        for role in self.roles:
            for side, out in ((role.spec.allow, self._allow), (role.spec.deny, self._deny)):
                out.append((role.metadata.name, _Side(
                    logins=_expand_all(side.logins, traits), names_logins=bool(side.logins),
                    node_labels=_expand_labels(side.node_labels, traits),
                    rules=tuple(side.rules), join=tuple(side.join_sessions))))

    @classmethod
    def of(cls, names: Iterable[str], lookup: Mapping[str, Role],
           traits: Traits | None = None) -> RoleSet:
        """Build from role names: a name not in `lookup` (a deleted role) grants nothing."""
        unique = dict.fromkeys(names)
        return cls([lookup[n] for n in unique if n in lookup], traits)

    def __eq__(self, other: object) -> bool:
        """Equal when built from the same roles and traits (a Subject compares by value)."""
        if not isinstance(other, RoleSet):
            return NotImplemented
        return self.roles == other.roles and self._traits == other._traits

    def __hash__(self) -> int:
        return hash(self.names)

    def __repr__(self) -> str:
        return f"RoleSet({', '.join(self.names) or 'no roles'})"

    def _roles_text(self) -> str:
        return ", ".join(self.names) or "none"

    # --- logins and nodes ------------------------------------------------------------------

    def _deny_logins(self) -> set[str]:
        return {login for _, deny in self._deny for login in deny.logins}

    def logins(self) -> list[str]:
        """The certificate's principals: every allowed login, minus every denied one."""
        denied = self._deny_logins()
        out: dict[str, None] = {}
        for _, allow in self._allow:
            out.update(dict.fromkeys(x for x in allow.logins if x not in denied))
        return list(out)

    def _deny_for(self, labels: Mapping[str, str], login: str) -> tuple[str, str] | None:
        """The first deny (role, rule) that refuses `login` on a node with these labels."""
        for name, deny in self._deny:
            if deny.node_labels:
                if not labels_match(deny.node_labels, labels):
                    continue
                if not deny.names_logins:
                    return name, f"deny.node_labels {_label_text(deny.node_labels)}"
                if login in deny.logins:
                    return name, f"deny.node_labels {_label_text(deny.node_labels)} + deny.logins"
            elif login in deny.logins:
                return name, "deny.logins"
        return None

    def node_logins(self, labels: Mapping[str, str]) -> list[str]:
        """The logins the roles admit on a node with these labels."""
        out: dict[str, None] = {}
        for _, allow in self._allow:
            if labels_match(allow.node_labels, labels):
                out.update(dict.fromkeys(
                    x for x in allow.logins if self._deny_for(labels, x) is None))
        return list(out)

    def can_see_node(self, labels: Mapping[str, str]) -> bool:
        """Tell whether a node is listed: some allow selects it and no deny hides it whole."""
        if not any(labels_match(a.node_labels, labels) for _, a in self._allow):
            return False
        return not any(d.node_labels and not d.names_logins and labels_match(d.node_labels, labels)
                       for _, d in self._deny)

    def check_node_login(self, node: str, labels: Mapping[str, str], login: str) -> None:
        """Refuse (AccessDenied naming the deciding role and rule) `login` on this node."""
        denied = self._deny_for(labels, login)
        if denied is not None:
            role, rule = denied
            raise AccessDenied(f"role {role!r} denies login {login!r} on node {node!r} ({rule})")
        for _, allow in self._allow:
            if login in allow.logins and labels_match(allow.node_labels, labels):
                return
        raise AccessDenied(
            f"no role allows login {login!r} on node {node!r} (roles: {self._roles_text()})")

    # --- resource rules --------------------------------------------------------------------

    def check_rule(self, resource: str, verb: str) -> None:
        """Refuse (AccessDenied naming the deciding role) `verb` on `resource`; deny wins."""
        for name, deny in self._deny:
            if any(_rule_matches(r, resource, verb) for r in deny.rules):
                raise AccessDenied(f"role {name!r} denies {verb} on {resource!r} (deny.rules)")
        if not any(_rule_matches(r, resource, verb) for _, a in self._allow for r in a.rules):
            raise AccessDenied(
                f"no role allows {verb} on {resource!r} (roles: {self._roles_text()})")

    def allows(self, resource: str, verb: str) -> bool:
        """Tell whether `verb` on `resource` is allowed (check_rule without the message)."""
        try:
            self.check_rule(resource, verb)
        except AccessDenied:
            return False
        return True

    # --- sessions --------------------------------------------------------------------------

    def may_join(self, owner_roles: Collection[str]) -> bool:
        """Tell whether these roles may join (as a peer) an SSH session of a user holding `owner_roles`."""
        if any(_join_matches(p, owner_roles) for _, d in self._deny for p in d.join):
            return False
        return any(_join_matches(p, owner_roles) for _, a in self._allow for p in a.join)

    # --- options ---------------------------------------------------------------------------

    @property
    def max_session_ttl(self) -> timedelta:
        """The strictest role caps a certificate's life."""
        return min((r.spec.options.max_session_ttl for r in self.roles),
                   default=DEFAULT_MAX_SESSION_TTL)

    def _granted(self, values: Iterable[bool | None]) -> bool:
        said = list(values)
        return True in said and False not in said

    @property
    def forward_agent(self) -> bool:
        """Granted when some role says true and none says false (unset grants nothing)."""
        return self._granted(r.spec.options.forward_agent for r in self.roles)

    @property
    def port_forwarding(self) -> bool:
        """Granted when some role says true and none says false (unset grants nothing)."""
        return self._granted(r.spec.options.port_forwarding for r in self.roles)

    @property
    def client_idle_timeout(self) -> timedelta | None:
        """The shortest idle timeout any role sets; None leaves the cluster's setting."""
        return min((t for r in self.roles if (t := r.spec.options.client_idle_timeout) is not None),
                   default=None)

    @property
    def disconnect_expired_cert(self) -> bool | None:
        """True if any role asks for it (the stricter choice); None leaves the cluster's setting."""
        said = [r.spec.options.disconnect_expired_cert for r in self.roles]
        if True in said:
            return True
        return False if False in said else None
