"""What every policy needs, computed the same way for all of them: which inputs are usable, each
device's economics (efficiency, strike price, margin per hour of hashing and of resting), the
power a set of desired states will draw, and a grid cap split into per-rig Curtail targets.

Safe defaults for bad inputs (documented in controller/README.md):
- a price that is missing, older than `max_age_s`, from the future, not a number, below
  `floor_usd_per_mwh` or above `ceiling_usd_per_mwh` is unusable: every policy then holds what
  each device does and wakes nothing (a stale price never wakes a miner); the grid cap still
  applies. A negative price inside the bounds is real (ERCOT's real-time prices go negative) and
  is used: mining is paid to consume.
- a hashprice that is missing, stale (older than `hashprice_max_age_s`) or negative leaves its
  algorithm's devices without a strike price: they are held, and never woken.
- a device's unknown power is planned with `PowerFigures.asic_unknown_w`/`gpu_unknown_w`, a
  rig's unknown base draw with `rig_base_w` (upper figures: a grid cap errs towards shedding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controller.model import (
    KIND_ASIC,
    W_ASLEEP,
    W_HASHING,
    W_IDLE,
    W_INFERENCE,
    W_STANDBY,
    BoolArray,
    CodeArray,
    Fleet,
    FloatArray,
    GridCap,
    IntArray,
    Price,
    RigCurtail,
    Snapshot,
)


@dataclass(frozen=True, kw_only=True)
class PriceLimits:
    max_age_s: float = 900.0  # three 5-minute windows
    floor_usd_per_mwh: float = -250.0  # ERCOT's offer floor
    ceiling_usd_per_mwh: float = 10_000.0  # twice ERCOT's $5,000/MWh cap
    hashprice_max_age_s: float = 2 * 86_400.0


@dataclass(frozen=True, kw_only=True)
class PowerFigures:
    """Figures used where a device cannot be measured in the state it is planned for."""

    asic_sleep_w: float = 15.0  # a sleeping Antminer reads ~15 W (the demo rig's)
    gpu_idle_w: float = 60.0  # a GPU with no workload (or its runtime asleep in host memory)
    asic_unknown_w: float = 3_600.0  # planning figure for a miner of unknown power
    gpu_unknown_w: float = 700.0  # planning figure for a GPU of unknown power (H100 SXM TDP)
    rig_base_w: float = 500.0  # planning figure for a rig's unknown base draw


def usable_price(price: Price, limits: PriceLimits) -> tuple[float, str]:
    """The price if it can be used, else NaN and why not."""
    value, age = price.usd_per_mwh, price.age_s
    if value is None:
        return math.nan, "price missing"
    if not math.isfinite(value):
        return math.nan, f"price {value!r} is not a number"
    if age is None:
        return math.nan, f"price {value:.0f} $/MWh of unknown age"
    if age < 0:
        return math.nan, f"price {value:.0f} $/MWh published {-age:.0f} s in the future"
    if age > limits.max_age_s:
        return math.nan, (f"price {value:.0f} $/MWh is {age:.0f} s old (stale after "
                          f"{limits.max_age_s:.0f} s)")
    if not limits.floor_usd_per_mwh <= value <= limits.ceiling_usd_per_mwh:
        return math.nan, (f"price {value:.0f} $/MWh is outside [{limits.floor_usd_per_mwh:.0f}, "
                          f"{limits.ceiling_usd_per_mwh:.0f}] (absurd)")
    return float(value), ""


def usable_hashprices(snapshot: Snapshot, limits: PriceLimits) -> tuple[FloatArray, list[str]]:
    """The hashprice per device (NaN where unusable), and a note per unusable algorithm."""
    fleet = snapshot.fleet
    table = np.full(len(fleet.algorithms) + 1, np.nan)  # the last entry: no algorithm
    notes = []
    for a, algorithm in enumerate(fleet.algorithms):
        hp = snapshot.hashprice(algorithm)
        if hp is None or hp.usd_per_th_day is None:
            notes.append(f"hashprice for {algorithm} missing")
        elif not (math.isfinite(hp.usd_per_th_day) and hp.usd_per_th_day >= 0):
            notes.append(f"hashprice for {algorithm} is {hp.usd_per_th_day!r} (absurd)")
        elif hp.age_s is None or not 0 <= hp.age_s <= limits.hashprice_max_age_s:
            notes.append(f"hashprice for {algorithm} is stale or of unknown age")
        else:
            table[a] = hp.usd_per_th_day
    return table[fleet.algorithm], notes


EFFICIENCY_SOURCES = ("measured", "last measured", "nameplate", "unknown")


@dataclass(frozen=True, eq=False)
class Economics:
    """Per device: what a TH/s of it is, what it costs, what each choice earns per hour."""

    th: FloatArray  # TH/s when hashing: measured now, else nameplate
    j_per_th: FloatArray  # efficiency used
    efficiency_source: IntArray  # index into EFFICIENCY_SOURCES
    measured_j_per_th: FloatArray  # the memory's figure, updated with this round's measurements
    hashprice: FloatArray  # $/TH/day of its algorithm (NaN: unusable)
    strike_usd_per_mwh: FloatArray  # price above which hashing loses money
    hash_w: FloatArray  # power when hashing
    rest_w: FloatArray  # power asleep / in standby
    margin_hash_usd_per_h: FloatArray  # NaN when the price or the hashprice is unusable
    margin_rest_usd_per_h: FloatArray


def rest_state(fleet: Fleet) -> CodeArray:
    """Where a device goes when it stops: a miner to sleep; a GPU to standby when an inference
    runtime is kept warm for it (it is then ready in a fraction of a second), else asleep."""
    return np.where(fleet.kind == KIND_ASIC, W_ASLEEP,
                    np.where(fleet.warm_standby, W_STANDBY, W_ASLEEP)).astype(np.int8)


def economics(fleet: Fleet, price: float, hashprice: FloatArray, memory_j_per_th: FloatArray,
              figures: PowerFigures, nameplate_only: bool = False) -> Economics:
    """Strike price per device from its own efficiency: measured now (power / hashrate while
    hashing), else its last measured figure, else its nameplate (`nameplate_only`: always the
    nameplate, as a fleet tool without per-miner measurements would).

    strike [$/MWh] = hashprice [$/TH/day] x 1e6 / (24 x J/TH)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        hashing = fleet.workload == W_HASHING
        th_now = fleet.hashrate_hs / 1e12
        live = hashing & (th_now > 0)
        measured = np.where(live, fleet.power_w / th_now, np.nan)
        remembered = np.where(np.isfinite(measured), measured, memory_j_per_th)
        rated_th = fleet.rated_hashrate_hs / 1e12
        nameplate = fleet.rated_power_w / rated_th
        if nameplate_only:
            j_per_th = nameplate
            source = np.where(np.isfinite(nameplate), 2, 3)
            th = rated_th
        else:
            j_per_th = np.where(np.isfinite(remembered), remembered, nameplate)
            source = np.where(np.isfinite(measured), 0,
                              np.where(np.isfinite(memory_j_per_th), 1,
                                       np.where(np.isfinite(nameplate), 2, 3)))
            th = np.where(live, th_now, rated_th)
        hash_w = j_per_th * th
        strike = hashprice * 1e6 / (24.0 * j_per_th)
        resting = ((fleet.workload == W_ASLEEP) | (fleet.workload == W_STANDBY)
                   | (fleet.workload == W_IDLE))
        figure = np.where(fleet.kind == KIND_ASIC, figures.asic_sleep_w, figures.gpu_idle_w)
        rest_w = np.where(resting & np.isfinite(fleet.power_w), fleet.power_w, figure)
        margin_hash = th * hashprice / 24.0 - hash_w * price / 1e6
        margin_rest = -rest_w * price / 1e6
    return Economics(th=th, j_per_th=j_per_th, efficiency_source=source.astype(np.int32),
                     measured_j_per_th=remembered, hashprice=hashprice,
                     strike_usd_per_mwh=strike, hash_w=hash_w, rest_w=rest_w,
                     margin_hash_usd_per_h=margin_hash, margin_rest_usd_per_h=margin_rest)


def unknown_w(fleet: Fleet, figures: PowerFigures) -> FloatArray:
    return np.where(fleet.kind == KIND_ASIC, figures.asic_unknown_w, figures.gpu_unknown_w)


def planned_power_w(fleet: Fleet, desired: CodeArray, econ: Economics,
                    figures: PowerFigures) -> FloatArray:
    """What each device will draw in its desired state: its measured power if it stays as it
    is, else an estimate for the new state; never zero for unknown."""
    fallback = unknown_w(fleet, figures)
    ceiling = np.where(np.isfinite(fleet.power_limit_max_w), fleet.power_limit_max_w,
                       np.where(np.isfinite(fleet.rated_power_w), fleet.rated_power_w, fallback))
    hashing = np.where(np.isfinite(econ.hash_w), econ.hash_w, ceiling)
    estimate = np.where(desired == W_HASHING, hashing,
                        np.where(desired == W_INFERENCE, ceiling, econ.rest_w))
    same = (desired == fleet.workload) & np.isfinite(fleet.power_w)
    return np.where(same, fleet.power_w, estimate)


def rig_base_w(fleet: Fleet, figures: PowerFigures) -> FloatArray:
    return np.where(np.isfinite(fleet.rig_base_power_w), fleet.rig_base_power_w,
                    figures.rig_base_w)


def rig_power_w(fleet: Fleet, device_w: FloatArray, figures: PowerFigures) -> FloatArray:
    return (np.bincount(fleet.rig, weights=device_w, minlength=len(fleet.rig_ids))
            + rig_base_w(fleet, figures))


def cap_target_w(cap: GridCap, margin: float) -> float:
    """The power the site plans for under a cap: below it by `margin` (a fraction)."""
    return cap.cap_w * (1.0 - margin)


def split_targets(fleet: Fleet, rig_w: FloatArray, target_w: float, cap: GridCap,
                  why: str) -> tuple[RigCurtail, ...]:
    """Per-rig Curtail targets that add up to `target_w`: each rig's planned power plus a share
    of what is left under the target, in proportion to it (or, when the plan is above the
    target, cut in proportion: each rigd then sheds what it can and says what it could not).
    Unreachable rigs get none (their power still counts in the plan)."""
    total = float(rig_w.sum())
    shares = rig_w / total if total > 0 else np.full(len(rig_w), 1.0 / max(len(rig_w), 1))
    targets = rig_w + (target_w - total) * shares
    return tuple(
        RigCurtail(rig_id=fleet.rig_ids[r], target_w=float(targets[r]), deadline_s=cap.deadline_s,
                   expires_s=cap.ends_s, reason=why)
        for r in range(len(fleet.rig_ids)) if fleet.rig_reachable[r])


def nameplate_w(fleet: Fleet, figures: PowerFigures) -> FloatArray:
    """Each device's highest draw: its power limit, else its nameplate, else the planning
    figure."""
    return np.where(np.isfinite(fleet.power_limit_max_w), fleet.power_limit_max_w,
                    np.where(np.isfinite(fleet.rated_power_w), fleet.rated_power_w,
                             unknown_w(fleet, figures)))


def nameplate_targets(fleet: Fleet, cap: GridCap, margin: float,
                      figures: PowerFigures) -> tuple[RigCurtail, ...]:
    """A grid cap as a site without a site policy splits it: every rig gets the cap's share of
    its nameplate power for the whole event (the same targets every round), and each rig's rigd
    sheds what is above it (hashing first). A rig drawing less than its share leaves the rest
    unused; a rig drawing more sheds, whatever its devices earn."""
    rig_w = rig_power_w(fleet, nameplate_w(fleet, figures), figures)
    total = float(rig_w.sum())
    target = cap_target_w(cap, margin)
    why = (f"grid cap {cap.cap_w:,.0f} W ({cap.source}): every rig to {target / total:.0%} "
           f"of its nameplate")
    return split_targets(fleet, rig_w * (target / total), target, cap, why)


def dwell_ok(since_s: FloatArray, now_s: float, min_dwell_s: float) -> BoolArray:
    with np.errstate(invalid="ignore"):
        return np.isnan(since_s) | (now_s - since_s >= min_dwell_s)
