"""The replay's traces: seeded generators with the documented shapes, and CSV loaders that
reproduce them exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.sim.traces import (
    DAY_S,
    PRICE_CAP_USD_PER_MWH,
    demand_trace,
    generate,
    grid_trace,
    hashprice_trace,
    load_csv,
    load_demand_csv,
    load_grid_csv,
    load_hashprice_csv,
    load_price_csv,
    price_trace,
    same,
    write_csv,
)

SITE_W = 30e6


def test_every_trace_loaded_from_csv_equals_the_generators_output(tmp_path: Path) -> None:
    made = generate(10, seed=7, site_power_w=SITE_W)
    write_csv(made, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"price.csv", "hashprice.csv",
                                                     "demand.csv", "grid.csv"}
    loaded = load_csv(tmp_path, generate(10, seed=8, site_power_w=SITE_W))
    assert same(loaded, made)
    assert not same(generate(10, seed=8, site_power_w=SITE_W), made)
    # One file alone replaces only its own generator.
    (tmp_path / "demand.csv").unlink()
    other = generate(10, seed=8, site_power_w=SITE_W)
    mixed = load_csv(tmp_path, other)
    assert np.array_equal(mixed.price.usd_per_mwh, made.price.usd_per_mwh)
    assert np.array_equal(mixed.demand.arrivals, other.demand.arrivals)


def test_the_same_seed_gives_the_same_traces() -> None:
    assert same(generate(3, 1, SITE_W), generate(3, 1, SITE_W))


def test_a_texas_summer_price() -> None:
    p = price_trace(90, 300.0, seed=2)
    hour = (p.time_s % DAY_S) // 3600
    evening = p.usd_per_mwh[hour == 19]
    night = p.usd_per_mwh[hour == 4]
    assert np.median(evening) > 2 * np.median(night)  # the evening net-load peak
    assert (p.usd_per_mwh == PRICE_CAP_USD_PER_MWH).any()  # rare spikes to the cap...
    assert (p.usd_per_mwh >= 1_000).mean() < 0.01  # ...rare
    assert (p.usd_per_mwh < 0).any()  # negative hours
    assert p.usd_per_mwh.min() >= -250


def test_hashprice_walks_with_drift_and_halves() -> None:
    h = hashprice_trace(90, 300.0, seed=1)
    sha = h.usd_per_th_day[h.algorithms.index("sha256d")]
    halving = int(60 * DAY_S / 300)
    assert sha[halving] / sha[halving - 1] == pytest.approx(0.5, rel=0.01)
    assert len(np.unique(sha)) > 1000  # a walk, not a step function
    gpu = h.usd_per_th_day[h.algorithms.index("etchash")]
    assert abs(gpu[halving] / gpu[halving - 1] - 1) < 0.01  # no halving for that algorithm


def test_demand_has_a_daily_cycle_and_bursts() -> None:
    d = demand_trace(28, 300.0, seed=1)
    rate = d.arrivals[0] / 300.0
    hour = (d.time_s % DAY_S) // 3600
    assert rate[hour == 14].mean() > 3 * rate[hour == 3].mean()
    smooth = np.convolve(rate, np.ones(288) / 288, mode="same")
    assert (rate > 1.8 * smooth).sum() > 5  # bursts stand out of the daily level
    assert (d.service_s_mean > 0).all()


def test_grid_events_are_a_few_a_month_notified_ahead_one_to_four_hours() -> None:
    g = grid_trace(90, seed=1, site_power_w=SITE_W)
    assert 3 <= len(g.events) <= 20
    for e in g.events:
        assert e.deadline_s - e.notified_s == 600.0
        assert 3600 <= e.end_s - e.deadline_s <= 4 * 3600
        assert 0.4 * SITE_W <= e.cap_w <= 0.7 * SITE_W
    starts = [e.notified_s for e in g.events]
    assert starts == sorted(starts)


@pytest.mark.parametrize(("name", "text", "error"), [
    ("price.csv", "time,price\n0,1\n", "columns are"),
    ("price.csv", "time_s,usd_per_mwh\n0,cheap\n", "price.csv:2: usd_per_mwh = 'cheap'"),
    ("price.csv", "time_s,usd_per_mwh\n0,inf\n", "not a finite number"),
    ("hashprice.csv", "time_s,algorithm,usd_per_th_day\n0,sha256d,0.05\n0,etchash,1\n"
     "300,sha256d,0.05\n", "usd_per_th_day is missing"),
    ("demand.csv", "time_s,profile,arrivals,service_s_mean,service_s_cv\n0,p,-1,4,1\n",
     "arrivals must be"),
    ("grid.csv", "event_id,notified_s,deadline_s,end_s,cap_w\ne,100,50,200,1000\n",
     "notified_s ≤ deadline_s"),
])
def test_a_bad_csv_is_refused_with_where_and_why(tmp_path: Path, name: str, text: str,
                                                  error: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    loader = {"price.csv": load_price_csv, "hashprice.csv": load_hashprice_csv,
              "demand.csv": load_demand_csv, "grid.csv": load_grid_csv}[name]
    with pytest.raises(ValueError, match=error):
        loader(path)


def test_a_csv_off_the_replays_steps_is_refused(tmp_path: Path) -> None:
    made = generate(1, seed=1, site_power_w=SITE_W)
    (tmp_path / "price.csv").write_text("time_s,usd_per_mwh\n0,10\n600,20\n")
    with pytest.raises(ValueError, match="not on the replay's 300 s steps"):
        load_csv(tmp_path, made)
