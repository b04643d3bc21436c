"""`tctl`: the admin tool, run on the auth host with that host's Admin identity, or elsewhere
as the logged-in `tsh` user (through the proxy; the user's roles decide)."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING, Any

from teleport.api.constants import TUNNEL_ADDR
from teleport.cli.common import (
    csv_list,
    needed_commands,
    quiet_on_closed_pipe,
    run,
    table,
    version_line,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

    from teleport.auth.client import AuthClient
    from teleport.types.rotation import Rotation
    from teleport.types.shapes import AuditEvent


def _tokens_args(tokens: Any) -> None:
    tokens.add_parser("ls", help="List tokens")
    tadd = tokens.add_parser("add", help="Create an invitation token")
    tadd.add_argument("--type", required=True, metavar="node|proxy|auth|trusted_cluster",
                      help="what the token is for: hosts of these roles (comma-separated), or a "
                           "leaf cluster's trust in this one")
    tadd.add_argument("--ttl", default="30m", help="how long the token is valid (default 30m)")
    tadd.add_argument("--value", help="use this token instead of a random one")
    for name in ("rm", "del"):
        t = tokens.add_parser(name, help="Delete a token")
        t.add_argument("token")


def _nodes_args(nodes: Any) -> None:
    nodes.add_parser("ls", help="List registered nodes")
    nadd = nodes.add_parser("add", help="Create an invitation token for new hosts")
    nadd.add_argument("--roles", default="node", help="comma-separated roles: node, proxy, auth")
    nadd.add_argument("--ttl", default="30m", help="how long the token is valid (default 30m)")
    nadd.add_argument("--token", help="use this token instead of a random one")


def _auth_args(auth: Any) -> None:
    export = auth.add_parser("export", help="Export CA public keys for OpenSSH")
    export.add_argument("--type", choices=["user", "host", "tls"],
                        help="user: a line for sshd's TrustedUserCAKeys; host: a known_hosts "
                             "@cert-authority line; tls: the PEM certificate (default: user and host)")
    rotate = auth.add_parser("rotate", help="Rotate certificate authorities in the cluster")
    rotate.add_argument("--type", choices=["user", "host", "tls", "all"], default="all",
                        help="which CA to rotate (default: all)")
    rotate.add_argument("--grace-period", default=None,
                        help="how long the old CA stays trusted (default 48h)")
    rotate.add_argument("--manual", action="store_true",
                        help="step the phases yourself with --phase instead of automatically")
    rotate.add_argument("--phase", choices=["init", "update_clients", "update_servers", "standby",
                                            "rollback"],
                        help="the phase to move to (with --manual)")


def _audit_args(audit: Any) -> None:
    events = audit.add_parser("events", help="Print audit events, oldest first")
    events.add_argument("--since", default="24h", help="a duration ago (1h) or an RFC 3339 time (default 24h)")
    events.add_argument("--until", help="a duration ago or an RFC 3339 time (default now)")
    events.add_argument("--type", help="comma-separated event types, e.g. session.start,exec")
    events.add_argument("--user", default="", help="only events of this Teleport user")
    events.add_argument("--limit", default="500", help="print at most this many events (default 500)")
    events.add_argument("--format", default="text", help="text (a table) or json")


#: tctl's own commands: help, and how to declare their actions (None: no actions).
_OWN: dict[str, tuple[str, Callable[[Any], None] | None]] = {
    "tokens": ("Manage invitation tokens", _tokens_args),
    "nodes": ("Manage nodes", _nodes_args),
    "auth": ("Certificate authority operations", _auth_args),
    "status": ("Show the cluster status, CA rotations and the CA pin", None),
    "version": ("Print the version", None),
    "audit": ("Search the audit log", _audit_args),
}
#: Every command, in help order, and the module that declares and runs it. A command line
#: imports only the modules of the commands it names: the resource commands load every
#: resource model, which `nodes ls` does not need.
COMMANDS = {"users": "teleport.cli.tctl_users",
            **dict.fromkeys(["get", "create", "rm", "lock"], "teleport.cli.tctl_resources"),
            **dict.fromkeys(_OWN, __name__)}


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tctl", description="Admin tool for the Teleport cluster.")
    parser.add_argument("-c", "--config", help="path to teleport.yaml (default /etc/teleport.yaml if present)")
    parser.add_argument("--data-dir", help="data directory of the auth server, overriding the config")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in needed_commands(argv, COMMANDS):
        if COMMANDS[name] != __name__:
            importlib.import_module(COMMANDS[name]).add_parser(sub, name)
            continue
        help_text, add_actions = _OWN[name]
        command = sub.add_parser(name, help=help_text)
        if add_actions is not None:
            add_actions(command.add_subparsers(dest="action", metavar="<action>"))
    return parser


async def _client(args: argparse.Namespace) -> AuthClient:
    from pathlib import Path

    from teleport.auth.client import AuthClient
    from teleport.auth.identity_file import IdentityFile
    from teleport.config.admin import admin_target
    from teleport.errors import NotFound
    from teleport.utils.addr import parse_addr

    target = admin_target(args.config, args.data_dir)
    try:
        identity = IdentityFile.load(Path(target.data_dir), "Admin")
    except NotFound:
        # Away from the auth host: act as the logged-in tsh user, whose roles decide.
        from teleport.client.authapi import profile_auth_client
        from teleport.client.profile import current_profile

        try:
            profile = current_profile()
        except NotFound:
            raise NotFound(f"no admin identity in {target.data_dir} and no tsh profile: run "
                           "tctl on the auth server (with the same --config or --data-dir as "
                           "teleport start), or 'tsh login' first") from None
        return profile_auth_client(profile)
    return AuthClient.from_identity(identity, [parse_addr(a) for a in target.auth_addrs])


async def _tokens(args: argparse.Namespace, client: AuthClient) -> int:
    if args.action == "add":
        return await _tokens_add(args, client)
    if args.action == "ls":
        provision, signup = await client.list_tokens()
        rows = []
        for token in provision:
            exp = token.metadata.expires
            rows.append([token.metadata.name, ",".join(r.capitalize() for r in token.spec.roles),
                         exp.strftime("%d %b %y %H:%M UTC") if exp else "never"])
        for st in signup:
            exp = st.metadata.expires
            rows.append([st.metadata.name, "Signup", exp.strftime("%d %b %y %H:%M UTC") if exp else "never"])
        print(table(["Token", "Type", "Expiry Time (UTC)"], rows))
    else:
        await client.delete_token(args.token)
        print(f"Token {args.token} has been deleted")
    return 0


async def _nodes(args: argparse.Namespace, client: AuthClient) -> int:
    if args.action == "add":
        return await _nodes_add(args, client)
    nodes = sorted(await client.list_nodes(), key=lambda n: n.name)
    rows = [[n.name, n.id, TUNNEL_ADDR if n.tunnel else n.addr,
             ",".join(f"{k}={v}" for k, v in sorted(n.labels.items()))] for n in nodes]
    print(table(["Node Name", "Node ID", "Address", "Labels"], rows))
    return 0


async def _tokens_add(args: argparse.Namespace, client: AuthClient) -> int:
    from teleport.utils.duration import format_duration, parse_duration

    roles = csv_list(args.type)
    if "trusted_cluster" not in roles:
        return await _invite_hosts(client, roles, args.ttl, args.value)
    ttl = parse_duration(args.ttl)
    token = await client.create_token(roles, ttl, args.value)
    print(f"The cluster invite token: {token.metadata.name}")
    print(f"This token will expire in {format_duration(ttl)}.\n")
    print("Use this token when defining a trusted cluster resource on a remote cluster.")
    return 0


async def _nodes_add(args: argparse.Namespace, client: AuthClient) -> int:
    return await _invite_hosts(client, csv_list(args.roles), args.ttl, args.token)


async def _invite_hosts(client: AuthClient, roles: list[str], ttl_text: str,
                        value: str | None) -> int:
    """Make a join token for hosts and print how to start one with it."""
    from teleport.keys.pin import ca_pin
    from teleport.utils.duration import format_duration, parse_duration

    ttl = parse_duration(ttl_text)
    token = await client.create_token(roles, ttl, value)
    pin = ca_pin((await client.get_ca("tls")).trusted_tls_certs()[0].encode())
    # The proxy's public web address when there is one (the node joins and tunnels through it,
    # as the manual shows), else the auth server's.
    proxies = [p.spec.public_addr for p in await client.list_servers("proxy") if p.spec.public_addr]
    auth_servers = await client.list_servers("auth_server")
    auth_addr = (sorted(proxies)[0] if proxies else auth_servers[0].spec.addr if auth_servers
                 else str(client.addrs[0]))
    print(f"The invite token: {token.metadata.name}")
    print(f"This token will expire in {format_duration(ttl)}.\n")
    print("Run this on the new node to join the cluster:\n")
    print(f"teleport start \\\n   --roles={','.join(token.spec.roles)} \\\n"
          f"   --token={token.metadata.name} \\\n   --ca-pin={pin} \\\n   --auth-server={auth_addr}")
    return 0


async def _auth_export(args: argparse.Namespace, client: AuthClient) -> int:
    for ca_type in [args.type] if args.type else ["user", "host"]:
        sys.stdout.write((await client.get_ca(ca_type)).export())
    return 0


async def _auth(args: argparse.Namespace, client: AuthClient) -> int:
    return await (_auth_rotate if args.action == "rotate" else _auth_export)(args, client)


async def _auth_rotate(args: argparse.Namespace, client: AuthClient) -> int:
    from teleport.errors import BadParameter
    from teleport.utils.duration import parse_duration

    if args.phase and not args.manual:
        raise BadParameter("--phase needs --manual: an automatic rotation moves its phases itself")
    if args.grace_period is not None:
        parse_duration(args.grace_period)  # a typo is one line here, before any request
    changed = await client.rotate(args.type, mode="manual" if args.manual else "auto",
                                  phase=args.phase, grace_period=args.grace_period)
    names = [ca.spec.type for ca in changed]
    phase = changed[0].spec.rotation.phase if changed else args.phase
    which = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    print(f'Updated rotation phase of the {which} CA{"" if len(names) == 1 else "s"} to "{phase}". '
          "To check status use 'tctl status'")
    return 0


async def _status(args: argparse.Namespace, client: AuthClient) -> int:
    from teleport.keys.pin import ca_pin

    cluster = (await client.ping()).cluster_name
    rows = [("Cluster", cluster)]
    pins: list[tuple[str, str]] = []
    for ca_type in ("user", "host", "tls"):
        ca = await client.get_ca(ca_type)
        rows.append((f"{ca_type.capitalize() if ca_type != 'tls' else 'TLS'} CA",
                     rotation_status(ca.spec.rotation)))
        if ca_type == "tls":
            active = [k.cert for k in ca.spec.active_keys.tls]
            other = [k.cert for k in ca.spec.additional_trusted_keys.tls]
            pins = [("CA pin", ca_pin(c.encode())) for c in active]
            role = "new" if ca.spec.rotation.phase == "init" else "old" \
                if ca.spec.rotation.phase in ("update_clients", "update_servers") else "new, rolled back"
            pins += [("CA pin", f"{ca_pin(c.encode())} ({role}, also trusted)") for c in other]
    for key, value in rows + pins:
        print(f"{key.ljust(8)} {value}")
    return 0


def rotation_status(rotation: Rotation) -> str:
    """One line on a CA's rotation: never, when it last rotated, or where it is now."""
    if not rotation.in_progress:
        last = rotation.last_rotated
        return "never updated" if last.year == 1 else f"rotated {last:%Y-%m-%d %H:%M:%S} UTC"
    ends = rotation.ends()
    line = (f"rotating in {rotation.mode} mode, phase {rotation.phase}, "
            f"started {rotation.started:%Y-%m-%d %H:%M:%S} UTC")
    if ends is not None:
        line += f", grace period ends {ends:%Y-%m-%d %H:%M:%S} UTC"
    return line


async def _audit_events(args: argparse.Namespace, client: AuthClient) -> int:
    import json
    from datetime import datetime, timezone

    from teleport.errors import BadParameter
    from teleport.events.search import MAX_LIMIT

    if args.format not in ("text", "json"):
        raise BadParameter(f"--format must be text or json, not {args.format!r}")
    if not args.limit.isdigit() or int(args.limit) < 1:
        raise BadParameter(f"--limit must be a positive number, not {args.limit!r}")
    now = datetime.now(timezone.utc)
    since = _when(args.since, now, "--since")
    until = _when(args.until, now, "--until") if args.until else now
    events: list[AuditEvent] = []
    key = ""
    while len(events) < int(args.limit):
        page, key = await client.search_events(since, until, csv_list(args.type), args.user,
                                               min(int(args.limit) - len(events), MAX_LIMIT), key)
        events += page
        if not key:
            break
    if args.format == "json":
        print(json.dumps(events, indent=2))
        return 0
    rows = [[_cell(e.get("time", "")), _cell(e.get("event", "")), _cell(e.get("user", "")),
             _cell(e.get("login", "")), _cell(e.get("server_id", "")), _details(e)] for e in events]
    print(table(["Time", "Type", "User", "Login", "Server", "Details"], rows))
    return 0


def _when(text: str, now: datetime, flag: str) -> datetime:
    """Read a duration before now (`1h`) or an RFC 3339 time (UTC unless it says otherwise)."""
    from datetime import datetime

    from teleport.errors import BadParameter
    from teleport.utils.duration import parse_duration

    try:
        return now - parse_duration(text)
    except BadParameter:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadParameter(f"{flag}: {text!r} is neither a duration (1h) nor a time "
                           "(2006-01-02T15:04:05Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=now.tzinfo)


_DETAIL_FIELDS = ("sid", "command", "exitCode", "exitError", "method", "success", "error",
                  "path", "len", "action", "size", "addr.remote")


def _details(event: AuditEvent) -> str:
    return " ".join(f"{k}={_cell(event[k])}" for k in _DETAIL_FIELDS if event.get(k, "") != "")


def _cell(value: Any) -> str:
    """Quote a value with control characters so no event field can fake a row of the table."""
    import json

    text = json.dumps(value) if isinstance(value, bool) else str(value)
    return text if text.isprintable() else json.dumps(text)


HANDLERS = {"tokens": _tokens, "nodes": _nodes, "auth": _auth, "status": _status,
            "audit": _audit_events}


async def _dispatch(args: argparse.Namespace) -> int:
    handler = importlib.import_module(COMMANDS[args.command]).HANDLERS[args.command]
    async with await _client(args) as client:
        return int(await handler(args, client))


@quiet_on_closed_pipe
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(argv)
    args = parser.parse_args(argv)
    if args.command == "version":
        print(version_line())
        return 0
    if args.command is None or (args.command in ("users", "tokens", "nodes", "auth", "audit")
                                and getattr(args, "action", None) is None):
        _parser(["--help"]).print_help()  # every command, not only the one named
        return 2
    return run(_dispatch(args))


if __name__ == "__main__":
    sys.exit(main())
