#!/usr/bin/env python3
"""Bulk throughput of stdin through a session: `head -c N /dev/zero | tsh ssh root@<node> ...`.

Usage: /tmp/venv/bin/python bench/throughput.py [--size 1G] [--runs 1] [--no-ssh-teleport]

Starts a single-host cluster and a stock sshd on 127.0.0.1 (see bench/common.py) and pipes
--size bytes (default 1 GiB; 256M for a quick run) from a `head -c N /dev/zero` process into
each path's client, which runs `wc -c` on the target: the same work as `cat > /dev/null`, plus
a byte count the script checks, so a truncated stream is an error and not a fast result.
  openssh       ssh -J root@localhost:P -p P root@127.0.0.1  (stock sshd as jump and target)
  tsh           tsh ssh root@<node>                          (Teleport proxy -> Teleport node)
  ssh-teleport  ssh -J <user>@<proxy> root@<node>.<cluster>  (stock ssh, tsh certificate)
For each path it prints the wall time (process start to exit, so connection set-up is
included: see `setup s`, the time of one `true` over the same path), MiB/s = size / wall,
the ratio against openssh (above 1 is faster than OpenSSH), net MiB/s = size / (wall -
setup s), i.e. the rate once the session is up, the CPU seconds of the client
side (client, its jump-hop child and the generator) and of the server side (the teleport
process, or the sshd listener with its per-connection children, each with their reaped
children such as `wc`), and the teleport process's peak RSS (VmHWM) before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import time
from pathlib import Path

from common import (
    BASELINE,
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

REMOTE = ["wc", "-c"]
MIN_RATE = 1 << 20  # bytes/s: a run slower than 1 MiB/s is stuck, not slow
SETUP_TIMEOUT = 120


def transfer(bench: Bench, route: Route, size: int) -> tuple[float, float, float]:
    """Pipe `size` zero bytes through `route`; return wall, client CPU and server CPU seconds."""
    timeout = SETUP_TIMEOUT + size / MIN_RATE
    client_cpu0 = children_cpu_seconds()
    server_children = child_pids(route.server_pid)
    server_cpu0 = proc_cpu_seconds(route.server_pid)
    start = time.perf_counter()
    gen = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, start_new_session=True)
    client = None
    try:
        assert gen.stdout is not None
        client = subprocess.Popen([*route.argv, *REMOTE], stdin=gen.stdout,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=bench.env,
                                  start_new_session=True)
        gen.stdout.close()  # only the client holds the pipe now: it sees EOF when head is done
        out, err = client.communicate(timeout=timeout)
        gen.wait(10)
        wall = time.perf_counter() - start
    except subprocess.TimeoutExpired:
        raise BenchError(f"{route.name}: moving {size} bytes took longer than {timeout:.0f}s "
                         f"(under {MIN_RATE >> 20} MiB/s)") from None
    finally:
        for proc in (client, gen):
            if proc is not None and proc.poll() is None:
                kill_group(proc, grace=1)
    client_cpu = children_cpu_seconds() - client_cpu0
    bench.check_alive()
    wait_children_reaped(route.server_pid, server_children)
    server_cpu = proc_cpu_seconds(route.server_pid) - server_cpu0
    if client.returncode != 0:
        last = (err.decode(errors="replace").strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"{route.name}: client exited {client.returncode}: {last}")
    got = out.decode(errors="replace").strip()
    if got != str(size):
        raise BenchError(f"{route.name}: the target counted {got or 'nothing'} bytes, "
                         f"sent {size}")
    return wall, client_cpu, server_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"),
                        help="bytes per transfer: 1G (default), 256M, 64k, ... (binary units)")
    parser.add_argument("--runs", type=positive_int, default=1,
                        help="transfers per path; the median is reported (default 1)")
    add_common_args(parser)
    args = parser.parse_args()
    size: int = args.size

    with Bench(keep=args.keep, ssh_teleport=not args.no_ssh_teleport) as bench:
        pid = bench.teleport_pid
        # Reset the peak so "before" is the steady state after start-up and login, then
        # warm every path up (and check that it works) with one command.
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        routes = bench.paths()
        setup: dict[str, float] = {}
        for route in routes:
            bench.check(route, ["true"], SETUP_TIMEOUT)
            start = time.perf_counter()
            bench.check(route, ["true"], SETUP_TIMEOUT)
            setup[route.name] = time.perf_counter() - start
        hwm_before = proc_status_kb(pid, "VmHWM")
        rss_before = proc_status_kb(pid, "VmRSS")
        results: dict[str, list[tuple[float, float, float]]] = {r.name: [] for r in routes}
        hwm_by_path: dict[str, int] = {}
        for _ in range(args.runs):
            for route in routes:
                results[route.name].append(transfer(bench, route, size))
                hwm_by_path[route.name] = proc_status_kb(pid, "VmHWM")
        hwm_after = proc_status_kb(pid, "VmHWM")
        rss_after = proc_status_kb(pid, "VmRSS")

    mib = size / 2**20
    print(f"{mib:.0f} MiB of stdin into `{' '.join(REMOTE)}`, {args.runs} run(s) per path, "
          "median shown")
    print(f"{'path':<14} {'wall s':>8} {'setup s':>8} {'MiB/s':>8} {'x openssh':>10}"
          f" {'net MiB/s':>10}"
          f" {'client cpu s':>13} {'server cpu s':>13}")
    rates: dict[str, float] = {}
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        rates[name] = mib / wall
        net = mib / (wall - setup[name]) if wall > setup[name] else float("nan")
        print(f"{name:<14} {wall:8.2f} {setup[name]:8.2f} {rates[name]:8.1f}"
              f" {rates[name] / rates[BASELINE]:10.2f} {net:10.1f}"
              f" {statistics.median(r[1] for r in runs):13.2f}"
              f" {statistics.median(r[2] for r in runs):13.2f}")
    print(f"teleport process (proxy + node + auth) peak RSS: {hwm_before / 1024:.1f} MiB before,"
          f" {hwm_after / 1024:.1f} MiB after; RSS {rss_before / 1024:.1f} -> "
          f"{rss_after / 1024:.1f} MiB")
    print("  peak after each path: " + ", ".join(
        f"{name} {kb / 1024:.1f} MiB" for name, kb in hwm_by_path.items()))
    if "tsh" in rates:
        print(f"ratio teleport/openssh (tsh MiB/s / openssh MiB/s): "
              f"{rates['tsh'] / rates[BASELINE]:.2f}")


if __name__ == "__main__":
    run_main(main)
