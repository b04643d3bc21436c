#!/usr/bin/env python3
"""Latency of a whole non-interactive command: `tsh ssh root@<node> true` against OpenSSH.

Usage: /tmp/venv/bin/python bench/latency.py [--runs 30] [--warmup 2] [--no-ssh-teleport]

Starts a single-host cluster and a stock sshd on 127.0.0.1 (see bench/common.py), then runs
each path --runs times in turn, sequentially, and prints p50, p95, mean, min and max wall
time per path in ms and the p50/p95/mean ratios against the OpenSSH baseline
(`ssh -J root@localhost:P -p P root@127.0.0.1 true` through a stock sshd used as jump host
and target). One run is process start-up + key exchange and authentication with the proxy +
the hop to the node + exec + exit status, i.e. what a script calling the tool in a loop pays.
The `ssh-teleport` row is stock `ssh -J` through the Teleport proxy with the tsh certificate.
"""

from __future__ import annotations

import argparse
import time

from common import (
    BASELINE,
    Bench,
    add_common_args,
    positive_int,
    run_main,
    summarize,
)

REMOTE = ["true"]
RUN_TIMEOUT = 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=positive_int, default=30, help="timed runs per path")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed runs per path first (default 2)")
    add_common_args(parser)
    args = parser.parse_args()

    with Bench(keep=args.keep, ssh_teleport=not args.no_ssh_teleport) as bench:
        routes = bench.paths()
        for route in routes:
            for _ in range(max(1, args.warmup)):  # at least one: it also checks the path works
                bench.check(route, REMOTE, RUN_TIMEOUT)
        times: dict[str, list[float]] = {r.name: [] for r in routes}
        # Interleave the paths so a slow phase of the machine hits all of them alike.
        for _ in range(args.runs):
            for route in routes:
                start = time.perf_counter()
                bench.check(route, REMOTE, RUN_TIMEOUT)
                times[route.name].append(time.perf_counter() - start)

    stats = {name: summarize(values) for name, values in times.items()}
    base = stats[BASELINE]
    print(f"`<path> true`, {args.runs} sequential runs per path, wall time in ms")
    print(f"{'path':<14} {'p50':>8} {'p95':>8} {'mean':>8} {'min':>8} {'max':>8}"
          f" {'p50 x':>7} {'p95 x':>7} {'mean x':>7}")
    for name, s in stats.items():
        print(f"{name:<14} {s['p50'] * 1e3:8.1f} {s['p95'] * 1e3:8.1f} {s['mean'] * 1e3:8.1f}"
              f" {s['min'] * 1e3:8.1f} {s['max'] * 1e3:8.1f}"
              f" {s['p50'] / base['p50']:7.2f} {s['p95'] / base['p95']:7.2f}"
              f" {s['mean'] / base['mean']:7.2f}")
    print(f"ratios (x) are against {BASELINE}: ssh -J through a stock sshd to a stock sshd")


if __name__ == "__main__":
    run_main(main)
