"""YAML and JSON round trip of resources, with one-line errors for bad input.

Each kind's model and the YAML parser load on first use: listing nodes builds neither the role
nor the connector models, and JSON needs no YAML.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from teleport.errors import BadParameter
from teleport.types.registry import KINDS_REGISTRY, load_model
from teleport.types.resource import Resource
from teleport.types.shapes import ResourceJSON

#: Where each kind that travels has its model: the registry's kinds (what tctl manages) and
#: the records the cluster keeps for itself.
MODEL_PATHS: dict[str, str] = {
    **{kind.name: kind.model_path for kind in KINDS_REGISTRY.values()},
    "user_token": "teleport.types.resources:UserToken",
    "proxy": "teleport.types.resources:Server",
    "auth_server": "teleport.types.resources:Server",
    "cluster_name": "teleport.types.resources:ClusterName",
}


def from_dict(data: Any, where: str = "resource") -> Resource:
    """Validate one decoded resource; raise BadParameter naming the field at fault."""
    if not isinstance(data, Mapping):
        raise BadParameter(f"{where}: expected a mapping with kind, version, metadata, spec")
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        raise BadParameter(f"{where}: missing 'kind'")
    path = MODEL_PATHS.get(kind)
    if path is None:
        raise BadParameter(f"{where}: unsupported kind {kind!r} "
                           f"(known: {', '.join(sorted(MODEL_PATHS))})")
    model = load_model(path)
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
    from teleport.config import yamlsafe

    docs = yamlsafe.load_all(text, source)  # no aliases, no control characters
    if not docs:
        raise BadParameter(f"{source}: no resources found")
    many = len(docs) > 1
    return [from_dict(d, f"{source} (document {i + 1})" if many else source)
            for i, d in enumerate(docs)]


def dump_yaml(resources: Iterable[Resource]) -> str:
    """Print resources the way `tctl get` shows them."""
    import yaml

    return "---\n".join(
        yaml.safe_dump(to_dict(r), sort_keys=False, default_flow_style=False) for r in resources
    )
