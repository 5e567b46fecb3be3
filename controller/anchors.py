"""The field's rules, as pure functions with the controller policy's signature
`(snapshot, memory, config) -> (decision, memory)`, so the replay runs them through the same
simulator:

- `always_mine`: every device hashes.
- `strike`: Braiins Manager's rule: every miner pauses while the price is above one strike price
  and hashes again at or below it.
- `strike_windows`: Foreman's rule: curtail after `shed_windows` (2) consecutive 5-minute
  windows above a low strike, resume after `resume_windows` (4) below it, at once above a high
  strike.
- `least_efficient_first`: Foundry OptiFleet's: each miner against the strike of its nameplate
  efficiency, so the least efficient go off first and the most efficient come back first.
- `static_split`: a fixed share of each rig's GPUs serves inference; everything else hashes.

None of these tools schedules inference, so their GPUs outside the configured static share
(`gpu_inference_share`, 0 for `always_mine`) are miners to them. A grid cap is split the way a
site without a site policy splits it: every rig curtailed to the cap's share of its nameplate
for the event, and each rigd sheds (hashing first). An unusable price holds every device as it
is, as in the controller.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from controller.model import (
    KIND_GPU,
    W_HASHING,
    W_INFERENCE,
    BoolArray,
    CodeArray,
    Decision,
    FloatArray,
    PolicyMemory,
    Snapshot,
)
from controller.rules import (
    PowerFigures,
    PriceLimits,
    economics,
    nameplate_targets,
    rest_state,
    usable_hashprices,
    usable_price,
)


@dataclass(frozen=True, kw_only=True)
class AnchorConfig:
    strike_usd_per_mwh: float = 90.0  # strike; Foreman's low strike
    high_strike_usd_per_mwh: float = 200.0  # Foreman's high strike
    shed_windows: int = 2
    resume_windows: int = 4
    gpu_inference_share: float = 0.0  # of each rig's GPUs, serving inference for good
    split_profile: str = ""  # the profile they serve ("": the snapshot's first)
    cap_margin: float = 0.02
    prices: PriceLimits = field(default_factory=PriceLimits)
    power: PowerFigures = field(default_factory=PowerFigures)

    def __post_init__(self) -> None:
        if not 0 <= self.gpu_inference_share <= 1:
            raise ValueError("gpu_inference_share must be in [0, 1]")
        if self.shed_windows < 1 or self.resume_windows < 1:
            raise ValueError("shed_windows and resume_windows must be at least 1")


class Why(enum.IntEnum):
    HOLD_UNREACHABLE = 0
    HOLD_UNHEALTHY = enum.auto()
    HOLD_PRICE = enum.auto()
    HOLD_NO_STRIKE = enum.auto()
    MINE = enum.auto()
    SPLIT = enum.auto()
    BELOW_STRIKE = enum.auto()
    ABOVE_STRIKE = enum.auto()
    WAIT_SHED = enum.auto()
    SHED_WINDOWS = enum.auto()
    SHED_HIGH = enum.auto()
    STAY_ABOVE = enum.auto()
    WAIT_RESUME = enum.auto()
    RESUME = enum.auto()
    NAMEPLATE_BELOW = enum.auto()
    NAMEPLATE_ABOVE = enum.auto()


_NAMEPLATE = "this {model}'s nameplate strike {strike:.0f} $/MWh ({j_per_th:.1f} J/TH rated)"
TEMPLATES: dict[Why, str] = {
    Why.HOLD_UNREACHABLE: "left {current}: rig {rig_id} unreachable",
    Why.HOLD_UNHEALTHY: "left {current}: unhealthy",
    Why.HOLD_PRICE: "left {current}: {price_note}; nothing is woken on an unusable price",
    Why.HOLD_NO_STRIKE: "left {current}: no nameplate efficiency or usable hashprice",
    Why.MINE: "hashing: always mine",
    Why.SPLIT: "serves {profile}: one of the {split_share:.0%} of each rig's GPUs given to "
               "inference for good",
    Why.BELOW_STRIKE: "hashing: price {price:.0f} $/MWh at or below the strike {low:.0f} $/MWh",
    Why.ABOVE_STRIKE: "{desired}: price {price:.0f} $/MWh above the strike {low:.0f} $/MWh",
    Why.WAIT_SHED: ("still hashing: price {price:.0f} $/MWh above the low strike {low:.0f} $/MWh "
                    "for {windows_above:.0f} of {shed_windows:.0f} windows"),
    Why.SHED_WINDOWS: ("{desired}: price {price:.0f} $/MWh above the low strike {low:.0f} $/MWh "
                       "for {windows_above:.0f} windows"),
    Why.SHED_HIGH: ("{desired} at once: price {price:.0f} $/MWh above the high strike "
                    "{high:.0f} $/MWh"),
    Why.STAY_ABOVE: "stays {current}: price {price:.0f} $/MWh above the low strike {low:.0f} $/MWh",
    Why.WAIT_RESUME: ("stays {current}: price {price:.0f} $/MWh at or below the low strike "
                      "{low:.0f} $/MWh for {windows_below:.0f} of {resume_windows:.0f} windows"),
    Why.RESUME: ("hashing: price {price:.0f} $/MWh at or below the low strike {low:.0f} $/MWh "
                 "for {windows_below:.0f} windows"),
    Why.NAMEPLATE_BELOW: "hashing: price {price:.0f} $/MWh at or below " + _NAMEPLATE,
    Why.NAMEPLATE_ABOVE: "{desired}: price {price:.0f} $/MWh above " + _NAMEPLATE,
}
_TEMPLATES = tuple(TEMPLATES[w] for w in Why)

Anchor = Callable[[Snapshot, PolicyMemory, AnchorConfig], tuple[Decision, PolicyMemory]]


def split_gpus(snapshot: Snapshot, share: float) -> BoolArray:
    """The GPUs a static split gives to inference: the first round(share x n) of each rig's n
    GPUs, in the rig's own order."""
    f = snapshot.fleet
    chosen = np.zeros(len(f), dtype=np.bool_)
    if share <= 0:
        return chosen
    gpus = np.flatnonzero(f.kind == KIND_GPU)
    if not len(gpus):
        return chosen
    rigs = f.rig[gpus]
    order = np.argsort(rigs, kind="stable")
    gpus, rigs = gpus[order], rigs[order]
    counts = np.bincount(rigs, minlength=len(f.rig_ids))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(gpus)) - starts[rigs]
    keep = np.floor(share * counts + 0.5)[rigs]
    chosen[gpus[rank < keep]] = True
    return chosen


def _run(name: str, snapshot: Snapshot, memory: PolicyMemory, config: AnchorConfig,
         rule: Callable[..., None], nameplate: bool = False) -> tuple[Decision, PolicyMemory]:
    """What every anchor does around its rule: holds, the static split, the grid split."""
    f = snapshot.fleet
    n = len(f)
    now = snapshot.time_s
    mem = memory.aligned(f.device_ids)
    cur = f.workload
    reachable = f.rig_reachable[f.rig]
    actionable = reachable & f.healthy
    price, price_note = usable_price(snapshot.price, config.prices)
    hashprice, hp_notes = usable_hashprices(snapshot, config.prices)
    desired = cur.copy()
    why = np.full(n, Why.HOLD_UNREACHABLE, dtype=np.int32)
    why[reachable & ~f.healthy] = Why.HOLD_UNHEALTHY
    profiles = f.profiles + tuple(dict.fromkeys(
        d.profile for d in snapshot.demand if d.profile not in f.profiles))
    profile = f.profile.copy()
    split_profile = config.split_profile or (snapshot.demand[0].profile if snapshot.demand
                                             else "")
    split = split_gpus(snapshot, config.gpu_inference_share) & actionable
    if split_profile:
        desired[split] = W_INFERENCE
        profile[split] = profiles.index(split_profile) if split_profile in profiles else -1
        why[split] = Why.SPLIT
    else:
        split[:] = False
    free = actionable & ~split
    published = snapshot.price.published_s(now)
    new_window = (not math.isnan(price)) and published is not None and (
        mem.last_price_published_s is None or published > mem.last_price_published_s)
    econ = economics(f, price, hashprice, mem.j_per_th, config.power, nameplate_only=nameplate)
    numbers: dict[str, FloatArray] = {"strike": econ.strike_usd_per_mwh,
                                      "j_per_th": econ.j_per_th}
    state = _RuleState(free=free, desired=desired, why=why, rest=rest_state(f), price=price,
                       new_window=new_window, memory=mem, numbers=numbers, config=config,
                       strike=econ.strike_usd_per_mwh)
    if math.isnan(price):
        why[free] = Why.HOLD_PRICE
    else:
        rule(state)
    curtail = (nameplate_targets(f, snapshot.grid_cap, config.cap_margin, config.power)
               if snapshot.grid_cap is not None else ())
    changed = (desired != cur) | ((desired == W_INFERENCE) & (profile != f.profile))
    decision = Decision(
        policy=name, time_s=now, fleet=f, desired=desired, profiles=profiles,
        desired_profile=profile.astype(np.int32), power_cap_w=np.full(n, np.nan), reason=why,
        templates=_TEMPLATES, numbers=numbers,
        site_numbers=MappingProxyType({
            "price": price if not math.isnan(price) else (snapshot.price.usd_per_mwh
                                                          or math.nan),
            "price_note": price_note, "low": config.strike_usd_per_mwh,
            "high": config.high_strike_usd_per_mwh,
            "shed_windows": float(config.shed_windows),
            "resume_windows": float(config.resume_windows),
            "split_share": config.gpu_inference_share}),
        curtail=curtail, notes=tuple(([price_note] if price_note else []) + hp_notes))
    memory_out = PolicyMemory(
        device_ids=f.device_ids, windows_above=state.windows_above,
        windows_below=state.windows_below, since_s=np.where(changed, now, mem.since_s),
        j_per_th=econ.measured_j_per_th, borrowed=mem.borrowed,
        low_windows=mem.low_windows,
        last_price_published_s=published if new_window else mem.last_price_published_s,
        demand_window_s=mem.demand_window_s)
    return decision, memory_out


@dataclass
class _RuleState:
    free: BoolArray  # devices the rule decides
    desired: CodeArray
    why: np.ndarray
    rest: CodeArray
    price: float
    new_window: bool
    memory: PolicyMemory
    numbers: dict[str, FloatArray]
    config: AnchorConfig
    strike: FloatArray
    windows_above: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    windows_below: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    def __post_init__(self) -> None:
        self.windows_above = self.memory.windows_above
        self.windows_below = self.memory.windows_below


def _mine(s: _RuleState) -> None:
    s.desired[s.free] = W_HASHING
    s.why[s.free] = Why.MINE


def _strike(s: _RuleState) -> None:
    if s.price > s.config.strike_usd_per_mwh:
        s.desired[s.free] = s.rest[s.free]
        s.why[s.free] = Why.ABOVE_STRIKE
    else:
        s.desired[s.free] = W_HASHING
        s.why[s.free] = Why.BELOW_STRIKE


def _windows(s: _RuleState) -> None:
    c = s.config
    above = s.price > c.strike_usd_per_mwh
    if s.new_window:
        n = len(s.free)
        s.windows_above = (s.memory.windows_above + 1 if above
                           else np.zeros(n, dtype=np.int32)).astype(np.int32)
        s.windows_below = (np.zeros(n, dtype=np.int32) if above
                           else s.memory.windows_below + 1).astype(np.int32)
    s.numbers["windows_above"] = s.windows_above.astype(np.float64)
    s.numbers["windows_below"] = s.windows_below.astype(np.float64)
    on = s.free & (s.desired == W_HASHING)
    off = s.free & ~on
    if s.price > c.high_strike_usd_per_mwh:
        s.desired[on] = s.rest[on]
        s.why[on] = Why.SHED_HIGH
        s.why[off] = Why.STAY_ABOVE
        return
    shed = on & (s.windows_above >= c.shed_windows)
    s.desired[shed] = s.rest[shed]
    s.why[shed] = Why.SHED_WINDOWS
    s.why[on & ~shed] = Why.WAIT_SHED if above else Why.BELOW_STRIKE
    if above:
        s.why[off] = Why.STAY_ABOVE
        return
    resume = off & (s.windows_below >= c.resume_windows)
    s.desired[resume] = W_HASHING
    s.why[resume] = Why.RESUME
    s.why[off & ~resume] = Why.WAIT_RESUME


def _nameplate(s: _RuleState) -> None:
    known = s.free & np.isfinite(s.strike)
    s.why[s.free & ~known] = Why.HOLD_NO_STRIKE
    with np.errstate(invalid="ignore"):
        above = s.price > s.strike
    off = known & above
    on = known & ~above
    s.desired[off] = s.rest[off]
    s.why[off] = Why.NAMEPLATE_ABOVE
    s.desired[on] = W_HASHING
    s.why[on] = Why.NAMEPLATE_BELOW


def always_mine(snapshot: Snapshot, memory: PolicyMemory,
                config: AnchorConfig = AnchorConfig()) -> tuple[Decision, PolicyMemory]:
    return _run("always mine", snapshot, memory, config, _mine)


def strike(snapshot: Snapshot, memory: PolicyMemory,
           config: AnchorConfig = AnchorConfig()) -> tuple[Decision, PolicyMemory]:
    return _run("strike (Braiins)", snapshot, memory, config, _strike)


def strike_windows(snapshot: Snapshot, memory: PolicyMemory,
                   config: AnchorConfig = AnchorConfig()) -> tuple[Decision, PolicyMemory]:
    return _run("strike+windows (Foreman)", snapshot, memory, config, _windows)


def least_efficient_first(snapshot: Snapshot, memory: PolicyMemory,
                          config: AnchorConfig = AnchorConfig()
                          ) -> tuple[Decision, PolicyMemory]:
    return _run("least efficient first (OptiFleet)", snapshot, memory, config, _nameplate,
                nameplate=True)


def static_split(snapshot: Snapshot, memory: PolicyMemory,
                 config: AnchorConfig = AnchorConfig(gpu_inference_share=0.5)
                 ) -> tuple[Decision, PolicyMemory]:
    return _run("static split", snapshot, memory, config, _mine)
