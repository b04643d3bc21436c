"""`teleport`: start the daemon, print a sample config, show version or session status."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from teleport import __version__
from teleport.cli.common import EXIT_ERROR, quiet_on_closed_pipe, run, version_line

if TYPE_CHECKING:
    import asyncio

    from teleport.service.process import TeleportProcess


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teleport", description="Teleport daemon: auth, proxy and node services.")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    start = sub.add_parser("start", help="Starts the Teleport daemon.")
    start.add_argument("-c", "--config", help="path to teleport.yaml (default /etc/teleport.yaml if present)")
    start.add_argument("-d", "--debug", action="store_true", help="verbose logging to stderr")
    start.add_argument("--roles", help="comma-separated services to run: auth,proxy,node")
    start.add_argument("--nodename", help="name of this node, defaults to the hostname")
    start.add_argument("--data-dir", help="data directory (default /var/lib/teleport)")
    start.add_argument("--pid-file", help="write the process id to this file")
    start.add_argument("--labels", help="node labels: k=v,k2=v2 or k=[1m:\"cmd args\"]")
    start.add_argument("--token", help="invitation token to join a cluster")
    start.add_argument("--auth-server", action="append", default=[], help="auth server address")
    start.add_argument("--ca-pin", help="CA pin to validate the auth server")
    start.add_argument("--diag-addr", help="address for the diagnostics HTTP endpoints")
    start.add_argument("--bootstrap", metavar="FILE",
                       help="initialise an empty backend from `tctl get all --with-secrets` "
                            "output (ignored once the backend is initialised)")
    start.add_argument("--insecure", action="store_true",
                       help="do not verify the HTTPS certificate of a trusted root cluster's "
                            "proxy (one serving a self-signed certificate): anyone between "
                            "could pose as the root")
    start.add_argument("--insecure-no-tls", action="store_true",
                       help="serve the proxy's web port as plain HTTP: only behind a load "
                            "balancer that terminates TLS")
    sub.add_parser("configure", help="Dumps a sample configuration file in YAML format into standard output.")
    sub.add_parser("version", help="Shows the Teleport version.")
    sub.add_parser("status", help="Shows the status of a Teleport connection (inside a session).")
    sub.add_parser("help", help="Shows help.")
    return parser


async def _start(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from teleport.config import StartFlags, load_config
    from teleport.errors import BadParameter
    from teleport.service import logs
    from teleport.service.process import TeleportProcess

    flags = StartFlags(config_path=args.config, debug=args.debug, roles=args.roles,
                       nodename=args.nodename, data_dir=args.data_dir, pid_file=args.pid_file,
                       labels=args.labels, token=args.token, auth_servers=args.auth_server,
                       ca_pin=args.ca_pin, diag_addr=args.diag_addr,
                       insecure=args.insecure, insecure_no_tls=args.insecure_no_tls,
                       bootstrap=args.bootstrap)
    config = load_config(flags)
    if config.bootstrap is not None and not config.auth.enabled:
        raise BadParameter("--bootstrap initialises the auth service's backend, which this "
                           "config does not enable (auth_service.enabled)")
    logs.configure(config.log.output, config.log.severity, config.log.format, config.debug)
    stop = asyncio.Event()
    hup = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    async with TeleportProcess(config) as process:
        loop.add_signal_handler(signal.SIGUSR1, lambda: logs.dump("diagnostics (USR1):\n" + process.diagnostics()))
        loop.add_signal_handler(signal.SIGUSR2, process.spawn_successor)
        ports = ", ".join(f"{k}={v}" for k, v in sorted(process.ports.items()))
        print(f"Teleport {__version__} started: cluster {process.cluster_name!r}, "
              f"data_dir {config.data_dir}, ports {ports}", file=sys.stderr, flush=True)
        await _serve_until_stopped(process, stop, hup)
    return 0


async def _serve_until_stopped(process: TeleportProcess, stop: asyncio.Event,
                               hup: asyncio.Event) -> None:
    """Serve until TERM/INT, or until HUP has handed the sockets and pid file to a successor."""
    import asyncio
    import logging

    async with asyncio.TaskGroup() as waits:
        stopped = waits.create_task(stop.wait(), name="wait for TERM")
        while not stop.is_set():
            hung_up = waits.create_task(hup.wait(), name="wait for HUP")
            await asyncio.wait([stopped, hung_up], return_when=asyncio.FIRST_COMPLETED)
            hung_up.cancel()
            if stop.is_set():
                break
            hup.clear()
            # Graceful restart: the successor takes new connections, we finish the open ones,
            # but only once it has started: until then we are the service (and its pid file).
            child = process.spawn_successor()
            if await process.wait_for_successor(child, stop):
                await process.drain(stop)
                break
            logging.getLogger("teleport").error(
                "The new teleport process %d exited with code %s before it was ready; "
                "this one keeps serving.", child.pid, child.returncode)
        stopped.cancel()


def _status() -> int:
    sid = os.environ.get("SSH_SESSION_ID")
    if not sid:
        print("ERROR: teleport status only works inside a Teleport SSH session", file=sys.stderr)
        return EXIT_ERROR
    cluster = os.environ.get("SSH_TELEPORT_CLUSTER_NAME", "")
    host = os.environ.get("SSH_TELEPORT_HOST_UUID", "")
    proxy = os.environ.get("SSH_SESSION_WEBPROXY_ADDR", "")
    login = os.environ.get("USER", "")
    rows = [("Cluster Name", cluster), ("Host UUID", host),
            ("Session ID", sid), ("Teleport User", os.environ.get("SSH_TELEPORT_USER", "")),
            ("Proxy", proxy)]
    if proxy:
        rows.append(("Session URL", f"https://{proxy}/web/cluster/{cluster}/node/{host}/{login}/{sid}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}: {value}")
    return 0


@quiet_on_closed_pipe
def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "start":
        if argv is None:  # the program itself, not a caller's function call
            from teleport.utils.allocator import exec_on_jemalloc

            exec_on_jemalloc()
        return run(_start(args))
    if args.command == "configure":
        from teleport.config import sample_config

        sys.stdout.write(sample_config())
        return 0
    if args.command == "version":
        print(version_line())
        return 0
    if args.command == "status":
        return _status()
    parser.print_help()
    return 0 if args.command == "help" else 2


if __name__ == "__main__":
    sys.exit(main())
