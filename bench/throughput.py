#!/usr/bin/env python3
"""Bulk throughput through a session, both ways, against OpenSSH with the same cipher.

Usage: .venv/bin/python bench/throughput.py [--size 1G] [--runs 1] [--cipher C] [--no-default]
                                            [--no-ssh-teleport]

Starts a single-host cluster and a stock sshd on 127.0.0.1 (see bench/common.py). Every path
logs in with a certificate (tsh's, or one from the bench's own user CA for sshd) to a host
that presents one, and moves --size bytes (default 1 GiB; 256M for a quick run) each way:
  upload    `head -c N /dev/zero | <client> wc -c`      (the target counts what arrived)
  download  `<client> head -c N /dev/zero | wc -c`      (a local `wc` counts what arrived)
so a truncated stream is an error and not a fast result. The paths:
  openssh       ssh -J root@localhost:P -p P root@127.0.0.1  (stock sshd as jump and target)
  tsh           tsh ssh root@<node>                          (Teleport proxy -> Teleport node)
  ssh-teleport  ssh -J <user>@<proxy> root@<node>.<cluster>  (stock ssh, tsh certificate)
First with --cipher (default aes128-gcm@openssh.com, what tsh negotiates) pinned on the stock
clients' both hops, so the ratio compares implementations; then, unless --no-default, with each
client's default cipher (OpenSSH's is chacha20-poly1305), printed apart. Runs alternate: each
run rotates the order of the paths and swaps the order of the directions.
Per cipher setting, direction and path it prints the wall time (process start to exit, so
connection set-up is included: see `setup s`, the time of one `true` over the same path),
MiB/s = size / wall, the ratio against openssh (above 1 is faster than OpenSSH), net MiB/s =
size / (wall - setup s), and CPU seconds per GiB moved: client side (client, its jump-hop child
and the local generator or counter), server side (the teleport process, which is proxy + node
+ auth, or the sshd listener with its per-connection children, each with their reaped children
such as `wc`), their sum, and the sum against openssh's. Last, the teleport process's peak RSS
(VmHWM) before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    BASELINE,
    TSH_CIPHER,
    Bench,
    BenchError,
    Route,
    add_common_args,
    child_pids,
    children_cpu_seconds,
    kill_group,
    parse_size,
    positive_int,
    proc_cpu_seconds,
    proc_status_kb,
    run_main,
    wait_children_reaped,
)

MIN_RATE = 1 << 20  # bytes/s: a run slower than 1 MiB/s is stuck, not slow
SETUP_TIMEOUT = 120
DIRECTIONS = ("upload", "download")
GIB = 1 << 30


@dataclass(frozen=True)
class Result:
    wall: float
    client_cpu: float
    server_cpu: float


def transfer(bench: Bench, route: Route, size: int, direction: str) -> Result:
    """Move `size` zero bytes through `route` one way; return wall and CPU seconds."""
    timeout = SETUP_TIMEOUT + size / MIN_RATE
    client_cpu0 = children_cpu_seconds()
    server_children = child_pids(route.server_pid)
    server_cpu0 = proc_cpu_seconds(route.server_pid)
    generate = ["head", "-c", str(size), "/dev/zero"]
    if direction == "upload":
        first, second = generate, [*route.argv, "wc", "-c"]
    else:
        first, second = [*route.argv, *generate], ["wc", "-c"]
    start = time.perf_counter()
    producer = subprocess.Popen(first, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=bench.env, start_new_session=True)
    consumer = None
    try:
        assert producer.stdout is not None
        consumer = subprocess.Popen(second, stdin=producer.stdout, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=bench.env,
                                    start_new_session=True)
        producer.stdout.close()  # only the consumer holds the pipe now: EOF when it is done
        out, err = consumer.communicate(timeout=timeout)
        _, perr = producer.communicate(timeout=10)
        wall = time.perf_counter() - start
    except subprocess.TimeoutExpired:
        raise BenchError(f"{route.name}: moving {size} bytes ({direction}) took longer than "
                         f"{timeout:.0f}s (under {MIN_RATE >> 20} MiB/s)") from None
    finally:
        for proc in (consumer, producer):
            if proc is not None and proc.poll() is None:
                kill_group(proc, grace=1)
    client_cpu = children_cpu_seconds() - client_cpu0
    bench.check_alive()
    wait_children_reaped(route.server_pid, server_children)
    server_cpu = proc_cpu_seconds(route.server_pid) - server_cpu0
    for proc, text in ((producer, perr), (consumer, err)):
        if proc.returncode != 0:
            last = (text.decode(errors="replace").strip().splitlines() or ["(no output)"])[-1]
            raise BenchError(f"{route.name}: {direction}: `{proc.args[0]}` exited "
                             f"{proc.returncode}: {last}")
    got = out.decode(errors="replace").strip()
    if got != str(size):
        raise BenchError(f"{route.name}: {direction}: {got or 'nothing'} bytes arrived, "
                         f"sent {size}")
    return Result(wall, client_cpu, server_cpu)


def measure(bench: Bench, routes: list[Route], size: int, runs: int
            ) -> dict[tuple[str, str], list[Result]]:
    """Run every path both ways `runs` times, alternating orders so no path always goes first."""
    results: dict[tuple[str, str], list[Result]] = {}
    for run in range(runs):
        order = routes[run % len(routes):] + routes[:run % len(routes)]
        directions = DIRECTIONS if run % 2 == 0 else DIRECTIONS[::-1]
        for direction in directions:
            for route in order:
                results.setdefault((direction, route.name), []).append(
                    transfer(bench, route, size, direction))
    return results


def report(title: str, results: dict[tuple[str, str], list[Result]], routes: list[Route],
           setup: dict[str, float], size: int) -> None:
    mib, gib = size / 2**20, size / GIB
    print(title)
    print(f"{'direction':<9} {'path':<14} {'wall s':>7} {'setup s':>8} {'MiB/s':>7}"
          f" {'x openssh':>9} {'net MiB/s':>9} {'client cpu s/GiB':>16}"
          f" {'server cpu s/GiB':>16} {'total':>6} {'x openssh':>9}")
    for direction in DIRECTIONS:
        base = results[(direction, BASELINE)]
        base_rate = mib / statistics.median(r.wall for r in base)
        base_cpu = statistics.median(r.client_cpu + r.server_cpu for r in base) / gib
        for route in routes:
            runs = results[(direction, route.name)]
            wall = statistics.median(r.wall for r in runs)
            rate = mib / wall
            net = mib / (wall - setup[route.name]) if wall > setup[route.name] else float("nan")
            client = statistics.median(r.client_cpu for r in runs) / gib
            server = statistics.median(r.server_cpu for r in runs) / gib
            total = statistics.median(r.client_cpu + r.server_cpu for r in runs) / gib
            print(f"{direction:<9} {route.name:<14} {wall:7.2f} {setup[route.name]:8.2f}"
                  f" {rate:7.1f} {rate / base_rate:9.2f} {net:9.1f} {client:16.2f}"
                  f" {server:16.2f} {total:6.2f} {total / base_cpu:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"),
                        help="bytes per transfer: 1G (default), 256M, 64k, ... (binary units)")
    parser.add_argument("--runs", type=positive_int, default=1,
                        help="transfers per path and direction; the median is reported")
    parser.add_argument("--cipher", default=TSH_CIPHER,
                        help=f"cipher pinned on the stock clients (default {TSH_CIPHER}, "
                             "what tsh negotiates); tsh is left out if it differs")
    parser.add_argument("--no-default", action="store_true",
                        help="skip the second pass with each client's default cipher")
    add_common_args(parser)
    args = parser.parse_args()
    size: int = args.size

    with Bench(keep=args.keep, ssh_teleport=not args.no_ssh_teleport) as bench:
        pid = bench.teleport_pid
        # Reset the peak so "before" is the steady state after start-up and login, then
        # warm every path up (and check that it works) with one command.
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        passes = [(f"cipher pinned: {args.cipher} on every path", args.cipher)]
        if not args.no_default:
            passes.append(("default ciphers: openssh and ssh-teleport chacha20-poly1305 "
                           f"(OpenSSH's default), tsh {TSH_CIPHER}", None))
        tables = []
        hwm_before = rss_before = 0
        for title, cipher in passes:
            routes = bench.paths(cipher)
            if cipher is not None and cipher != TSH_CIPHER:
                routes = [r for r in routes if r.name != "tsh"]
            setup: dict[str, float] = {}
            for route in routes:
                bench.check(route, ["true"], SETUP_TIMEOUT)
                start = time.perf_counter()
                bench.check(route, ["true"], SETUP_TIMEOUT)
                setup[route.name] = time.perf_counter() - start
            if not hwm_before:
                hwm_before = proc_status_kb(pid, "VmHWM")
                rss_before = proc_status_kb(pid, "VmRSS")
            tables.append((title, measure(bench, routes, size, args.runs), routes, setup))
        hwm_after = proc_status_kb(pid, "VmHWM")
        rss_after = proc_status_kb(pid, "VmRSS")

    print(f"{size / 2**20:.0f} MiB each way, {args.runs} run(s) per path and direction, "
          "median shown; every login by certificate")
    for title, results, routes, setup in tables:
        report(title, results, routes, setup, size)
    print(f"teleport process (proxy + node + auth) peak RSS: {hwm_before / 1024:.1f} MiB before,"
          f" {hwm_after / 1024:.1f} MiB after; RSS {rss_before / 1024:.1f} -> "
          f"{rss_after / 1024:.1f} MiB")


if __name__ == "__main__":
    run_main(main)
