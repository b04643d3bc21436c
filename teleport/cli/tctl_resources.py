"""`tctl get`, `create`, `rm` and `lock`: every kind through the resource registry.

A command names a kind by its name or an alias (`roles`, `cas`); the registry says which kinds
exist, which can be created and which `get all` prints, and the auth API's generic resource
routes do the rest, so a new kind needs no code here unless it wants its own text table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from teleport.cli.common import flag_duration, table
from teleport.errors import AlreadyExists, BadParameter, NotFound
from teleport.types.codec import dump_yaml, parse_yaml, to_dict
from teleport.types.registry import ADMIN, KINDS_REGISTRY, ResourceKind, lookup, lookup_many
from teleport.types.resource import Resource

if TYPE_CHECKING:
    from teleport.auth.client import AuthClient

ALL = "all"
FORMATS = ("yaml", "json", "text")


def _get_args(get: Any) -> None:
    get.add_argument("ref")
    get.add_argument("--format", choices=FORMATS, default="yaml")
    get.add_argument("--with-secrets", action="store_true",
                     help="include secrets: connectors' client secrets; with the admin "
                          "identity on the auth host also CA private keys and users' "
                          "credentials (a backup for teleport start --bootstrap)")


def _create_args(create: Any) -> None:
    create.add_argument("filename", nargs="?")
    create.add_argument("-f", "--force", action="store_true", help="overwrite existing resources")


def _rm_args(remove: Any) -> None:
    remove.add_argument("ref")


def _lock_args(lock: Any) -> None:
    target = lock.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", help="the Teleport user to lock")
    target.add_argument("--role", help="lock every user holding this role")
    target.add_argument("--node", help="the host UUID of the node to lock")
    lock.add_argument("--message", default="", help="the reason shown to those locked out")
    until = lock.add_mutually_exclusive_group()
    until.add_argument("--ttl", help="how long the lock holds, e.g. 1h (default: until removed)")
    until.add_argument("--expires", help="when the lock stops holding, RFC 3339 (2006-01-02T15:04:05Z)")


_ARGS: dict[str, tuple[str, Callable[[Any], None]]] = {
    "get": (f"Print resources: <kind>[/<name>] or all (kinds: {', '.join(sorted(KINDS_REGISTRY))})",
            _get_args),
    "create": ("Create resources from a YAML file (`tctl get` output)", _create_args),
    "rm": ("Delete a resource: <kind>/<name>, e.g. role/dev", _rm_args),
    "lock": ("Lock a user, a role or a node out of the cluster", _lock_args),
}


def add_parser(sub: Any, name: str) -> None:
    """Declare `name` (`get`, `create`, `rm` or `lock`) on tctl's subcommand parser."""
    help_text, add_arguments = _ARGS[name]
    add_arguments(sub.add_parser(name, help=help_text))


def split_ref(ref: str) -> tuple[ResourceKind, str]:
    """Split `<kind>[/<name>]`; the name may contain slashes (`cert_authority/host/...`)."""
    word, _, name = ref.partition("/")
    return lookup(word), name


async def get(args: argparse.Namespace, client: AuthClient) -> int:
    """Print resources as YAML (re-creatable with `tctl create`), a JSON array or tables."""
    secrets = args.with_secrets
    word, _, name = args.ref.partition("/")
    if args.ref == ALL:
        kinds = [k for k in KINDS_REGISTRY.values() if k.in_get_all]
        found = [(k, await client.list_resources(k.name, with_secrets=secrets)) for k in kinds]
    elif not name:  # a kind, or several (`connectors`)
        found = [(k, await client.list_resources(k.name, with_secrets=secrets))
                 for k in lookup_many(word)]
    else:
        kind, name = split_ref(args.ref)
        found = [(kind, [await client.get_resource(kind.name, name, with_secrets=secrets)])]
    if args.format == "json":
        print(json.dumps([to_dict(r) for _, rs in found for r in rs], indent=2))
    elif args.format == "text":
        print("\n\n".join(text_table(kind, rs) for kind, rs in found))
    else:
        sys.stdout.write(dump_yaml(r for _, rs in found for r in rs))
    return 0


async def create(args: argparse.Namespace, client: AuthClient) -> int:
    """Create (or with -f, overwrite) every resource of a file, or none if one is bad."""
    source = args.filename or "-"
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read()
    except OSError as err:
        raise BadParameter(f"cannot read {source}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise BadParameter(f"{source} is not UTF-8 text") from None
    # Every document is parsed and checked before the first is applied: a file is all or
    # nothing as far as its content and the cluster's current state can tell.
    documents = parse_yaml(text, source)
    planned: list[tuple[ResourceKind, Resource]] = []
    skipped: list[str] = []
    seen: set[tuple[str, str]] = set()
    for number, resource in enumerate(documents, start=1):
        where = f"{source} (document {number})" if len(documents) > 1 else source
        kind = KINDS_REGISTRY.get(resource.kind)
        if kind is None:
            raise BadParameter(f"{where}: creating {resource.kind} resources is not supported")
        if not kind.creatable:
            skipped.append(f'skipping {kind.name} "{resource.metadata.name}": '
                           f"{kind.name} resources are not created with tctl create")
            continue
        NAME_CHECKS.get(kind.name, _no_check)(resource.metadata.name)
        if kind.secrets_to == ADMIN and resource.without_secrets() != resource:
            raise BadParameter(f"{where}: {kind.name} {resource.metadata.name!r} carries "
                               "secrets (spec.local_auth): they are restored only by "
                               "`teleport start --bootstrap` into a new backend")
        if (kind.name, resource.metadata.name) in seen:
            raise BadParameter(f"{where}: {kind.name} {resource.metadata.name!r} appears twice "
                               "in the file")
        seen.add((kind.name, resource.metadata.name))
        planned.append((kind, resource))
    await _check_user_roles(client, [r for _, r in planned], source)
    existing: set[tuple[str, str]] = set()
    unchanged: set[tuple[str, str]] = set()
    for kind, resource in planned:
        try:
            stored = await client.get_resource(kind.name, resource.metadata.name)
        except NotFound:
            continue
        if not args.force:
            raise AlreadyExists(f'{kind.name} "{resource.metadata.name}" already exists, '
                                "use -f to overwrite")
        existing.add((kind.name, resource.metadata.name))
        # Re-applying what is stored changes nothing (the presets and static tokens of
        # `get all` output): left alone, it is neither refused nor audited as a change.
        if to_dict(stored) == to_dict(resource):
            unchanged.add((kind.name, resource.metadata.name))
    for line in skipped:
        print(line, file=sys.stderr)
    # In the registry's order, so that roles exist before the users that hold them.
    order = {name: i for i, name in enumerate(KINDS_REGISTRY)}
    for kind, resource in sorted(planned, key=lambda p: order[p[0].name]):
        key = (kind.name, resource.metadata.name)
        if key in unchanged:
            print(f'{kind.name} "{resource.metadata.name}" is unchanged')
            continue
        stored = await client.put_resource(resource, overwrite=key in existing)
        done = "updated" if key in existing else "created"
        print(f'{kind.name} "{stored.metadata.name}" has been {done}')
    return 0


async def _check_user_roles(client: AuthClient, planned: Sequence[Resource], source: str) -> None:
    """Refuse a user whose roles neither the file nor the cluster has, before anything is stored."""
    from teleport.types.resources import User

    users = [r for r in planned if isinstance(r, User)]
    if not any(u.spec.roles for u in users):
        return
    known = {r.metadata.name for r in planned if r.kind == "role"}
    known |= {r.metadata.name for r in await client.list_resources("role")}
    for user in users:
        for role in user.spec.roles:
            if role not in known:
                raise BadParameter(f'{source}: user "{user.metadata.name}" has role "{role}", '
                                   "which does not exist")


async def rm(args: argparse.Namespace, client: AuthClient) -> int:
    """Delete one resource named `<kind>/<name>`."""
    kind, name = split_ref(args.ref)
    if not name:
        raise BadParameter(f"specify the resource to delete as {kind.name}/<name>")
    await client.delete_resource(kind.name, name)
    print(f'{kind.name} "{name}" has been deleted')
    return 0


async def lock(args: argparse.Namespace, client: AuthClient) -> int:
    """Create a lock on one user, role or node, until removed or until its expiry."""
    import uuid

    from teleport.types.locks import Lock, LockSpec, LockTarget
    from teleport.types.resource import Metadata
    from teleport.utils.clock import parse_time

    now = datetime.now(timezone.utc)
    expires: datetime | None = None
    if args.ttl:
        ttl = flag_duration(args.ttl, "--ttl")
        if ttl <= timedelta(0):
            raise BadParameter(f"--ttl must be a positive duration, not {args.ttl!r}")
        expires = now + ttl
    elif args.expires:
        expires = parse_time(args.expires, "--expires")
        if expires <= now:
            raise BadParameter(f"--expires {args.expires} is in the past")
    target = LockTarget(user=args.user or "", role=args.role or "", node=args.node or "")
    resource = Lock(metadata=Metadata(name=str(uuid.uuid4()), expires=expires),
                    spec=LockSpec(target=target, message=args.message, expires=expires))
    stored = await client.put_resource(resource, overwrite=False)
    print(f'Created a lock with name "{stored.metadata.name}".')
    return 0


# --- text tables ---------------------------------------------------------------------------

def text_table(kind: ResourceKind, resources: Sequence[Resource]) -> str:
    """Format resources of one kind as Teleport's text collections do (a Name column if no
    table of its own)."""
    headers, row = TEXT_TABLES.get(kind.name, (["Name"], _name_row))
    return table(headers, [[_cell(c) for c in row(r)] for r in resources])


def _name_row(r: Any) -> list[str]:
    return [r.metadata.name]


def _role_row(r: Any) -> list[str]:
    allow = r.spec.allow
    labels = ("<all nodes>" if "*" in allow.node_labels
              else ",".join(f"{k}={v[0]}" if len(v) == 1 else f"{k}=[{' '.join(v)}]"
                            for k, v in allow.node_labels.items()))
    rules = ",".join(f"{','.join(rule.resources)}:{','.join(rule.verbs)}" for rule in allow.rules)
    return [r.metadata.name, ",".join(allow.logins), labels, rules]


def _user_row(u: Any) -> list[str]:
    return [u.metadata.name, ",".join(u.spec.roles), ",".join(u.logins)]


def _token_row(t: Any) -> list[str]:
    return [t.metadata.name, ",".join(r.capitalize() for r in t.spec.roles),
            _when(t.metadata.expires)]


def _lock_row(lk: Any) -> list[str]:
    return [lk.metadata.name, lk.spec.target.describe(), lk.spec.message, _when(lk.spec.expires)]


def _node_row(n: Any) -> list[str]:
    return [n.spec.hostname, n.metadata.name, n.spec.addr,
            ",".join(f"{k}={v}" for k, v in sorted(n.all_labels().items())), n.spec.version]


def _ca_row(ca: Any) -> list[str]:
    from teleport.keys.pin import ca_pin
    from teleport.keys.ssh import fingerprint

    prints = ([fingerprint(k) for k in ca.trusted_ssh_public_keys()]
              or [ca_pin(c.encode()) for c in ca.trusted_tls_certs()])
    return [ca.spec.cluster_name, ca.spec.type, ",".join(prints)]


def _trusted_row(tc: Any) -> list[str]:
    roles = ", ".join(f"{m.remote} -> {','.join(m.local)}" for m in tc.spec.role_map)
    return [tc.metadata.name, "yes" if tc.spec.enabled else "no", tc.spec.web_proxy_addr, roles]


def _remote_row(rc: Any) -> list[str]:
    beat = rc.status.last_heartbeat
    return [rc.metadata.name, rc.status.connection,
            beat.strftime("%Y-%m-%d %H:%M:%S UTC") if beat.year > 1 else "never"]


def _when(value: datetime | None) -> str:
    return value.strftime("%d %b %y %H:%M UTC") if value else "never"


def _cell(value: str) -> str:
    """Quote a value with control characters so that no field can fake a row of the table."""
    return value if value.isprintable() else json.dumps(value)


TEXT_TABLES: dict[str, tuple[list[str], Callable[[Any], list[str]]]] = {
    "role": (["Role", "Allowed to login as", "Node Labels", "Access to resources"], _role_row),
    "user": (["User", "Roles", "Allowed Logins"], _user_row),
    "token": (["Token", "Type", "Expiry Time (UTC)"], _token_row),
    "lock": (["ID", "Target", "Message", "Expires"], _lock_row),
    "node": (["Host", "UUID", "Public Address", "Labels", "Version"], _node_row),
    "cert_authority": (["Cluster Name", "CA Type", "Fingerprint"], _ca_row),
    "trusted_cluster": (["Name", "Enabled", "Proxy Address", "Role Map"], _trusted_row),
    "remote_cluster": (["Remote Cluster", "Status", "Last Heartbeat"], _remote_row),
}


def _no_check(name: str) -> None:
    return None


def _check_user_name(name: str) -> None:
    from teleport.types.resources import check_user_name

    check_user_name(name)


#: Name rules the auth server applies, checked for the whole file before any is stored.
NAME_CHECKS: dict[str, Callable[[str], None]] = {"user": _check_user_name}


#: What tctl runs for the commands this module declares.
HANDLERS = {"get": get, "create": create, "rm": rm, "lock": lock}
