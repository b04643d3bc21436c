"""`tctl users`: invite, list, update, reset, unlock and delete local users."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from teleport.cli.common import csv_list, flag_duration, table
from teleport.rbac import DEFAULT_USER_ROLES

if TYPE_CHECKING:
    from teleport.auth.client import AuthClient
    from teleport.types.resources import UserToken

#: What `users add --ttl` defaults to and may reach, as in Teleport.
DEFAULT_SIGNUP_TTL = timedelta(hours=1)
MAX_SIGNUP_TTL = timedelta(hours=48)
#: How long a reset link lives when the token does not say (the auth server's choice: 8h).
DEFAULT_RESET_TTL = timedelta(hours=8)


def add_parser(sub: Any, name: str) -> None:
    """Declare `users` and its actions on tctl's subcommand parser."""
    users = sub.add_parser("users", help="Manage local users").add_subparsers(dest="action", metavar="<action>")
    add = users.add_parser("add", help="Create a user and print its signup link")
    add.add_argument("name")
    add.add_argument("logins", nargs="?", help="comma-separated OS logins (default: the user name)")
    add.add_argument("--logins", dest="logins_flag", help="comma-separated OS logins")
    add.add_argument("--roles", default=",".join(DEFAULT_USER_ROLES),
                     help=f"comma-separated roles (default: {','.join(DEFAULT_USER_ROLES)})")
    add.add_argument("--ttl", default="1h", help="how long the signup link is valid (default 1h, at most 48h)")
    update = users.add_parser("update", help="Change a user's roles or logins")
    update.add_argument("name")
    update.add_argument("--set-roles", help="comma-separated roles, replacing the user's roles")
    update.add_argument("--set-logins", help="comma-separated OS logins, replacing the user's logins")
    reset = users.add_parser("reset", help="Clear a user's password and second factor; print a link to set new ones")
    reset.add_argument("name")
    unlock = users.add_parser("unlock", help="Unlock a user locked out after failed logins")
    unlock.add_argument("name")
    users.add_parser("ls", help="List users")
    rm = users.add_parser("rm", help="Delete a user")
    rm.add_argument("name")


async def users(args: argparse.Namespace, client: AuthClient) -> int:
    """Run one `tctl users` action."""
    await ACTIONS[args.action](args, client)
    return 0


async def _add(args: argparse.Namespace, client: AuthClient) -> None:
    from teleport.errors import BadParameter
    from teleport.utils.duration import format_duration

    ttl = flag_duration(args.ttl, "--ttl")
    if not timedelta(0) < ttl <= MAX_SIGNUP_TTL:
        raise BadParameter(f"--ttl must be a duration between 1s and 48h, not {args.ttl!r}")
    logins = csv_list(args.logins_flag or args.logins) or [args.name]
    token = await client.create_user_signup(args.name, logins, csv_list(args.roles), ttl=ttl)
    proxy = await _proxy_addr(client)
    print(f"Signup token has been created and is valid for {format_duration(ttl)}. "
          "Share this URL with the user:")
    print(f"https://{proxy}/web/newuser/{token.metadata.name}")
    print(f"\nNOTE: make sure the {proxy.rsplit(':', 1)[0]} host is accessible.")


async def _update(args: argparse.Namespace, client: AuthClient) -> None:
    """Replace the roles and/or logins of a stored user (the resource path: read, change, put)."""
    from teleport.errors import BadParameter, ConnectionProblem
    from teleport.types.resources import User

    if args.set_roles is None and args.set_logins is None:
        raise BadParameter("nothing to update: pass --set-roles and/or --set-logins")
    roles, logins = csv_list(args.set_roles), csv_list(args.set_logins)
    if args.set_roles is not None and not roles:
        raise BadParameter("--set-roles needs at least one role")
    user = await client.get_resource("user", args.name)
    if not isinstance(user, User):
        raise ConnectionProblem(f"auth server answered with a {user.kind}, not a user")
    spec = user.spec
    changes = []
    if args.set_roles is not None:
        spec = spec.model_copy(update={"roles": roles})
        changes.append(f"New roles: {','.join(roles)}")
    if args.set_logins is not None:
        spec = spec.model_copy(update={"traits": {**spec.traits, "logins": logins}})
        changes.append(f"New logins: {','.join(logins)}")
    await client.put_resource(user.model_copy(update={"spec": spec}), overwrite=True)
    print(f"User {args.name} has been updated:")
    for change in changes:
        print(f"\t{change}")


async def _reset(args: argparse.Namespace, client: AuthClient) -> None:
    from teleport.utils.duration import format_duration

    token = await client.reset_user(args.name)
    proxy = await _proxy_addr(client)
    print(f'User "{args.name}" has been reset. Share this URL with the user to complete password '
          f"reset, link is valid for {format_duration(_token_ttl(token))}:")
    print(f"https://{proxy}/web/reset/{token.metadata.name}")
    print(f"\nNOTE: make sure the {proxy.rsplit(':', 1)[0]} host is accessible.")


def _token_ttl(token: UserToken) -> timedelta:
    """Return how long a user token lives, from its own times (rounded to the minute)."""
    created, expires = token.spec.created, token.metadata.expires
    if expires is None or created.year == 1 or expires <= created:
        return DEFAULT_RESET_TTL
    return timedelta(minutes=round((expires - created).total_seconds() / 60))


async def _unlock(args: argparse.Namespace, client: AuthClient) -> None:
    await client.unlock_user(args.name)
    print(f'User "{args.name}" has been unlocked')


async def _ls(args: argparse.Namespace, client: AuthClient) -> None:
    found = await client.list_user_records()
    print(table(["User", "Allowed Logins", "Roles"],
                [[u.metadata.name, ",".join(u.logins), ",".join(u.spec.roles)] for u in found]))


async def _rm(args: argparse.Namespace, client: AuthClient) -> None:
    await client.delete_user(args.name)
    print(f'User "{args.name}" has been deleted')


async def _proxy_addr(client: AuthClient) -> str:
    """The public web address of a proxy, for the links users are sent."""
    proxies = await client.list_servers("proxy")
    return proxies[0].spec.public_addr if proxies and proxies[0].spec.public_addr else "<proxy>:3080"


#: What tctl runs for the command this module declares.
HANDLERS = {"users": users}
ACTIONS = {"add": _add, "update": _update, "reset": _reset, "unlock": _unlock, "ls": _ls,
           "rm": _rm}
