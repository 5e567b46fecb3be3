"""The controller's policy: `decide(snapshot, memory, config) -> (decision, memory)`, pure.

Per device, each rule explained with its numbers:

1. Unreachable rigs and unhealthy devices are left as they are (a grid cap may still shed an
   unhealthy device).
2. Inference demand first, per runtime profile (most urgent first): the GPUs needed are
   ceil(arrivals / (capacity x target utilisation) + waiting / (capacity x wait bound)). More
   needed than serve: GPUs are borrowed at once. With the estimated wait over the bound, warm
   standby first (a runtime kept asleep in host memory wakes in a fraction of a second; a cold
   start takes up to a minute); within the bound, cold GPUs first (there is time) so that the
   warm ones stay hashing as the reserve for a burst; then the GPUs whose hashing earns least.
   Each borrow must gain more than the minimum after its switch cost (the inference value
   forgone during its measured switch), and waits out its dwell unless over the bound. Fewer
   needed for `give_back_windows` demand windows in a row: the surplus is given back, warm GPUs
   first (they come back fastest), then borrowed ones, to hashing where hashing pays (else to
   rest), after their minimum dwell.
3. Every other device follows its own strike price, from its own efficiency (measured, else last
   measured, else nameplate): strike [$/MWh] = hashprice [$/TH/day] x 1e6 / (24 x J/TH). Above
   the strike for `shed_windows` price windows: shed; above `high_strike_ratio` x strike: shed at
   once; below it for `resume_windows` windows: back to hashing. A switch waits out the minimum
   dwell (not a high-strike shed) and must gain at least the minimum over the horizon after its
   switch cost. With `max_switches_per_round`, the least efficient go off first and the most
   efficient come back first.
4. The grid cap is never exceeded: when the planned site power is above the cap (less a margin),
   devices are shed cheapest first per watt (devices that would wake stay asleep first, then
   hashing, inference last) and the cap is split into per-rig Curtail targets from each rig's
   planned power, so rigd holds it even without the controller.

A price that is unusable (stale, missing, absurd) holds every device as it is and wakes nothing;
see controller/rules.py for every safe default.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from controller.model import (
    KIND_GPU,
    W_HASHING,
    W_INFERENCE,
    WORKLOADS,
    BoolArray,
    CodeArray,
    Decision,
    Fleet,
    FloatArray,
    ModelDemand,
    PolicyMemory,
    RigCurtail,
    Snapshot,
)
from controller.rules import (
    EFFICIENCY_SOURCES,
    PowerFigures,
    PriceLimits,
    cap_target_w,
    dwell_ok,
    economics,
    planned_power_w,
    rest_state,
    rig_base_w,
    split_targets,
    unknown_w,
    usable_hashprices,
    usable_price,
)


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """The controller policy's knobs (the defaults are what `rigsite replay` runs)."""

    window_s: float = 300.0  # a price window (ERCOT's real-time interval)
    shed_windows: int = 1  # N: windows above a device's strike before it is shed
    resume_windows: int = 2  # M: windows below it before it hashes again
    high_strike_ratio: float = 1.5  # above ratio x strike: shed at once
    min_dwell_s: float = 600.0  # after a switch, before the next one (not high strike, grid)
    min_gain_usd_per_h: float = 0.0  # a switch must gain at least this per hour...
    min_gain_ratio: float = 0.02  # ...and this share of what the device earns now
    give_back_windows: int = 3  # demand windows low before borrowed GPUs go back
    target_utilization: float = 0.8  # GPUs planned so that each serves this share of capacity
    cap_margin: float = 0.02  # plan this far below a grid cap
    max_switches_per_round: int | None = None  # price switches per round (None: no limit)
    default_switch_cold_s: float = 60.0  # unmeasured: vLLM's cold start is 34-60 s
    default_switch_warm_s: float = 0.6  # unmeasured: warm standby 0.15 s + hashing drain 0.45 s
    default_switch_to_hashing_s: float = 1.0  # unmeasured: a miner's ramp, a GPU's restart
    prices: PriceLimits = field(default_factory=PriceLimits)
    power: PowerFigures = field(default_factory=PowerFigures)

    def __post_init__(self) -> None:
        for name in ("shed_windows", "resume_windows", "give_back_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.high_strike_ratio < 1:
            raise ValueError("high_strike_ratio must be at least 1")
        if not 0 < self.target_utilization <= 1:
            raise ValueError("target_utilization must be in (0, 1]")
        if not 0 <= self.cap_margin < 1:
            raise ValueError("cap_margin must be in [0, 1)")
        if self.window_s <= 0 or self.min_dwell_s < 0:
            raise ValueError("window_s must be > 0 and min_dwell_s ≥ 0")
        if self.max_switches_per_round is not None and self.max_switches_per_round < 0:
            raise ValueError("max_switches_per_round must be ≥ 0")


class Why(enum.IntEnum):
    HOLD_UNREACHABLE = 0
    HOLD_UNHEALTHY = enum.auto()
    HOLD_PRICE = enum.auto()
    HOLD_NO_STRIKE = enum.auto()
    HASH_BELOW = enum.auto()
    WAIT_SHED = enum.auto()
    SHED_WINDOWS = enum.auto()
    SHED_HIGH = enum.auto()
    STAY_ABOVE = enum.auto()
    WAIT_RESUME = enum.auto()
    RESUME = enum.auto()
    HOLD_DWELL = enum.auto()
    HOLD_GAIN = enum.auto()
    HOLD_LIMIT = enum.auto()
    INFER_SERVE = enum.auto()
    INFER_WAIT_RETURN = enum.auto()
    INFER_BORROW_WARM = enum.auto()
    INFER_BORROW_COLD = enum.auto()
    INFER_RETURN_HASH = enum.auto()
    INFER_RETURN_REST = enum.auto()
    INFER_HOLD = enum.auto()
    GRID_SHED = enum.auto()


_STRIKE = ("this {model}'s strike {strike:.0f} $/MWh ({j_per_th:.1f} J/TH, {efficiency_source})")
_DEMAND = ("{need_gpus:.0f} GPUs needed for {profile} ({arrival_rps:.1f} req/s at "
           "{capacity_rps:.1f} per GPU, {waiting:.0f} waiting, wait bound {bound_s:.1f} s), "
           "{serving_gpus:.0f} serving, est. wait {wait_s:.2f} s")
TEMPLATES: dict[Why, str] = {
    Why.HOLD_UNREACHABLE: "left {current}: rig {rig_id} unreachable",
    Why.HOLD_UNHEALTHY: "left {current}: unhealthy",
    Why.HOLD_PRICE: "left {current}: {price_note}; nothing is woken on an unusable price",
    Why.HOLD_NO_STRIKE: "left {current}: no strike price ({strike_missing}); nothing is woken",
    Why.HASH_BELOW: ("hashing: price {price:.0f} $/MWh below " + _STRIKE
                     + "; hashing earns {margin_hash:+.4f} $/h"),
    Why.WAIT_SHED: ("still hashing: price {price:.0f} $/MWh above " + _STRIKE
                    + " for {windows_above:.0f} of {shed_windows:.0f} windows (high strike "
                    "{high_strike:.0f} $/MWh)"),
    Why.SHED_WINDOWS: ("{desired}: price {price:.0f} $/MWh above " + _STRIKE
                       + " for {windows_above:.0f} windows (shed after {shed_windows:.0f}); "
                       "hashing would earn {margin_hash:+.4f} $/h, {desired} {margin_rest:+.4f}"
                       " $/h"),
    Why.SHED_HIGH: ("{desired} at once: price {price:.0f} $/MWh above the high strike "
                    "{high_strike:.0f} $/MWh ({high_strike_ratio:.2f} x " + _STRIKE + ")"),
    Why.STAY_ABOVE: "stays {current}: price {price:.0f} $/MWh above " + _STRIKE,
    Why.WAIT_RESUME: ("stays {current}: price {price:.0f} $/MWh below " + _STRIKE
                      + " for {windows_below:.0f} of {resume_windows:.0f} windows"),
    Why.RESUME: ("hashing: price {price:.0f} $/MWh below " + _STRIKE
                 + " for {windows_below:.0f} windows (resume after {resume_windows:.0f}); "
                 "earns {margin_hash:+.4f} $/h against {margin_rest:+.4f} $/h {current}"),
    Why.HOLD_DWELL: ("stays {current} ({wanted} wanted): switched {dwell_s:.0f} s ago, minimum "
                     "dwell {min_dwell_s:.0f} s"),
    Why.HOLD_GAIN: ("stays {current} ({wanted} wanted): gains {gain:+.4f} $/h over "
                    "{horizon_s:.0f} s less a {switch_s:.2f} s switch costing {switch_cost:.5f} $"
                    ", under the minimum gain {min_gain:.4f} $/h"),
    Why.HOLD_LIMIT: ("stays {current} ({wanted} wanted): {max_switches:.0f} switches per round "
                     "already planned (least efficient off first, most efficient back first)"),
    Why.INFER_SERVE: "serves {profile}: " + _DEMAND,
    Why.INFER_WAIT_RETURN: ("serves {profile}: fewer GPUs needed for {low_windows:.0f} of "
                            "{give_back_windows:.0f} windows; " + _DEMAND),
    Why.INFER_BORROW_WARM: ("inference ({profile}) from warm standby ({switch_s:.2f} s): "
                            + _DEMAND + "; serving is worth {margin_inference:+.3f} $/h against "
                            "{margin_now:+.3f} $/h {current}"),
    Why.INFER_BORROW_COLD: ("inference ({profile}), cold start ({switch_s:.0f} s): " + _DEMAND
                            + "; serving is worth {margin_inference:+.3f} $/h against "
                            "{margin_now:+.3f} $/h {current}"),
    Why.INFER_RETURN_HASH: ("given back to hashing: fewer GPUs needed for {low_windows:.0f} "
                            "windows (give back after {give_back_windows:.0f}); " + _DEMAND
                            + "; hashing earns {margin_hash:+.4f} $/h"),
    Why.INFER_RETURN_REST: ("given back, {desired}: fewer GPUs needed for {low_windows:.0f} "
                            "windows (give back after {give_back_windows:.0f}); " + _DEMAND
                            + "; hashing would earn {margin_hash:+.4f} $/h (price "
                            "{price:.0f} $/MWh, strike {strike:.0f} $/MWh)"),
    Why.INFER_HOLD: "serves {profile}: its demand or capacity is unknown this round; held",
    Why.GRID_SHED: ("{desired} for the grid cap {cap_w:,.0f} W ({cap_source}, from "
                    "{deadline}): site planned {site_plan_w:,.0f} W against {target_w:,.0f} W; "
                    "shedding it forgoes {shed_cost:.0f} $/MWh (cheapest first, inference "
                    "last)"),
}
_TEMPLATES = tuple(TEMPLATES[w] for w in Why)
STRIKE_MISSING = ("", "hashprice unusable", "efficiency unknown")


def _count_window(last_s: float | None, now_s: float, window_s: float) -> bool:
    return last_s is None or now_s - last_s >= window_s - 1e-6


@dataclass
class _Plan:
    """The round's working arrays (mutable while one call of decide() builds them)."""

    desired: CodeArray
    profile: np.ndarray
    why: np.ndarray
    wanted: CodeArray
    decided: BoolArray
    gain: FloatArray
    switch_s: FloatArray
    switch_cost: FloatArray
    margin_inference: FloatArray
    margin_now: FloatArray


def _demand_numbers(d: ModelDemand, serving: int, config: PolicyConfig
                    ) -> tuple[dict[str, float | str], int, float] | None:
    """need, wait estimate and numbers of a profile, or None when its figures are unknown."""
    cap = d.capacity_rps_per_gpu
    waiting = d.requests_waiting
    if cap is None or cap <= 0 or waiting is None or d.wait_bound_s <= 0:
        return None
    capacity = serving * cap
    arrivals = d.arrival_rate_rps
    if arrivals is None:  # no counter history yet: what serves now, busy if anything waits
        arrivals = capacity if waiting > 0 else 0.0
    wait_s = waiting / capacity if capacity > 0 else (math.inf if waiting > 0 else 0.0)
    need = math.ceil(arrivals / (cap * config.target_utilization)
                     + waiting / (cap * d.wait_bound_s) - 1e-9)
    numbers: dict[str, float | str] = {
        "need_gpus": float(need), "serving_gpus": float(serving), "arrival_rps": arrivals,
        "capacity_rps": cap, "waiting": waiting, "bound_s": d.wait_bound_s, "wait_s": wait_s}
    return numbers, need, wait_s


def decide(snapshot: Snapshot, memory: PolicyMemory,
           config: PolicyConfig = PolicyConfig()) -> tuple[Decision, PolicyMemory]:
    """One round of the controller's policy. Pure: same inputs, same outputs."""
    f = snapshot.fleet
    n = len(f)
    now = snapshot.time_s
    mem = memory.aligned(f.device_ids)
    cur = f.workload
    is_gpu = f.kind == KIND_GPU
    reachable = f.rig_reachable[f.rig]
    actionable = reachable & f.healthy

    price, price_note = usable_price(snapshot.price, config.prices)
    price_ok = not math.isnan(price)
    published = snapshot.price.published_s(now)
    new_window = price_ok and published is not None and (
        mem.last_price_published_s is None or published > mem.last_price_published_s)
    hashprice, hp_notes = usable_hashprices(snapshot, config.prices)
    econ = economics(f, price, hashprice, mem.j_per_th, config.power)
    strike = econ.strike_usd_per_mwh
    high = strike * config.high_strike_ratio
    m_hash, m_rest = econ.margin_hash_usd_per_h, econ.margin_rest_usd_per_h
    with np.errstate(invalid="ignore"):
        above = price > strike
        below = price <= strike
        is_high = price > high
    if new_window:
        windows_above = np.where(above, mem.windows_above + 1, 0).astype(np.int32)
        windows_below = np.where(below, mem.windows_below + 1, 0).astype(np.int32)
    else:
        windows_above, windows_below = mem.windows_above, mem.windows_below
    horizon_s = max(config.min_dwell_s, config.window_s)
    horizon_h = horizon_s / 3600.0
    d_ok = dwell_ok(mem.since_s, now, config.min_dwell_s)
    rest = rest_state(f)

    # The profiles a decision can name: the fleet's, then any new one in the demand.
    profiles = f.profiles + tuple(dict.fromkeys(
        d.profile for d in snapshot.demand if d.profile not in f.profiles))
    plan = _Plan(desired=cur.copy(), profile=f.profile.copy(),
                 why=np.full(n, Why.HOLD_UNREACHABLE, dtype=np.int32),
                 wanted=cur.copy(), decided=~actionable, gain=np.full(n, np.nan),
                 switch_s=np.full(n, np.nan), switch_cost=np.full(n, np.nan),
                 margin_inference=np.full(n, np.nan), margin_now=np.full(n, np.nan))
    plan.why[reachable & ~f.healthy] = Why.HOLD_UNHEALTHY

    # Values for comparing inference with hashing: with no usable price, by value alone.
    value_price = price if price_ok else 0.0
    with np.errstate(invalid="ignore"):
        hash_value = np.nan_to_num(econ.th * econ.hashprice / 24.0 - econ.hash_w * value_price
                                   / 1e6, nan=0.0)
        rest_value = -econ.rest_w * value_price / 1e6
    now_value = np.where(cur == W_HASHING, hash_value, rest_value)
    inference_w = np.where(np.isfinite(f.power_limit_max_w), f.power_limit_max_w,
                           np.where(np.isfinite(f.rated_power_w), f.rated_power_w,
                                    unknown_w(f, config.power)))

    with np.errstate(invalid="ignore"):
        pays = price_ok & np.isfinite(m_hash) & (m_hash > m_rest)

    # 2. Inference demand first.
    model_numbers: dict[str, dict[str, float | str]] = {}
    low_windows = dict(mem.low_windows)
    borrowed = mem.borrowed.copy()
    demand_window = _count_window(mem.demand_window_s, now, config.window_s)
    released = np.zeros(n, dtype=np.bool_)
    serving_any = is_gpu & (cur == W_INFERENCE)
    ranked = []
    for d in snapshot.demand:
        code = profiles.index(d.profile)
        serving = serving_any & (f.profile == code)
        count = int((serving & actionable).sum())
        figures = _demand_numbers(d, count, config)
        ranked.append((-(figures[2] / d.wait_bound_s) if figures else 0.0, d.profile, d, code,
                       serving, count, figures))
    ranked.sort(key=lambda r: (r[0], r[1]))
    for _, name, d, code, serving, count, figures in ranked:
        plan.decided |= serving
        if figures is None:
            plan.why[serving & actionable] = Why.INFER_HOLD
            model_numbers[name] = {"need_gpus": math.nan, "serving_gpus": float(count)}
            continue
        numbers, need, wait_s = figures
        per_request = d.value.usd_per_request()
        value_h = (d.capacity_rps_per_gpu or 0.0) * config.target_utilization * 3600.0 \
            * per_request + (d.value.usd_per_gpu_hour or 0.0)
        numbers["value_gpu_h"] = value_h
        plan.why[serving & actionable] = Why.INFER_SERVE
        plan.margin_inference[serving] = value_h - inference_w[serving] * value_price / 1e6
        if need > count:
            low_windows[name] = 0
            _borrow(plan, f, d, code, need - count, wait_s > d.wait_bound_s, value_h,
                    inference_w, value_price, now_value, d_ok, actionable, borrowed, horizon_h,
                    config)
        elif need < count:
            if demand_window:
                low_windows[name] = low_windows.get(name, 0) + 1
            numbers["low_windows"] = float(low_windows[name])
            if low_windows[name] >= config.give_back_windows:
                # Warm GPUs go back first (they return in a fraction of a second), then the
                # borrowed, then those whose hashing earns most; each once its dwell allows
                # (one in line within its dwell waits for it: another is not given back in its
                # place, and the counter stays so that it goes when its dwell ends).
                give = np.flatnonzero(serving & actionable)
                warm = f.warm_standby[give] & (f.profile[give] == code)
                order = np.lexsort((-hash_value[give], ~borrowed[give], ~warm))
                give = give[order[:count - need]]
                waiting = give[~d_ok[give]]
                give = give[d_ok[give]]
                released[give] = True
                borrowed[give] = False
                if not len(waiting):
                    low_windows[name] = 0
                plan.why[serving & actionable & ~released] = Why.INFER_SERVE
                plan.why[waiting] = Why.HOLD_DWELL
                plan.wanted[waiting] = np.where(pays[waiting], W_HASHING, rest[waiting])
            else:
                plan.why[serving & actionable] = Why.INFER_WAIT_RETURN
        else:
            low_windows[name] = 0
        numbers.setdefault("low_windows", float(low_windows.get(name, 0)))
        model_numbers[name] = numbers
    # GPUs serving a profile with no demand figures at all: held.
    orphans = serving_any & actionable & ~plan.decided
    plan.why[orphans] = Why.INFER_HOLD
    plan.decided |= orphans
    borrowed &= (plan.desired == W_INFERENCE) | (cur == W_INFERENCE)

    # Given back: to hashing where it pays now, else to rest. Never to hashing on a bad price.
    back_hash = released & pays
    back_rest = released & ~pays
    plan.desired[back_hash] = W_HASHING
    plan.why[back_hash] = Why.INFER_RETURN_HASH
    plan.desired[back_rest] = rest[back_rest]
    plan.why[back_rest] = Why.INFER_RETURN_REST
    plan.decided |= released

    # 3. Every other device against its own strike price.
    free = ~plan.decided
    _strike_rule(plan, f, free, price_ok, above, below, is_high, windows_above,
                 windows_below, m_hash, m_rest, econ.j_per_th, d_ok, rest, horizon_h, config)

    # 4. The grid cap.
    site: dict[str, float | str] = {
        "price": price if price_ok else (snapshot.price.usd_per_mwh or math.nan),
        "price_age_s": snapshot.price.age_s if snapshot.price.age_s is not None else math.nan,
        "price_note": price_note, "shed_windows": float(config.shed_windows),
        "resume_windows": float(config.resume_windows),
        "high_strike_ratio": config.high_strike_ratio, "min_dwell_s": config.min_dwell_s,
        "horizon_s": horizon_s, "give_back_windows": float(config.give_back_windows),
        "max_switches": float(config.max_switches_per_round or 0)}
    notes = [price_note] if price_note else []
    notes += hp_notes
    curtail: tuple[RigCurtail, ...] = ()
    shed_cost = np.full(n, np.nan)
    plan_w = planned_power_w(f, plan.desired, econ, config.power)
    cap = snapshot.grid_cap
    if cap is not None:
        target = cap_target_w(cap, config.cap_margin)
        base = rig_base_w(f, config.power)
        site_plan = float(plan_w.sum() + base.sum())
        site.update(cap_w=cap.cap_w, cap_source=cap.source, deadline_s=cap.deadline_s,
                    deadline=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(cap.deadline_s)),
                    target_w=target, site_plan_w=site_plan)
        if site_plan > target:
            sheddable = reachable & ((plan.desired == W_HASHING)
                                     | (plan.desired == W_INFERENCE))
            idx = np.flatnonzero(sheddable)
            saving = plan_w[idx] - econ.rest_w[idx]
            keep_value = np.where(plan.desired[idx] == W_INFERENCE,
                                  plan.margin_inference[idx], hash_value[idx])
            keep_value = np.nan_to_num(keep_value, nan=0.0) - rest_value[idx]
            with np.errstate(divide="ignore", invalid="ignore"):
                cost = np.where(saving > 0, keep_value / saving, np.inf)
            klass = np.where(plan.desired[idx] == W_INFERENCE, 2,
                             np.where(cur[idx] == W_HASHING, 1, 0))
            order = np.lexsort((-econ.j_per_th[idx], cost, klass))
            idx, saving, cost = idx[order], saving[order], cost[order]
            cum = np.cumsum(np.maximum(saving, 0.0))
            excess = site_plan - target
            k = int(np.searchsorted(cum, excess - 1e-9)) + 1
            shed = idx[:k]
            plan.desired[shed] = rest[shed]
            plan.why[shed] = Why.GRID_SHED
            shed_cost[shed] = cost[:k] * 1e6  # $/h per W = $/Wh -> $/MWh
            borrowed[shed] = False
            if k > len(idx):
                notes.append(f"grid cap {cap.cap_w:,.0f} W cannot be met: shedding every device "
                             f"leaves {site_plan - float(cum[-1] if len(cum) else 0):,.0f} W")
            plan_w = planned_power_w(f, plan.desired, econ, config.power)
        rig_w = np.bincount(f.rig, weights=plan_w, minlength=len(f.rig_ids)) + base
        site["site_after_w"] = float(rig_w.sum())
        curtail = split_targets(f, rig_w, target, cap, (
            f"grid cap {cap.cap_w:,.0f} W ({cap.source}): rig share of a site plan of "
            f"{float(rig_w.sum()):,.0f} W"))

    changed = plan.desired != cur
    changed |= ((plan.desired == W_INFERENCE) & (plan.profile != f.profile))
    since = np.where(changed, now, mem.since_s)
    with np.errstate(invalid="ignore"):
        dwell_s = now - mem.since_s
    missing = np.where(np.isfinite(hashprice), 2, 1).astype(np.int32)
    decision = Decision(
        policy="controller", time_s=now, fleet=f, desired=plan.desired, profiles=profiles,
        desired_profile=plan.profile.astype(np.int32),
        power_cap_w=np.full(n, np.nan), reason=plan.why, templates=_TEMPLATES,
        numbers={
            "strike": strike, "high_strike": high, "j_per_th": econ.j_per_th,
            "margin_hash": m_hash, "margin_rest": m_rest,
            "margin_inference": plan.margin_inference, "margin_now": plan.margin_now,
            "windows_above": windows_above.astype(np.float64),
            "windows_below": windows_below.astype(np.float64), "dwell_s": dwell_s,
            "gain": plan.gain, "switch_s": plan.switch_s, "switch_cost": plan.switch_cost,
            "min_gain": np.maximum(config.min_gain_usd_per_h,
                                   config.min_gain_ratio * np.abs(np.nan_to_num(now_value))),
            "shed_cost": shed_cost, "plan_w": plan_w},
        site_numbers=MappingProxyType(site),
        model_numbers=MappingProxyType({k: MappingProxyType(v)
                                        for k, v in model_numbers.items()}),
        words=MappingProxyType({
            "efficiency_source": (EFFICIENCY_SOURCES, econ.efficiency_source),
            "wanted": (tuple(str(w) for w in WORKLOADS), plan.wanted.astype(np.int32)),
            "strike_missing": (STRIKE_MISSING, missing)}),
        curtail=curtail, notes=tuple(notes))
    memory_out = PolicyMemory(
        device_ids=f.device_ids, windows_above=windows_above, windows_below=windows_below,
        since_s=since, j_per_th=econ.measured_j_per_th, borrowed=borrowed,
        low_windows=MappingProxyType(low_windows),
        last_price_published_s=published if new_window else mem.last_price_published_s,
        demand_window_s=now if demand_window else mem.demand_window_s)
    return decision, memory_out


def _borrow(plan: _Plan, f: Fleet, d: ModelDemand, code: int, k: int, urgent: bool,
            value_h: float, inference_w: FloatArray, value_price: float, now_value: FloatArray,
            d_ok: BoolArray, actionable: BoolArray, borrowed: BoolArray, horizon_h: float,
            config: PolicyConfig) -> None:
    """Borrow up to k GPUs for profile `code`: warm first when urgent, cold first when not;
    then those earning least now."""
    cur = f.workload
    candidates = np.flatnonzero((f.kind == KIND_GPU) & actionable & ~plan.decided
                                & (cur != W_INFERENCE))
    if not len(candidates):
        return
    warm = f.warm_standby[candidates] & (f.profile[candidates] == code)
    hashing = cur[candidates] == W_HASHING
    switch_s = np.where(
        warm, np.where(np.isfinite(f.switch_warm_s[candidates]), f.switch_warm_s[candidates],
                       config.default_switch_warm_s),
        np.where(np.isfinite(f.switch_cold_s[candidates]), f.switch_cold_s[candidates],
                 config.default_switch_cold_s))
    m_inf = value_h - inference_w[candidates] * value_price / 1e6
    m_now = now_value[candidates]
    gain = m_inf - m_now
    cost = switch_s / 3600.0 * np.maximum(m_inf, 0.0)
    threshold = np.maximum(config.min_gain_usd_per_h, config.min_gain_ratio * np.abs(m_now))
    gain_ok = gain * horizon_h - cost >= threshold * horizon_h
    time_ok = np.ones(len(candidates), dtype=np.bool_) if urgent else d_ok[candidates]
    # Over the bound: warm GPUs first, they serve in a fraction of a second. Within it (demand
    # growing, the queue still short): cold GPUs first, they have the time, and the warm ones
    # stay hashing as the reserve for a burst.
    order = np.lexsort((m_now, hashing, ~warm if urgent else warm))
    chosen_mask = (gain_ok & time_ok)[order]
    chosen = order[chosen_mask][:k]
    # The first candidates in line that were refused say why (one is enough to explain).
    refused = order[~chosen_mask][:max(k - len(chosen), 0)]
    for rows, assign in ((chosen, True), (refused, False)):
        idx = candidates[rows]
        plan.gain[idx] = gain[rows]
        plan.switch_s[idx] = switch_s[rows]
        plan.switch_cost[idx] = cost[rows]
        plan.margin_inference[idx] = m_inf[rows]
        plan.margin_now[idx] = m_now[rows]
        if assign:
            plan.desired[idx] = W_INFERENCE
            plan.profile[idx] = code
            plan.why[idx] = np.where(warm[rows], Why.INFER_BORROW_WARM, Why.INFER_BORROW_COLD)
            plan.decided[idx] = True
            borrowed[idx] = True
        else:
            plan.wanted[idx] = W_INFERENCE
            plan.why[idx] = np.where(gain_ok[rows], Why.HOLD_DWELL, Why.HOLD_GAIN)
            plan.decided[idx] = True


def _strike_rule(plan: _Plan, f: Fleet, free: BoolArray, price_ok: bool, above: BoolArray,
                 below: BoolArray, is_high: BoolArray, windows_above: np.ndarray,
                 windows_below: np.ndarray, m_hash: FloatArray, m_rest: FloatArray,
                 j_per_th: FloatArray, d_ok: BoolArray, rest: CodeArray, horizon_h: float,
                 config: PolicyConfig) -> None:
    cur = f.workload
    valid = np.isfinite(m_hash) & price_ok
    on = free & (cur == W_HASHING)
    off = free & ~on
    plan.why[free & ~valid] = Why.HOLD_PRICE if not price_ok else Why.HOLD_NO_STRIKE
    on_v = on & valid
    off_v = off & valid
    plan.why[on_v & ~above] = Why.HASH_BELOW
    shed_high = on_v & is_high
    shed_win = on_v & above & ~is_high & (windows_above >= config.shed_windows)
    plan.why[on_v & above & ~is_high & ~shed_win] = Why.WAIT_SHED
    plan.why[off_v & ~below] = Why.STAY_ABOVE
    resume = off_v & below & (windows_below >= config.resume_windows)
    plan.why[off_v & below & ~resume] = Why.WAIT_RESUME

    wake_s = np.where(np.isfinite(f.switch_to_hashing_s), f.switch_to_hashing_s,
                      config.default_switch_to_hashing_s)
    with np.errstate(invalid="ignore"):
        gain = np.where(on, m_rest - m_hash, m_hash - m_rest)
        cost = np.where(on, 0.0, wake_s / 3600.0 * np.maximum(gain, 0.0))
        threshold = np.maximum(config.min_gain_usd_per_h,
                               config.min_gain_ratio * np.abs(np.where(on, m_hash, m_rest)))
        gain_ok = gain * horizon_h - cost >= threshold * horizon_h
    want = shed_win | resume
    plan.wanted[shed_win] = rest[shed_win]
    plan.wanted[resume] = W_HASHING
    plan.gain[want | shed_high] = gain[want | shed_high]
    plan.switch_s[want] = np.where(on[want], 0.0, wake_s[want])
    plan.switch_cost[want] = cost[want]
    refused_dwell = want & ~d_ok
    refused_gain = want & d_ok & ~gain_ok
    plan.why[refused_dwell] = Why.HOLD_DWELL
    plan.why[refused_gain] = Why.HOLD_GAIN
    go_shed = shed_high | (shed_win & d_ok & gain_ok)
    go_resume = resume & d_ok & gain_ok
    limit = config.max_switches_per_round
    if limit is not None:
        sheds = np.flatnonzero(go_shed)
        sheds = sheds[np.argsort(-j_per_th[sheds], kind="stable")]
        resumes = np.flatnonzero(go_resume)
        resumes = resumes[np.argsort(j_per_th[resumes], kind="stable")]
        over = np.concatenate([sheds, resumes])[limit:]
        go_shed[over] = False
        go_resume[over] = False
        plan.wanted[over] = np.where(on[over], rest[over], W_HASHING)
        plan.why[over] = Why.HOLD_LIMIT
    plan.desired[go_shed] = rest[go_shed]
    plan.why[go_shed & shed_high] = Why.SHED_HIGH
    plan.why[go_shed & ~shed_high] = Why.SHED_WINDOWS
    plan.desired[go_resume] = W_HASHING
    plan.why[go_resume] = Why.RESUME
