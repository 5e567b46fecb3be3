"""The replay: every policy through the same simulator on tiny hand-made traces whose right
answers are known, the site's measured switch figures, the grid, and a deterministic table."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from controller.anchors import AnchorConfig
from controller.model import W_INFERENCE, PolicyMemory
from controller.policy import PolicyConfig, decide
from controller.sim import report
from controller.sim.engine import PolicySpec, Replay, RunResult, replay
from controller.sim.replay import ReplayJob, build, policies, run_all
from controller.sim.site import MinerModel, SiteSpec, build_site
from controller.sim.traces import (
    DemandTrace,
    GridEvent,
    GridTrace,
    HashpriceTrace,
    PriceTrace,
    Traces,
)

STEP = 300.0
ROOT = Path(__file__).resolve().parents[2]


def hand_traces(prices: list[float], arrivals_rps: list[float] | None = None,
                events: tuple[GridEvent, ...] = (), profile: str = "vllm-llama-8b") -> Traces:
    n = len(prices)
    t = np.arange(n, dtype=np.float64) * STEP
    rps = np.array(arrivals_rps or [], dtype=np.float64).reshape(-1, n) if arrivals_rps \
        else np.zeros((0, n))
    return Traces(
        step_s=STEP, price=PriceTrace(time_s=t, usd_per_mwh=np.array(prices, dtype=np.float64)),
        hashprice=HashpriceTrace(time_s=t, algorithms=("sha256d", "etchash"),
                                 usd_per_th_day=np.array([[0.05] * n, [11_700.0] * n])),
        demand=DemandTrace(time_s=t, profiles=(profile,) if arrivals_rps else (),
                           arrivals=rps * STEP, service_s_mean=np.full(rps.shape, 4.0),
                           service_s_cv=np.full(rps.shape, 1.0)),
        grid=GridTrace(events=events))


MINERS = SiteSpec(miner_rigs=1, miners_per_rig=3, gpu_rigs=0,
                  miner_models=(MinerModel("Antminer S19j Pro", 104.0, 3068.0),),
                  model_mix=(1.0,), efficiency_spread=0.0, degraded_share=0.0)
GPUS = SiteSpec(miner_rigs=0, gpu_rigs=1, gpus_per_rig=4, warm_standby_share=1.0)


def run_policies(site_spec: SiteSpec, traces: Traces) -> dict[str, RunResult]:
    site = build_site(site_spec, seed=1)
    specs = policies(site, traces)
    # The fleet strike for Braiins and Foreman: 90 $/MWh, Foreman's high strike 300 $/MWh.
    out = {}
    for spec in specs:
        if isinstance(spec.config, AnchorConfig):
            spec = PolicySpec(spec.name, spec.decide, replace(
                spec.config, strike_usd_per_mwh=90.0, high_strike_usd_per_mwh=300.0,
                gpu_inference_share=0.0 if spec.name == "always mine" else 0.25))
        out[spec.name] = replay(site, traces, spec)
    return out


def test_a_short_spike_only_the_strike_rules_catch() -> None:
    # 12 windows at 30 $/MWh but two at 150 (windows 4 and 5). The miners' strike is 71 $/MWh
    # (29.5 J/TH at 0.05 $/TH/day). A window's price is known once it has ended.
    prices = [30.0] * 12
    prices[4] = prices[5] = 150.0
    results = run_policies(MINERS, hand_traces(prices))
    asleep = {name: [k for k in range(12) if r.series["asic_asleep"][k] > 0]
              for name, r in results.items()}
    assert asleep == {
        "always mine": [],
        "static split": [],
        "strike (Braiins)": [5, 6],  # sees window 4 at 5: sleeps through 5, wakes at 7
        "least efficient first (OptiFleet)": [5, 6],
        "strike+windows (Foreman)": [6, 7, 8, 9],  # 2 windows above: sheds after the spike
        "controller": [5, 6, 7],  # above 1.5 x strike: at once; back after 2 windows below
    }
    cost = {name: r.energy_cost_usd for name, r in results.items()}
    assert cost["strike (Braiins)"] < cost["strike+windows (Foreman)"] < cost["always mine"]
    assert cost["controller"] < cost["strike+windows (Foreman)"]


def test_a_burst_only_borrowing_gpus_serves_within_the_sla() -> None:
    # 4 GPUs of 4 req/s each (16 slots, 4 s a request), all with a warm runtime; 2 req/s, and
    # 10 req/s for half an hour. The static split's one GPU cannot serve the burst.
    rps = [2.0] * 6 + [10.0] * 6 + [2.0] * 12
    results = run_policies(GPUS, hand_traces([30.0] * 24, rps))
    def share(name: str) -> float:
        w = next(iter(results[name].waits.values()))
        return float(w.sla_violations / w.arrived)
    assert share("controller") < 0.05
    for anchor in ("static split", "strike (Braiins)", "strike+windows (Foreman)",
                   "least efficient first (OptiFleet)"):
        assert share(anchor) > 0.4, anchor
    assert share("always mine") == pytest.approx(1.0)  # no GPU serves at all
    assert results["controller"].inference_revenue_usd > \
        results["static split"].inference_revenue_usd


def test_switches_take_their_measured_durations() -> None:
    site = build_site(SiteSpec(miner_rigs=1, miners_per_rig=2, gpu_rigs=1, gpus_per_rig=4,
                               warm_standby_share=0.25, miner_wake_s=1.0), seed=1)
    traces = hand_traces([30.0] * 4, [1.0] * 4)
    r = Replay(site, traces, PolicySpec("controller", decide, PolicyConfig()))
    # GPU 0 cold, GPU 3 warm: both sent to inference.
    snap = r.snapshot(0.0, [])
    d, _ = decide(snap, PolicyMemory.empty(), PolicyConfig())
    desired = np.array(d.desired)
    profile = np.array(d.desired_profile)
    gpus = np.flatnonzero(site.is_gpu)
    desired[gpus[[0, 3]]] = W_INFERENCE
    profile[gpus[[0, 3]]] = 0
    r.apply(100.0, replace(d, desired=desired, desired_profile=profile))
    assert 100.0 + 34.0 <= r.ready[gpus[0]] <= 100.0 + 60.0  # a vLLM cold start
    assert r.ready[gpus[3]] == pytest.approx(100.0 + 0.15 + 0.45)  # warm, after the drain


def test_a_grid_event_met_and_one_that_cannot_be() -> None:
    site = build_site(MINERS, seed=1)
    floor = 3 * 15.0 + MINERS.miner_rig_base_w
    events = (GridEvent("ok", 900.0, 1_500.0, 2_700.0, cap_w=4_000.0),
              GridEvent("impossible", 3_300.0, 3_900.0, 5_100.0, cap_w=floor - 1))
    traces = hand_traces([30.0] * 20, events=events)
    for spec in policies(site, traces):
        r = replay(site, traces, spec)
        met = {e.event_id: e.met for e in r.events}
        assert met == {"ok": True, "impossible": False}, spec.name
        ok = next(e for e in r.events if e.event_id == "ok")
        assert ok.worst_w <= 4_000.0
        assert ok.compliant_s is not None and ok.compliant_s <= 1_500.0


def test_two_runs_give_the_same_table_whatever_the_processes() -> None:
    job = ReplayJob(days=2, seed=3, site=SiteSpec(miner_rigs=3, miners_per_rig=20, gpu_rigs=1,
                                                  gpus_per_rig=8))
    one = run_all(job, jobs=1)
    two = run_all(job, jobs=2)
    assert report.table(one) == report.table(two)
    assert [r.net_margin_usd for r in one] == [r.net_margin_usd for r in two]
    assert [r.policy for r in one] == [p.name for p in policies(*build(job))]


@pytest.mark.processes  # rigsite replay as a command
def test_rigsite_replay_prints_the_table_and_writes_its_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "controller", "replay", "--days", "1", "--seed", "2",
         "--miner-rigs", "2", "--miners-per-rig", "10", "--gpu-rigs", "1", "--gpus-per-rig",
         "4", "--jobs", "1", "--out", str(out), "--write-traces", str(tmp_path / "traces")],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "| policy | energy MWh |" in run.stdout
    assert "(Lyra, EuroSys 2023: 1.53x lower average queuing time)" in run.stdout
    assert "The wait ratio is " in run.stdout
    assert "replayed 6 policies in" in run.stderr
    rows = (out / "replay.csv").read_text().splitlines()
    assert rows[0].startswith("policy,energy_mwh,energy_cost_usd") and len(rows) == 7
    assert (out / "week.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The traces it wrote, read back from CSV, replay to the same table.
    again = subprocess.run(
        [sys.executable, "-m", "controller", "replay", "--days", "1", "--seed", "2",
         "--miner-rigs", "2", "--miners-per-rig", "10", "--gpu-rigs", "1", "--gpus-per-rig",
         "4", "--jobs", "2", "--out", str(tmp_path / "again"), "--no-plot",
         "--traces", str(tmp_path / "traces")],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    table = [line for line in run.stdout.splitlines() if line.startswith("|")]
    assert [line for line in again.stdout.splitlines() if line.startswith("|")] == table
    assert (tmp_path / "again" / "replay.csv").read_text() == (out / "replay.csv").read_text()


@pytest.mark.processes  # rigsite replay as a command
@pytest.mark.parametrize(("args", "code", "error"), [
    (["--days", "0"], 2, "must be > 0"),
    (["--policy", "nope"], 2, "unknown policy 'nope'"),
    (["--miner-rigs", "-1"], 2, "must be ≥ 0"),
])
def test_rigsite_replay_refuses_bad_arguments(args: list[str], code: int, error: str) -> None:
    run = subprocess.run([sys.executable, "-m", "controller", "replay", "--days", "1",
                          "--miner-rigs", "1", "--gpu-rigs", "0", "--no-plot", *args],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == code
    assert error in run.stderr


@pytest.mark.processes  # rigsite replay as a command
def test_rigsite_replay_says_what_is_wrong_with_a_trace_file(tmp_path: Path) -> None:
    (tmp_path / "price.csv").write_text("time_s,usd_per_mwh\n0,lots\n")
    run = subprocess.run([sys.executable, "-m", "controller", "replay", "--days", "1",
                          "--miner-rigs", "1", "--gpu-rigs", "0", "--no-plot", "--out",
                          str(tmp_path / "o"), "--traces", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 1
    assert "price.csv:2: usd_per_mwh = 'lots' is not a number" in run.stderr
