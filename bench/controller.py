"""The site controller's policy: one decision round for 1,000 rigs x 10 devices (8 miners and
2 GPUs each), CPU time (process_time), median of N rounds, in the states that cost most:

  steady      a window's round with nothing to change (memory from the round before)
  price spike every miner over its strike at once, every one shed
  grid cap    a cap at half the site's power: every device ranked by cost per watt, rig targets
  burst       an inference queue far over its bound: GPUs borrowed across the site

Beside them, measured in the same run: the always-mine anchor (the cheapest rule with the same
signature, input and output: what any policy costs around its rule), building the columnar
fleet from the 10,000 per-device values rigd reports (the live loop does it once a round), and
explaining all 10,000 devices (reasons are formatted only when asked). Target (issue 23): a
round under 100 ms of CPU. Fail-over time comes with the live controller (etcd election).

    python bench/controller.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import describe
from controller.anchors import always_mine
from controller.model import (
    DeviceKind,
    DeviceState,
    Fleet,
    GridCap,
    Hashprice,
    InferenceValue,
    ModelDemand,
    PolicyMemory,
    Price,
    RigState,
    Snapshot,
    Workload,
)
from controller.policy import decide

RIGS, MINERS, GPUS = 1_000, 8, 2
PROFILE = "vllm-llama-8b"


def rigs() -> list[RigState]:
    out = []
    for r in range(RIGS):
        devices = []
        for m in range(MINERS):
            j = 17.5 + (r * MINERS + m) % 20  # 17.5-36.5 J/TH: every miner its own strike
            devices.append(DeviceState(
                device_id=f"asic/r{r:04d}-m{m}", kind=DeviceKind.ASIC, model="Antminer S19",
                workload=Workload.HASHING, power_w=j * 100.0, hashrate_hs=100e12,
                rated_power_w=3_250.0, rated_hashrate_hs=95e12, switch_to_hashing_s=1.0))
        for g in range(GPUS):
            devices.append(DeviceState(
                device_id=f"gpu/r{r:04d}-g{g}", kind=DeviceKind.GPU, model="H100",
                workload=Workload.HASHING, algorithm="etchash", power_w=320.0,
                hashrate_hs=0.12e9, rated_power_w=320.0, rated_hashrate_hs=0.12e9,
                power_limit_max_w=700.0, warm_standby=g == 0, profile=PROFILE if g == 0 else "",
                switch_cold_s=47.0, switch_warm_s=0.6, switch_to_hashing_s=0.66))
        out.append(RigState(rig_id=f"rig-{r:04d}", devices=tuple(devices), base_power_w=300.0))
    return out


def snapshot(fleet: Fleet, t: float, price: float, waiting: float = 0.0,
             cap: GridCap | None = None) -> Snapshot:
    return Snapshot(
        time_s=t, price=Price(price, 0.0, "bench"),
        hashprices=(Hashprice("sha256d", 0.05, 0.0), Hashprice("etchash", 11_700.0, 0.0)),
        demand=(ModelDemand(profile=PROFILE, requests_waiting=waiting, requests_running=400.0,
                            arrival_rate_rps=100.0, capacity_rps_per_gpu=4.0, wait_bound_s=2.0,
                            value=InferenceValue(usd_per_million_tokens=0.2,
                                                 tokens_per_request=600.0)),),
        grid_cap=cap, fleet=fleet)


def cpu_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.process_time()
        fn()
        times.append((time.process_time() - started) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    reported = rigs()
    fleet = Fleet.from_rigs(reported)
    n = len(fleet)
    _, memory = decide(snapshot(fleet, 0.0, 30.0), PolicyMemory.empty())  # a round before
    site_w = 0.5 * (sum(d.power_w or 0 for r in reported for d in r.devices) + 300.0 * RIGS)
    cases = {
        "steady": snapshot(fleet, 300.0, 30.0),
        "price spike": snapshot(fleet, 300.0, 3_000.0),
        "grid cap": snapshot(fleet, 300.0, 30.0, cap=GridCap(cap_w=site_w, deadline_s=900.0)),
        "burst": snapshot(fleet, 300.0, 30.0, waiting=20_000.0),
    }
    print(f"machine: {describe()}")
    print(f"fleet: {RIGS:,} rigs x {MINERS + GPUS} devices = {n:,} devices; median of "
          f"{args.runs} rounds, CPU time")
    baseline = cpu_ms(lambda: always_mine(cases["steady"], memory), args.runs)
    build = cpu_ms(lambda: Fleet.from_rigs(reported), max(args.runs // 4, 3))
    print(f"  {'always-mine anchor (baseline)':34s} {baseline:7.1f} ms")
    print(f"  {'fleet built from rigd values':34s} {build:7.1f} ms")
    worst = 0.0
    for name, snap in cases.items():
        ms = cpu_ms(lambda snap=snap: decide(snap, memory), args.runs)  # type: ignore[misc]
        worst = max(worst, ms)
        decision, _ = decide(snap, memory)
        changed = len(decision.changed())
        print(f"  controller round, {name:21s} {ms:7.1f} ms  = {ms / baseline:4.1f}x baseline, "
              f"{ms / 100:.2f} of the 100 ms target ({changed:,} devices to switch)")
    decision, _ = decide(cases["grid cap"], memory)
    explain = cpu_ms(lambda: [decision.explain(i) for i in range(n)], 3)
    print(f"  {'explaining all devices':34s} {explain:7.1f} ms ({explain / n * 1e3:.1f} us each,"
          f" only when asked)")
    print(f"worst round {worst:.1f} ms of CPU against a 100 ms target; with the fleet built from "
          f"rigd's values {worst + build:.1f} ms")


if __name__ == "__main__":
    main()
