"""Policies side by side over the same site and the same traces: the replay's runner.

Every policy runs in the same simulator from the same seed; runs are independent, so they are
spread over `jobs` processes (each rebuilds the site and traces from the seed, so nothing but
numbers crosses a process boundary, and the result does not depend on how many there are).
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from controller.anchors import (
    AnchorConfig,
    always_mine,
    least_efficient_first,
    static_split,
    strike,
    strike_windows,
)
from controller.policy import PolicyConfig, decide
from controller.sim.engine import PolicySpec, RunResult, SimOptions, replay
from controller.sim.site import Site, SiteSpec, build_site, site_from_json
from controller.sim.traces import DemandShape, Traces, generate, load_csv

DEMAND_RPS_PER_GPU = 0.75  # the demand trace's mean: 300 req/s for the full site's 400 GPUs
STATIC_SHARE = 0.5  # of each rig's GPUs in the static split: the default demand's daily peak


@dataclass(frozen=True)
class ReplayJob:
    days: float
    seed: int
    site: SiteSpec
    traces_dir: Path | None = None
    step_s: float = 300.0
    options: SimOptions = field(default_factory=SimOptions)
    site_file: Path | None = None  # a measured site (site_from_json) instead of `site`
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # the controller's knobs


def build(job: ReplayJob) -> tuple[Site, Traces]:
    if job.site_file is not None:
        site = site_from_json(json.loads(job.site_file.read_text(encoding="utf-8")))
        profiles = site.fleet.profiles
    else:
        site = build_site(job.site, job.seed)
        profiles = (job.site.served.profile,)
    gpus = int(site.is_gpu.sum())
    demand = tuple(DemandShape(profile=p, mean_rps=DEMAND_RPS_PER_GPU * gpus)
                   for p in profiles)
    traces = generate(job.days, job.seed, site.max_power_w, job.step_s, demand=demand)
    if job.traces_dir is not None:
        traces = load_csv(job.traces_dir, traces)
    return site, traces


def fleet_strike_usd_per_mwh(site: Site, traces: Traces) -> float:
    """The strike an operator would set for a whole fleet on day one: the break-even of the
    fleet's average nameplate efficiency at the first hashprice, to the nearest $5."""
    f = site.fleet
    miners = ~site.is_gpu
    if not miners.any():
        return AnchorConfig().strike_usd_per_mwh
    j_per_th = float((f.rated_power_w[miners] / (f.rated_hashrate_hs[miners] / 1e12)).mean())
    sha = traces.hashprice.algorithms.index("sha256d")
    hashprice = float(traces.hashprice.usd_per_th_day[sha, 0])
    return 5.0 * round(hashprice * 1e6 / (24.0 * j_per_th) / 5.0)


def policies(site: Site, traces: Traces, controller: PolicyConfig | None = None
             ) -> list[PolicySpec]:
    """The anchors and the controller, configured as README's table says (the controller's
    knobs may be a live site's: `rigsite replay -c site.toml`)."""
    strike_usd = fleet_strike_usd_per_mwh(site, traces)
    split = AnchorConfig(strike_usd_per_mwh=strike_usd, high_strike_usd_per_mwh=2 * strike_usd,
                         gpu_inference_share=STATIC_SHARE)
    return [
        PolicySpec("always mine", always_mine, replace(split, gpu_inference_share=0.0)),
        PolicySpec("strike (Braiins)", strike, split),
        PolicySpec("strike+windows (Foreman)", strike_windows, split),
        PolicySpec("least efficient first (OptiFleet)", least_efficient_first, split),
        PolicySpec("static split", static_split, split),
        PolicySpec("controller", decide, controller or PolicyConfig()),
    ]


def _run_one(args: tuple[ReplayJob, int]) -> RunResult:
    job, index = args
    site, traces = build(job)
    return replay(site, traces, policies(site, traces, job.policy)[index], job.options)


def run_all(job: ReplayJob, jobs: int = 2, only: Sequence[str] = ()) -> list[RunResult]:
    site, traces = build(job)
    names = [p.name for p in policies(site, traces)]
    unknown = [o for o in only if o not in names]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; known: {names}")
    chosen = [i for i, name in enumerate(names) if not only or name in only]
    work = [(job, i) for i in chosen]
    if jobs <= 1 or len(work) == 1:
        return [_run_one(w) for w in work]
    # The slowest runs first, so two processes finish together.
    work.sort(key=lambda w: names[w[1]] != "controller")
    with multiprocessing.get_context("fork").Pool(min(jobs, len(work))) as pool:
        results = pool.map(_run_one, work, chunksize=1)
    by_name = {r.policy: r for r in results}
    return [by_name[names[i]] for i in chosen]
