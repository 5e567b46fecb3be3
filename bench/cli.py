"""rigctl's wall time beside Python's start-up floor, measured in the same run.

Runs `rigctl inventory` and `rigctl telemetry` (the installed entry point, against a real rigd
on a Unix socket), `rigctl --version` (the CLI's own start-up, no call), and `python -c pass`
(the floor: an interpreter that does nothing), N times each, interleaved, and prints medians and
the ratio to the floor. Target (issue 13): within 1.5x of the floor.

    python bench/cli.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import describe

RIGCTL = str(Path(sys.executable).with_name("rigctl"))


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rigd-bench-cli-") as tmp:
        sock = f"{tmp}/rigd.sock"
        config = Path(tmp, "rigd.toml")
        config.write_text(f'[server]\nunix_socket = "{sock}"\ndrain_s = 0\n'
                          f'[workloads]\nstate_dir = "{tmp}/state"\n'
                          '[hal]\nbackends = ["host"]\n')
        proc = subprocess.Popen([sys.executable, "-m", "agent.main", "--config", str(config)],
                                stderr=subprocess.DEVNULL)
        try:
            while not os.path.exists(sock):
                time.sleep(0.05)
            cases = {
                "python -c pass (floor)": [sys.executable, "-c", "pass"],
                "rigctl --version": [RIGCTL, "--version"],
                "rigctl inventory": [RIGCTL, "--socket", sock, "inventory"],
                "rigctl telemetry": [RIGCTL, "--socket", sock, "telemetry"],
            }
            for argv in cases.values():  # warm the page cache and rigd
                timed(argv)
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.runs):
                for name, argv in cases.items():
                    samples[name].append(timed(argv))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    floor = statistics.median(samples["python -c pass (floor)"])
    print(f"machine: {describe()}")
    print(f"median of {args.runs} runs each, interleaved\n")
    print(f"{'command':<26}{'median ms':>11}{'p90 ms':>9}{'x floor':>9}")
    for name, values in samples.items():
        ordered = sorted(values)
        median = statistics.median(ordered)
        p90 = ordered[int(len(ordered) * 0.9) - 1]
        print(f"{name:<26}{median * 1e3:>11.1f}{p90 * 1e3:>9.1f}{median / floor:>9.2f}")
    print("\ntarget: rigctl inventory / telemetry within 1.5x of the floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
