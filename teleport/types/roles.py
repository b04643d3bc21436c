"""The `role` resource: who may reach which nodes as which logins, and act on which resources.

Written as Teleport writes it (`kind: role`, `version: v5`; v3 and v4 are accepted and stored as
v5). Everything a role can say is checked here, at load: an unknown field, a bad regular
expression, an unknown verb or a template naming an unknown namespace is one error naming the
field, so `tctl create` refuses the file before anything is stored. What the rules mean is
decided in `teleport.rbac.roles`; this module only knows what a well-formed role is.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator, model_validator

from teleport.errors import BadParameter
from teleport.types.resource import Model, Resource
from teleport.utils.duration import format_duration, parse_duration

WILDCARD = "*"
#: The verbs a rule may grant or deny (`*` is every verb).
VERBS = frozenset({"list", "read", "create", "update", "delete"})
#: The resources rules speak of: the stored kinds, plus `session` (recordings), `event` (the
#: audit log) and `session_tracker` (live sessions). `*` is every resource.
RULE_RESOURCES = frozenset({
    "user", "role", "token", "lock", "cert_authority", "node", "cluster_name",
    "session", "event", "session_tracker", "github", "oidc", "trusted_cluster", "remote_cluster",
})
#: Template namespaces: `{{internal.logins}}` (the user's own traits) and `{{external.x}}`
#: (traits an identity provider asserted; for local users the same trait map).
TEMPLATE_NAMESPACES = frozenset({"internal", "external"})
_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][\w-]*)\.([A-Za-z_][\w-]*)\s*\}\}")
#: What a role's session TTL defaults to, and the longest any certificate lives.
DEFAULT_MAX_SESSION_TTL = timedelta(hours=30)
JOIN_MODES = frozenset({"peer"})  # observer and moderator modes are not built yet
SESSION_KINDS = frozenset({"ssh", WILDCARD})


def _as_list(value: Any) -> Any:
    """A label value or a list of them: Teleport writes both `env: prod` and `env: [a, b]`."""
    return [value] if isinstance(value, str) else value


def check_template(value: str, where: str) -> None:  # where: "" or a label name
    """Refuse (ValueError, inside a model) a value whose `{{...}}` is malformed or names an unknown namespace."""
    if "{{" not in value and "}}" not in value:
        return
    where = f"{where}: " if where else ""
    match = _TEMPLATE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{where}{value!r} is not a template like {{{{internal.logins}}}}")
    if match.group(1) not in TEMPLATE_NAMESPACES:
        raise ValueError(f"{where}unknown template namespace {match.group(1)!r} in {value!r} "
                           "(use internal or external)")


def parse_template(value: str) -> tuple[str, str] | None:
    """Return (namespace, trait) of a `{{namespace.trait}}` value, or None for a literal."""
    match = _TEMPLATE.fullmatch(value.strip())
    return (match.group(1), match.group(2)) if match else None


def check_regex(value: str, where: str) -> bool:
    """Refuse a `^...$` value that is not a valid regular expression; tell whether it is one."""
    if not (value.startswith("^") and value.endswith("$")):
        return False
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError(f"{where}: invalid regular expression {value!r}: {err}") from None
    return True


def check_label_value(value: str, where: str) -> None:
    """Refuse a `^...$` label value that is not a valid regular expression, or a bad template."""
    if not check_regex(value, where):
        check_template(value, where)


Labels = Annotated[dict[str, list[str]], BeforeValidator(
    lambda v: {k: _as_list(x) for k, x in v.items()} if isinstance(v, dict) else v)]


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except BadParameter as err:
            raise ValueError(str(err)) from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value / 1e9)  # Teleport's JSON writes nanoseconds
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration),
                     PlainSerializer(format_duration, return_type=str)]


class Rule(Model):
    resources: list[str] = Field(min_length=1)
    verbs: list[str] = Field(min_length=1)

    @field_validator("resources")
    @classmethod
    def _known_resources(cls, value: list[str]) -> list[str]:
        for name in value:
            if name != WILDCARD and name not in RULE_RESOURCES:
                raise ValueError(f"unknown resource {name!r} (known: {', '.join(sorted(RULE_RESOURCES))}, *)")
        return value

    @field_validator("verbs")
    @classmethod
    def _known_verbs(cls, value: list[str]) -> list[str]:
        for verb in value:
            if verb != WILDCARD and verb not in VERBS:
                raise ValueError(f"unknown verb {verb!r} (known: {', '.join(sorted(VERBS))}, *)")
        return value


class JoinPolicy(Model):
    """Whose live sessions a role may join: those of users holding one of `roles`."""

    name: str = ""
    roles: list[str] = Field(min_length=1)
    kinds: list[str] = Field(default_factory=lambda: ["ssh"])
    modes: list[str] = Field(default_factory=lambda: ["peer"])

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        for kind in value:
            if kind not in SESSION_KINDS:
                raise ValueError(f"unknown session kind {kind!r} (known: ssh, *)")
        return value

    @field_validator("modes")
    @classmethod
    def _known_modes(cls, value: list[str]) -> list[str]:
        for mode in value:
            if mode not in JOIN_MODES:
                raise ValueError(f"session mode {mode!r} is not supported yet (supported: peer)")
        return value


class RoleConditions(Model):
    logins: list[str] = Field(default_factory=list)
    node_labels: Labels = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    join_sessions: list[JoinPolicy] = Field(default_factory=list)

    @field_validator("logins")
    @classmethod
    def _logins(cls, value: list[str]) -> list[str]:
        for login in value:
            if not login or any(c in login for c in " \t\n,"):
                raise ValueError(f"invalid login {login!r}")
            check_template(login, "")
        return value

    @field_validator("node_labels")
    @classmethod
    def _labels(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for key, values in value.items():
            if not values:
                raise ValueError(f"label {key!r} has no values")
            for item in values:
                check_label_value(item, f"label {key!r}")
            if key == WILDCARD and values != [WILDCARD]:
                raise ValueError("the label key '*' takes only the value '*'")
        return value


class RoleOptions(Model):
    max_session_ttl: Duration = DEFAULT_MAX_SESSION_TTL
    #: None: not said, which grants nothing (`forward_agent`, `port_forwarding`) and leaves the
    #: cluster's setting (`client_idle_timeout`, `disconnect_expired_cert`).
    forward_agent: bool | None = None
    port_forwarding: bool | None = None
    client_idle_timeout: Duration | None = None
    disconnect_expired_cert: bool | None = None
    permit_x11_forwarding: bool = False

    @field_validator("max_session_ttl")
    @classmethod
    def _positive_ttl(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration, e.g. 8h")
        return value

    @field_validator("permit_x11_forwarding")
    @classmethod
    def _no_x11(cls, value: bool) -> bool:
        if value:
            raise ValueError("X11 forwarding is not supported yet")
        return value


class RoleSpec(Model):
    options: RoleOptions = Field(default_factory=RoleOptions)
    allow: RoleConditions = Field(default_factory=RoleConditions)
    deny: RoleConditions = Field(default_factory=RoleConditions)


class Role(Resource):
    """A role as stored: always v5 (older versions are converted when read)."""

    kind: Literal["role"] = "role"
    version: Literal["v5"] = "v5"
    spec: RoleSpec = Field(default_factory=RoleSpec)

    @model_validator(mode="before")
    @classmethod
    def _convert(cls, data: Any) -> Any:
        """Read v3 and v4 as v5: a v3 role with logins and no `node_labels` reaches every node,
        as it did in Teleport; v4 differs from v5 only in what this cluster does not serve."""
        if not isinstance(data, dict) or data.get("version") not in ("v3", "v4"):
            return data
        return dict(convert_v3(data), version="v5")

    @field_validator("metadata")
    @classmethod
    def _role_name(cls, value: Any) -> Any:
        if not role_name_ok(value.name):
            raise ValueError(f"invalid role name {value.name!r}")
        return value


def convert_v3(data: Any) -> Any:
    """Give a v3 role with allowed logins and no `allow.node_labels` the wildcard labels."""
    if not isinstance(data, dict) or data.get("version") != "v3":
        return data
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return data
    allow = spec.get("allow")
    if isinstance(allow, dict) and "node_labels" not in allow and allow.get("logins"):
        allow = dict(allow, node_labels={WILDCARD: WILDCARD})
        spec = dict(spec, allow=allow)
    return dict(data, spec=spec)


def role_name_ok(name: str) -> bool:
    """Tell whether a role name is safe in a key path and a comma-separated list."""
    return bool(name) and len(name) <= 253 and not any(c in name for c in "/\\ \t\n,:")


def check_role_name(name: str) -> None:
    """Refuse a role name that could change a key path or a comma-separated list."""
    if not role_name_ok(name):
        raise BadParameter(f"invalid role name {name!r}")
