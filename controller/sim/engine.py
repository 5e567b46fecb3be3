"""The replay: simulated time over a site, one policy deciding.

Every `step_s` (a price window) the engine builds the `Snapshot` the live controller would build
(the price last published, that is the previous window's, since real-time prices settle after
their interval; the hashprice; each profile's queue as its runtime's metrics show it; the grid
cap of any notified event; the fleet as rigd reports it) and calls the policy function, unchanged.
It also runs a round at once when a grid event is notified and when a profile's estimated queue
wait passes its bound (at most every `trigger_gap_s`), as the live loop does.

The decision is applied as rigd would apply it: each device switches with its measured duration
(controller/sim/site.py); a rig under a Curtail target sheds what is still above it, hashing first
(biggest savers first), inference last. Between rounds, energy is counted at the window's own
price, mining at the window's hashprice, inference by the requests served
(controller/sim/queue.py). Stops take effect at once in the energy count (0.2-4 s against a
5-minute window); a grid event's check allows each rig its curtailment response.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controller.model import (
    KIND_ASIC,
    NO_PROFILE,
    W_ASLEEP,
    W_HASHING,
    W_IDLE,
    W_INFERENCE,
    W_STANDBY,
    WORKLOADS,
    Decision,
    FloatArray,
    GridCap,
    Hashprice,
    InferenceValue,
    ModelDemand,
    PolicyMemory,
    Price,
    Snapshot,
)
from controller.sim.queue import FluidQueue, WaitStats
from controller.sim.site import (
    COLD_START_S,
    HASHING_DRAIN_S,
    TO_HASHING_S,
    WARM_WAKE_S,
    Site,
)
from controller.sim.traces import DAY_S, GridEvent, Traces

Policy = Callable[[Snapshot, PolicyMemory, Any], tuple[Decision, PolicyMemory]]


@dataclass(frozen=True)
class PolicySpec:
    name: str
    decide: Policy
    config: Any


@dataclass(frozen=True)
class SimOptions:
    substep_s: float = 10.0  # the fluid queue's sub-step while it is backlogged
    trigger_gap_s: float = 10.0  # at least this from the last round to a queue's trigger
    seed: int = 0  # switch durations drawn (cold starts)
    keep_decisions: bool = False  # keep every round's decision (tests; small sites only)


@dataclass(frozen=True)
class EventOutcome:
    event_id: str
    cap_w: float
    met: bool
    worst_w: float  # the site's highest power from the deadline to the end
    compliant_s: float | None  # when the site last went below the cap before the deadline


@dataclass
class RunResult:
    policy: str
    days: float
    devices: int
    energy_mwh: float = 0.0
    energy_cost_usd: float = 0.0
    mining_revenue_usd: float = 0.0
    inference_revenue_usd: float = 0.0
    switches: int = 0
    rounds: int = 0
    waits: dict[str, WaitStats] = field(default_factory=dict)
    events: list[EventOutcome] = field(default_factory=list)
    series: dict[str, FloatArray] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def net_margin_usd(self) -> float:
        return self.mining_revenue_usd + self.inference_revenue_usd - self.energy_cost_usd

    @property
    def switches_per_device_day(self) -> float:
        return self.switches / max(self.devices, 1) / max(self.days, 1e-9)


class Replay:
    def __init__(self, site: Site, traces: Traces, spec: PolicySpec,
                 options: SimOptions = SimOptions()) -> None:
        self.site = site
        self.traces = traces
        self.spec = spec
        self.options = options
        f = site.fleet
        self.f = f
        n = len(f)
        missing = [p for p in traces.demand.profiles if p not in f.profiles]
        if missing:
            raise ValueError(f"the demand trace names profiles the site does not serve: {missing}")
        self.profile_codes = [f.profiles.index(p) for p in traces.demand.profiles]
        self.rng = np.random.default_rng(np.random.SeedSequence([options.seed, 0x5EED]))
        self.work = f.workload.copy()
        self.prof = f.profile.copy()
        self.warm_prof = np.where(f.warm_standby, f.profile, NO_PROFILE)
        self.ready = np.zeros(n)
        self.memory = PolicyMemory.empty(f.device_ids)
        self.rig_index = {r: i for i, r in enumerate(f.rig_ids)}
        self.served = site.spec.served
        self.queues = [FluidQueue(self.served.patience_s, options.substep_s)
                       for _ in traces.demand.profiles]
        self.util = np.zeros(len(self.queues))
        self.is_gpu = site.is_gpu
        self.rest = np.where(f.kind == KIND_ASIC, W_ASLEEP,
                             np.where(f.warm_standby, W_STANDBY, W_ASLEEP)).astype(np.int8)
        g = site.spec.gpu
        self.inf_idle_w, self.inf_busy_w = g.inference_idle_w, g.inference_busy_w
        self.base_w = float(site.rig_base_w.sum())
        self.result = RunResult(policy=spec.name, days=traces.steps * traces.step_s / DAY_S,
                                devices=n)
        self._refresh()

    # -- the fleet's state ----------------------------------------------------------------

    def _refresh(self) -> None:
        """Per-device figures that change only when workloads do."""
        hashing = self.work == W_HASHING
        self.steady_w = np.where(hashing, self.site.hash_w, self.site.rest_w)
        self.th_hashing = np.where(hashing, self.site.th, 0.0)
        self.serving = [np.flatnonzero((self.work == W_INFERENCE) & (self.prof == code))
                        for code in self.profile_codes]
        self.ready_lists = [sorted(self.ready[idx].tolist()) for idx in self.serving]

    def _device_w(self) -> FloatArray:
        """Steady power per device, inference at its profile's utilisation."""
        w = self.steady_w.copy()
        for k, idx in enumerate(self.serving):
            w[idx] = self.inf_idle_w + (self.inf_busy_w - self.inf_idle_w) * self.util[k]
        return w

    def _productive(self, a: float, b: float) -> FloatArray | None:
        """Share of [a, b) each device spends in its workload (None: all of it)."""
        if float(self.ready.max(initial=0.0)) <= a:
            return None
        return np.clip((b - np.maximum(a, self.ready)) / (b - a), 0.0, 1.0)

    # -- inputs ---------------------------------------------------------------------------

    def _step(self, t: float) -> int:
        return min(int(t // self.traces.step_s), self.traces.steps - 1)

    def snapshot(self, t: float, events: list[GridEvent]) -> Snapshot:
        tr = self.traces
        k = self._step(t)
        step_start = k * tr.step_s
        age = t - step_start
        price = (Price(float(tr.price.usd_per_mwh[k - 1]), age, "trace") if k >= 1
                 else Price(None, None, "trace"))
        hashprices = tuple(Hashprice(a, float(tr.hashprice.usd_per_th_day[i, k]), age, "trace")
                           for i, a in enumerate(tr.hashprice.algorithms))
        at_start = t <= step_start + 1e-9
        demand = []
        for q_i, profile in enumerate(tr.demand.profiles):
            queue = self.queues[q_i]
            if at_start:
                rps = None if k == 0 else float(tr.demand.arrivals[q_i, k - 1]) / tr.step_s
            else:
                rps = float(tr.demand.arrivals[q_i, k]) / tr.step_s
            service = float(tr.demand.service_s_mean[q_i, k])
            capacity = self.served.slots_per_gpu / service
            serving_rps = capacity * len(self.serving[q_i])
            demand.append(ModelDemand(
                profile=profile, requests_waiting=queue.backlog,
                requests_running=min(rps or 0.0, serving_rps) * service,
                arrival_rate_rps=rps, capacity_rps_per_gpu=capacity,
                wait_bound_s=self.served.wait_bound_s,
                value=InferenceValue(usd_per_million_tokens=self.served.usd_per_million_tokens,
                                     tokens_per_request=self.served.tokens_per_request),
                model=self.served.model))
        active = [e for e in events if e.notified_s <= t < e.end_s]
        cap = None
        if active:
            e = min(active, key=lambda e: e.cap_w)
            cap = GridCap(cap_w=e.cap_w, deadline_s=e.deadline_s, ends_s=e.end_s,
                          source=f"openadr:{e.event_id}")
        productive = self.ready <= t
        power = np.where(productive, self._device_w(), self.site.rest_w)
        hashrate = np.where(productive & (self.work == W_HASHING), self.site.th * 1e12, np.nan)
        fleet = self.f.replace(workload=self.work.copy(), profile=self.prof.copy(),
                               power_w=power, hashrate_hs=hashrate)
        return Snapshot(time_s=t, price=price, hashprices=hashprices, demand=tuple(demand),
                        grid_cap=cap, fleet=fleet)

    # -- a round --------------------------------------------------------------------------

    def round(self, t: float, events: list[GridEvent]) -> None:
        snapshot = self.snapshot(t, events)
        decision, self.memory = self.spec.decide(snapshot, self.memory, self.spec.config)
        self.result.rounds += 1
        if self.options.keep_decisions:
            self.result.decisions.append(decision)
        self.apply(t, decision)

    def apply(self, t: float, decision: Decision) -> None:
        f = self.f
        actual = decision.desired.astype(np.int8)
        aprof = decision.desired_profile.astype(np.int32)
        if decision.profiles[:len(f.profiles)] != f.profiles:
            raise ValueError("a decision renumbered the fleet's profiles")
        self.targets = np.full(len(f.rig_ids), np.nan)
        for c in decision.curtail:
            self.targets[self.rig_index[c.rig_id]] = c.target_w
        if np.isfinite(self.targets).any():
            actual = self._rig_shed(actual, aprof)
        changed = (actual != self.work) | ((actual == W_INFERENCE) & (aprof != self.prof))
        idx = np.flatnonzero(changed)
        if len(idx):
            to = actual[idx]
            was = self.work[idx]
            gpu = self.is_gpu[idx]
            duration = np.zeros(len(idx))
            duration[(to == W_HASHING) & ~gpu] = self.site.spec.miner_wake_s
            duration[(to == W_HASHING) & gpu] = TO_HASHING_S
            infer = to == W_INFERENCE
            warm = infer & (self.warm_prof[idx] == aprof[idx])
            duration[warm] = WARM_WAKE_S + np.where(was[warm] == W_HASHING, HASHING_DRAIN_S, 0.0)
            cold = infer & ~warm
            if cold.any():
                duration[cold] = self.rng.uniform(*COLD_START_S, int(cold.sum()))
            self.ready[idx] = t + duration
            self.work[idx] = to
            self.prof[idx] = np.where(infer, aprof[idx], self.prof[idx])
            self.result.switches += len(idx)
            self._refresh()

    def _rig_shed(self, actual: np.ndarray, aprof: np.ndarray) -> np.ndarray:
        """What each rigd does under its Curtail target: if the rig would draw more, shed
        hashing first (biggest savers first), inference last."""
        f = self.f
        hashing = actual == W_HASHING
        infer = actual == W_INFERENCE
        w = np.where(hashing, self.site.hash_w, self.site.rest_w)
        util = np.zeros(len(actual))
        for k, code in enumerate(self.profile_codes):
            util[aprof == code] = self.util[k]
        w = np.where(infer, self.inf_idle_w + (self.inf_busy_w - self.inf_idle_w) * util, w)
        rig_w = np.bincount(f.rig, weights=w, minlength=len(f.rig_ids)) + self.site.rig_base_w
        excess = rig_w - self.targets
        over = np.isfinite(excess) & (excess > 0)
        if not over.any():
            return actual
        cand = np.flatnonzero(over[f.rig] & (hashing | infer))
        saving = w[cand] - self.site.rest_w[cand]
        order = np.lexsort((-saving, infer[cand], f.rig[cand]))
        cand, saving = cand[order], saving[order]
        rigs = f.rig[cand]
        cum = np.cumsum(saving)
        first = np.searchsorted(rigs, rigs, side="left")
        before = cum - saving - (cum[first] - saving[first])
        shed = cand[before < excess[rigs] - 1e-9]
        actual = actual.copy()
        actual[shed] = self.rest[shed]
        return actual

    # -- the run --------------------------------------------------------------------------

    def run(self) -> RunResult:
        tr = self.traces
        res = self.result
        step = tr.step_s
        events = list(tr.grid.events)
        notify = sorted(e.notified_s for e in events)
        n_steps = tr.steps
        series = {name: np.zeros(n_steps) for name in (
            "price", "site_power_w", "asic_hashing", "asic_asleep", "gpu_hashing",
            "gpu_inference", "gpu_standby", "gpu_asleep")}
        gpu = self.is_gpu
        worst = {e.event_id: -math.inf for e in events}
        compliant: dict[str, float | None] = {e.event_id: None for e in events}
        alg = self.site.algorithm
        served_total = [0.0] * len(self.queues)
        slots = self.served.slots_per_gpu
        last_round = -math.inf
        for k in range(n_steps):
            t0 = k * step
            t1 = t0 + step
            price = float(tr.price.usd_per_mwh[k])
            hp_dev = tr.hashprice.usd_per_th_day[alg, k]
            self.round(t0, events)
            last_round = t0
            t = t0
            step_energy_j = 0.0
            pending = [s for s in notify if t0 < s < t1]
            while t < t1 - 1e-9:
                seg_end = min([s for s in pending if s > t + 1e-9] + [t1])
                trigger_from = last_round + self.options.trigger_gap_s
                stop = seg_end
                served = []
                for q_i, queue in enumerate(self.queues):
                    service = float(tr.demand.service_s_mean[q_i, k])
                    rps = float(tr.demand.arrivals[q_i, k]) / step
                    # Only the first profile's queue may trigger a round: a queue that has run
                    # to the segment's end cannot be rewound to another queue's trigger.
                    end, n_served = queue.advance(
                        t, stop, rps, self.ready_lists[q_i], slots / service, slots, service,
                        float(tr.demand.service_s_cv[q_i, k]), self.served.wait_bound_s,
                        trigger_from if q_i == 0 else math.inf)
                    stop = min(stop, end)
                    served.append((n_served, service))
                length = stop - t
                prod = self._productive(t, stop)
                for q_i, (n_served, service) in enumerate(served):
                    idx = self.serving[q_i]
                    gpu_s = (len(idx) if prod is None else float(prod[idx].sum())) * length
                    self.util[q_i] = min(n_served * service / (slots * gpu_s), 1.0) \
                        if gpu_s > 0 else 0.0
                    served_total[q_i] += n_served
                w = self._device_w()
                if prod is None:
                    power = float(w.sum())
                    hashed = float((self.th_hashing * hp_dev).sum())
                else:
                    power = float((w * prod + self.site.rest_w * (1 - prod)).sum())
                    hashed = float((self.th_hashing * prod * hp_dev).sum())
                site_w = power + self.base_w
                step_energy_j += site_w * length
                res.mining_revenue_usd += hashed * length / DAY_S
                steady_w = float(w.sum()) + self.base_w
                for e in events:
                    if e.notified_s < stop and t < e.end_s:
                        if stop > e.deadline_s:
                            worst[e.event_id] = max(worst[e.event_id], steady_w)
                        if steady_w <= e.cap_w and compliant[e.event_id] is None \
                                and t <= e.deadline_s:
                            compliant[e.event_id] = t
                        elif steady_w > e.cap_w and t < e.deadline_s:
                            compliant[e.event_id] = None
                t = stop
                if t < t1 - 1e-9:
                    self.round(t, events)
                    last_round = t
                    pending = [s for s in pending if s > t + 1e-9]
            res.energy_mwh += step_energy_j / 3.6e9
            res.energy_cost_usd += step_energy_j / 3.6e9 * price
            series["price"][k] = price
            series["site_power_w"][k] = step_energy_j / step
            for kind, mask in (("asic", ~gpu), ("gpu", gpu)):
                counts = np.bincount(self.work[mask].astype(np.intp), minlength=len(WORKLOADS))
                series[f"{kind}_hashing"][k] = counts[W_HASHING]
                series[f"{kind}_asleep"][k] = counts[W_ASLEEP] + counts[W_IDLE]
                if kind == "gpu":
                    series["gpu_inference"][k] = counts[W_INFERENCE]
                    series["gpu_standby"][k] = counts[W_STANDBY]
        value = self.served.usd_per_million_tokens * self.served.tokens_per_request / 1e6
        res.inference_revenue_usd = sum(served_total) * value
        for q_i, profile in enumerate(tr.demand.profiles):
            res.waits[profile] = self.queues[q_i].stats(self.served.wait_bound_s)
        response = float(self.site.response_s.max(initial=0.0))
        for e in events:
            met = worst[e.event_id] <= e.cap_w and compliant[e.event_id] is not None \
                and compliant[e.event_id] + response <= e.deadline_s  # type: ignore[operator]
            res.events.append(EventOutcome(
                event_id=e.event_id, cap_w=e.cap_w, met=bool(met),
                worst_w=worst[e.event_id], compliant_s=compliant[e.event_id]))
        res.series = series
        return res


def replay(site: Site, traces: Traces, spec: PolicySpec,
           options: SimOptions = SimOptions()) -> RunResult:
    return Replay(site, traces, spec, options).run()
