"""One telemetry poll of N simulated miners by rigd, and by pyasic (get_data) in the same run.

The simulators run in their own process, each miner on its own loopback address with its
firmware's standard ports (pyasic knows no others): an equal mix of the five families rigd
speaks (stock Antminer, LuxOS, Whatsminer, Avalon, Braiins OS). Each client runs in a
subprocess of its own, so its peak RSS is its own: it identifies every miner (rigd `discover`
with no family given; pyasic `get_miner`, 64 at a time), polls once to warm up, then polls
`--runs` times (rigd `poll_all`, pyasic `asyncio.gather` of every miner's `get_data`); the
median is reported.
rigd's own baselines, in the same run: one miner's poll time x N (serial polling) and
`poll_all` at concurrency 1 on a subset. Targets: rigd under 1 s for 500 miners, and 10x
faster than pyasic.

    .venv/bin/python bench/asic.py [--miners 500] [--runs 5] [--pyasic-runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._fleet import fleet_process  # noqa: E402
from bench._machine import describe  # noqa: E402

FAMILIES = "antminer,luxos,whatsminer,avalon,braiins"
TARGET_S_PER_500 = 1.0
TARGET_SPEEDUP = 10.0
IDENTIFY_CONCURRENCY = 64


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- the rigd client, in its own process --------------------------------------------------------

def rigd_worker(options: dict[str, Any], runs: int, concurrency: int, sample: int
                ) -> dict[str, Any]:
    import hal.asic
    from hal.asic import Miner, poll_all
    from hal.device import Telemetry

    # One event loop for every poll, as in rigd (hal's I/O thread): connections that persist
    # (Braiins OS's gRPC channel) are reused from poll to poll.
    runner = asyncio.Runner()

    cpus: list[float] = []

    def poll(miners: list[Miner], limit: int) -> tuple[float, int]:
        start, cpu = time.perf_counter(), time.process_time()
        results = runner.run(poll_all(miners, limit))
        elapsed = time.perf_counter() - start
        cpus.append(time.process_time() - cpu)
        return elapsed, sum(isinstance(r, Telemetry) and (r.hashrate_hs or 0) > 0
                            for r in results)

    unnamed = {**options, "miners": [{k: v for k, v in m.items() if k != "family"}
                                      for m in options["miners"]]}
    start = time.perf_counter()
    miners: list[Miner] = hal.asic.discover(unnamed)  # type: ignore[assignment]
    identify_s = time.perf_counter() - start
    identified = sum(isinstance(m, Miner) for m in miners)
    miners = [m for m in miners if isinstance(m, Miner)]
    poll(miners, concurrency)  # warm-up: imports, first connections, logins
    cpus.clear()
    walls, goods = zip(*(poll(miners, concurrency) for _ in range(runs)), strict=True)
    cpu_s = statistics.median(cpus)
    tracemalloc.start()
    poll(miners, concurrency)
    peak_alloc = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = _rss_mib()
    subset = miners[:sample]
    singles = []
    for miner in subset:
        begin = time.perf_counter()
        runner.run(miner.poll())
        singles.append(time.perf_counter() - begin)
    serial = statistics.median(poll(subset, 1)[0] for _ in range(3))
    runner.close()
    return {"identify_s": identify_s, "identified": identified, "walls": walls,
            "cpu_s": cpu_s, "goods": goods, "rss_mib": rss,
            "peak_alloc_mib": peak_alloc / 2**20,
            "single_x_n_s": statistics.fmean(singles) * len(options["miners"]),
            "serial_scaled_s": serial * len(options["miners"]) / max(len(subset), 1)}


# --- pyasic, in its own process -------------------------------------------------------------------

def pyasic_worker(options: dict[str, Any], runs: int) -> dict[str, Any]:
    import logging
    import warnings

    import pyasic

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    hosts = [m["address"].rsplit(":", 1)[0] for m in options["miners"]]

    async def identify() -> list[Any]:
        # A bounded number at a time: get_miner gives up after pyasic's 3 s factory timeout,
        # which 500 identifications at once overrun on two cores (and pyasic's own
        # get_multiple_miners starts every task at once, whatever its limit).
        slots = asyncio.Semaphore(IDENTIFY_CONCURRENCY)

        async def one(host: str) -> Any:
            async with slots:
                return await pyasic.get_miner(host)

        found = await asyncio.gather(*(one(h) for h in hosts))
        return [m for m in found if m is not None]

    async def get_data(miners: list[Any]) -> list[Any]:
        return list(await asyncio.gather(*(m.get_data() for m in miners),
                                         return_exceptions=True))

    cpus: list[float] = []

    def poll(miners: list[Any]) -> tuple[float, int]:
        start, cpu = time.perf_counter(), time.process_time()
        results = asyncio.run(get_data(miners))
        elapsed = time.perf_counter() - start
        cpus.append(time.process_time() - cpu)
        return elapsed, sum(not isinstance(r, BaseException) and r.hashrate is not None
                            and float(r.hashrate) > 0 for r in results)

    start = time.perf_counter()
    miners = asyncio.run(identify())
    identify_s = time.perf_counter() - start
    poll(miners)  # warm-up
    cpus.clear()
    walls, goods = zip(*(poll(miners) for _ in range(runs)), strict=True)
    return {"identify_s": identify_s, "identified": len(miners), "walls": walls,
            "cpu_s": statistics.median(cpus), "goods": goods, "rss_mib": _rss_mib()}


def _run_worker(which: str, options_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", which, "--options", str(options_path),
               "--runs", str(args.runs if which == "rigd" else args.pyasic_runs),
               "--concurrency", str(args.concurrency), "--serial-sample",
               str(args.serial_sample)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False,
                          cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{which} worker failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--miners", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pyasic-runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--families", default=FAMILIES)
    parser.add_argument("--serial-sample", type=int, default=40,
                        help="miners polled one at a time for rigd's baselines")
    parser.add_argument("--worker", choices=("rigd", "pyasic"), help=argparse.SUPPRESS)
    parser.add_argument("--options", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        options = json.loads(args.options.read_text())
        if args.worker == "rigd":
            result = rigd_worker(options, args.runs, args.concurrency, args.serial_sample)
        else:
            result = pyasic_worker(options, args.runs)
        print(json.dumps(result))
        return 0

    load_before = os.getloadavg()
    with fleet_process("--count", str(args.miners), "--families", args.families,
                       "--standard-ports") as options, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "options.json"
        path.write_text(json.dumps(options))
        rigd = _run_worker("rigd", path, args)
        theirs = _run_worker("pyasic", path, args)

    n = args.miners
    families = args.families.split(",")
    print(f"machine: {describe()}; load average (1 min) {load_before[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after (the cores are shared: figures move with it)")
    print(f"fleet: {n} simulated miners ({', '.join(families)}; {n // len(families)} each), "
          f"each on its own loopback address with the standard ports, in a separate process")
    print(f"{'client (own process)':<22}{'identify':>9}{'poll median':>13}{'min..max':>16}"
          f"{'CPU/poll':>10}{'hashing':>9}{'peak RSS':>10}")
    rows = (("rigd (hal.asic)", rigd), (f"pyasic {version('pyasic')}", theirs))
    for name, r in rows:
        walls = r["walls"]
        print(f"{name:<22}{r['identify_s']:>8.3f}s{statistics.median(walls):>12.3f}s"
              f"{min(walls):>8.3f}..{max(walls):.3f}s{r['cpu_s']:>9.3f}s"
              f"{min(r['goods']):>5}/{n:<3}{r['rss_mib']:>6.0f} MiB")
    ours, pyasic_s = statistics.median(rigd["walls"]), statistics.median(theirs["walls"])
    speedup = pyasic_s / ours
    target = TARGET_S_PER_500 * n / 500
    print(f"rigd identified {rigd['identified']}/{n}, pyasic {theirs['identified']}/{n}")
    print(f"rigd poll: {speedup:.1f}x faster than pyasic get_data "
          f"(target {TARGET_SPEEDUP:g}x: {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}); "
          f"{ours:.3f} s for {n} (target under {target:g} s: "
          f"{'met' if ours < target else 'NOT met'}); peak RSS {rigd['rss_mib']:.0f} vs "
          f"{theirs['rss_mib']:.0f} MiB")
    print(f"rigd peak Python allocations during one poll (tracemalloc): "
          f"{rigd['peak_alloc_mib']:.1f} MiB")
    print(f"rigd baseline, single-miner poll x {n} (mean of {args.serial_sample}): "
          f"{rigd['single_x_n_s']:.3f} s (poll_all is {rigd['single_x_n_s'] / ours:.1f}x faster)")
    print(f"rigd baseline, poll_all concurrency=1 on {args.serial_sample} miners scaled to {n}: "
          f"{rigd['serial_scaled_s']:.3f} s ({rigd['serial_scaled_s'] / ours:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
