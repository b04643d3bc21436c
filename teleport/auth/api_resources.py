"""Auth API routes for every registry kind: the one path `tctl get/create/rm` takes.

Each handler looks the kind up in `teleport.types.registry`, asks the caller's roles for the
kind's rule (`Call.check_rule`: tctl's Admin identity passes, a user is judged by their roles as
stored now) and then the kind's store on the auth server (`AuthServer.resources`). No route
knows a kind by name. A kind that holds secrets is sent without them unless asked for; what a
backup restores (a CA's private keys, users' credentials) only to tctl's admin identity.
"""

from __future__ import annotations

from typing import Any

from teleport.auth.api import ADMIN, NODE, PROXY, USER, Call, route
from teleport.auth.resources import KindStore, fresh_name
from teleport.errors import AlreadyExists, BadParameter, NotFound
from teleport.rbac import rules
from teleport.types.codec import from_dict, to_dict
from teleport.types.registry import ADMIN as ADMIN_ONLY
from teleport.types.registry import ResourceKind, lookup
from teleport.types.resource import Resource
from teleport.types.resources import Server
from teleport.types.shapes import ResourceJSON

CALLERS = [ADMIN, USER]


async def _public(kind: ResourceKind, store: KindStore, resource: Resource,
                  with_secrets: bool = False) -> ResourceJSON:
    """Encode a resource to leave the auth server: without its secrets unless asked for and
    allowed (`_with_secrets`); then with those its store keeps apart (a user's credentials)."""
    if with_secrets:
        resource = await store.with_secrets(resource)
    elif kind.has_secrets:
        resource = resource.without_secrets()
    return to_dict(resource)


async def _with_secrets(call: Call, kind: ResourceKind) -> bool:
    """`?with_secrets=true`: `read` on the kind, and for what the registry gives only to the
    admin identity (`secrets_to`), tctl on the auth host."""
    wanted = _flag(call.request.query.get("with_secrets", "false"), "with_secrets")
    if wanted:
        rules.check_read_secrets(call.subject, kind.rule_resource, kind.secrets_to == ADMIN_ONLY)
    return wanted


def _visible(call: Call, resource: Resource) -> bool:
    """Tell whether the caller may see a node: a user only those their roles reach."""
    if isinstance(resource, Server) and call.subject.kind == USER:
        return call.subject.access.can_see_node(resource.all_labels())
    return True


@route("GET", "/v1/resources/{kind}", CALLERS)
async def list_resources(call: Call) -> Any:
    kind = lookup(call.param("kind"))
    await call.check_rule(kind.rule_resource, "list")
    secrets = await _with_secrets(call, kind)
    store = call.auth.resources.store(kind)
    return [await _public(kind, store, r, secrets) for r in await store.list() if _visible(call, r)]


@route("GET", "/v1/resources/{kind}/{name}", CALLERS)
async def get_resource(call: Call) -> Any:
    kind = lookup(call.param("kind"))
    await call.check_rule(kind.rule_resource, "read")
    secrets = await _with_secrets(call, kind)
    store = call.auth.resources.store(kind)
    resource = await store.get(call.param("name"))
    if not _visible(call, resource):
        raise NotFound(f'{kind.name} "{call.param("name")}" not found')
    return await _public(kind, store, resource, secrets)


@route("PUT", "/v1/resources/{kind}", CALLERS)
async def put_resource(call: Call) -> Any:
    """Create a resource, or replace one with `?overwrite=true` (verb update, else create)."""
    kind = lookup(call.param("kind"))
    overwrite = _flag(call.request.query.get("overwrite", "false"), "overwrite")
    resource = _parse(kind, await call.json())
    store = call.auth.resources.store(kind)
    name = resource.metadata.name
    actor = call.identity.username
    exists = True
    if overwrite:
        try:
            await store.get(name)
        except NotFound:
            exists = False
    if overwrite and exists:
        await call.check_rule(kind.rule_resource, "update")
        return await _public(kind, store, await store.upsert(resource, actor))
    await call.check_rule(kind.rule_resource, "create")
    try:
        return await _public(kind, store, await store.create(resource, actor))
    except AlreadyExists:
        raise AlreadyExists(f'{kind.name} "{name}" already exists') from None


@route("DELETE", "/v1/resources/{kind}/{name}", CALLERS)
async def delete_resource(call: Call) -> Any:
    kind = lookup(call.param("kind"))
    await call.check_rule(kind.rule_resource, "delete")
    await call.auth.resources.store(kind).delete(call.param("name"), call.identity.username)
    return {}


@route("GET", "/v1/roles", [NODE, PROXY])
async def list_roles(call: Call) -> Any:
    """Answer every role, for the role cache nodes and proxies judge certificates with."""
    return [to_dict(r) for r in await call.auth.resources.list_roles()]


def _parse(kind: ResourceKind, data: dict[str, Any]) -> Resource:
    """Validate the body as a resource of `kind`; name it when the kind is named by the server."""
    if data.get("kind") != kind.name:
        raise BadParameter(f"expected a {kind.name} resource, not {data.get('kind')!r}")
    meta = data.get("metadata")
    if kind.auto_name and (meta is None or (isinstance(meta, dict) and not meta.get("name"))):
        data = dict(data, metadata=dict(meta or {}, name=fresh_name()))
    resource = from_dict(data, "resource")
    if kind.secrets_to == ADMIN_ONLY and to_dict(resource) != to_dict(resource.without_secrets()):
        # A user's credentials are set by signup and reset, or restored into a new backend.
        raise BadParameter(f'{kind.name} "{resource.metadata.name}" carries secrets '
                           "(spec.local_auth): they are restored only by `teleport start "
                           "--bootstrap` into a new backend")
    return resource


def _flag(value: str, name: str) -> bool:
    if value not in ("true", "false"):
        raise BadParameter(f"{name} must be true or false, not {value!r}")
    return value == "true"
