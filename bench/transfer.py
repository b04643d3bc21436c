#!/usr/bin/env python3
"""File transfer with stock `scp` and `sftp`: through the Teleport proxy to the node vs. OpenSSH.

Usage: .venv/bin/python bench/transfer.py [--size 512M] [--runs 1] [--cipher C] [--keep]

Starts a single-host cluster and a stock sshd on 127.0.0.1 (see bench/common.py), writes one
file of --size bytes (default 512 MiB), and copies it up and back down with OpenSSH's own
clients over two paths:
  openssh       -J root@localhost:P -P P root@127.0.0.1  (stock sshd as jump and target; its
                                                         SFTP is the same sftp-server binary)
  ssh-teleport  -J <user>@<proxy> root@<node>.<cluster>  (the Teleport proxy, then the node,
                                                         with the certificate tsh issued)
Both log in with a certificate and pin the same cipher on both hops (--cipher, default
aes128-gcm@openssh.com, what tsh negotiates; `--cipher default` leaves OpenSSH's own choice).
`scp` is OpenSSH 9's default (SFTP underneath); `sftp` runs `put` and `get` from a batch; each
run rotates the order of the paths. Per tool, direction and path it prints the wall time from
starting the client to its exit (connection set-up included), MiB/s, the ratio against openssh
(above 1 is faster than OpenSSH), the server side's CPU seconds (the teleport process, which is
proxy + node + auth, or the sshd listener with its per-connection children, each with their
reaped children such as sftp-server) and the CPU seconds per GiB of both sides (the client and
its jump-hop child too) with its ratio against openssh's. Every copy is checked: same size, same
first and last MiB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

from common import (
    BASELINE,
    TSH_CIPHER,
    Bench,
    BenchError,
    Route,
    child_pids,
    children_cpu_seconds,
    kill_group,
    parse_size,
    positive_int,
    proc_cpu_seconds,
    run_main,
    wait_children_reaped,
)

MIN_RATE = 1 << 20  # bytes/s: a copy slower than 1 MiB/s is stuck, not slow
SETUP_TIMEOUT = 120
TOOLS = ("scp", "sftp")
DIRECTIONS = ("upload", "download")


def _opts_and_target(route: Route) -> tuple[list[str], str]:
    """Turn a route's `ssh ... -p PORT target` into scp/sftp options (`-P PORT`) and target."""
    opts = ["-P" if arg == "-p" else arg for arg in route.argv[1:-1]]
    return opts, route.argv[-1]


def _write_source(path: Path, size: int) -> None:
    """Random-looking data (SSH does not compress by default, but the disk cache should see
    real pages): one random MiB repeated, so writing the file costs no entropy."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        left = size
        while left:
            out.write(block[:min(left, len(block))])
            left -= min(left, len(block))


def _same(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        if fa.read(1 << 20) != fb.read(1 << 20):
            return False
        for f in (fa, fb):
            f.seek(max(0, a.stat().st_size - (1 << 20)))
        return fa.read() == fb.read()


def copy(bench: Bench, route: Route, tool: str, direction: str, src: Path, dst: Path,
         size: int) -> tuple[float, float, float]:
    """Copy src to dst with `tool` over `route`; return wall, server and client CPU seconds."""
    opts, target = _opts_and_target(route)
    remote_src = direction == "download"
    if tool == "scp":
        argv = ["scp", *opts, f"{target}:{src}" if remote_src else str(src),
                f"{target}:{dst}" if not remote_src else str(dst)]
        stdin = None
    else:
        argv = ["sftp", *opts, "-b", "-", target]
        stdin = (f"get {src} {dst}\n" if remote_src else f"put {src} {dst}\n").encode()
    timeout = SETUP_TIMEOUT + size / MIN_RATE
    server_children = child_pids(route.server_pid)
    server_cpu0 = proc_cpu_seconds(route.server_pid)
    client_cpu0 = children_cpu_seconds()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=bench.env, start_new_session=True)
    try:
        _, err = proc.communicate(stdin, timeout=timeout)
        wall = time.perf_counter() - start
    except subprocess.TimeoutExpired:
        raise BenchError(f"{route.name}: {tool} {direction} of {size} bytes took longer than "
                         f"{timeout:.0f}s (under {MIN_RATE >> 20} MiB/s)") from None
    finally:
        if proc.poll() is None:
            kill_group(proc, grace=1)
    client_cpu = children_cpu_seconds() - client_cpu0
    bench.check_alive()
    wait_children_reaped(route.server_pid, server_children)
    server_cpu = proc_cpu_seconds(route.server_pid) - server_cpu0
    if proc.returncode != 0:
        last = (err.decode(errors="replace").strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"{route.name}: {tool} {direction} exited {proc.returncode}: {last}")
    if not _same(src, dst):
        raise BenchError(f"{route.name}: {tool} {direction}: {dst} differs from {src}")
    return wall, server_cpu, client_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("512M"),
                        help="bytes per file: 512M (default), 64M, 1G, ... (binary units)")
    parser.add_argument("--runs", type=positive_int, default=1,
                        help="copies per tool, direction and path; the median is reported")
    parser.add_argument("--cipher", default=TSH_CIPHER,
                        help=f"cipher pinned on both paths (default {TSH_CIPHER}); "
                             "`default` for each client's own choice")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (configs, teleport.log, sshd.log)")
    args = parser.parse_args()
    size: int = args.size

    with Bench(keep=args.keep, ssh_teleport=True) as bench:
        cipher = None if args.cipher == "default" else args.cipher
        routes = [r for r in bench.paths(cipher) if r.name in (BASELINE, "ssh-teleport")]
        for route in routes:  # warm up, and fail early with the route's own message
            bench.check(route, ["true"], SETUP_TIMEOUT)
        work = bench.root / "transfer"
        work.mkdir()
        source = work / "source.bin"
        _write_source(source, size)
        results: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
        for run in range(args.runs):
            for tool in TOOLS:
                for route in routes[run % 2:] + routes[:run % 2]:
                    remote = work / f"remote-{route.name}-{tool}.bin"
                    back = work / f"back-{route.name}-{tool}.bin"
                    results.setdefault((tool, "upload", route.name), []).append(
                        copy(bench, route, tool, "upload", source, remote, size))
                    results.setdefault((tool, "download", route.name), []).append(
                        copy(bench, route, tool, "download", remote, back, size))
                    remote.unlink()
                    back.unlink()

    mib = size / 2**20
    print(f"{mib:.0f} MiB file, stock OpenSSH clients, certificate logins, cipher "
          f"{args.cipher}, {args.runs} run(s) each, median shown")
    print(f"{'tool':<5} {'direction':<9} {'path':<14} {'wall s':>8} {'MiB/s':>8}"
          f" {'x openssh':>10} {'server cpu s':>13} {'cpu s/GiB':>10} {'x openssh':>10}")
    ratios: list[float] = []
    for tool in TOOLS:
        for direction in DIRECTIONS:
            base_runs = results[(tool, direction, BASELINE)]
            base = mib / statistics.median(r[0] for r in base_runs)
            base_cpu = statistics.median(r[1] + r[2] for r in base_runs)
            for route in routes:
                runs = results[(tool, direction, route.name)]
                wall = statistics.median(r[0] for r in runs)
                rate = mib / wall
                if route.name != BASELINE:
                    ratios.append(rate / base)
                cpu = statistics.median(r[1] + r[2] for r in runs)
                print(f"{tool:<5} {direction:<9} {route.name:<14} {wall:8.2f} {rate:8.1f}"
                      f" {rate / base:10.2f} {statistics.median(r[1] for r in runs):13.2f}"
                      f" {cpu / (size / 2**30):10.2f} {cpu / base_cpu:10.2f}")
    print(f"ratio teleport/openssh (MiB/s), geometric mean of the {len(ratios)} copies: "
          f"{statistics.geometric_mean(ratios):.2f}")


if __name__ == "__main__":
    run_main(main)
