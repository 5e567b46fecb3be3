"""The field's rules as pure functions, each on hand-made snapshots with its explanation."""

from __future__ import annotations

import pytest

from controller.anchors import (
    AnchorConfig,
    always_mine,
    least_efficient_first,
    split_gpus,
    static_split,
    strike,
    strike_windows,
)
from controller.model import GridCap, PolicyMemory, Workload
from tests.controller.fleet import PROFILE, demand, follow, gpu, miner, rig, snapshot

HASHING, INFERENCE, ASLEEP, STANDBY = (Workload.HASHING, Workload.INFERENCE, Workload.ASLEEP,
                                       Workload.STANDBY)
EMPTY = PolicyMemory.empty()


def test_always_mine_wakes_everything_it_can() -> None:
    rigs = [rig(miner("a", 25.0, ASLEEP), gpu("g", ASLEEP))]
    d, _ = always_mine(snapshot(300, 4_000.0, rigs), EMPTY)
    assert [d.device(i).desired for i in range(2)] == [HASHING, HASHING]
    assert d.explain(0) == "hashing: always mine"


def test_braiins_strike_pauses_every_miner_above_one_strike() -> None:
    cfg = AnchorConfig(strike_usd_per_mwh=90.0)
    rigs = [rig(miner("good", 20.0), miner("bad", 35.0))]
    d, _ = strike(snapshot(300, 95.0, rigs), EMPTY, cfg)
    assert [d.device(i).desired for i in range(2)] == [ASLEEP, ASLEEP]
    assert d.explain(0) == "asleep: price 95 $/MWh above the strike 90 $/MWh"
    d, _ = strike(snapshot(300, 90.0, follow(rigs, d)), EMPTY, cfg)
    assert [d.device(i).desired for i in range(2)] == [HASHING, HASHING]
    assert d.explain(1) == "hashing: price 90 $/MWh at or below the strike 90 $/MWh"


def test_foreman_two_windows_above_to_curtail_four_below_to_resume_high_at_once() -> None:
    cfg = AnchorConfig(strike_usd_per_mwh=60.0, high_strike_usd_per_mwh=200.0)
    rigs = [rig(miner("a", 30.0))]
    mem = EMPTY
    d, mem = strike_windows(snapshot(300, 70.0, rigs), mem, cfg)
    assert d.device(0).desired == HASHING
    assert d.explain(0) == ("still hashing: price 70 $/MWh above the low strike 60 $/MWh for 1 "
                            "of 2 windows")
    d, mem = strike_windows(snapshot(600, 70.0, rigs), mem, cfg)
    assert d.device(0).desired == ASLEEP
    assert d.explain(0) == "asleep: price 70 $/MWh above the low strike 60 $/MWh for 2 windows"
    rigs = follow(rigs, d)
    for k, t in enumerate((900, 1200, 1500)):
        d, mem = strike_windows(snapshot(t, 40.0, rigs), mem, cfg)
        assert d.device(0).desired == ASLEEP
        assert d.explain(0) == (f"stays asleep: price 40 $/MWh at or below the low strike 60 "
                                f"$/MWh for {k + 1} of 4 windows")
    d, mem = strike_windows(snapshot(1800, 40.0, rigs), mem, cfg)
    assert d.device(0).desired == HASHING
    assert d.explain(0) == ("hashing: price 40 $/MWh at or below the low strike 60 $/MWh for 4 "
                            "windows")
    rigs = follow(rigs, d)
    d, mem = strike_windows(snapshot(2100, 250.0, rigs), mem, cfg)
    assert d.device(0).desired == ASLEEP
    assert d.explain(0) == "asleep at once: price 250 $/MWh above the high strike 200 $/MWh"


def test_optifleet_least_efficient_first_by_nameplate() -> None:
    # Measured 20 J/TH but rated 34.5: the nameplate rule sheds it at 65 $/MWh anyway.
    rigs = [rig(miner("s21", 17.5, rated_j_per_th=17.5, model="Antminer S21"),
                miner("s19", 20.0, rated_j_per_th=34.5, model="Antminer S19"))]
    d, _ = least_efficient_first(snapshot(300, 65.0, rigs), EMPTY)
    assert d.device("asic/s21").desired == HASHING
    assert d.device("asic/s19").desired == ASLEEP
    assert d.explain("asic/s19") == (
        f"asleep: price 65 $/MWh above this Antminer S19's nameplate strike "
        f"{0.05 * 1e6 / (24 * 34.5):.0f} $/MWh (34.5 J/TH rated)")
    assert d.explain("asic/s21") == (
        f"hashing: price 65 $/MWh at or below this Antminer S21's nameplate strike "
        f"{0.05 * 1e6 / (24 * 17.5):.0f} $/MWh (17.5 J/TH rated)")


def test_static_split_gives_a_share_of_each_rigs_gpus_to_inference_for_good() -> None:
    rigs = [rig(*(gpu(f"a{i}") for i in range(4)), rig_id="r1"),
            rig(*(gpu(f"b{i}") for i in range(2)), miner("m"), rig_id="r2")]
    cfg = AnchorConfig(gpu_inference_share=0.5)
    snap = snapshot(300, 4_000.0, rigs, demands=[demand()])
    assert [snap.fleet.device_ids[i] for i in split_gpus(snap, 0.5).nonzero()[0]] == [
        "gpu/a0", "gpu/a1", "gpu/b0"]
    d, _ = static_split(snap, EMPTY, cfg)
    assert d.device("gpu/a0").desired == INFERENCE
    assert d.device("gpu/a0").profile == PROFILE
    assert d.explain("gpu/a0") == ("serves llm: one of the 50% of each rig's GPUs given to "
                                   "inference for good")
    assert d.device("gpu/a2").desired == HASHING  # mines even at 4,000 $/MWh
    assert d.device("asic/m").desired == HASHING


def test_anchors_hold_on_an_unusable_price_but_keep_their_split() -> None:
    rigs = [rig(miner("off", 25.0, ASLEEP), gpu("g"), gpu("h"))]
    cfg = AnchorConfig(gpu_inference_share=0.5)
    for anchor in (strike, strike_windows, least_efficient_first):
        d, _ = anchor(snapshot(300, 20.0, rigs, age_s=5_000.0, demands=[demand()]), EMPTY, cfg)
        assert d.device("asic/off").desired == ASLEEP
        assert d.explain("asic/off") == ("left asleep: price 20 $/MWh is 5000 s old (stale after "
                                         "900 s); nothing is woken on an unusable price")
        assert d.device("gpu/g").desired == INFERENCE


def test_anchors_split_a_grid_cap_by_rig_nameplate_for_the_event() -> None:
    rigs = [rig(miner("a", 25.0), miner("b", 35.0), rig_id="big", base_w=0.0),
            rig(gpu("g"), rig_id="small", base_w=0.0)]
    cap = GridCap(cap_w=3_000.0, deadline_s=900.0, ends_s=5_000.0)
    first, _ = always_mine(snapshot(300, 30.0, rigs, cap=cap), EMPTY)
    # Nameplate: 2 x 2,950 W and a GPU's 700 W limit; the target is 98 % of the cap.
    targets = {c.rig_id: c.target_w for c in first.curtail}
    assert targets["big"] == pytest.approx(2_940.0 * 5_900 / 6_600)
    assert targets["small"] == pytest.approx(2_940.0 * 700 / 6_600)
    # The next round, the rigs already curtailed: the same targets (held for the event).
    again, _ = always_mine(snapshot(600, 30.0, follow(rigs, first), cap=cap), EMPTY)
    assert again.curtail == first.curtail
