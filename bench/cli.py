"""rigctl's wall time beside Python's start-up floor, measured in the same run.

Runs `rigctl inventory` and `rigctl telemetry` (the installed entry point, against a real rigd
on a Unix socket), `rigctl --version` (the CLI's own start-up, no call), `python -c pass` (the
floor: an interpreter that does nothing) and a bare gRPC call (an interpreter that imports grpc
and the generated stubs and makes one GetInventory: what any Python client of rigd pays), N
times each, interleaved, and prints medians and the ratio to the floor. With `--baseline DIR`
(another source tree, e.g. `git archive main | tar -x -C DIR`) the same rigctl commands run on
that tree's code too, in the same interleaved loop: before and after in one run. Targets: issue
13, within 1.5x of the floor; issue 22, no heavier than before and toward 3x.

    python bench/cli.py [--runs 30] [--baseline DIR]
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


BARE_CALL = ("import sys, grpc; from rigapi import pb, pb_grpc; "
             "pb_grpc.RigAgentStub(grpc.insecure_channel('unix:' + sys.argv[1]))"
             ".GetInventory(pb.GetInventoryRequest(), timeout=10)")


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   env=env)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="a source tree whose rigctl runs beside this one's")
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
            here = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
            cases: dict[str, tuple[list[str], dict[str, str]]] = {
                "python -c pass (floor)": ([sys.executable, "-c", "pass"], here),
                "bare gRPC GetInventory": ([sys.executable, "-c", BARE_CALL, sock], here),
                "rigctl --version": ([RIGCTL, "--version"], here),
                "rigctl inventory": ([RIGCTL, "--socket", sock, "inventory"], here),
                "rigctl telemetry": ([RIGCTL, "--socket", sock, "telemetry"], here),
            }
            if args.baseline is not None:
                before = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
                for name in ("rigctl --version", "rigctl inventory", "rigctl telemetry"):
                    cases[f"{name} (baseline)"] = (cases[name][0], before)
            for argv, env in cases.values():  # warm the page cache and rigd
                timed(argv, env)
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.runs):
                for name, (argv, env) in cases.items():
                    samples[name].append(timed(argv, env))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    floor = statistics.median(samples["python -c pass (floor)"])
    print(f"machine: {describe()}")
    print(f"median of {args.runs} runs each, interleaved\n")
    print(f"{'command':<37}{'median ms':>11}{'p90 ms':>9}{'x floor':>9}")
    for name, values in samples.items():
        ordered = sorted(values)
        median = statistics.median(ordered)
        p90 = ordered[int(len(ordered) * 0.9) - 1]
        print(f"{name:<37}{median * 1e3:>11.1f}{p90 * 1e3:>9.1f}{median / floor:>9.2f}")
    if args.baseline is not None:
        print()
        for name in ("rigctl --version", "rigctl inventory", "rigctl telemetry"):
            now = statistics.median(samples[name])
            then = statistics.median(samples[f"{name} (baseline)"])
            print(f"{name}: {now / then:.2f}x the baseline's wall time")
    print("\ntargets: rigctl inventory / telemetry within 1.5x of the floor (issue 13); "
          "no heavier than the baseline, toward 3x the floor (issue 22)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
