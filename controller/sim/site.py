"""The simulated site: rigs of miners and rigs of GPUs, each device with its own figures.

Device behaviour comes from measured figures (cited where they are set):

- Miner nameplates are the manufacturers' (TH/s and W at stock settings). Each unit's own
  efficiency spreads around its nameplate (lognormal, `efficiency_spread`) and a share of units is
  degraded (`degraded_share`, 10-30 % worse): what a fleet tool reading nameplates cannot see and
  a per-miner measurement can.
- A miner's wake to full power: 1 s, the ramp of this project's simulated miners
  (bench/curtail.py, ASIC_RESPONSE_S, the simulators' `--response-s`). Real firmware ramps slower
  (LuxOS documents its default wakeup as ramping "similar to a reboot"); not measured here, so it
  is a knob (`miner_wake_s`).
- A sleeping miner draws 15 W (the demo rig's sleeping Antminer reads 15 W).
- A GPU's switch hashing -> inference, cold: this project measured 7.7 s with the builtin CPU
  runtime (bench/switch.py); a real vLLM cold start takes 34-60 s for small models (the reference
  bench/switch.py cites), so the site model draws each cold start uniformly from 34-60 s.
- Warm standby -> inference: 0.15 s measured (bench/switch.py, the runtime kept asleep), plus the
  hashing worker's drain when the GPU was hashing: 0.45 s (the README demo's `draining` phase).
- Inference -> hashing: 0.66 s measured (bench/switch.py).
- A rig's curtailment below its target: 0.2 s measured on a 10-device rig to ~4 s on a 100-miner
  rig (bench/curtail.py), interpolated by device count.

The GPU's figures (H100 power hashing a GPU algorithm and serving an 8B model) are assumptions of
this site model, not measurements: see `GpuModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from controller.model import (
    KIND_ASIC,
    KIND_GPU,
    NO_PROFILE,
    W_HASHING,
    BoolArray,
    Fleet,
    FloatArray,
    IntArray,
)

MINER_WAKE_S = 1.0  # bench/curtail.py ASIC_RESPONSE_S: the simulated miners' ramp
MINER_SLEEP_W = 15.0  # the demo rig's sleeping Antminer
COLD_START_S = (34.0, 60.0)  # vLLM cold start for small models (bench/switch.py's reference)
WARM_WAKE_S = 0.15  # bench/switch.py: warm standby -> inference
HASHING_DRAIN_S = 0.45  # README demo: the hashing worker's drain before a switch
TO_HASHING_S = 0.66  # bench/switch.py: inference -> hashing
CURTAIL_RESPONSE_S = ((10, 0.2), (100, 4.0))  # bench/curtail.py: (devices, s below target)


@dataclass(frozen=True)
class MinerModel:
    name: str
    rated_ths: float
    rated_w: float


MINER_MODELS = (  # manufacturers' nameplates
    MinerModel("Antminer S21", 200.0, 3500.0),
    MinerModel("Antminer S19 XP", 140.0, 3010.0),
    MinerModel("Antminer S19j Pro", 104.0, 3068.0),
    MinerModel("Whatsminer M30S++", 112.0, 3472.0),
    MinerModel("Antminer S19", 95.0, 3250.0),
)


@dataclass(frozen=True)
class GpuModel:
    """An H100-class GPU. Assumed, not measured: hashing a GPU algorithm at 0.12 GH/s for 320 W
    (the hashprice trace starts where that earns about $1.4 a day); serving an 8B model with 16
    requests in flight, drawing 150 W loaded but idle and up to 650 W busy."""

    name: str = "NVIDIA H100 80GB HBM3"
    algorithm: str = "etchash"
    hashing_ths: float = 0.12e-3
    hashing_w: float = 320.0
    idle_w: float = 60.0
    inference_idle_w: float = 150.0
    inference_busy_w: float = 650.0
    power_limit_max_w: float = 700.0


@dataclass(frozen=True)
class ServedModel:
    """What the site's GPUs serve, and what serving is worth (assumptions of the site model)."""

    profile: str = "vllm-llama-8b"
    model: str = "Llama-3.1-8B-Instruct"
    slots_per_gpu: int = 16  # requests in flight per GPU (continuous batching)
    wait_bound_s: float = 2.0  # the queue-wait SLA
    patience_s: float = 120.0  # a request waiting longer leaves (counted as an SLA violation)
    usd_per_million_tokens: float = 0.20
    tokens_per_request: float = 600.0


@dataclass(frozen=True)
class SiteSpec:
    miner_rigs: int = 80
    miners_per_rig: int = 100
    gpu_rigs: int = 20
    gpus_per_rig: int = 20
    model_mix: tuple[float, ...] = (0.2, 0.25, 0.25, 0.15, 0.15)  # of MINER_MODELS, by rig
    efficiency_spread: float = 0.04
    degraded_share: float = 0.10
    warm_standby_share: float = 0.25  # of each GPU rig's GPUs: a runtime kept warm for them
    miner_rig_base_w: float = 300.0  # network, controller boards
    gpu_rig_base_w: float = 1_500.0  # host CPUs, memory, fans
    miner_wake_s: float = MINER_WAKE_S
    miner_models: tuple[MinerModel, ...] = MINER_MODELS
    gpu: GpuModel = GpuModel()
    served: ServedModel = ServedModel()

    def __post_init__(self) -> None:
        if len(self.model_mix) != len(self.miner_models) or abs(sum(self.model_mix) - 1) > 1e-9:
            raise ValueError("model_mix needs one share per miner model, adding up to 1")
        if min(self.miner_rigs, self.miners_per_rig, self.gpu_rigs, self.gpus_per_rig) < 0:
            raise ValueError("rig and device counts must be ≥ 0")


def curtail_response_s(devices: npt.NDArray[np.int64]) -> FloatArray:
    """A rig's time to read below its Curtail target, from its device count (bench/curtail.py:
    0.2 s for 10 devices, ~4 s for 100 miners), linear between and beyond."""
    (n0, s0), (n1, s1) = CURTAIL_RESPONSE_S
    return np.maximum(s0 + (devices - n0) * (s1 - s0) / (n1 - n0), s0)


@dataclass(frozen=True, eq=False)
class Site:
    """Every device's true figures (the simulator's), and the fleet as rigd would report it
    before any reading (the static columns)."""

    spec: SiteSpec
    fleet: Fleet  # workload, power_w, hashrate_hs are the engine's to fill
    th: FloatArray  # true TH/s when hashing
    hash_w: FloatArray  # true power when hashing
    rest_w: FloatArray  # asleep / idle / standby
    is_gpu: BoolArray
    algorithm: IntArray  # index into fleet.algorithms
    response_s: FloatArray  # per rig: curtailment response
    rig_base_w: FloatArray

    @property
    def max_power_w(self) -> float:
        """Every device at its highest draw, plus the rigs' base: the site's nameplate."""
        g = self.spec.gpu
        device = np.where(self.is_gpu, max(g.inference_busy_w, g.hashing_w), self.hash_w)
        return float(device.sum() + self.rig_base_w.sum())


def build_site(spec: SiteSpec, seed: int) -> Site:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x517E]))
    g = spec.gpu
    n_miners = spec.miner_rigs * spec.miners_per_rig
    n_gpus = spec.gpu_rigs * spec.gpus_per_rig
    n = n_miners + n_gpus
    rig_count = spec.miner_rigs + spec.gpu_rigs
    # Miner rigs hold one model each (a container per model), in the configured mix.
    counts = np.floor(np.array(spec.model_mix) * spec.miner_rigs + 0.5).astype(int)
    counts[-1] = spec.miner_rigs - counts[:-1].sum()
    rig_model = np.repeat(np.arange(len(spec.miner_models)), np.maximum(counts, 0))
    rig_model = rig_model[:spec.miner_rigs]
    rng.shuffle(rig_model)
    miner_model = np.repeat(rig_model, spec.miners_per_rig)
    rated_ths = np.array([m.rated_ths for m in spec.miner_models])[miner_model]
    rated_w = np.array([m.rated_w for m in spec.miner_models])[miner_model]
    spread = rng.lognormal(0.0, spec.efficiency_spread, n_miners)
    degraded = rng.random(n_miners) < spec.degraded_share
    penalty = np.where(degraded, rng.uniform(1.10, 1.30, n_miners), 1.0)
    th_miner = rated_ths * rng.uniform(0.97, 1.03, n_miners)
    eff = rated_w / rated_ths * spread * penalty
    th = np.concatenate([th_miner, np.full(n_gpus, g.hashing_ths)])
    hash_w = np.concatenate([eff * th_miner, np.full(n_gpus, g.hashing_w)])
    rest_w = np.concatenate([np.full(n_miners, MINER_SLEEP_W), np.full(n_gpus, g.idle_w)])
    is_gpu = np.concatenate([np.zeros(n_miners, bool), np.ones(n_gpus, bool)])
    rig = np.concatenate([np.repeat(np.arange(spec.miner_rigs), spec.miners_per_rig),
                          spec.miner_rigs + np.repeat(np.arange(spec.gpu_rigs),
                                                      spec.gpus_per_rig)]).astype(np.int32)
    gpu_rank = np.tile(np.arange(spec.gpus_per_rig), spec.gpu_rigs)
    warm_count = int(np.floor(spec.warm_standby_share * spec.gpus_per_rig + 0.5))
    # The warm GPUs are the last of each rig, so a static split (the first of each rig) does
    # not take them all.
    warm = np.concatenate([np.zeros(n_miners, bool),
                           gpu_rank >= spec.gpus_per_rig - warm_count])
    models = (*tuple(m.name for m in spec.miner_models), g.name)
    model = np.concatenate([miner_model, np.full(n_gpus, len(spec.miner_models))])
    algorithms = ("sha256d", g.algorithm)
    algorithm = is_gpu.astype(np.int32)
    profiles = (spec.served.profile,)
    device_counts = np.bincount(rig, minlength=rig_count)
    base = np.concatenate([np.full(spec.miner_rigs, spec.miner_rig_base_w),
                           np.full(spec.gpu_rigs, spec.gpu_rig_base_w)])
    nan = np.full(n, np.nan)
    fleet = Fleet(
        rig_ids=tuple(f"miners-{r:03d}" for r in range(spec.miner_rigs))
        + tuple(f"gpus-{r:03d}" for r in range(spec.gpu_rigs)),
        rig_reachable=np.ones(rig_count, bool), rig_base_power_w=base.astype(np.float64),
        rig_errors=MappingProxyType({}),
        device_ids=tuple(f"asic/m{r:03d}-{i:03d}" for r in range(spec.miner_rigs)
                         for i in range(spec.miners_per_rig))
        + tuple(f"gpu/g{r:03d}-{i:02d}" for r in range(spec.gpu_rigs)
                for i in range(spec.gpus_per_rig)),
        rig=rig, kind=np.where(is_gpu, KIND_GPU, KIND_ASIC).astype(np.int8),
        models=models, model=model.astype(np.int32),
        workload=np.full(n, W_HASHING, np.int8), profiles=profiles,
        profile=np.where(warm, 0, NO_PROFILE).astype(np.int32),
        algorithms=algorithms, algorithm=algorithm,
        power_w=nan, hashrate_hs=nan,
        power_limit_min_w=np.where(is_gpu, 200.0, np.nan),
        power_limit_max_w=np.where(is_gpu, g.power_limit_max_w, np.nan),
        rated_power_w=np.concatenate([rated_w, np.full(n_gpus, g.hashing_w)]),
        rated_hashrate_hs=np.concatenate([rated_ths, np.full(n_gpus, g.hashing_ths)]) * 1e12,
        # What rigd has measured of each kind of switch (the medians the site model uses).
        switch_cold_s=np.where(is_gpu, sum(COLD_START_S) / 2, np.nan),
        switch_warm_s=np.where(is_gpu, WARM_WAKE_S + HASHING_DRAIN_S, np.nan),
        switch_to_hashing_s=np.where(is_gpu, TO_HASHING_S, spec.miner_wake_s),
        requests_per_s=nan, tokens_per_s=nan,
        warm_standby=warm, healthy=np.ones(n, bool), health_reasons=MappingProxyType({}))
    return Site(spec=spec, fleet=fleet, th=th, hash_w=hash_w, rest_w=rest_w, is_gpu=is_gpu,
                algorithm=algorithm, response_s=curtail_response_s(device_counts),
                rig_base_w=base.astype(np.float64))


# ---------------------------------------------------------------------------------------------
# A measured site from a file


def site_from_json(data: dict[str, object], spec: SiteSpec | None = None) -> Site:
    """A site described device by device, from measured figures (what `rigsite replay --site`
    reads: a live site's rigs as rigd reported them):

        {"miner_wake_s": 1.0, "profiles": ["builtin"],
         "rigs": [{"rig_id": "rig-a", "base_w": 0.0,
                   "devices": [{"device_id": "asic/10.0.0.5:4028", "kind": "asic",
                                "model": "Antminer S19 Pro", "algorithm": "sha256d",
                                "th": 110.6, "hash_w": 3266.7, "rest_w": 15.0,
                                "workload": "hashing", "profile": "",
                                "warm_standby": false}, ...]}, ...]}

    `th` and `hash_w` are the device hashing (TH/s, W), `rest_w` asleep or idle; the nameplate
    the policy may fall back on is the same measurement."""
    from controller.model import WORKLOADS, Workload

    def number(value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"site file: {where} must be a number ≥ 0, got {value!r}")
        return float(value)

    rigs = data.get("rigs")
    if not isinstance(rigs, list) or not rigs:
        raise ValueError("site file: 'rigs' must be a non-empty list")
    profiles = tuple(str(p) for p in data.get("profiles") or ())  # type: ignore[attr-defined]
    wake_s = number(data.get("miner_wake_s", MINER_WAKE_S), "miner_wake_s")
    spec = spec or SiteSpec(miner_rigs=0, gpu_rigs=0, miner_wake_s=wake_s,
                            served=ServedModel(profile=profiles[0]) if profiles
                            else ServedModel())
    rows: list[tuple[int, dict[str, object]]] = []
    rig_ids, base = [], []
    for r, rig in enumerate(rigs):
        if not isinstance(rig, dict) or not isinstance(rig.get("devices"), list):
            raise ValueError(f"site file: rigs[{r}] needs rig_id and devices")
        rig_ids.append(str(rig["rig_id"]))
        base.append(number(rig.get("base_w", 0.0), f"rigs[{r}].base_w"))
        rows += [(r, d) for d in rig["devices"]]
    kinds = np.array([KIND_GPU if d.get("kind") == "gpu" else KIND_ASIC for _, d in rows],
                     dtype=np.int8)
    is_gpu = kinds == KIND_GPU
    th = np.array([number(d.get("th"), f"{d.get('device_id')}.th") for _, d in rows])
    hash_w = np.array([number(d.get("hash_w"), f"{d.get('device_id')}.hash_w") for _, d in rows])
    rest_w = np.array([number(d.get("rest_w"), f"{d.get('device_id')}.rest_w") for _, d in rows])
    models = tuple(dict.fromkeys(str(d.get("model", "")) for _, d in rows))
    algorithms = tuple(dict.fromkeys(str(d.get("algorithm", "sha256d")) for _, d in rows))
    workload = np.array([WORKLOADS.index(Workload(str(d.get("workload", "hashing"))))
                         for _, d in rows], dtype=np.int8)
    profile = np.array([profiles.index(str(d["profile"])) if d.get("profile") else NO_PROFILE
                        for _, d in rows], dtype=np.int32)
    warm = np.array([bool(d.get("warm_standby")) for _, d in rows], dtype=np.bool_)
    n = len(rows)
    nan = np.full(n, np.nan)
    rig = np.array([r for r, _ in rows], dtype=np.int32)
    fleet = Fleet(
        rig_ids=tuple(rig_ids), rig_reachable=np.ones(len(rig_ids), bool),
        rig_base_power_w=np.array(base, dtype=np.float64), rig_errors=MappingProxyType({}),
        device_ids=tuple(str(d["device_id"]) for _, d in rows), rig=rig, kind=kinds,
        models=models, model=np.array([models.index(str(d.get("model", ""))) for _, d in rows],
                                      dtype=np.int32),
        workload=workload, profiles=profiles, profile=profile, algorithms=algorithms,
        algorithm=np.array([algorithms.index(str(d.get("algorithm", "sha256d")))
                            for _, d in rows], dtype=np.int32),
        power_w=nan, hashrate_hs=nan, power_limit_min_w=nan, power_limit_max_w=nan,
        rated_power_w=hash_w.copy(), rated_hashrate_hs=th * 1e12,
        switch_cold_s=np.where(is_gpu, sum(COLD_START_S) / 2, np.nan),
        switch_warm_s=np.where(is_gpu, WARM_WAKE_S + HASHING_DRAIN_S, np.nan),
        switch_to_hashing_s=np.where(is_gpu, TO_HASHING_S, wake_s),
        requests_per_s=nan, tokens_per_s=nan, warm_standby=warm, healthy=np.ones(n, bool),
        health_reasons=MappingProxyType({}))
    device_counts = np.bincount(rig, minlength=len(rig_ids))
    return Site(spec=spec, fleet=fleet, th=th, hash_w=hash_w, rest_w=rest_w, is_gpu=is_gpu,
                algorithm=fleet.algorithm, response_s=curtail_response_s(device_counts),
                rig_base_w=np.array(base, dtype=np.float64))
