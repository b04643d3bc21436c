"""Time the CLI commands users type all day, against a running cluster (a CLI that takes 0.5 s
feels broken).

Run: .venv/bin/python bench/startup.py [--runs 20]

Starts a cluster and a stock sshd (bench/common.py), then times, in rotating order so that a
burst of load on the machine does not fall on one command:
- the floors: `python -c pass` (this interpreter's own start) and `ssh -V`;
- commands that print without the network: `tsh version`, `tctl --help`;
- commands that ask the cluster: `tsh status`, `tsh ls`, `tctl nodes ls`, `tctl users ls`
  (target: under 150 ms each);
- a whole short command, `tsh ssh root@node true`, against `ssh -J` through a stock sshd to
  itself (OpenSSH's two handshakes; target: tsh's p50 at or below it).
Prints p50 and p95 in ms per command, and the p50 ratio against its reference.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402 - the bench directory is not a package
    BASELINE,
    BIN,
    NODENAME,
    Bench,
    BenchError,
    percentile,
    positive_int,
    run_main,
)

#: What the commands that ask the cluster should stay under, in ms (issue: "instant CLIs").
TARGET_MS = 150.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=positive_int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    with Bench(keep=args.keep, ssh_teleport=False) as bench:
        tctl = [str(BIN / "tctl"), "-c", str(bench.root / "teleport.yaml")]
        tsh = str(BIN / "tsh")
        openssh = next(p for p in bench.paths() if p.name == BASELINE)
        # name -> (argv, reference name or None, target in ms or None)
        commands: dict[str, tuple[list[str], str | None, float | None]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], None, None),
            "ssh -V": (["ssh", "-V"], None, None),
            "tsh version": ([tsh, "version"], "ssh -V", None),
            "tctl --help": ([*tctl, "--help"], "ssh -V", None),
            "tsh status": ([tsh, "status"], "ssh -V", TARGET_MS),
            "tsh ls": ([tsh, "ls"], "ssh -V", TARGET_MS),
            "tctl nodes ls": ([*tctl, "nodes", "ls"], "ssh -V", TARGET_MS),
            "tctl users ls": ([*tctl, "users", "ls"], "ssh -V", TARGET_MS),
            "ssh -J ... true": ([*openssh.argv, "true"], None, None),
            "tsh ssh node true": ([tsh, "ssh", f"root@{NODENAME}", "true"], "ssh -J ... true",
                                  None),
        }
        for argv, _, _ in commands.values():  # warm the page cache; every command must work
            _time(bench, argv)
        times: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for run in range(args.runs):
            shift = run % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(_time(bench, commands[name][0]))
        bench.check_alive()
    p50 = {name: statistics.median(t) for name, t in times.items()}
    print(f"{'command':<20} {'p50 ms':>8} {'p95 ms':>8}  {'x reference':<24} {'target':>8}")
    for name, (_, reference, target) in commands.items():
        ratio = f"{p50[name] / p50[reference]:6.2f} x {reference}" if reference else ""
        goal = "" if target is None else (
            f"{'ok' if p50[name] * 1000 < target else 'MISSED'} <{target:.0f}")
        print(f"{name:<20} {p50[name] * 1000:8.1f} {percentile(sorted(times[name]), 95) * 1000:8.1f}"
              f"  {ratio:<24} {goal:>8}")


def _time(bench: Bench, argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=bench.env, timeout=60)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        last = (result.stderr.decode(errors="replace").strip().splitlines() or ["(no output)"])
        raise BenchError(f"`{' '.join(Path(a).name for a in argv[:3])} ...` exited "
                         f"{result.returncode}: {last[-1]}")
    return elapsed


if __name__ == "__main__":
    run_main(main)
