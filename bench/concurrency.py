"""Fairness under concurrency (issue 20): many short commands at once, against OpenSSH.

Run: .venv/bin/python bench/concurrency.py [--commands 200] [--concurrency 20] [--rounds 1]
Runs `true` `--commands` times, `--concurrency` at once, over each path of bench/common.py:
stock `ssh -J` through the Teleport proxy with the certificate `tsh login` issued
(`ssh-teleport`), `tsh ssh`, and the OpenSSH baseline (`ssh -J` through a stock sshd to
itself). The paths take turns (one whole batch each, never two paths at once), and the order
rotates every round so that no path always runs first or last. Per path it prints the rate
(commands over the batch's wall time), p50, p99 and max of each command's wall time (start of
the client to its exit), p99/p50 (the issue's fairness measure: target at most 2), and the
rate and p50/p99 against OpenSSH's. Every command must exit 0.

A last row, `shell alone`, runs the same remote command with no SSH at all: the login's shell
started here as both servers start it (`$SHELL -c true`, the login's HOME, SSH_CLIENT set), the
same number at once. It is the floor under every path: bash reads the login's ~/.bashrc when
SSH_CLIENT is set, and what that file does (on this machine root's runs `pyenv init`, whose
rehash takes a lock on ~/.pyenv/shims that the others poll every 0.1 s) is part of every path's
p50 and p99 and no SSH server can make fairer than the shell alone.

--quiet-shell measures the servers instead: the whole bench runs in a private mount namespace
(`unshare --mount`, root only) where an empty file is bind-mounted over the login's ~/.bashrc,
so every path's shell (and `shell alone`) starts without it. Nothing changes outside the
namespace; the heading says which shell ran.
"""

from __future__ import annotations

import argparse
import os
import pwd
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BASELINE,
    Bench,
    BenchError,
    Route,
    add_common_args,
    percentile,
    positive_int,
    run_main,
    sigterm_as_interrupt,
)

REMOTE = ["true"]
#: The reference row: the remote command through the login's shell, without SSH.
SHELL_ALONE = "shell alone"
#: The login every path runs as (bench/common.py logs in as root on both servers).
LOGIN = "root"
#: Set in the re-executed bench: the path of the empty file over the login's ~/.bashrc.
QUIET_ENV = "BENCH_QUIET_SHELL_RC"
#: The PATH both servers give a login (teleport.srv.process.DEFAULT_PATH, sshd's default).
LOGIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


Run = Callable[[], "subprocess.CompletedProcess[bytes]"]


def batch(name: str, run: Run, commands: int, concurrency: int) -> tuple[float, list[float]]:
    """Run `commands` commands, `concurrency` at once; return (wall, each one's time)."""

    def one(_: int) -> float:
        start = time.perf_counter()
        result = run()
        took = time.perf_counter() - start
        if result.returncode != 0:
            last = (result.stderr.decode(errors="replace").strip().splitlines()
                    or ["(no output)"])[-1]
            raise BenchError(f"{name}: `true` exited {result.returncode}: {last}")
        return took

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        times = list(pool.map(one, range(commands)))
    return time.perf_counter() - start, times


def shell_alone(timeout: float) -> Run:
    """Start the remote command as a server starts it for LOGIN, here, with no SSH."""
    pw = pwd.getpwnam(LOGIN)
    env = {"USER": pw.pw_name, "LOGNAME": pw.pw_name, "HOME": pw.pw_dir, "SHELL": pw.pw_shell,
           "PATH": LOGIN_PATH, "SSH_CLIENT": "127.0.0.1 40000 22",
           "SSH_CONNECTION": "127.0.0.1 40000 127.0.0.1 22"}
    argv = [os.path.basename(pw.pw_shell), "-c", " ".join(REMOTE)]

    def run() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(argv, executable=pw.pw_shell, env=env, cwd=pw.pw_dir,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                              start_new_session=True, check=False)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=positive_int, default=200,
                        help="commands per path and round (default 200)")
    parser.add_argument("--concurrency", type=positive_int, default=20,
                        help="commands in flight at once (default 20)")
    parser.add_argument("--rounds", type=positive_int, default=1,
                        help="batches per path, the order rotating each round (default 1)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one command may take before it is killed (default 120)")
    parser.add_argument("--quiet-shell", action="store_true",
                        help=f"run with {LOGIN}'s ~/.bashrc hidden by an empty file, in a private "
                             "mount namespace (root only): the servers without the rc file's cost")
    add_common_args(parser)
    args = parser.parse_args()
    if args.quiet_shell and QUIET_ENV not in os.environ:
        _reexec_with_quiet_shell()
    if QUIET_ENV in os.environ:
        Path(os.environ[QUIET_ENV]).unlink(missing_ok=True)  # the bind mount keeps it
    sigterm_as_interrupt()
    with Bench(keep=args.keep, ssh_teleport=not args.no_ssh_teleport) as bench:
        paths = bench.paths()
        for path in paths:  # warm up and check every path once
            bench.check(path, REMOTE)
        runs: dict[str, Run] = {p.name: _over(bench, p, args.timeout) for p in paths}
        runs[SHELL_ALONE] = shell_alone(args.timeout)
        names = list(runs)
        walls: dict[str, float] = {name: 0.0 for name in names}
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                print(f"round {r + 1}: {args.commands} x `true` over {name}, "
                      f"{args.concurrency} at once ...", flush=True)
                wall, each = batch(name, runs[name], args.commands, args.concurrency)
                bench.check_alive()
                walls[name] += wall
                times[name] += each

    stats = {}
    for name, each in times.items():
        each.sort()
        stats[name] = (len(each) / walls[name], statistics.median(each), percentile(each, 99),
                       each[-1])
    base_rate, base_p50, base_p99, _ = stats[BASELINE]
    print()
    print(f"{args.commands} x `true`, {args.concurrency} at once, {args.rounds} round(s) per "
          "path (times in ms; x openssh: rate above 1 is faster, p50/p99 above 1 slower)")
    if QUIET_ENV in os.environ:
        print(f"({LOGIN}'s ~/.bashrc hidden by an empty file in this bench's mount namespace)")
    print(f"{'path':<14}{'cmds/s':>8}{'p50':>8}{'p99':>8}{'max':>8}{'p99/p50':>9}"
          f"{'rate x':>9}{'p50 x':>8}{'p99 x':>8}")
    for name, (rate, p50, p99, worst) in stats.items():
        print(f"{name:<14}{rate:>8.1f}{p50 * 1000:>8.0f}{p99 * 1000:>8.0f}{worst * 1000:>8.0f}"
              f"{p99 / p50:>9.2f}{rate / base_rate:>9.2f}{p50 / base_p50:>8.2f}"
              f"{p99 / base_p99:>8.2f}")
    print("targets (issue 20): p99/p50 at most 2, rate x openssh at least 1")
    print(f"`{SHELL_ALONE}`: the same `true` through {LOGIN}'s shell here, no SSH (the floor "
          "under every path: see the docstring)")


def _reexec_with_quiet_shell() -> None:
    """Run this bench again in a private mount namespace with the login's ~/.bashrc empty."""
    if os.geteuid() != 0:
        raise BenchError("--quiet-shell needs root (a private mount namespace and a bind mount)")
    rc = Path(pwd.getpwnam(LOGIN).pw_dir) / ".bashrc"
    if not rc.exists():
        raise BenchError(f"--quiet-shell: {rc} does not exist, so there is nothing to hide")
    fd, empty = tempfile.mkstemp(prefix="bench-empty-bashrc-")
    os.close(fd)
    mount = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    os.execvpe("unshare", ["unshare", "--mount", "--", "sh", "-c", mount, "sh", empty, str(rc),
                           sys.executable, *sys.argv], {**os.environ, QUIET_ENV: empty})


def _over(bench: Bench, path: Route, timeout: float) -> Run:
    return lambda: bench.run([*path.argv, *REMOTE], timeout)


if __name__ == "__main__":
    run_main(main)
