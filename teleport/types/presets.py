"""The roles every cluster starts with, as today's Teleport ships them, plus the manual's `admin`.

Created when the auth server starts and missing; an administrator may edit them, and no role
is removed while a user holds it.
"""

from __future__ import annotations

from teleport.types.roles import Role

ALL_VERBS = ["list", "read", "create", "update", "delete"]
READ_VERBS = ["list", "read"]
_OWN_LOGINS = ["{{internal.logins}}"]
_EVERY_NODE = {"*": "*"}
_SSH_OPTIONS = {"forward_agent": True, "port_forwarding": True, "max_session_ttl": "30h0m0s"}


def _role(name: str, description: str, spec: dict[str, object]) -> Role:
    return Role.model_validate({"kind": "role", "version": "v5",
                                "metadata": {"name": name, "description": description,
                                             "labels": {"teleport.internal/resource-type": "preset"}},
                                "spec": spec})


PRESETS: tuple[Role, ...] = (
    _role("access", "Access cluster resources", {
        "options": _SSH_OPTIONS,
        "allow": {"logins": _OWN_LOGINS, "node_labels": _EVERY_NODE},
    }),
    _role("editor", "Edit cluster configuration", {
        "options": {"max_session_ttl": "30h0m0s"},
        "allow": {"rules": [
            {"resources": ["user", "role", "token", "lock", "github", "oidc",
                           "trusted_cluster", "remote_cluster"],
             "verbs": ALL_VERBS},
            {"resources": ["cert_authority", "node", "cluster_name", "event"], "verbs": READ_VERBS},
        ]},
    }),
    _role("auditor", "Review cluster events and replay sessions", {
        "options": {"max_session_ttl": "30h0m0s"},
        "allow": {"rules": [
            {"resources": ["session", "event", "session_tracker"], "verbs": READ_VERBS},
        ]},
    }),
    _role("admin", "Administer the cluster: every node, resource and session", {
        "options": _SSH_OPTIONS,
        "allow": {"logins": _OWN_LOGINS, "node_labels": _EVERY_NODE,
                  "rules": [{"resources": ["*"], "verbs": ["*"]}],
                  "join_sessions": [{"name": "all", "roles": ["*"], "kinds": ["*"],
                                     "modes": ["peer"]}]},
    }),
)
PRESET_NAMES = frozenset(r.metadata.name for r in PRESETS)
