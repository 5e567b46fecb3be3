"""One telemetry poll of N simulated miners on loopback: wall time and peak memory, median of
several runs, beside two baselines measured in the same run: a single miner's poll time x N
(serial polling) and polling a subset at concurrency 1. Target: 500 miners within 2 s.

The simulators run in their own process (`python -m hal.sim.asic.fleet`), a mix of Antminer
(3 connections per poll: multi-commands refused), LuxOS (1 multi-command), Whatsminer
(5 connections) and Avalon (1 multi-command), so the client's cost is measured apart from theirs.

    python bench/asic.py [--miners 500] [--runs 5] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hal.asic
from bench._machine import describe
from hal.asic import Miner, poll_all
from hal.asic.transport import DEFAULT_CONCURRENCY
from hal.device import Telemetry

FAMILIES = "antminer,luxos,whatsminer,avalon"


def _poll_once(miners: list[Miner], concurrency: int) -> tuple[float, int]:
    start = time.perf_counter()
    results = asyncio.run(poll_all(miners, concurrency))
    elapsed = time.perf_counter() - start
    good = sum(isinstance(r, Telemetry) and (r.hashrate_hs or 0) > 0 for r in results)
    return elapsed, good


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--miners", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--serial-sample", type=int, default=40,
                        help="miners polled one at a time for the baselines")
    args = parser.parse_args()

    fleet = subprocess.Popen(
        [sys.executable, "-c", "import sys; from hal.sim.asic.fleet import main; "
         "sys.exit(main(sys.argv[1:]))", "--count", str(args.miners),
         "--families", FAMILIES],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert fleet.stdout is not None
        options = json.loads(fleet.stdout.readline())
        miners: list[Miner] = hal.asic.discover(options)  # type: ignore[assignment]
        assert len(miners) == args.miners

        _poll_once(miners, args.concurrency)  # warm-up: imports, first connections
        walls, goods = [], []
        for _ in range(args.runs):
            wall, good = _poll_once(miners, args.concurrency)
            walls.append(wall)
            goods.append(good)
        tracemalloc.start()
        _poll_once(miners, args.concurrency)
        _current, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        # Baseline 1: one miner at a time, each poll timed alone, x N.
        sample = miners[: args.serial_sample]
        singles = []
        for miner in sample:
            start = time.perf_counter()
            asyncio.run(miner.poll())
            singles.append(time.perf_counter() - start)
        single_x_n = statistics.fmean(singles) * args.miners
        # Baseline 2: the same subset through poll_all at concurrency 1, scaled to N.
        serial_subset = statistics.median(
            _poll_once(sample, 1)[0] for _ in range(3)) * args.miners / len(sample)
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        if fleet.stdin is not None:
            fleet.stdin.close()
        fleet.wait(timeout=30)

    median = statistics.median(walls)
    print(f"machine: {describe()}")
    print(f"fleet: {args.miners} simulated miners ({FAMILIES}) in a separate process, loopback")
    print(f"poll_all concurrency={args.concurrency}: median {median:.3f} s over {args.runs} runs "
          f"(min {min(walls):.3f}, max {max(walls):.3f}); miners hashing per run: "
          f"{min(goods)}..{max(goods)} of {args.miners}")
    print(f"  throughput: {args.miners / median:.0f} miners/s; target 500 miners in 2 s: "
          f"{'met' if median <= 2.0 * args.miners / 500 else 'NOT met'}")
    print(f"  peak Python allocations during one poll (tracemalloc): "
          f"{peak_bytes / 2**20:.1f} MiB; process max RSS: {rss_mib:.0f} MiB")
    print(f"baseline, single-miner poll x {args.miners} (mean of {len(sample)}, mixed families): "
          f"{single_x_n:.3f} s  (speed-up {single_x_n / median:.1f}x)")
    print(f"baseline, poll_all concurrency=1 on {len(sample)} miners scaled to {args.miners}: "
          f"{serial_subset:.3f} s  (speed-up {serial_subset / median:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
