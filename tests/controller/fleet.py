"""Hand-made fleets and snapshots for the policy tests, and a rig that does what it is told."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from controller.model import (
    Decision,
    DeviceKind,
    DeviceState,
    Fleet,
    GridCap,
    Hashprice,
    InferenceValue,
    ModelDemand,
    Price,
    RigState,
    Snapshot,
    Workload,
)

HP = 0.05  # $/TH/day, sha256d
GPU_HP = 11_700.0  # $/TH/day, etchash
GPU_TH = 0.12e-3
PROFILE = "llm"


def miner(name: str, j_per_th: float = 30.0, workload: Workload = Workload.HASHING,
          th: float = 100.0, model: str = "Antminer S19j Pro", rated_j_per_th: float = 29.5,
          **kw: object) -> DeviceState:
    """A miner measured at `j_per_th` while it hashes (nameplate `rated_j_per_th`)."""
    hashing = workload == Workload.HASHING
    return DeviceState(device_id=f"asic/{name}", kind=DeviceKind.ASIC, model=model,
                       workload=workload, power_w=j_per_th * th if hashing else 15.0,
                       hashrate_hs=th * 1e12 if hashing else None,
                       rated_power_w=rated_j_per_th * th, rated_hashrate_hs=th * 1e12,
                       switch_to_hashing_s=1.0, **kw)  # type: ignore[arg-type]


def gpu(name: str, workload: Workload = Workload.HASHING, warm: bool = False,
        profile: str = "", **kw: object) -> DeviceState:
    power = {Workload.HASHING: 320.0, Workload.INFERENCE: 400.0}.get(workload, 60.0)
    return DeviceState(device_id=f"gpu/{name}", kind=DeviceKind.GPU, model="H100",
                       workload=workload, profile=profile or (PROFILE if warm else ""),
                       algorithm="etchash", power_w=power,
                       hashrate_hs=GPU_TH * 1e12 if workload == Workload.HASHING else None,
                       rated_power_w=320.0, rated_hashrate_hs=GPU_TH * 1e12,
                       power_limit_max_w=700.0, warm_standby=warm, switch_cold_s=60.0,
                       switch_warm_s=0.6, switch_to_hashing_s=0.66, **kw)  # type: ignore[arg-type]


def demand(waiting: float = 0.0, arrivals_rps: float | None = 0.0, capacity: float = 4.0,
           bound_s: float = 2.0, usd_per_gpu_hour: float | None = None,
           usd_per_mtok: float | None = 0.2) -> ModelDemand:
    return ModelDemand(profile=PROFILE, requests_waiting=waiting, requests_running=0.0,
                       arrival_rate_rps=arrivals_rps, capacity_rps_per_gpu=capacity,
                       wait_bound_s=bound_s,
                       value=InferenceValue(usd_per_gpu_hour=usd_per_gpu_hour,
                                            usd_per_million_tokens=usd_per_mtok,
                                            tokens_per_request=600.0))


def snapshot(t: float, price: float | None, rigs: Sequence[RigState], age_s: float | None = 0.0,
             hashprice: float | None = HP, demands: Sequence[ModelDemand] = (),
             cap: GridCap | None = None) -> Snapshot:
    """A snapshot at t whose price was published at t - age_s (a new window each new t)."""
    return Snapshot(time_s=t, price=Price(price, age_s, "test"),
                    hashprices=(Hashprice("sha256d", hashprice, 0.0, "test"),
                                Hashprice("etchash", GPU_HP, 0.0, "test")),
                    demand=tuple(demands), grid_cap=cap, fleet=Fleet.from_rigs(rigs))


def rig(*devices: DeviceState, rig_id: str = "r1", base_w: float = 100.0,
        reachable: bool = True) -> RigState:
    return RigState(rig_id=rig_id, devices=tuple(devices), reachable=reachable,
                    base_power_w=base_w, error="" if reachable else "deadline exceeded")


def follow(rigs: Sequence[RigState], decision: Decision,
           true_j_per_th: Mapping[str, float] | None = None) -> list[RigState]:
    """The rigs after doing what a decision asks, at once: a test's stand-in for rigd. A miner
    that hashes reports its true efficiency (`true_j_per_th`, else its nameplate)."""
    true_j_per_th = true_j_per_th or {}
    out = []
    for r in rigs:
        devices = []
        for d in r.devices:
            dd = decision.device(d.device_id)
            w = dd.desired
            hashing = w == Workload.HASHING
            if d.kind == DeviceKind.ASIC:
                th = (d.rated_hashrate_hs or 0.0) / 1e12
                j = true_j_per_th.get(d.device_id, (d.rated_power_w or 0.0) / th)
                power = j * th if hashing else 15.0
                rate = th * 1e12 if hashing else None
            else:
                power = {Workload.HASHING: 320.0, Workload.INFERENCE: 400.0}.get(w, 60.0)
                rate = GPU_TH * 1e12 if hashing else None
            devices.append(replace(d, workload=w, profile=dd.profile or d.profile,
                                   power_w=power, hashrate_hs=rate))
        out.append(replace(r, devices=tuple(devices)))
    return out
