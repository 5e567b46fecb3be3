"""The controller's policy on hand-made snapshots: every rule, each with its explanation."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from controller.model import (
    DeviceKind,
    DeviceState,
    GridCap,
    PolicyMemory,
    RigState,
    Workload,
)
from controller.policy import PolicyConfig, decide
from tests.controller.fleet import (
    GPU_HP,
    GPU_TH,
    HP,
    PROFILE,
    demand,
    follow,
    gpu,
    miner,
    rig,
    snapshot,
)

HASHING, INFERENCE, ASLEEP, STANDBY = (Workload.HASHING, Workload.INFERENCE, Workload.ASLEEP,
                                       Workload.STANDBY)
EMPTY = PolicyMemory.empty()


def strike(j_per_th: float, hashprice: float = HP) -> float:
    """The issue's break-even: hashprice [$/TH/day] x 1e6 / (24 x J/TH)."""
    return hashprice * 1e6 / (24 * j_per_th)


def margin_hash(j_per_th: float, price: float, th: float = 100.0) -> float:
    return th * HP / 24 - j_per_th * th * price / 1e6


# -- strike price per miner ------------------------------------------------------------------

def test_the_strike_price_is_the_issues_break_even() -> None:
    d, _ = decide(snapshot(300, 50.0, [rig(miner("a", 20.0))]), EMPTY)
    assert d.numbers["strike"][0] == pytest.approx(104.1667, abs=1e-3)  # $104/MWh in the issue


def test_each_miner_is_judged_by_its_own_measured_efficiency() -> None:
    # Same model and nameplate (29.5 J/TH); measured 25 and 35 J/TH: strikes 83 and 60 $/MWh.
    rigs = [rig(miner("a", 25.0), miner("b", 35.0))]
    d, _ = decide(snapshot(300, 70.0, rigs), EMPTY)
    assert d.device("asic/a").desired == HASHING
    assert d.explain("asic/a") == (
        f"hashing: price 70 $/MWh below this Antminer S19j Pro's strike {strike(25):.0f} $/MWh "
        f"(25.0 J/TH, measured); hashing earns {margin_hash(25, 70):+.4f} $/h")
    assert d.device("asic/b").desired == ASLEEP
    assert d.explain("asic/b") == (
        f"asleep: price 70 $/MWh above this Antminer S19j Pro's strike {strike(35):.0f} $/MWh "
        f"(35.0 J/TH, measured) for 1 windows (shed after 1); hashing would earn "
        f"{margin_hash(35, 70):+.4f} $/h, asleep {-15 * 70 / 1e6:+.4f} $/h")


def test_an_asleep_miner_keeps_its_last_measured_efficiency() -> None:
    rigs = [rig(miner("b", 35.0))]
    d, mem = decide(snapshot(300, 70.0, rigs), EMPTY)
    rigs = follow(rigs, d, {"asic/b": 35.0})
    d, _ = decide(snapshot(600, 70.0, rigs), mem)
    assert d.explain(0) == (f"stays asleep: price 70 $/MWh above this Antminer S19j Pro's strike "
                            f"{strike(35):.0f} $/MWh (35.0 J/TH, last measured)")
    # A fresh controller (no memory) knows only the nameplate.
    d, _ = decide(snapshot(600, 70.0, rigs), EMPTY)
    assert "(29.5 J/TH, nameplate)" in d.explain(0)


def test_least_efficient_off_first_and_most_efficient_back_first() -> None:
    cfg = PolicyConfig(max_switches_per_round=1, min_dwell_s=0)
    true_j = {"asic/a": 25.0, "asic/b": 35.0, "asic/c": 30.0}
    rigs = [rig(miner("a", 25.0), miner("b", 35.0), miner("c", 30.0))]
    mem = EMPTY
    off_order = []
    for t in (300, 600, 900):
        d, mem = decide(snapshot(t, 200.0, rigs), mem, cfg)
        shed = [x.device_id for x in (d.device(i) for i in range(3)) if x.changes]
        assert len(shed) == 1
        off_order += shed
        waiting = [i for i in range(3) if not d.device(i).changes
                   and d.device(i).current == HASHING]
        for i in waiting:
            assert d.explain(i) == ("stays hashing (asleep wanted): 1 switches per round already "
                                    "planned (least efficient off first, most efficient back "
                                    "first)")
        rigs = follow(rigs, d, true_j)
    assert off_order == ["asic/b", "asic/c", "asic/a"]
    back_order = []
    for t in (1200, 1500, 1800, 2100):
        d, mem = decide(snapshot(t, 20.0, rigs), mem, cfg)
        back_order += [x.device_id for x in (d.device(i) for i in range(3)) if x.changes]
        rigs = follow(rigs, d, true_j)
    assert back_order == ["asic/a", "asic/c", "asic/b"]


# -- hysteresis in windows and the high strike -------------------------------------------------

def test_shed_after_n_windows_above_counted_once_per_published_price() -> None:
    cfg = PolicyConfig(shed_windows=2)
    rigs = [rig(miner("b", 35.0))]
    d, mem = decide(snapshot(300, 70.0, rigs), EMPTY, cfg)
    wait = (f"still hashing: price 70 $/MWh above this Antminer S19j Pro's strike "
            f"{strike(35):.0f} $/MWh (35.0 J/TH, measured) for 1 of 2 windows (high strike "
            f"{1.5 * strike(35):.0f} $/MWh)")
    assert d.explain(0) == wait
    # Another round (a grid event, a queue) sees the same published price: no new window.
    d, mem = decide(snapshot(310, 70.0, rigs, age_s=10.0), mem, cfg)
    assert d.explain(0) == wait
    d, mem = decide(snapshot(600, 70.0, rigs), mem, cfg)
    assert d.device(0).desired == ASLEEP
    assert "for 2 windows (shed after 2)" in d.explain(0)


def test_resume_after_m_windows_below() -> None:
    cfg = PolicyConfig(resume_windows=2, min_dwell_s=0)
    rigs = [rig(miner("b", 35.0))]
    d, mem = decide(snapshot(300, 70.0, rigs), EMPTY, cfg)
    rigs = follow(rigs, d, {"asic/b": 35.0})
    d, mem = decide(snapshot(600, 40.0, rigs), mem, cfg)
    assert d.device(0).desired == ASLEEP
    assert d.explain(0) == (f"stays asleep: price 40 $/MWh below this Antminer S19j Pro's strike "
                            f"{strike(35):.0f} $/MWh (35.0 J/TH, last measured) for 1 of 2 "
                            f"windows")
    d, mem = decide(snapshot(900, 40.0, rigs), mem, cfg)
    assert d.device(0).desired == HASHING
    assert d.explain(0) == (
        f"hashing: price 40 $/MWh below this Antminer S19j Pro's strike {strike(35):.0f} $/MWh "
        f"(35.0 J/TH, last measured) for 2 windows (resume after 2); earns "
        f"{margin_hash(35, 40):+.4f} $/h against {-15 * 40 / 1e6:+.4f} $/h asleep")


def test_a_price_above_the_high_strike_sheds_at_once() -> None:
    cfg = PolicyConfig(shed_windows=3)
    rigs = [rig(miner("b", 35.0))]
    d, _ = decide(snapshot(300, 100.0, rigs), EMPTY, cfg)
    assert d.device(0).desired == ASLEEP
    assert d.explain(0) == (f"asleep at once: price 100 $/MWh above the high strike "
                            f"{1.5 * strike(35):.0f} $/MWh (1.50 x this Antminer S19j Pro's "
                            f"strike {strike(35):.0f} $/MWh (35.0 J/TH, measured))")


# -- minimum dwell, minimum gain, switch cost --------------------------------------------------

def test_minimum_dwell_holds_a_switch_but_not_a_high_strike() -> None:
    cfg = PolicyConfig(resume_windows=1, min_dwell_s=900)
    rigs = [rig(miner("b", 35.0))]
    d, mem = decide(snapshot(300, 70.0, rigs), EMPTY, cfg)
    rigs = follow(rigs, d, {"asic/b": 35.0})
    d, mem = decide(snapshot(600, 20.0, rigs), mem, cfg)
    assert d.device(0).desired == ASLEEP
    assert d.explain(0) == ("stays asleep (hashing wanted): switched 300 s ago, minimum dwell "
                            "900 s")
    d, mem = decide(snapshot(1200, 20.0, rigs), mem, cfg)
    assert d.device(0).desired == HASHING
    rigs = follow(rigs, d, {"asic/b": 35.0})
    d, mem = decide(snapshot(1500, 500.0, rigs), mem, cfg)  # 300 s after waking
    assert d.device(0).desired == ASLEEP
    assert d.explain(0).startswith("asleep at once: price 500 $/MWh above the high strike")


def test_minimum_gain_holds_a_switch_worth_too_little() -> None:
    cfg = PolicyConfig(min_gain_usd_per_h=0.05)
    rigs = [rig(miner("b", 35.0))]
    d, _ = decide(snapshot(300, 62.0, rigs), EMPTY, cfg)
    gain = -15 * 62 / 1e6 - margin_hash(35, 62)
    assert d.device(0).desired == HASHING
    assert d.explain(0) == (f"stays hashing (asleep wanted): gains {gain:+.4f} $/h over 600 s "
                            f"less a 0.00 s switch costing 0.00000 $, under the minimum gain "
                            f"0.0500 $/h")
    d, _ = decide(snapshot(300, 62.0, rigs), EMPTY, PolicyConfig())
    assert d.device(0).desired == ASLEEP


def test_a_cold_start_costs_more_than_a_warm_one() -> None:
    # Inference worth 0.20 $/GPU-hour, hashing 0.0585 $/h (price 0): a 60 s cold start forgoes
    # 0.0033 $, a 0.6 s warm one 0.00003 $; with a minimum gain of 0.13 $/h over the 600 s
    # horizon only the warm switch clears it.
    cfg = PolicyConfig(min_gain_usd_per_h=0.13)
    want = demand(arrivals_rps=2.0, usd_per_gpu_hour=0.2, usd_per_mtok=None)
    cold = [rig(gpu("g1"))]
    d, _ = decide(snapshot(300, 0.0, cold, demands=[want]), EMPTY, cfg)
    gain = 0.2 - GPU_TH * GPU_HP / 24
    assert d.device(0).desired == HASHING
    assert d.explain(0) == (f"stays hashing (inference wanted): gains {gain:+.4f} $/h over 600 s "
                            f"less a 60.00 s switch costing {60 / 3600 * 0.2:.5f} $, under the "
                            f"minimum gain 0.1300 $/h")
    warm = [rig(gpu("g2", warm=True))]
    d, _ = decide(snapshot(300, 0.0, warm, demands=[want]), EMPTY, cfg)
    assert d.device(0).desired == INFERENCE
    assert d.explain(0).startswith("inference (llm) from warm standby (0.60 s): 1 GPUs needed")


# -- inference demand first ----------------------------------------------------------------------

def test_over_the_bound_a_warm_standby_gpu_is_borrowed_first() -> None:
    rigs = [rig(gpu("serving", INFERENCE, profile=PROFILE), gpu("cold"), gpu("warm", warm=True))]
    # 10 waiting on one GPU of 4 req/s: 2.5 s against a 2 s bound; 2 GPUs needed.
    d, _ = decide(snapshot(300, 30.0, rigs, demands=[demand(waiting=10, arrivals_rps=2.0)]),
                  EMPTY)
    assert d.device("gpu/warm").desired == INFERENCE
    assert d.device("gpu/warm").profile == PROFILE
    assert d.device("gpu/cold").desired == HASHING
    value = 4.0 * 0.8 * 3600 * 0.2 * 600 / 1e6 - 700 * 30 / 1e6
    now = GPU_TH * GPU_HP / 24 - 320 * 30 / 1e6
    assert d.explain("gpu/warm") == (
        f"inference (llm) from warm standby (0.60 s): 2 GPUs needed for llm (2.0 req/s at 4.0 "
        f"per GPU, 10 waiting, wait bound 2.0 s), 1 serving, est. wait 2.50 s; serving is worth "
        f"{value:+.3f} $/h against {now:+.3f} $/h hashing")


def test_within_the_bound_a_cold_gpu_is_borrowed_and_the_warm_one_kept_in_reserve() -> None:
    rigs = [rig(gpu("cold"), gpu("warm", warm=True))]
    d, _ = decide(snapshot(300, 30.0, rigs, demands=[demand(arrivals_rps=2.0)]), EMPTY)
    assert d.device("gpu/cold").desired == INFERENCE
    assert d.device("gpu/warm").desired == HASHING
    assert d.explain("gpu/cold").startswith(
        "inference (llm), cold start (60 s): 1 GPUs needed for llm (2.0 req/s at 4.0 per GPU, "
        "0 waiting, wait bound 2.0 s), 0 serving, est. wait 0.00 s")


def test_a_queue_over_its_bound_borrows_at_once_despite_the_dwell() -> None:
    rigs = [rig(gpu("a", Workload.INFERENCE, profile=PROFILE), gpu("b"))]
    mem = replace(EMPTY.aligned(("gpu/a", "gpu/b")),
                  since_s=np.array([240.0, 240.0]))  # both switched 60 s ago
    # 100 waiting on one GPU of 4 req/s: 25 s against a 2 s bound.
    d, _ = decide(snapshot(300, 30.0, rigs, demands=[demand(waiting=100, arrivals_rps=3.0)]),
                  mem)
    assert d.device("gpu/b").desired == INFERENCE
    assert d.explain("gpu/b").startswith(
        "inference (llm), cold start (60 s): 14 GPUs needed for llm (3.0 req/s at 4.0 per GPU, "
        "100 waiting, wait bound 2.0 s), 1 serving, est. wait 25.00 s")
    # Within the bound, the dwell holds.
    d, _ = decide(snapshot(300, 30.0, rigs, demands=[demand(waiting=0, arrivals_rps=5.0)]), mem)
    assert d.device("gpu/b").desired == HASHING
    assert d.explain("gpu/b") == ("stays hashing (inference wanted): switched 60 s ago, minimum "
                                  "dwell 600 s")


def test_gpus_are_given_back_after_m_low_windows_warm_first() -> None:
    cfg = PolicyConfig(give_back_windows=3)
    rigs = [rig(gpu("c1", INFERENCE, profile=PROFILE), gpu("c2", INFERENCE, profile=PROFILE),
                gpu("w", INFERENCE, warm=True))]
    low = [demand(arrivals_rps=1.0)]  # 1 GPU needed of 3
    mem = EMPTY
    for k, t in enumerate((300, 600)):
        d, mem = decide(snapshot(t, 30.0, rigs, demands=low), mem, cfg)
        assert all(d.device(i).desired == INFERENCE for i in range(3))
        assert d.explain(0).startswith(
            f"serves llm: fewer GPUs needed for {k + 1} of 3 windows; 1 GPUs needed for llm")
    d, mem = decide(snapshot(900, 30.0, rigs, demands=low), mem, cfg)
    back = [d.device(i).device_id for i in range(3) if d.device(i).desired == HASHING]
    assert back == ["gpu/c1", "gpu/w"]  # the warm one, then the first of the equals
    assert d.device("gpu/c2").desired == INFERENCE
    assert d.explain("gpu/w") == (
        f"given back to hashing: fewer GPUs needed for 3 windows (give back after 3); 1 GPUs "
        f"needed for llm (1.0 req/s at 4.0 per GPU, 0 waiting, wait bound 2.0 s), 3 serving, "
        f"est. wait 0.00 s; hashing earns {GPU_TH * GPU_HP / 24 - 320 * 30 / 1e6:+.4f} $/h")
    # The counter restarts: the next window does not give back the last one.
    rigs = follow(rigs, d)
    d, mem = decide(snapshot(1200, 30.0, rigs, demands=[demand(arrivals_rps=0.0)]), mem, cfg)
    assert d.device("gpu/c2").desired == INFERENCE


def test_gpus_given_back_rest_when_hashing_does_not_pay() -> None:
    cfg = PolicyConfig(give_back_windows=1)
    rigs = [rig(gpu("w", INFERENCE, warm=True), gpu("c", INFERENCE, profile=PROFILE))]
    d, _ = decide(snapshot(300, 250.0, rigs, demands=[demand(arrivals_rps=0.0)]), EMPTY, cfg)
    assert d.device("gpu/w").desired == STANDBY
    assert d.device("gpu/c").desired == ASLEEP
    gpu_strike = GPU_HP * 1e6 / (24 * 320 / GPU_TH)
    assert d.explain("gpu/c").endswith(
        f"hashing would earn {GPU_TH * GPU_HP / 24 - 320 * 250 / 1e6:+.4f} $/h (price 250 "
        f"$/MWh, strike {gpu_strike:.0f} $/MWh)")
    assert d.explain("gpu/c").startswith("given back, asleep: fewer GPUs needed for 1 windows")


# -- the grid cap --------------------------------------------------------------------------------

def _cap_site() -> list[RigState]:
    return [rig(miner("a", 25.0), miner("b", 35.0), miner("c", 30.0), rig_id="miners"),
            rig(gpu("serving", INFERENCE, profile=PROFILE), gpu("hashing"), rig_id="gpus")]


def test_a_grid_cap_sheds_cheapest_per_watt_and_splits_into_rig_targets() -> None:
    cap = GridCap(cap_w=6_000.0, deadline_s=900.0, ends_s=4_000.0, source="openadr:ev-1")
    need = [demand(arrivals_rps=2.0)]
    d, _ = decide(snapshot(300, 30.0, _cap_site(), demands=need, cap=cap), EMPTY)
    shed = sorted(d.device(i).device_id for i in range(5)
                  if d.device(i).changes)
    assert shed == ["asic/b", "asic/c"]  # 30 and 40 $/MWh forgone; a (54) and the GPUs cost more
    forgone_b = (margin_hash(35, 30) + 15 * 30 / 1e6) / (3500 - 15) * 1e6
    assert d.explain("asic/b") == (
        f"asleep for the grid cap 6,000 W (openadr:ev-1, from 1970-01-01 00:15:00 UTC): site "
        f"planned 9,920 W against 5,880 W; shedding it forgoes {forgone_b:.0f} $/MWh (cheapest "
        f"first, inference last)")
    planned = float(d.numbers["plan_w"].sum()) + 200.0
    assert planned <= 5_880.0
    targets = {c.rig_id: c.target_w for c in d.curtail}
    assert sum(targets.values()) == pytest.approx(5_880.0)
    assert targets["miners"] >= 2_500 + 15 * 2 + 100
    assert targets["gpus"] >= 400 + 320 + 100
    assert all(c.deadline_s == 900.0 and c.expires_s == 4_000.0 for c in d.curtail)


def test_inference_is_shed_last_and_an_impossible_cap_is_said() -> None:
    need = [demand(arrivals_rps=2.0)]
    d, _ = decide(snapshot(300, 30.0, _cap_site(), demands=need,
                           cap=GridCap(cap_w=900.0, deadline_s=900.0)), EMPTY)
    assert d.device("gpu/serving").desired == INFERENCE
    assert all(d.device(i).desired in (ASLEEP, STANDBY) for i in range(5)
               if d.fleet.device_ids[i] != "gpu/serving")
    d, _ = decide(snapshot(300, 30.0, _cap_site(), demands=need,
                           cap=GridCap(cap_w=500.0, deadline_s=900.0)), EMPTY)
    assert d.device("gpu/serving").desired == ASLEEP
    assert d.explain("gpu/serving").startswith("asleep for the grid cap 500 W")
    d, _ = decide(snapshot(300, 30.0, _cap_site(), demands=need,
                           cap=GridCap(cap_w=300.0, deadline_s=900.0)), EMPTY)
    assert any(n.startswith("grid cap 300 W cannot be met") for n in d.notes)
    # The rigs are still told the whole cap: each sheds what it can and says what it could not.
    assert sum(c.target_w for c in d.curtail) == pytest.approx(300.0 * 0.98)


def test_inference_is_shed_last_even_when_it_is_worth_little() -> None:
    # Inference worth almost nothing per watt, a miner worth more: the cap takes the miner.
    rigs = [rig(miner("a", 25.0), gpu("serving", INFERENCE, profile=PROFILE), base_w=0.0)]
    cheap = [demand(arrivals_rps=2.0, usd_per_mtok=0.0001)]
    d, _ = decide(snapshot(300, 30.0, rigs, demands=cheap,
                           cap=GridCap(cap_w=2_000.0, deadline_s=900.0)), EMPTY)
    assert d.device("asic/a").desired == ASLEEP
    assert d.device("gpu/serving").desired == INFERENCE


def test_under_a_cap_miners_that_would_wake_stay_asleep_first() -> None:
    # b is asleep and would wake (price far below its strike); a hashes. The cap fits one.
    rigs = [rig(miner("a", 25.0), miner("b", 35.0, ASLEEP), base_w=0.0)]
    mem = replace(EMPTY.aligned(("asic/a", "asic/b")), windows_below=np.array([5, 5]),
                  j_per_th=np.array([25.0, 35.0]))
    cap = GridCap(cap_w=4_000.0, deadline_s=600.0)
    d, _ = decide(snapshot(300, 10.0, rigs, cap=cap), mem)
    assert d.device("asic/a").desired == HASHING
    assert d.device("asic/b").desired == ASLEEP
    assert d.explain("asic/b").startswith("asleep for the grid cap 4,000 W")


def test_unknown_power_is_planned_high_never_zero() -> None:
    blind = DeviceState(device_id="asic/blind", kind=DeviceKind.ASIC, model="?",
                        workload=HASHING)
    d, _ = decide(snapshot(300, 30.0, [rig(blind, base_w=0.0)],
                           cap=GridCap(cap_w=10_000.0, deadline_s=600.0)), EMPTY)
    assert d.numbers["plan_w"][0] == 3_600.0  # PowerFigures.asic_unknown_w
    assert d.explain(0) == ("left hashing: no strike price (efficiency unknown); nothing is "
                            "woken")


# -- bad inputs ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("price", "age", "note"), [
    (20.0, 1_000.0, "price 20 $/MWh is 1000 s old (stale after 900 s)"),
    (None, 0.0, "price missing"),
    (20.0, None, "price 20 $/MWh of unknown age"),
    (20_000.0, 0.0, "price 20000 $/MWh is outside [-250, 10000] (absurd)"),
    (-500.0, 0.0, "price -500 $/MWh is outside [-250, 10000] (absurd)"),
    (math.nan, 0.0, "price nan is not a number"),
])
def test_an_unusable_price_wakes_nothing_and_holds_the_rest(price: float | None,
                                                             age: float | None,
                                                             note: str) -> None:
    rigs = [rig(miner("on", 25.0), miner("off", 25.0, ASLEEP),
                gpu("g", INFERENCE, profile=PROFILE))]
    mem = replace(EMPTY.aligned(("asic/on", "asic/off", "gpu/g")),
                  windows_below=np.array([9, 9, 9]), low_windows={PROFILE: 9})
    d, _ = decide(snapshot(300, price, rigs, age_s=age, demands=[demand(arrivals_rps=0.0)]),
                  mem, PolicyConfig(give_back_windows=1))
    assert [d.device(i).desired for i in range(3)] == [HASHING, ASLEEP, ASLEEP]
    assert d.explain("asic/off") == f"left asleep: {note}; nothing is woken on an unusable price"
    assert d.explain("asic/on") == f"left hashing: {note}; nothing is woken on an unusable price"
    assert d.notes[0] == note
    # The GPU no longer needed goes to rest, not to hashing, on an unusable price.
    assert d.explain("gpu/g").startswith("given back, asleep")


def test_a_negative_price_inside_the_floor_is_real_and_mined() -> None:
    d, _ = decide(snapshot(300, -20.0, [rig(miner("a", 25.0))]), EMPTY)
    assert d.explain(0).startswith("hashing: price -20 $/MWh below this Antminer S19j Pro's")


def test_an_unusable_hashprice_leaves_its_miners_held() -> None:
    rigs = [rig(miner("on", 25.0), miner("off", 25.0, ASLEEP))]
    for hashprice in (None, -1.0):
        d, _ = decide(snapshot(300, 20.0, rigs, hashprice=hashprice), EMPTY)
        assert [d.device(i).desired for i in range(2)] == [HASHING, ASLEEP]
        assert d.explain(1) == ("left asleep: no strike price (hashprice unusable); nothing is "
                                "woken")


def test_unhealthy_devices_and_unreachable_rigs_are_left_as_they_are() -> None:
    sick = replace(miner("sick", 35.0), healthy=False, health_reason="fan failure")
    rigs = [rig(sick, miner("fine", 35.0)), rig(miner("far", 35.0), rig_id="r2",
                                               reachable=False)]
    d, _ = decide(snapshot(300, 500.0, rigs, cap=GridCap(cap_w=1e9, deadline_s=600.0)), EMPTY)
    assert d.device("asic/sick").desired == HASHING
    assert d.explain("asic/sick") == "left hashing: unhealthy"
    assert d.device("asic/far").desired == HASHING
    assert d.explain("asic/far") == "left hashing: rig r2 unreachable"
    assert d.device("asic/fine").desired == ASLEEP
    assert [c.rig_id for c in d.curtail] == ["r1"]  # none for the rig it cannot reach


def test_bad_configuration_is_refused() -> None:
    for bad in ({"shed_windows": 0}, {"high_strike_ratio": 0.5}, {"target_utilization": 0},
                {"cap_margin": 1.0}, {"max_switches_per_round": -1}):
        with pytest.raises(ValueError):
            PolicyConfig(**bad)


# -- memory: pure, journaled, resumed ----------------------------------------------------------

def _sequence() -> list[tuple[float, float, float]]:
    return [(300.0, 70.0, 2.0), (600.0, 75.0, 9.0), (900.0, 30.0, 1.0), (1200.0, 20.0, 0.0),
            (1500.0, 300.0, 12.0), (1800.0, 25.0, 0.0)]


def _run(mem: PolicyMemory, rigs: list[RigState], steps: list[tuple[float, float, float]],
         journal: bool) -> list[tuple[list[Workload], list[str]]]:
    cfg = PolicyConfig(shed_windows=2, resume_windows=2, give_back_windows=2, min_dwell_s=0)
    out = []
    for t, price, rps in steps:
        d, mem = decide(snapshot(t, price, rigs, demands=[demand(arrivals_rps=rps)]), mem, cfg)
        if journal:  # the standby replica: memory only through its JSON journal
            mem = PolicyMemory.from_json(json.loads(json.dumps(mem.to_json())))
        out.append(([d.device(i).desired for i in range(len(d.fleet))],
                    [d.explain(i) for i in range(len(d.fleet))]))
        rigs = follow(rigs, d, {"asic/a": 25.0, "asic/b": 35.0})
    return out


def test_a_standby_resumes_from_the_journaled_memory_with_the_same_decisions() -> None:
    rigs = [rig(miner("a", 25.0), miner("b", 35.0), gpu("w", warm=True), gpu("c"))]
    assert _run(EMPTY, rigs, _sequence(), journal=False) == _run(EMPTY, rigs, _sequence(),
                                                                 journal=True)


def test_decide_is_pure() -> None:
    rigs = [rig(miner("a", 25.0), miner("b", 35.0), gpu("w", warm=True))]
    snap = snapshot(300, 70.0, rigs, demands=[demand(arrivals_rps=3.0)])
    before = snap.fleet.workload.copy()
    d1, m1 = decide(snap, EMPTY)
    d2, m2 = decide(snap, EMPTY)
    assert np.array_equal(snap.fleet.workload, before)
    assert np.array_equal(d1.desired, d2.desired)
    assert [d1.explain(i) for i in range(3)] == [d2.explain(i) for i in range(3)]
    assert m1.to_json() == m2.to_json()
    with pytest.raises(ValueError):
        d1.desired[0] = 1  # decisions are read-only


def test_memory_follows_a_fleet_that_changes() -> None:
    rigs = [rig(miner("a", 25.0), miner("b", 35.0))]
    _, mem = decide(snapshot(300, 70.0, rigs), EMPTY)
    moved = mem.aligned(("asic/b", "asic/new"))
    assert moved.j_per_th[0] == pytest.approx(35.0)
    assert math.isnan(moved.j_per_th[1])
    with pytest.raises(ValueError, match="not a policy memory"):
        PolicyMemory.from_json({"device_ids": []})


def test_bad_fleet_input_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"power_w = -5\.0 is not a finite number"):
        replace(miner("x", 30.0), power_w=-5.0)
    with pytest.raises(ValueError, match="appears twice"):
        snapshot(300, 30.0, [rig(miner("a")), rig(miner("a"), rig_id="r2")])
    with pytest.raises(ValueError):
        GridCap(cap_w=math.inf, deadline_s=0.0)
    with pytest.raises(ValueError, match="needs an id"):
        DeviceState(device_id="", kind=DeviceKind.GPU, model="", workload=HASHING)


def test_the_borrowed_gpu_goes_back_after_its_dwell_not_another_in_its_place() -> None:
    """Demand fell while the GPU borrowed for it is still within its dwell: the GPU that served
    before stays; the borrowed one goes back once its dwell ends."""
    cfg = PolicyConfig(give_back_windows=1, min_dwell_s=600.0)
    rigs = [rig(gpu("served", INFERENCE, profile=PROFILE), gpu("lent"))]
    burst = [demand(waiting=40.0, arrivals_rps=3.0)]
    d, mem = decide(snapshot(300, 30.0, rigs, demands=burst), EMPTY, cfg)
    assert d.device("gpu/lent").desired == INFERENCE  # borrowed, over the bound
    rigs = follow(rigs, d)
    calm = [demand(arrivals_rps=1.0)]  # one GPU's worth
    d, mem = decide(snapshot(600, 30.0, rigs, demands=calm), mem, cfg)
    assert [d.device(g).desired for g in ("gpu/served", "gpu/lent")] == [INFERENCE, INFERENCE]
    assert d.explain("gpu/lent") == ("stays inference (hashing wanted): switched 300 s ago, "
                                     "minimum dwell 600 s")
    d, mem = decide(snapshot(900, 30.0, rigs, demands=calm), mem, cfg)
    assert d.device("gpu/served").desired == INFERENCE
    assert d.device("gpu/lent").desired == HASHING
    assert d.explain("gpu/lent").startswith("given back to hashing: fewer GPUs needed")
