"""Miner reads at fleet scale: rigd's ASIC library beside pyasic, and alone at thousands.

Part 1 (`--mode pyasic`): one telemetry poll of N simulated miners by rigd, and by pyasic
(get_data) in the same run.

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

Part 2 (`--mode scale`): the library alone (hal.asic, no rigd) at `--sizes` 1,000, 2,000 and
5,000 miners, each with 0% and 10% hung (`--fault hang:10%` in the fleet process): discover()
time (identification, the hung ones included: target one identify timeout + 0.5 s), then
`--passes` poll passes with every miner read at once on one event loop (telemetry_async, as
the agent reads): the time the last healthy reading arrived and the time the pass settled (the
hung ones abandoned at their deadline), the share of healthy miners read correctly (a reading,
hashing, at its family's rate), CPU seconds per pass and peak RSS. Baseline, same run: one
pass with at most 64 readings at once, the rationing the HAL's shared loop used to impose.

Part 3 (`--mode rigd`): the same fleets through rigd itself (a rigd process reading them with
its sampler at `--interval-s`, 2 s; GetTelemetry served from its readings). After
`--warmup-passes` (10: at start the curtailer reads every miner's controls), per pass (one
GetTelemetry per interval): the share of healthy miners read fresh (a good reading at most 1.25
intervals old when served), the pass span (the first to the last healthy reading served: a
pass spread over its interval spans just under it; longer, the passes stretch), the oldest
healthy reading, the time GetTelemetry took, rigd's CPU seconds in the pass, the share of a
core, its CPU milliseconds per good reading taken in the pass, its RSS and threads (psutil on
rigd's pid), and a DeviceAction (sleep, then wake) on a healthy LuxOS miner while the hung
miners' reads are in flight. Baseline, same run: the library alone reading the same fleet
once (every miner at once on one loop), its CPU milliseconds per miner (hung ones included).
Targets (issue 20): every healthy miner fresh in every pass at 5,000 with 10% hung; rigd under
one core on average (CPU per pass under the interval); RSS under 400 MiB at 5,000.

    .venv/bin/python bench/asic.py [--mode all|pyasic|scale|rigd] [--miners 500] [--runs 5]
        [--pyasic-runs 3] [--sizes 1000,2000,5000] [--hung 0,10] [--passes 3]
        [--interval-s 2] [--warmup-passes 10]

Each client runs in a process of its own and raises its soft RLIMIT_NOFILE to the hard limit
(5,000 miners read at once need about 8,000 descriptors), as does the fleet process.
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
from bench._machine import describe, end_process  # noqa: E402

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


# --- the library at scale, in its own process ----------------------------------------------------

def scale_worker(options: dict[str, Any], hung: list[int], passes: int,
                 timeout_s: float) -> dict[str, Any]:
    import hal.asic
    import hal.errors
    from hal.asic import Miner
    from hal.device import Telemetry
    from hal.sim.asic.fleet import raise_fd_limit

    raise_fd_limit()
    hung_set = set(hung)
    entries = [{**m, "timeout_s": timeout_s} for m in options["miners"]]
    unnamed = {"miners": [{k: v for k, v in m.items() if k != "family"} for m in entries],
               "timeout_s": timeout_s}
    start = time.perf_counter()
    found = hal.asic.discover(unnamed)
    discover_s = time.perf_counter() - start
    identified = sum(isinstance(d, Miner) for i, d in enumerate(found) if i not in hung_set)
    # Every miner, hung ones included, as configured with its family (no identification).
    miners: list[Miner] = hal.asic.discover({"miners": entries})  # type: ignore[assignment]
    runner = asyncio.Runner()  # one event loop for every pass, as the agent has

    async def timed(miner: Miner, began: float) -> tuple[Telemetry | None, float]:
        try:
            reading: Telemetry | None = await miner.telemetry_async()
        except hal.errors.HalError:
            reading = None
        return reading, time.perf_counter() - began

    def one_pass(limit: int | None) -> dict[str, float]:
        cpu = time.process_time()
        began = time.perf_counter()

        async def read_all() -> list[tuple[Telemetry | None, float]]:
            slots = asyncio.Semaphore(limit or len(miners))

            async def bounded(miner: Miner) -> tuple[Telemetry | None, float]:
                async with slots:
                    return await timed(miner, began)

            return list(await asyncio.gather(*(bounded(m) for m in miners)))

        results = runner.run(read_all())
        settled_s = time.perf_counter() - began
        healthy = [(i, r, t) for i, (r, t) in enumerate(results) if i not in hung_set]
        rates: dict[str, list[float]] = {}
        for i, reading, _t in healthy:
            if reading is not None and reading.hashrate_hs:
                rates.setdefault(type(miners[i]).family, []).append(reading.hashrate_hs)
        expected = {family: statistics.median(v) for family, v in rates.items()}
        good = sum(1 for i, reading, _t in healthy
                   if reading is not None and reading.hashrate_hs and reading.asic is not None
                   and reading.asic.is_mining
                   and abs(reading.hashrate_hs / expected[type(miners[i]).family] - 1) < 1e-3)
        return {"healthy_s": max(t for _i, _r, t in healthy), "settled_s": settled_s,
                "good": good, "healthy": len(healthy), "cpu_s": time.process_time() - cpu}

    one_pass(None)  # warm-up: imports, first connections, logins
    rows = [one_pass(None) for _ in range(passes)]
    baseline = one_pass(64)
    runner.close()
    return {"discover_s": discover_s, "identified": identified,
            "healthy": len(found) - len(hung_set), "passes": rows, "baseline": baseline,
            "rss_mib": _rss_mib()}


def library_worker(options: dict[str, Any], hung: list[int], timeout_s: float
                   ) -> dict[str, Any]:
    """The baseline of the rigd mode: the library alone reads the fleet (configured with its
    families, as rigd has it) once, every miner at once on one loop; its CPU seconds."""
    import hal.asic
    from hal.asic import Miner, poll_all
    from hal.device import Telemetry
    from hal.sim.asic.fleet import raise_fd_limit

    raise_fd_limit()
    miners: list[Miner] = hal.asic.discover(  # type: ignore[assignment]
        {"miners": [{**m, "timeout_s": timeout_s} for m in options["miners"]]})
    runner = asyncio.Runner()
    runner.run(poll_all(miners))  # warm-up: imports, first connections, logins
    cpu = time.process_time()
    results = runner.run(poll_all(miners))
    cpu_s = time.process_time() - cpu
    runner.close()
    hung_set = set(hung)
    return {"cpu_s": cpu_s, "good": sum(isinstance(r, Telemetry) for i, r in enumerate(results)
                                        if i not in hung_set)}


def run_scale(args: argparse.Namespace) -> None:
    from hal.sim.asic.fleet import fleet_process

    sizes = [int(v) for v in args.sizes.split(",")]
    shares = [int(v) for v in args.hung.split(",")]
    print(f"library at scale (hal.asic alone, one event loop, miner timeout "
          f"{args.timeout_s:g} s; fleets of {args.families.replace(',', ', ')} in their own "
          f"process):")
    print(f"{'miners':>7}{'hung':>6}{'discover':>10}{'identified':>12}  "
          f"{'pass: healthy read by / settled':>32}{'read ok':>10}{'CPU/pass':>10}"
          f"{'peak RSS':>10}  baseline: 64 at once")
    for size in sizes:
        for share in shares:
            faults = [f"hang:{share}%"] if share else []
            with fleet_process(size, args.families.split(","), faults=faults,
                               warmup_s=1.0) as fleet, \
                    tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "options.json"
                path.write_text(json.dumps({"options": fleet.options,
                                            "hung": sorted(fleet.faults)}))
                r = _run_worker("scale", path, args)
            base = r["baseline"]
            for n, row in enumerate(r["passes"]):
                head = ("", "", "", "", "")
                if n == 0:
                    head = (str(size), f"{share}%", f"{r['discover_s']:.2f}s",
                            f"{r['identified']}/{r['healthy']}", f"{r['rss_mib']:.0f} MiB")
                tail = ""
                if n == 0:
                    faster = base["healthy_s"] / max(row["healthy_s"], 1e-9)
                    tail = (f"  {base['healthy_s']:.2f}s / {base['settled_s']:.2f}s, "
                            f"{base['good'] / base['healthy']:.1%}: ours {faster:.1f}x faster")
                print(f"{head[0]:>7}{head[1]:>6}{head[2]:>10}{head[3]:>12}  "
                      f"{row['healthy_s']:>14.2f}s / {row['settled_s']:.2f}s"
                      f"{row['good'] / row['healthy']:>9.1%}{row['cpu_s']:>9.2f}s"
                      f"{head[4]:>10}{tail}")
    print("discover target: within the identify timeout + 0.5 s; every healthy miner read "
          "correctly in every pass")


# --- the fleet through rigd ---------------------------------------------------------------------

FRESH_FACTOR = 1.25  # a reading at most this many intervals old when served is this pass's


def _rigd_config(tmp: Path, options: dict[str, Any], interval_s: float, timeout_s: float
                 ) -> Path:
    miners = ",\n  ".join("{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in m.items())
                          + " }" for m in options["miners"])
    path = tmp / "rigd.toml"
    path.write_text(f"""[server]
unix_socket = "{tmp}/rigd.sock"
drain_s = 0
[telemetry]
interval_s = {interval_s}
device_timeout_s = {timeout_s}
[workloads]
state_dir = "{tmp}/state"
[audit]
path = "{tmp}/audit.jsonl"
[hal]
backends = ["host", "asic"]
[hal.asic]
timeout_s = {timeout_s}
miners = [
  {miners},
]
""")
    return path


def _rigd_pass(stub: Any, proc: Any, healthy: set[str], interval_s: float
               ) -> tuple[dict[str, float], dict[str, float]]:
    """One GetTelemetry of what rigd has read: (each healthy miner's reading time or -1 for a
    failed one, the pass's figures)."""
    from rigapi import pb

    began = time.perf_counter()
    response = stub.GetTelemetry(pb.GetTelemetryRequest(max_age_ms=600_000), timeout=60)
    served_s = time.perf_counter() - began
    now = time.time()
    stamps = {r.device_id: (r.time.ToNanoseconds() / 1e9 if not r.error else -1.0)
              for r in response.devices if r.device_id in healthy}
    good = [t for t in stamps.values() if t > 0]
    fresh = sum(1 for t in good if now - t <= FRESH_FACTOR * interval_s)
    memory = proc.memory_info()
    return stamps, {"fresh": fresh / max(1, len(healthy)),
                    "span_s": (max(good) - min(good)) if good else float("nan"),
                    "oldest_s": (now - min(good)) if good else float("nan"),
                    "served_s": served_s, "rss_mib": memory.rss / 2**20,
                    "threads": proc.num_threads()}


def _act(stub: Any, device_id: str, sleep: bool) -> float:
    from rigapi import pb

    action = pb.DEVICE_ACTION_KIND_SLEEP if sleep else pb.DEVICE_ACTION_KIND_WAKE
    began = time.perf_counter()
    stub.DeviceAction(pb.DeviceActionRequest(device_id=device_id, action=action), timeout=60)
    return time.perf_counter() - began


def rigd_fleet(size: int, share: int, args: argparse.Namespace) -> dict[str, Any]:
    import grpc
    import psutil

    from hal.sim.asic.fleet import fleet_process
    from rigapi import pb_grpc

    faults = [f"hang:{share}%"] if share else []
    with fleet_process(size, args.families.split(","), faults=faults, warmup_s=1.0) as fleet, \
            tempfile.TemporaryDirectory(prefix="rigd-bench-asic-") as tmp:
        miners = fleet.options["miners"]
        healthy = {f"asic/{miners[i]['address']}" for i in fleet.healthy()}
        luxos = next(f"asic/{miners[i]['address']}" for i in fleet.healthy()
                     if miners[i]["family"] == "luxos")
        baseline = _run_worker("library", _scale_options(Path(tmp), fleet), args)
        config = _rigd_config(Path(tmp), fleet.options, args.interval_s, args.timeout_s)
        log = open(Path(tmp) / "rigd.log", "w")
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "agent.main", "-c", str(config)],
                                stderr=log, stdout=subprocess.DEVNULL, cwd=REPO)
        try:
            sock = Path(tmp) / "rigd.sock"
            deadline = time.monotonic() + 300
            stub = pb_grpc.RigAgentStub(grpc.insecure_channel(f"unix:{sock}"))
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"rigd did not start: {(Path(tmp) / 'rigd.log').read_text()}")
                if sock.exists():
                    try:
                        _rigd_pass(stub, psutil.Process(proc.pid), healthy, args.interval_s)
                        break
                    except grpc.RpcError:
                        pass
                time.sleep(0.1)
            start_s = time.perf_counter() - started
            rigd = psutil.Process(proc.pid)
            rows: list[dict[str, float]] = []
            actions: list[float] = []
            begin = time.monotonic()
            cpu = sum(rigd.cpu_times()[:2])
            seen: dict[str, float] = {}
            for n in range(args.warmup_passes + args.passes):
                time.sleep(max(0.0, begin + (n + 1) * args.interval_s - time.monotonic()))
                stamps, row = _rigd_pass(stub, rigd, healthy, args.interval_s)
                now_cpu = sum(rigd.cpu_times()[:2])
                row["cpu_s"], cpu = now_cpu - cpu, now_cpu
                # good readings taken since the last pass (a healthy miner read afresh)
                row["read"] = sum(1 for d, t in stamps.items() if t > 0 and t != seen.get(d))
                seen = stamps
                if n >= args.warmup_passes:
                    rows.append(row)
                    actions.append(_act(stub, luxos, sleep=len(actions) % 2 == 0))
            return {"start_s": start_s, "passes": rows, "actions": actions,
                    "healthy": len(healthy), "library_ms_per_read":
                    baseline["cpu_s"] * 1000 / size, "library_good": baseline["good"]}
        finally:
            end_process(proc, 60)
            log.close()


def run_rigd(args: argparse.Namespace) -> None:
    sizes = [int(v) for v in args.sizes.split(",")]
    shares = [int(v) for v in args.hung.split(",")]
    print(f"fleets through rigd (its sampler at {args.interval_s:g} s, device and miner "
          f"timeout {args.timeout_s:g} s; GetTelemetry once per pass; fleets of "
          f"{args.families.replace(',', ', ')} in their own process; {args.warmup_passes} "
          f"warm-up passes not shown):")
    print(f"{'miners':>7}{'hung':>6}{'start':>7}  {'pass':>4}{'fresh':>8}{'span':>7}"
          f"{'oldest':>8}{'served':>8}{'CPU/pass':>9}{'core':>6}{'ms/read':>8}{'RSS':>9}"
          f"{'threads':>8}{'sleep/wake':>11}  baseline: the library's ms/read")
    for size in sizes:
        for share in shares:
            r = rigd_fleet(size, share, args)
            for n, (row, act) in enumerate(zip(r["passes"], r["actions"], strict=True)):
                head = (f"{size:>7}{share:>5}%{r['start_s']:>6.1f}s" if n == 0
                        else " " * 20)
                per_read = row["cpu_s"] * 1000 / max(row["read"], 1)
                tail = ""
                if n == 0:
                    ours = sum(p["cpu_s"] for p in r["passes"]) * 1000 / max(
                        1, sum(p["read"] for p in r["passes"]))
                    tail = (f"  {r['library_ms_per_read']:.2f} (rigd "
                            f"{ours / max(r['library_ms_per_read'], 1e-9):.2f}x)")
                print(f"{head}  {n + 1:>4}{row['fresh']:>8.1%}{row['span_s']:>6.2f}s"
                      f"{row['oldest_s']:>7.2f}s{row['served_s']:>7.3f}s{row['cpu_s']:>8.2f}s"
                      f"{row['cpu_s'] / args.interval_s:>6.2f}{per_read:>8.2f}"
                      f"{row['rss_mib']:>5.0f} MiB{row['threads']:>8.0f}{act * 1000:>9.0f}ms"
                      f"{tail}")
    print(f"targets: 100% fresh in every pass at 5,000 with 10% hung; under 1 core on average "
          f"(CPU/pass under {args.interval_s:g} s); RSS under 400 MiB at 5,000")


def _scale_options(tmp: Path, fleet: Any) -> Path:
    path = tmp / "options.json"
    path.write_text(json.dumps({"options": fleet.options, "hung": sorted(fleet.faults)}))
    return path


def _run_worker(which: str, options_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", which, "--options", str(options_path),
               "--runs", str(args.runs if which == "rigd" else args.pyasic_runs),
               "--concurrency", str(args.concurrency), "--serial-sample",
               str(args.serial_sample), "--passes", str(args.passes),
               "--timeout-s", str(args.timeout_s)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False,
                          cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{which} worker failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_pyasic(args: argparse.Namespace) -> None:
    with fleet_process("--count", str(args.miners), "--families", args.families,
                       "--standard-ports") as options, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "options.json"
        path.write_text(json.dumps(options))
        rigd = _run_worker("rigd", path, args)
        theirs = _run_worker("pyasic", path, args)

    n = args.miners
    families = args.families.split(",")
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
          f"{'met' if ours < target else 'NOT met'}); CPU per poll "
          f"{theirs['cpu_s'] / max(rigd['cpu_s'], 1e-9):.1f}x less than pyasic's; peak RSS "
          f"{rigd['rss_mib']:.0f} vs {theirs['rss_mib']:.0f} MiB")
    print(f"rigd peak Python allocations during one poll (tracemalloc): "
          f"{rigd['peak_alloc_mib']:.1f} MiB")
    print(f"rigd baseline, single-miner poll x {n} (mean of {args.serial_sample}): "
          f"{rigd['single_x_n_s']:.3f} s (poll_all is {rigd['single_x_n_s'] / ours:.1f}x faster)")
    print(f"rigd baseline, poll_all concurrency=1 on {args.serial_sample} miners scaled to {n}: "
          f"{rigd['serial_scaled_s']:.3f} s ({rigd['serial_scaled_s'] / ours:.1f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("all", "pyasic", "scale", "rigd"), default="all")
    parser.add_argument("--miners", type=int, default=500, help="pyasic side-by-side size")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pyasic-runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--families", default=FAMILIES)
    parser.add_argument("--serial-sample", type=int, default=40,
                        help="miners polled one at a time for rigd's baselines")
    parser.add_argument("--sizes", default="1000,2000,5000", help="scale: fleet sizes")
    parser.add_argument("--hung", default="0,10", help="scale: percentages of hung miners")
    parser.add_argument("--passes", type=int, default=3, help="scale: poll passes per fleet")
    parser.add_argument("--timeout-s", type=float, default=2.0,
                        help="scale: each miner's timeout (identification's too)")
    parser.add_argument("--interval-s", type=float, default=2.0,
                        help="rigd: its sampling interval")
    parser.add_argument("--warmup-passes", type=int, default=10,
                        help="rigd: passes not shown (start-up: the curtailer reads every "
                             "miner's controls then)")
    parser.add_argument("--worker", choices=("rigd", "pyasic", "scale", "library"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--options", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        options = json.loads(args.options.read_text())
        if args.worker == "rigd":
            result = rigd_worker(options, args.runs, args.concurrency, args.serial_sample)
        elif args.worker == "pyasic":
            result = pyasic_worker(options, args.runs)
        elif args.worker == "library":
            result = library_worker(options["options"], options["hung"], args.timeout_s)
        else:
            result = scale_worker(options["options"], options["hung"], args.passes,
                                  args.timeout_s)
        print(json.dumps(result))
        return 0

    load_before = os.getloadavg()
    print(f"machine: {describe()}; load average (1 min) {load_before[0]:.2f} at the start "
          f"(the cores are shared: figures move with it)")
    if args.mode in ("all", "pyasic"):
        run_pyasic(args)
    if args.mode in ("all", "scale"):
        run_scale(args)
    if args.mode in ("all", "rigd"):
        run_rigd(args)
    print(f"load average (1 min) {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
