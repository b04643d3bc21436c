"""`tsh`: the user's tool to log in, list nodes and ssh into them through the proxy."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from teleport.api.constants import TUNNEL_ADDR
from teleport.cli.common import needed_commands, quiet_on_closed_pipe, run, table, version_line

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence
    from datetime import timedelta
    from typing import Any

    from teleport.client.profile import Profile


def _common(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--proxy", default=default, help="proxy web address host[:3080]")
    parser.add_argument("--user", default=default, help="Teleport user name")
    parser.add_argument("--insecure", action="store_true", default=default,
                        help="do not verify the proxy's HTTPS certificate, for this command only; "
                             "login pins the certificate it accepted for later commands")


def _login_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """The login flags Teleport also takes before the command (`tsh --auth=github login`)."""
    parser.add_argument("--auth", default=default,
                        metavar="local|passwordless|github|oidc|<connector>",
                        help="how to log in: local (password), passwordless (a passkey alone), "
                             "or a single sign-on connector by kind or name (default: the "
                             "cluster's authentication type)")
    _browser_flag(parser, default)


def _browser_flag(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--browser", default=default, choices=["none"],
                        help="none: do not open a browser (single sign-on, or a security key "
                             "when none is attached here), only print the link")


def _login_args(login: argparse.ArgumentParser) -> None:
    _common(login, argparse.SUPPRESS)
    _login_flags(login, argparse.SUPPRESS)
    login.add_argument("--ttl", help="certificate lifetime: minutes or a duration like 12h (default 12h)")


def _ls_args(ls: argparse.ArgumentParser) -> None:
    _common(ls, argparse.SUPPRESS)
    ls.add_argument("labels", nargs="?", help="filter by labels: k=v,k2=v2")
    ls.add_argument("--cluster", default="", help="list a leaf cluster's nodes")


def _ssh_args(ssh: argparse.ArgumentParser) -> None:
    _common(ssh, argparse.SUPPRESS)
    ssh.add_argument("-l", "--login", help="remote OS login")
    ssh.add_argument("--cluster", default="",
                     help="the cluster of the node: a leaf cluster of the proxy's (default: its own)")
    ssh.add_argument("-p", "--port", type=int, help="node SSH port")
    ssh.add_argument("-L", "--forward", action="append", default=[], metavar="[bind:]port:host:hostport",
                     help="forward a local port to a host reachable from the node")
    ssh.add_argument("-R", dest="remote_forward", action="append", default=[],
                     metavar="[bind:]port:host:hostport",
                     help="listen on the node's port (loopback), forward to host:hostport from here")
    ssh.add_argument("-D", dest="dynamic_forward", action="append", default=[],
                     metavar="[bind:]port", help="local SOCKS5 proxy whose connections leave from the node")
    ssh.add_argument("-A", dest="forward_agent", action="store_true",
                     help="forward the agent of SSH_AUTH_SOCK to the node")
    ssh.add_argument("-t", dest="tty", action="store_const", const=True, help="force a terminal")
    ssh.add_argument("-T", dest="tty", action="store_const", const=False, help="disable the terminal")
    ssh.add_argument("-N", dest="no_command", action="store_true", help="forward ports only")
    ssh.add_argument("target", metavar="[login@]host")
    ssh.add_argument("cmd", nargs=argparse.REMAINDER, help="command to run")


def _scp_args(scp: argparse.ArgumentParser) -> None:
    _common(scp, argparse.SUPPRESS)
    scp.add_argument("-r", "--recursive", action="store_true", help="copy directories recursively")
    scp.add_argument("-p", "--preserve", action="store_true", help="keep modes and modification times")
    scp.add_argument("-P", "--port", type=int, help="node SSH port")
    scp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    scp.add_argument("--all", dest="every_match", action="store_true",
                     help="upload to every node a label selector matches (default: refuse many)")
    scp.add_argument("paths", nargs="+", metavar="src... dst")
    scp.add_argument("--cluster", default="", help="the cluster of the node: a leaf cluster of "
                     "the proxy's (default: its own)")


def _play_args(play: argparse.ArgumentParser) -> None:
    _common(play, argparse.SUPPRESS)
    play.add_argument("--speed", type=float, default=1.0, help="replay speed factor (default 1)")
    play.add_argument("--format", choices=["pty", "json"], default="pty",
                      help="pty replays in the terminal, json prints the session's events")
    play.add_argument("sid", metavar="session-id")
    play.add_argument("--cluster", default="", help="the leaf cluster that recorded the session")


def _recordings_args(recordings: argparse.ArgumentParser) -> None:
    _common(recordings, argparse.SUPPRESS)
    recordings_sub = recordings.add_subparsers(dest="recordings_command", metavar="<command>")
    recordings_sub.add_parser("ls", help="List recorded sessions you may play")


def _sessions_args(sessions: argparse.ArgumentParser) -> None:
    _common(sessions, argparse.SUPPRESS)
    sessions_sub = sessions.add_subparsers(dest="sessions_command", metavar="<command>")
    sessions_ls = sessions_sub.add_parser("ls", help="List live sessions you may join")
    sessions_ls.add_argument("--cluster", default="", help="list a leaf cluster's sessions")


def _join_args(join: argparse.ArgumentParser) -> None:
    _common(join, argparse.SUPPRESS)
    join.add_argument("sid", metavar="session-id")
    join.add_argument("--cluster", default="", help="the leaf cluster running the session")


def _mfa_args(mfa: argparse.ArgumentParser) -> None:
    _common(mfa, argparse.SUPPRESS)
    mfa_sub = mfa.add_subparsers(dest="mfa_command", metavar="<command>")
    mfa_sub.add_parser("ls", help="List your MFA devices")
    mfa_add = mfa_sub.add_parser("add", help="Register a new security key")
    mfa_add.add_argument("--name", help="the new device's name (asked when not given)")
    mfa_add.add_argument("--type", default="webauthn", help="the device's type: webauthn")
    mfa_add.add_argument("--allow-passwordless", action="store_true",
                         help="a passkey (resident key that verifies you): logs in alone")
    _browser_flag(mfa_add, None)
    mfa_rm = mfa_sub.add_parser("rm", help="Remove one of your MFA devices")
    mfa_rm.add_argument("name", help="the device's name (or id)")


#: Each command: its help line and what declares its arguments, in `tsh --help`'s order.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "login": ("Log in to a cluster and retrieve certificates", _login_args),
    "logout": ("Delete the profile and its keys", None),
    "clusters": ("List the cluster and its leaf clusters",
                 lambda clusters: _common(clusters, argparse.SUPPRESS)),
    "status": ("Show the current login", None),
    "ls": ("List nodes", _ls_args),
    "ssh": ("Run a shell or a command on a node", _ssh_args),
    "scp": ("Copy files to or from a node: src... [login@]host:dst, or the reverse", _scp_args),
    "play": ("Replay a recorded session (space pauses and resumes)", _play_args),
    "recordings": ("Recorded sessions", _recordings_args),
    "sessions": ("Live sessions", _sessions_args),
    "join": ("Join a live session (its owner and admins only)", _join_args),
    "config": ("Print an OpenSSH configuration for this cluster", None),
    "mfa": ("Your second-factor devices (security keys)", _mfa_args),
    "version": ("Print the version", None),
}


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsh", description="Teleport client: log in and ssh into nodes.")
    _common(parser, None)
    _login_flags(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in needed_commands(argv, COMMANDS):
        help_text, add_arguments = COMMANDS[name]
        command = sub.add_parser(name, help=help_text)
        if add_arguments is not None:
            add_arguments(command)
    return parser


def _ttl(text: str | None) -> timedelta | None:
    from datetime import timedelta

    from teleport.errors import BadParameter
    from teleport.utils.duration import parse_duration

    if not text:
        return None
    ttl = parse_duration(f"{text}m" if text.isdigit() else text)  # bounded: never overflows
    if ttl <= timedelta(0):
        raise BadParameter(f"--ttl must be positive, not {text!r}")
    return ttl


def _prompt(label: str, secret: bool) -> str:
    """Ask on the terminal; read a plain line when stdin is not one (scripts, tests)."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{label}: ") if secret else input(f"{label}: ")
    return sys.stdin.readline().rstrip("\n")


async def _login(args: argparse.Namespace) -> int:
    from teleport.client.login import login
    from teleport.client.webapi import WebClient
    from teleport.errors import BadParameter

    if not args.proxy:
        raise BadParameter("specify the proxy: tsh login --proxy=host:3080 --user=name")
    import getpass as gp

    user = args.user or gp.getuser()
    ttl = _ttl(getattr(args, "ttl", None))  # a bad --ttl fails before any prompt
    async with WebClient(args.proxy if ":" in args.proxy else f"{args.proxy}:3080",
                         insecure=bool(args.insecure)) as web:
        settings = (await web.ping()).auth
    second_factor = settings.second_factor
    if args.auth == "passwordless" or (args.auth in (None, "local") and settings.type in (
            "local", "") and _uses_keys(second_factor, settings.webauthn)):
        from teleport.client.keyflow import key_login  # aiohttp's server parts, python-fido2

        password = None
        if args.auth != "passwordless":
            password = _prompt(f"Enter password for Teleport user {user}", secret=True)
        profile = await key_login(
            args.proxy, user, password, ttl=ttl, insecure=bool(args.insecure),
            browser=args.browser != "none",
            otp_prompt=lambda: _prompt("Enter your OTP token", secret=False))
        _print_status(profile)
        return 0
    if args.auth != "local" and (args.auth or settings.type not in ("local", "")):
        from teleport.client import sso  # aiohttp's server parts: only for single sign-on

        connector = sso.choose_connector(args.auth, settings)
        if connector is not None:  # the provider decides who logs in: --user does not count
            profile = await sso.sso_login(args.proxy, connector, ttl=ttl,
                                          insecure=bool(args.insecure),
                                          browser=args.browser != "none")
            _print_status(profile)
            return 0
    password = _prompt(f"Enter password for Teleport user {user}", secret=True)
    otp = _prompt("Enter your OTP token", secret=False) if second_factor not in ("off", "") else ""
    profile = await login(args.proxy, user, password, otp, ttl=ttl,
                          insecure=bool(args.insecure))
    _print_status(profile)
    return 0


def _print_status(profile: Profile) -> None:
    from datetime import datetime, timezone

    from teleport.keys.identity import NO_LOGIN
    from teleport.keys.ssh import parse_cert
    from teleport.utils.duration import format_duration

    info = parse_cert(profile.ssh_cert())
    left = info.valid_before - datetime.now(timezone.utc)
    validity = f"valid for {format_duration(left)}" if left.total_seconds() > 0 else "EXPIRED"
    print(f"> Profile URL:  https://{profile.web_proxy_addr}")
    print(f"  Logged in as: {profile.user}")
    print(f"  Cluster:      {profile.cluster}")
    print(f"  Roles:        {', '.join(info.roles)}")
    logins = [p for p in dict.fromkeys(info.principals) if not p.startswith(NO_LOGIN)]
    print(f"  Logins:       {', '.join(logins) or '(none: your roles allow no login)'}")
    print(f"  Valid until:  {info.valid_before:%Y-%m-%d %H:%M:%S} UTC [{validity}]")


def _ssh_stack() -> None:
    from teleport.client import sshstack

    sshstack.load()


def _profile(args: argparse.Namespace) -> Profile:
    from dataclasses import replace

    from teleport.client.profile import current_profile
    from teleport.errors import AccessDenied

    profile = current_profile()
    proxy = getattr(args, "proxy", None)
    if proxy and proxy.split(":")[0] != profile.proxy_host:
        raise AccessDenied(f"not logged in to {proxy}, run 'tsh login --proxy={proxy}'")
    user = getattr(args, "user", None)
    if user and user != profile.user:
        raise AccessDenied(f"logged in as {profile.user}, not {user}: run 'tsh login --user={user}'")
    # `--insecure` counts for this command only: the profile never keeps it.
    return replace(profile, insecure=bool(getattr(args, "insecure", None)))


async def _ls(args: argparse.Namespace) -> int:
    from teleport.client.nodes import matching_nodes, parse_label_selector
    from teleport.client.trust import following
    from teleport.errors import BadParameter

    selector = parse_label_selector(args.labels or "")
    if args.labels and selector is None:
        raise BadParameter(f"invalid label filter {args.labels!r}: expected key=value[,key=value]")
    profile = _profile(args)
    async with following(profile):  # trust follows a CA rotation; warns before it bites
        nodes = await matching_nodes(profile, selector or {}, args.cluster)
    rows = [[n.name, TUNNEL_ADDR if n.tunnel else n.addr, ",".join(f"{k}={v}" for k, v in sorted(n.labels.items()))]
            for n in nodes]
    print(table(["Node Name", "Address", "Labels"], rows))
    return 0


async def _ssh(args: argparse.Namespace) -> int:
    _ssh_stack()
    import getpass as gp

    from teleport.client import forwarding, nodes, ssh
    from teleport.client.trust import following
    from teleport.errors import BadParameter

    # Bad flags are named before anything else is looked at.
    forwards = [ssh.parse_forward(f) for f in args.forward]
    remote = [forwarding.parse_remote(f) for f in args.remote_forward]
    dynamic = [forwarding.parse_dynamic(f) for f in args.dynamic_forward]
    profile = _profile(args)
    login, sep, host = args.target.rpartition("@")
    if not sep:
        login, host = args.login or gp.getuser(), args.target
    if (selector := nodes.parse_label_selector(host)) is not None:
        if remote or dynamic or args.forward_agent:
            raise BadParameter("-R, -D and -A need one node: name it instead of a label selector")
        from teleport.client import fanout  # (its node listing's models: not for one node)

        async with following(profile):
            return await fanout.run_on_matching(profile, login, selector, args.cmd,
                                                tty_mode=args.tty, forwards=forwards,
                                                no_command=args.no_command)
    if args.port:
        host = f"{host}:{args.port}"
    async with following(profile):  # trust follows a CA rotation; warns before it bites
        return await ssh.run(profile, login, host, args.cmd, tty_mode=args.tty,
                             forwards=forwards, no_command=args.no_command, remote=remote,
                             dynamic=dynamic, agent=args.forward_agent, cluster=args.cluster)


async def _clusters(args: argparse.Namespace) -> int:
    from teleport.client.webapi import WebClient

    profile = _profile(args)
    async with WebClient.for_profile(profile) as web:
        clusters = await web.clusters()
    rows = [[c.name, c.status, c.kind, "*" if c.name == profile.cluster else ""]
            for c in clusters]
    print(table(["Cluster Name", "Status", "Cluster Type", "Selected"], rows))
    return 0


async def _scp(args: argparse.Namespace) -> int:
    _ssh_stack()
    import getpass as gp

    from teleport.client import scp
    from teleport.client.trust import following

    profile = _profile(args)
    async with following(profile):
        return await scp.copy(profile, args.paths, gp.getuser(), recursive=args.recursive,
                              preserve=args.preserve, port=args.port, quiet=args.quiet,
                              every_match=args.every_match, cluster=args.cluster)


async def _play(args: argparse.Namespace) -> int:
    from teleport.client import play

    if args.format == "json":
        return await play.print_json(_profile(args), args.sid, args.cluster)
    return await play.play(_profile(args), args.sid, speed=args.speed, cluster=args.cluster)


async def _recordings(args: argparse.Namespace) -> int:
    from teleport.client.play import list_recordings
    from teleport.errors import BadParameter
    from teleport.events.sessions_store import format_duration_ms

    if args.recordings_command != "ls":
        raise BadParameter("usage: tsh recordings ls")
    rows = [[r.sid, r.user, r.server_hostname or r.server_id, r.start[:19].replace("T", " "),
             format_duration_ms(r.duration_ms) + ("" if r.complete else " (incomplete)")]
            for r in await list_recordings(_profile(args))]
    print(table(["ID", "User", "Node", "Start (UTC)", "Duration"], rows))
    return 0


async def _sessions(args: argparse.Namespace) -> int:
    from teleport.client.join import list_sessions
    from teleport.errors import BadParameter

    if args.sessions_command != "ls":
        raise BadParameter("usage: tsh sessions ls")
    rows = [[s.sid, s.user, s.server_hostname, s.login,
             s.created[:19].replace("T", " "), ", ".join(s.parties)]
            for s in await list_sessions(_profile(args), getattr(args, "cluster", ""))]
    print(table(["ID", "User", "Node", "Login", "Created (UTC)", "Parties"], rows))
    return 0


async def _join(args: argparse.Namespace) -> int:
    _ssh_stack()
    from teleport.client.join import join

    return await join(_profile(args), args.sid, args.cluster)


def _uses_keys(second_factor: str, webauthn: object) -> bool:
    """Whether `tsh login` asks for a security key after the password on this cluster."""
    return webauthn is not None and second_factor in ("webauthn", "on", "optional")


async def _mfa(args: argparse.Namespace) -> int:
    from teleport.client import mfadevices
    from teleport.errors import BadParameter

    profile = _profile(args)
    if args.mfa_command == "ls":
        listed = await mfadevices.list_devices(profile)
        stamp = "%a, %d %b %Y %H:%M:%S UTC"
        rows = [[d.name, d.type + (" (passwordless)" if d.passwordless else ""),
                 f"{d.added_at:{stamp}}", f"{d.last_used:{stamp}}"] for d in listed.devices]
        if listed.otp:
            rows.append(["(authenticator app)", "TOTP", "-", "-"])
        print(table(["Name", "Type", "Added at", "Last used"], rows))
        return 0
    if args.mfa_command == "add":
        if args.type.lower() != "webauthn":
            raise BadParameter(f"--type {args.type!r}: tsh adds security keys only (--type="
                               "webauthn); an authenticator app is enrolled at signup")
        name = args.name if args.name is not None else _prompt("Enter a name for the new "
                                                                "device", secret=False)
        if not name.strip():
            raise BadParameter("the new device needs a name: pass --name")
        device = await mfadevices.add_device(profile, name.strip(),
                                             passwordless=args.allow_passwordless,
                                             browser=args.browser != "none")
        print(f'MFA device "{device.name}" added.')
        return 0
    if args.mfa_command == "rm":
        await mfadevices.remove_device(profile, args.name)
        print(f'MFA device "{args.name}" removed.')
        return 0
    raise BadParameter("usage: tsh mfa ls|add|rm")


def _status() -> int:
    from teleport.client.profile import current_profile

    _print_status(current_profile())
    return 0


async def _logout() -> int:
    from teleport.client.profile import remove_profile

    print("Logged out." if remove_profile() else "Not logged in.")
    return 0


async def _config() -> int:
    from teleport.client.profile import current_profile, leaf_host_keys
    from teleport.client.sshconfig import ssh_config
    from teleport.client.trust import refresh_host_cas

    profile = current_profile()
    # The leaves and their host CAs as the proxy says now (kept as they were if it is away).
    await refresh_host_cas(profile)
    sys.stdout.write(ssh_config(profile, sorted(leaf_host_keys(profile))))
    return 0


@quiet_on_closed_pipe
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(argv)
    args = parser.parse_args(argv)
    if args.command == "version":
        print(version_line())
        return 0
    if args.command == "status":  # local files only: no event loop
        return run(_status)
    commands: dict[str, Callable[[], Coroutine[Any, Any, int]]] = {"login": lambda: _login(args), "ls": lambda: _ls(args), "ssh": lambda: _ssh(args),
                "scp": lambda: _scp(args),
                "play": lambda: _play(args), "recordings": lambda: _recordings(args),
                "sessions": lambda: _sessions(args), "join": lambda: _join(args),
                "mfa": lambda: _mfa(args), "clusters": lambda: _clusters(args),
                "logout": _logout, "config": _config}
    if args.command not in commands:
        parser.print_help()
        return 2
    return run(commands[args.command]())


if __name__ == "__main__":
    sys.exit(main())
