"""Time the start-up of `tsh version` and `tctl --help` (a CLI that takes 0.5 s feels broken).

Run: .venv/bin/python bench/startup.py [--runs 20]
Prints median and p95 wall time of each command next to `ssh -V` as the OpenSSH reference.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def measure(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    reference = measure(["ssh", "-V"], args.runs)
    print(f"{'command':<20} {'p50 ms':>8} {'p95 ms':>8} {'x ssh -V':>9}")
    for argv in (["ssh", "-V"], [str(BIN / "tsh"), "version"], [str(BIN / "tctl"), "--help"],
                 [str(BIN / "teleport"), "version"]):
        times = reference if argv[0] == "ssh" else measure(argv, args.runs)
        p50 = statistics.median(times)
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
        name = " ".join([Path(argv[0]).name, *argv[1:]])
        print(f"{name:<20} {p50 * 1000:8.1f} {p95 * 1000:8.1f} {p50 / statistics.median(reference):9.1f}")


if __name__ == "__main__":
    main()
