"""YAML and JSON round trip of resources, with one-line errors for bad input."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from teleport.config import yamlsafe
from teleport.errors import BadParameter
from teleport.types.connectors import GithubConnector, OIDCConnector
from teleport.types.locks import Lock
from teleport.types.resource import Resource
from teleport.types.resources import (
    CertAuthority,
    ClusterName,
    ProvisionToken,
    Server,
    User,
    UserToken,
)
from teleport.types.roles import Role
from teleport.types.shapes import ResourceJSON
from teleport.types.trusted import RemoteCluster, TrustedCluster

KINDS: dict[str, type[Resource]] = {
    "user": User,
    "token": ProvisionToken,
    "user_token": UserToken,
    "cert_authority": CertAuthority,
    "node": Server,
    "proxy": Server,
    "auth_server": Server,
    "cluster_name": ClusterName,
    "role": Role,
    "lock": Lock,
    "github": GithubConnector,
    "oidc": OIDCConnector,
    "trusted_cluster": TrustedCluster,
    "remote_cluster": RemoteCluster,
}


def from_dict(data: Any, where: str = "resource") -> Resource:
    """Validate one decoded resource; raise BadParameter naming the field at fault."""
    if not isinstance(data, Mapping):
        raise BadParameter(f"{where}: expected a mapping with kind, version, metadata, spec")
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        raise BadParameter(f"{where}: missing 'kind'")
    model = KINDS.get(kind)
    if model is None:
        raise BadParameter(f"{where}: unsupported kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        path, message = first_error(err, "resource")
        raise BadParameter(f"{where}: {kind} {path}: {message}") from None


def first_error(err: ValidationError, whole: str) -> tuple[str, str]:
    """Return the dotted path of pydantic's first error (`whole` if it is the whole value) and
    its message: one line is what users get, and the first error is the one to fix first."""
    first = err.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    return ".".join(str(p) for p in first["loc"]) or whole, message


def to_dict(resource: Resource) -> ResourceJSON:
    """Encode for YAML or JSON output; empty metadata fields are left out as tctl does."""
    data = resource.model_dump(mode="json", exclude_none=True)
    meta = data["metadata"]
    for field in ("description", "labels", "expires"):
        if not meta.get(field):
            meta.pop(field, None)
    return data


def parse_yaml(text: str, source: str = "<stdin>") -> list[Resource]:
    """Parse one or more `---`-separated resources."""
    docs = yamlsafe.load_all(text, source)  # no aliases, no control characters
    if not docs:
        raise BadParameter(f"{source}: no resources found")
    many = len(docs) > 1
    return [from_dict(d, f"{source} (document {i + 1})" if many else source)
            for i, d in enumerate(docs)]


def dump_yaml(resources: Iterable[Resource]) -> str:
    """Print resources the way `tctl get` shows them."""
    return "---\n".join(
        yaml.safe_dump(to_dict(r), sort_keys=False, default_flow_style=False) for r in resources
    )
