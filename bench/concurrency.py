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
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
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


def batch(bench: Bench, path: Route, commands: int, concurrency: int,
          timeout: float) -> tuple[float, list[float]]:
    """Run `commands` commands over `path`, `concurrency` at once; return (wall, each's time)."""

    def one(_: int) -> float:
        start = time.perf_counter()
        result = bench.run([*path.argv, *REMOTE], timeout)
        took = time.perf_counter() - start
        if result.returncode != 0:
            last = (result.stderr.decode(errors="replace").strip().splitlines()
                    or ["(no output)"])[-1]
            raise BenchError(f"{path.name}: `true` exited {result.returncode}: {last}")
        return took

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        times = list(pool.map(one, range(commands)))
    wall = time.perf_counter() - start
    bench.check_alive()
    return wall, times


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
    add_common_args(parser)
    args = parser.parse_args()
    sigterm_as_interrupt()
    with Bench(keep=args.keep, ssh_teleport=not args.no_ssh_teleport) as bench:
        paths = bench.paths()
        for path in paths:  # warm up and check every path once
            bench.check(path, REMOTE)
        walls: dict[str, float] = {p.name: 0.0 for p in paths}
        times: dict[str, list[float]] = {p.name: [] for p in paths}
        for r in range(args.rounds):
            shift = r % len(paths)
            for path in paths[shift:] + paths[:shift]:
                print(f"round {r + 1}: {args.commands} x `true` over {path.name}, "
                      f"{args.concurrency} at once ...", flush=True)
                wall, each = batch(bench, path, args.commands, args.concurrency, args.timeout)
                walls[path.name] += wall
                times[path.name] += each

    stats = {}
    for name, each in times.items():
        each.sort()
        stats[name] = (len(each) / walls[name], statistics.median(each), percentile(each, 99),
                       each[-1])
    base_rate, base_p50, base_p99, _ = stats[BASELINE]
    print()
    print(f"{args.commands} x `true`, {args.concurrency} at once, {args.rounds} round(s) per "
          "path (times in ms; x openssh: rate above 1 is faster, p50/p99 above 1 slower)")
    print(f"{'path':<14}{'cmds/s':>8}{'p50':>8}{'p99':>8}{'max':>8}{'p99/p50':>9}"
          f"{'rate x':>9}{'p50 x':>8}{'p99 x':>8}")
    for name, (rate, p50, p99, worst) in stats.items():
        print(f"{name:<14}{rate:>8.1f}{p50 * 1000:>8.0f}{p99 * 1000:>8.0f}{worst * 1000:>8.0f}"
              f"{p99 / p50:>9.2f}{rate / base_rate:>9.2f}{p50 / base_p50:>8.2f}"
              f"{p99 / base_p99:>8.2f}")
    print("targets (issue 20): p99/p50 at most 2, rate x openssh at least 1")


if __name__ == "__main__":
    run_main(main)
