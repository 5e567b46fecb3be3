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
round under 100 ms of CPU.

Fail-over (`--failover 5`): two `rigsite run` replicas on a real 3-member etcd cluster on
loopback, deciding for simulated rigs (client.sim, real gRPC servers); the leader SIGKILLed in
its steady rounds, 5 times: the time from the kill until the standby leads (its `elected`
record) and until its first round, median of 5. Beside it, in the same run: a clean hand-over
(SIGTERM: the leader revokes its etcd lease), median of 5, and the bound the design promises,
the etcd lease's TTL plus one interval.

    python bench/controller.py [--runs 20] [--failover 5] [--ttl-s 3] [--interval-s 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import describe, end_process
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


def failover(runs: int, ttl_s: int, interval_s: float, rigs: int) -> None:
    """Kill the leader `runs` times, then stop it cleanly `runs` times; print the medians."""
    import json
    import os
    import signal
    import subprocess
    import tempfile

    from client.sim import SimRigProcess
    from controller.journal import records
    from tests.controller.etcd_cluster import EtcdCluster

    tmp = Path(tempfile.mkdtemp(prefix="rigsite-failover-"))
    cluster = EtcdCluster(tmp / "etcd").start()
    sims = SimRigProcess(rigs, miners=4, gpus=0).start()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        cluster.wait_healthy()
        prices = tmp / "price.csv"
        start = time.time() - 300
        prices.write_text("time_s,usd_per_mwh\n" + "".join(
            f"{start + 300 * k},30.0\n" for k in range(400)))
        endpoints = [f"{name}={address}" for name, address in sims.rigs]
        config = tmp / "site.toml"
        config.write_text(
            f'site_id = "bench"\ninterval_s = {interval_s}\n[rigs]\n'
            f"endpoints = {json.dumps(endpoints)}\nlease_ttl_s = 30\n"
            f'[price]\nsource = "file"\nfile = "{prices}"\n'
            f'[[hashprice]]\nalgorithm = "sha256d"\nsource = "fixed"\nusd_per_th_day = 0.05\n'
            f"[etcd]\nendpoints = {json.dumps(cluster.endpoints)}\nlease_ttl_s = {ttl_s}\n"
            f'timeout_s = 1.0\n[journal]\ndir = "{tmp / "journal"}"\n')

        def start_replica(name: str) -> None:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "controller", "run", "-c", str(config), "--replica",
                 name], stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.log", "ab"),
                env={**os.environ, "PYTHONUNBUFFERED": "1"})

        def journal(kind: str, since: float) -> list[dict[str, object]]:
            return [r for r in records(tmp / "journal") if r["type"] == kind and
                    float(r["t"]) >= since]

        def until(what: str, check: Callable[[], object], timeout_s: float = 60.0) -> object:
            deadline = time.monotonic() + timeout_s
            while not (value := check()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no {what} in {timeout_s:g} s (logs in {tmp})")
                time.sleep(0.02)
            return value

        def leader_steady(since: float) -> str:
            elected = until("leader", lambda: [r for r in journal("leader", since)
                                               if r["event"] == "elected"])
            name = str(elected[-1]["replica"])  # type: ignore[index]
            until("three rounds", lambda: len([r for r in journal("round", since)
                                               if r["replica"] == name]) >= 3)
            return name

        start_replica("a")
        leader = leader_steady(0.0)
        start_replica("b")
        until("b campaigning", lambda: "rigsite_started" in (tmp / "b.log").read_text())
        time.sleep(2 * ttl_s)  # b's campaign is waiting at etcd, as a standby's would be
        figures: dict[str, list[tuple[float, float]]] = {"SIGKILL": [], "SIGTERM": []}
        started = {"a": 1, "b": 1}  # rigsite_started lines in each replica's log

        def fail_over(sig: signal.Signals, leader: str) -> str:
            standby = "b" if leader == "a" else "a"
            stopped = time.time()
            procs[leader].send_signal(sig)
            procs[leader].wait(timeout=60)
            elected = until("a new leader", lambda: [
                r for r in journal("leader", stopped) if r["event"] == "elected"
                and r["replica"] == standby])
            first = until("its first round", lambda: [
                r for r in journal("round", stopped) if r["replica"] == standby])
            figures[sig.name].append((float(elected[0]["t"]) - stopped,  # type: ignore[index]
                                      float(first[0]["t"]) - stopped))  # type: ignore[index]
            start_replica(leader)
            started[leader] += 1
            until(f"{leader} campaigning", lambda: (tmp / f"{leader}.log").read_text()
                  .count("rigsite_started") >= started[leader])
            new = leader_steady(stopped)
            time.sleep(2 * ttl_s)  # the restarted replica's campaign waits at etcd
            return new

        for sig in (signal.SIGKILL, signal.SIGTERM):
            for _ in range(runs):
                leader = fail_over(sig, leader)
        bound = ttl_s + interval_s
        print(f"fail-over: 2 replicas, 3-member etcd on loopback, {rigs} simulated rigs x 4 "
              f"miners, etcd lease TTL {ttl_s} s, interval {interval_s:g} s; median of {runs}")
        for name, label in (("SIGKILL", "leader SIGKILLed"),
                            ("SIGTERM", "clean hand-over, SIGTERM (baseline)")):
            lead = statistics.median(e for e, _ in figures[name])
            act = statistics.median(r for _, r in figures[name])
            print(f"  {label:36s} standby leads after {lead:5.2f} s, first round after "
                  f"{act:5.2f} s  = {act / bound:.2f} of TTL + interval ({bound:g} s)")
        kill = statistics.median(r for _, r in figures["SIGKILL"])
        term = statistics.median(r for _, r in figures["SIGTERM"])
        print(f"  a dead leader costs {kill / term:.1f}x a clean hand-over (runs: "
              + ", ".join(f"{r:.2f}" for _, r in figures["SIGKILL"]) + " s)")
    finally:
        for proc in procs.values():
            end_process(proc, 30)
        sims.stop()
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--failover", type=int, default=5,
                    help="fail-overs measured (0: none)")
    ap.add_argument("--ttl-s", type=int, default=3, help="the etcd lease's TTL")
    ap.add_argument("--interval-s", type=float, default=0.5, help="the rounds' interval")
    ap.add_argument("--rigs", type=int, default=20, help="simulated rigs in the fail-over")
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
    if args.failover:
        failover(args.failover, args.ttl_s, args.interval_s, args.rigs)


if __name__ == "__main__":
    main()
