"""Node memory across sequential sessions (issue 20): RSS must come back flat, not grow per session.

Run: .venv/bin/python bench/session_memory.py [--sessions 1000] [--every 100] [--path ssh-teleport]
     [--tty] [--split]
Starts the bench cluster of bench/common.py (auth, proxy and node in one `teleport` process; with
`--split` three processes, each one's RSS shown), runs `true` `--sessions` times one after the
other over `--path` (`ssh-teleport`, stock `ssh -J` through the proxy: the fastest; or `tsh`;
`--tty` asks for a terminal, so the session is recorded and announced), and prints RSS (VmRSS)
before the first session, after every `--every` sessions and at the end, with the growth per
session since the first checkpoint (the warm-up, caches filling, is not a leak). A leak shows as
RSS that keeps climbing at every checkpoint; flat means the per-session state is let go.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BIN,
    CLUSTER,
    NODENAME,
    USER,
    Bench,
    BenchError,
    SplitCluster,
    add_common_args,
    positive_int,
    proc_status_kb,
    run_main,
    sigterm_as_interrupt,
)

REMOTE = ["true"]
TOKEN = "session-memory-bench-token"


@contextlib.contextmanager
def cluster(args: argparse.Namespace) -> Iterator[tuple[list[str], dict[str, int], Bench | None,
                                                        SplitCluster | None]]:
    """Yield the argv to reach the node, the pids to watch by name, and the cluster."""
    if not args.split:
        with Bench(keep=args.keep, ssh_teleport=args.path == "ssh-teleport") as bench:
            path = next(p for p in bench.paths() if p.name == args.path)
            yield path.argv, {"teleport": bench.teleport_pid}, bench, None
        return
    root = Path(tempfile.mkdtemp(prefix="teleport-bench-memory-"))
    split = SplitCluster(root, CLUSTER, TOKEN, node=True)
    try:
        split.start()
        key = split.login()
        config = root / "ssh_config"
        config.write_text(f"Host *\n    BatchMode yes\n    IdentitiesOnly yes\n"
                          f"    IdentityFile {key}\n    CertificateFile {key}-cert.pub\n"
                          f"    UserKnownHostsFile {root / 'tsh-home' / 'known_hosts'}\n"
                          "    StrictHostKeyChecking yes\n")
        argv = ([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"] if args.path == "tsh" else
                ["ssh", "-F", str(config), "-J", f"{USER}@127.0.0.1:{split.ports['proxy_ssh']}",
                 "-p", "3022", f"root@{NODENAME}.{CLUSTER}"])
        yield argv, {n: split.pid(n) for n in ("node", "proxy", "auth")}, None, split
    finally:
        split.stop()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def run_one(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                          timeout=60, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=positive_int, default=1000,
                        help="sequential sessions (default 1000)")
    parser.add_argument("--every", type=positive_int, default=100,
                        help="print RSS after this many sessions (default 100)")
    parser.add_argument("--path", choices=("ssh-teleport", "tsh"), default="ssh-teleport",
                        help="how to reach the node (default ssh-teleport: stock ssh -J)")
    parser.add_argument("--tty", action="store_true",
                        help="ask for a terminal (`ssh -tt`): a recorded, joinable session")
    parser.add_argument("--split", action="store_true",
                        help="auth, proxy and node as three processes, each one's RSS printed")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds to wait after the last session before the final RSS")
    add_common_args(parser)
    args = parser.parse_args()
    sigterm_as_interrupt()
    with cluster(args) as (argv, pids, bench, split):
        env = bench.env if bench is not None else split.env if split is not None else {}
        if args.tty:  # after the program: `ssh -tt ...`, `tsh ssh -t ...`
            at = 2 if argv[0].endswith("tsh") else 1
            argv = [*argv[:at], "-t" if at == 2 else "-tt", *argv[at:]]

        def check(n: int) -> None:
            result = run_one([*argv, *REMOTE], env)
            if result.returncode != 0:
                last = (result.stderr.decode(errors="replace").strip().splitlines()
                        or ["(no output)"])[-1]
                raise BenchError(f"session {n}: `true` exited {result.returncode}: {last}")

        def rss() -> list[int]:
            return [proc_status_kb(pid, "VmRSS") for pid in pids.values()]

        check(0)  # warm-up: the first login fills caches
        rows: list[tuple[int, list[int]]] = [(0, rss())]
        where = ("auth, proxy and node in one process" if len(pids) == 1 else
                 "auth, proxy and node as separate processes")
        print(f"{args.sessions} sequential `true` over {args.path}"
              f"{' with a terminal' if args.tty else ''}; RSS in MiB ({where})", flush=True)
        print(f"{'sessions':>9}" + "".join(f"{name:>10}" for name in pids) + f"{'elapsed s':>11}",
              flush=True)

        def show(label: str, kb: list[int], elapsed: float) -> None:
            print(f"{label:>9}" + "".join(f"{k / 1024:>10.1f}" for k in kb) + f"{elapsed:>11.1f}",
                  flush=True)

        show("0", rows[0][1], 0.0)
        start = time.perf_counter()
        for n in range(1, args.sessions + 1):
            check(n)
            if n % args.every == 0 or n == args.sessions:
                rows.append((n, rss()))
                show(str(n), rows[-1][1], time.perf_counter() - start)
        if bench is not None:
            bench.check_alive()
        elif split is not None:
            split.check_alive()
        time.sleep(args.settle)
        after = rss()
        show("after", after, time.perf_counter() - start)
    if len(rows) > 2:
        first_n, first_kb = rows[1]
        for name, a, f in zip(pids, after, first_kb, strict=True):
            print(f"{name}: {(a - f) / 1024:+.1f} MiB after the first checkpoint, "
                  f"{(a - f) / max(1, args.sessions - first_n):+.2f} KiB per session (flat: ~0)")


if __name__ == "__main__":
    run_main(main)
