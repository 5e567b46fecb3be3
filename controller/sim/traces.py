"""The replay's inputs over time: energy price, hashprice, inference demand, grid events.

Each has a seeded generator (a shape, not a forecast) and a CSV loader; a CSV with the same
columns replaces its generator (`rigsite replay --traces DIR` reads price.csv, hashprice.csv,
demand.csv and grid.csv from DIR where present). Times are seconds from the start of the replay,
which is local midnight; every trace is on the replay's step (5 minutes by default).

- price.csv      time_s,usd_per_mwh
      A Texas summer's shape: an hourly profile of ERCOT real-time prices (cheap nights, an
      evening net-load peak), day-to-day heat-wave levels (AR(1) on the log), 5-minute noise
      (AR(1)), scarcity spikes in the late afternoon and evening (200-1,000 $/MWh for 5-30 min,
      and rarely the $5,000/MWh cap for 15-90 min), and negative nights (wind). Clipped to
      ERCOT's [-250, 5,000] $/MWh.
- hashprice.csv  time_s,algorithm,usd_per_th_day
      Per algorithm a random walk of the log with drift (difficulty growth) and, for sha256d, the
      halving: the block subsidy halves on `halving_day`, and so does the hashprice.
- demand.csv     time_s,profile,arrivals,service_s_mean,service_s_cv
      Requests arriving in each step (Poisson counts around a rate with a daily cycle, quieter
      weekends, and bursts of 1.5-3x for 10-60 min), with the mean and coefficient of variation
      of their service time. 90 days of single requests (~2 billion) is too many to replay one by
      one on 2 cores; the replay works on these counts (see controller/sim/queue.py).
- grid.csv       event_id,notified_s,deadline_s,end_s,cap_w
      Curtailment events: a few a month, notified 10 minutes ahead (ERCOT ERS-10's deployment
      time), lasting 1-4 h in the afternoon or evening, each a cap on the site's power.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from controller.model import FloatArray

DAY_S = 86_400.0
PRICE_CAP_USD_PER_MWH = 5_000.0  # ERCOT's system-wide offer cap
PRICE_FLOOR_USD_PER_MWH = -250.0  # ERCOT's offer floor


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def _times(days: float, step_s: float) -> FloatArray:
    steps = round(days * DAY_S / step_s)
    return np.arange(steps, dtype=np.float64) * step_s


def _hour(time_s: FloatArray) -> FloatArray:
    return (time_s % DAY_S) / 3600.0


# ---------------------------------------------------------------------------------------------
# Price


@dataclass(frozen=True)
class PriceShape:
    hourly_usd_per_mwh: tuple[float, ...] = (
        24, 22, 21, 20, 20, 22, 26, 28, 27, 26, 27, 29,
        32, 36, 42, 50, 62, 78, 95, 85, 60, 45, 34, 28)
    daily_sigma: float = 0.25  # day-to-day level (heat waves), log scale
    daily_phi: float = 0.7
    noise_usd_per_mwh: float = 6.0  # 5-minute noise
    noise_phi: float = 0.9
    spikes_per_day: float = 0.25  # 200-1,000 $/MWh for 5-30 min
    cap_spikes_per_day: float = 0.05  # to the cap, 15-90 min
    spike_hours: tuple[float, float] = (15.0, 21.0)
    negative_night_share: float = 0.08  # nights with a negative stretch of 1-4 h
    negative_usd_per_mwh: tuple[float, float] = (-40.0, -2.0)


@dataclass(frozen=True, eq=False)
class PriceTrace:
    time_s: FloatArray
    usd_per_mwh: FloatArray


def price_trace(days: float, step_s: float, seed: int, shape: PriceShape = PriceShape()
                ) -> PriceTrace:
    rng = _rng(seed, 1)
    t = _times(days, step_s)
    n = len(t)
    hours = np.array(shape.hourly_usd_per_mwh, dtype=np.float64)
    h = _hour(t)
    base = np.interp(h, np.arange(25), np.append(hours, hours[0]))
    day = (t // DAY_S).astype(int)
    n_days = int(day[-1]) + 1 if n else 0
    level = np.zeros(n_days)
    for d in range(1, n_days):
        level[d] = shape.daily_phi * level[d - 1] + rng.normal(0, shape.daily_sigma) * math.sqrt(
            1 - shape.daily_phi ** 2)
    price = base * np.exp(level[day])
    noise = np.zeros(n)
    shocks = rng.normal(0, shape.noise_usd_per_mwh * math.sqrt(1 - shape.noise_phi ** 2), n)
    for i in range(1, n):
        noise[i] = shape.noise_phi * noise[i - 1] + shocks[i]
    price = price + noise
    per_day = round(DAY_S / step_s)
    for d in range(n_days):
        start = d * per_day
        if rng.random() < shape.negative_night_share:
            begin = start + int(rng.uniform(0, 3) * 3600 / step_s)
            length = int(rng.uniform(1, 4) * 3600 / step_s)
            price[begin:begin + length] = rng.uniform(*shape.negative_usd_per_mwh)
        for rate, low, high, minutes in ((shape.spikes_per_day, 200.0, 1_000.0, (5, 30)),
                                         (shape.cap_spikes_per_day, PRICE_CAP_USD_PER_MWH,
                                          PRICE_CAP_USD_PER_MWH, (15, 90))):
            for _ in range(rng.poisson(rate)):
                at = start + int(rng.uniform(*shape.spike_hours) * 3600 / step_s)
                length = max(1, int(rng.uniform(*minutes) * 60 / step_s))
                price[at:at + length] = np.maximum(price[at:at + length],
                                                   rng.uniform(low, high))
    price = np.clip(price, PRICE_FLOOR_USD_PER_MWH, PRICE_CAP_USD_PER_MWH)
    return PriceTrace(time_s=t, usd_per_mwh=price[:n])


# ---------------------------------------------------------------------------------------------
# Hashprice


@dataclass(frozen=True)
class HashpriceShape:
    start_usd_per_th_day: Mapping[str, float] = field(default_factory=lambda: {
        "sha256d": 0.055, "etchash": 11_700.0})
    drift_per_day: Mapping[str, float] = field(default_factory=lambda: {
        "sha256d": -0.002, "etchash": -0.001})
    sigma_per_day: Mapping[str, float] = field(default_factory=lambda: {
        "sha256d": 0.025, "etchash": 0.03})
    halving_day: float | None = 60.0
    halving_algorithms: tuple[str, ...] = ("sha256d",)


@dataclass(frozen=True, eq=False)
class HashpriceTrace:
    time_s: FloatArray
    algorithms: tuple[str, ...]
    usd_per_th_day: FloatArray  # [algorithm, step]


def hashprice_trace(days: float, step_s: float, seed: int,
                    shape: HashpriceShape = HashpriceShape()) -> HashpriceTrace:
    rng = _rng(seed, 2)
    t = _times(days, step_s)
    algorithms = tuple(shape.start_usd_per_th_day)
    rows = []
    scale = step_s / DAY_S
    for a in algorithms:
        steps = rng.normal(shape.drift_per_day[a] * scale, shape.sigma_per_day[a]
                           * math.sqrt(scale), len(t))
        log = np.log(shape.start_usd_per_th_day[a]) + np.concatenate([[0.0],
                                                                      np.cumsum(steps[1:])])
        if shape.halving_day is not None and a in shape.halving_algorithms:
            log = log - np.log(2.0) * (t >= shape.halving_day * DAY_S)
        rows.append(np.exp(log))
    return HashpriceTrace(time_s=t, algorithms=algorithms,
                          usd_per_th_day=np.array(rows).reshape(len(algorithms), len(t)))


# ---------------------------------------------------------------------------------------------
# Demand


@dataclass(frozen=True)
class DemandShape:
    profile: str = "vllm-llama-8b"
    mean_rps: float = 300.0
    hourly_factor: tuple[float, ...] = (
        0.45, 0.38, 0.35, 0.35, 0.38, 0.45, 0.6, 0.8, 1.05, 1.3, 1.5, 1.6,
        1.65, 1.7, 1.7, 1.65, 1.55, 1.4, 1.25, 1.1, 0.95, 0.8, 0.65, 0.52)
    weekend_factor: float = 0.7
    daily_sigma: float = 0.1
    bursts_per_week: float = 3.0
    burst_factor: tuple[float, float] = (1.5, 3.0)
    burst_minutes: tuple[float, float] = (10.0, 60.0)
    service_s_mean: float = 4.0
    service_s_cv: float = 1.0


@dataclass(frozen=True, eq=False)
class DemandTrace:
    time_s: FloatArray
    profiles: tuple[str, ...]
    arrivals: FloatArray  # [profile, step]: requests arriving in the step
    service_s_mean: FloatArray  # [profile, step]
    service_s_cv: FloatArray  # [profile, step]


def demand_trace(days: float, step_s: float, seed: int,
                 shapes: Sequence[DemandShape] = (DemandShape(),)) -> DemandTrace:
    t = _times(days, step_s)
    n = len(t)
    arrivals, means, cvs = [], [], []
    for k, shape in enumerate(shapes):
        rng = _rng(seed, 30 + k)
        hours = np.array(shape.hourly_factor)
        hours = hours / hours.mean()
        rate = shape.mean_rps * np.interp(_hour(t), np.arange(25), np.append(hours, hours[0]))
        day = (t // DAY_S).astype(int)
        weekend = (day % 7) >= 5
        daily = rng.lognormal(0.0, shape.daily_sigma, int(day[-1]) + 1 if n else 0)
        rate = rate * np.where(weekend, shape.weekend_factor, 1.0) * daily[day]
        weeks = days / 7.0
        for _ in range(rng.poisson(shape.bursts_per_week * weeks)):
            at = int(rng.uniform(0, n))
            length = max(1, int(rng.uniform(*shape.burst_minutes) * 60 / step_s))
            rate[at:at + length] *= rng.uniform(*shape.burst_factor)
        arrivals.append(rng.poisson(rate * step_s).astype(np.float64))
        means.append(np.full(n, shape.service_s_mean))
        cvs.append(np.full(n, shape.service_s_cv))
    return DemandTrace(time_s=t, profiles=tuple(s.profile for s in shapes),
                       arrivals=np.array(arrivals).reshape(len(shapes), n),
                       service_s_mean=np.array(means).reshape(len(shapes), n),
                       service_s_cv=np.array(cvs).reshape(len(shapes), n))


# ---------------------------------------------------------------------------------------------
# Grid events


@dataclass(frozen=True)
class GridEvent:
    event_id: str
    notified_s: float
    deadline_s: float  # the site must be below cap_w from here...
    end_s: float  # ...to here
    cap_w: float


@dataclass(frozen=True)
class GridShape:
    events_per_month: float = 3.0
    notice_s: float = 600.0  # ERCOT ERS-10: ten minutes to deploy
    duration_h: tuple[float, float] = (1.0, 4.0)
    start_hours: tuple[float, float] = (13.0, 20.0)
    cap_share: tuple[float, float] = (0.4, 0.7)  # of the site's nameplate power


@dataclass(frozen=True, eq=False)
class GridTrace:
    events: tuple[GridEvent, ...]


def grid_trace(days: float, seed: int, site_power_w: float, shape: GridShape = GridShape()
               ) -> GridTrace:
    rng = _rng(seed, 4)
    events: list[GridEvent] = []
    count = rng.poisson(shape.events_per_month * days / 30.0)
    days_drawn = np.sort(rng.integers(0, max(int(days), 1), count))
    for k, day in enumerate(days_drawn):
        start = day * DAY_S + round(rng.uniform(*shape.start_hours) * 3600.0)
        length = round(rng.uniform(*shape.duration_h) * 3600.0)
        if events and start < events[-1].end_s + shape.notice_s:
            continue  # one event at a time
        if start + length > days * DAY_S:
            continue
        cap = round(rng.uniform(*shape.cap_share) * site_power_w)
        events.append(GridEvent(event_id=f"ev-{k:03d}", notified_s=float(start - shape.notice_s),
                                deadline_s=float(start), end_s=float(start + length),
                                cap_w=float(cap)))
    return GridTrace(events=tuple(events))


# ---------------------------------------------------------------------------------------------
# All of them


@dataclass(frozen=True, eq=False)
class Traces:
    step_s: float
    price: PriceTrace
    hashprice: HashpriceTrace
    demand: DemandTrace
    grid: GridTrace

    def __post_init__(self) -> None:
        n = len(self.price.time_s)
        expected = np.arange(n, dtype=np.float64) * self.step_s
        for name, times in (("price", self.price.time_s),
                            ("hashprice", self.hashprice.time_s),
                            ("demand", self.demand.time_s)):
            if len(times) != n or not np.array_equal(times, expected):
                raise ValueError(f"the {name} trace is not on the replay's {self.step_s:.0f} s "
                                 f"steps from 0 for {n} steps")

    @property
    def steps(self) -> int:
        return len(self.price.time_s)


def generate(days: float, seed: int, site_power_w: float, step_s: float = 300.0,
             demand: Sequence[DemandShape] = (DemandShape(),),
             price: PriceShape = PriceShape(), hashprice: HashpriceShape = HashpriceShape(),
             grid: GridShape = GridShape()) -> Traces:
    return Traces(step_s=step_s, price=price_trace(days, step_s, seed, price),
                  hashprice=hashprice_trace(days, step_s, seed, hashprice),
                  demand=demand_trace(days, step_s, seed, demand),
                  grid=grid_trace(days, seed, site_power_w, grid))


# ---------------------------------------------------------------------------------------------
# CSV

PRICE_COLUMNS = ("time_s", "usd_per_mwh")
HASHPRICE_COLUMNS = ("time_s", "algorithm", "usd_per_th_day")
DEMAND_COLUMNS = ("time_s", "profile", "arrivals", "service_s_mean", "service_s_cv")
GRID_COLUMNS = ("event_id", "notified_s", "deadline_s", "end_s", "cap_w")


def _write(path: Path, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in rows:  # repr(float) reads back to the same float
            w.writerow([repr(float(v)) if isinstance(v, float | np.floating) else v
                        for v in row])


def _read(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or tuple(reader.fieldnames) != tuple(columns):
            raise ValueError(f"{path}: columns are {reader.fieldnames}, expected "
                             f"{','.join(columns)}")
        return list(reader)


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: {column} = {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}:{line}: {column} = {text!r} is not a finite number")
    return value


def _table(path: Path, columns: Sequence[str], key: str, values: Sequence[str]
           ) -> tuple[FloatArray, tuple[str, ...], dict[str, FloatArray]]:
    """A long CSV (time_s, key, values...) as times, keys and [key, step] arrays."""
    rows = _read(path, columns)
    keys = tuple(dict.fromkeys(r[key] for r in rows))
    times = np.array(sorted({_number(path, i + 2, "time_s", r["time_s"])
                             for i, r in enumerate(rows)}), dtype=np.float64)
    where = {t: i for i, t in enumerate(times.tolist())}
    out = {v: np.full((len(keys), len(times)), np.nan) for v in values}
    for i, r in enumerate(rows):
        k = keys.index(r[key])
        j = where[float(r["time_s"])]
        for v in values:
            out[v][k, j] = _number(path, i + 2, v, r[v])
    for v, array in out.items():
        if np.isnan(array).any():
            raise ValueError(f"{path}: {v} is missing for some {key} at some time_s")
    return times, keys, out


def write_csv(traces: Traces, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    p = traces.price
    _write(directory / "price.csv", PRICE_COLUMNS,
           zip(p.time_s.tolist(), p.usd_per_mwh.tolist(), strict=True))
    h = traces.hashprice
    _write(directory / "hashprice.csv", HASHPRICE_COLUMNS,
           ((t, a, float(h.usd_per_th_day[k, j])) for j, t in enumerate(h.time_s.tolist())
            for k, a in enumerate(h.algorithms)))
    d = traces.demand
    _write(directory / "demand.csv", DEMAND_COLUMNS,
           ((t, p_, float(d.arrivals[k, j]), float(d.service_s_mean[k, j]),
             float(d.service_s_cv[k, j]))
            for j, t in enumerate(d.time_s.tolist()) for k, p_ in enumerate(d.profiles)))
    _write(directory / "grid.csv", GRID_COLUMNS,
           ((e.event_id, e.notified_s, e.deadline_s, e.end_s, e.cap_w)
            for e in traces.grid.events))


def load_price_csv(path: Path) -> PriceTrace:
    rows = _read(path, PRICE_COLUMNS)
    t = np.array([_number(path, i + 2, "time_s", r["time_s"]) for i, r in enumerate(rows)])
    v = np.array([_number(path, i + 2, "usd_per_mwh", r["usd_per_mwh"])
                  for i, r in enumerate(rows)])
    return PriceTrace(time_s=t.astype(np.float64), usd_per_mwh=v.astype(np.float64))


def load_hashprice_csv(path: Path) -> HashpriceTrace:
    times, keys, values = _table(path, HASHPRICE_COLUMNS, "algorithm", ("usd_per_th_day",))
    return HashpriceTrace(time_s=times, algorithms=keys, usd_per_th_day=values["usd_per_th_day"])


def load_demand_csv(path: Path) -> DemandTrace:
    times, keys, values = _table(path, DEMAND_COLUMNS, "profile",
                                 ("arrivals", "service_s_mean", "service_s_cv"))
    if (values["arrivals"] < 0).any() or (values["service_s_mean"] <= 0).any():
        raise ValueError(f"{path}: arrivals must be ≥ 0 and service_s_mean > 0")
    return DemandTrace(time_s=times, profiles=keys, arrivals=values["arrivals"],
                       service_s_mean=values["service_s_mean"],
                       service_s_cv=values["service_s_cv"])


def load_grid_csv(path: Path) -> GridTrace:
    events: list[GridEvent] = []
    for i, r in enumerate(_read(path, GRID_COLUMNS)):
        line = i + 2
        e = GridEvent(event_id=r["event_id"],
                      notified_s=_number(path, line, "notified_s", r["notified_s"]),
                      deadline_s=_number(path, line, "deadline_s", r["deadline_s"]),
                      end_s=_number(path, line, "end_s", r["end_s"]),
                      cap_w=_number(path, line, "cap_w", r["cap_w"]))
        if not e.notified_s <= e.deadline_s < e.end_s or e.cap_w < 0:
            raise ValueError(f"{path}:{line}: needs notified_s ≤ deadline_s < end_s, cap_w ≥ 0")
        events.append(e)
    return GridTrace(events=tuple(sorted(events, key=lambda e: e.notified_s)))


def load_csv(directory: Path, generated: Traces) -> Traces:
    """The generated traces with each one whose CSV is in `directory` replaced by it."""
    files = {name: directory / f"{name}.csv" for name in ("price", "hashprice", "demand",
                                                          "grid")}
    return Traces(
        step_s=generated.step_s,
        price=load_price_csv(files["price"]) if files["price"].exists() else generated.price,
        hashprice=(load_hashprice_csv(files["hashprice"]) if files["hashprice"].exists()
                   else generated.hashprice),
        demand=(load_demand_csv(files["demand"]) if files["demand"].exists()
                else generated.demand),
        grid=load_grid_csv(files["grid"]) if files["grid"].exists() else generated.grid)


def same(a: Traces, b: Traces) -> bool:
    """Exactly the same values (floats compared bit for bit)."""
    return (a.step_s == b.step_s
            and np.array_equal(a.price.time_s, b.price.time_s)
            and np.array_equal(a.price.usd_per_mwh, b.price.usd_per_mwh)
            and a.hashprice.algorithms == b.hashprice.algorithms
            and np.array_equal(a.hashprice.usd_per_th_day, b.hashprice.usd_per_th_day)
            and a.demand.profiles == b.demand.profiles
            and np.array_equal(a.demand.arrivals, b.demand.arrivals)
            and np.array_equal(a.demand.service_s_mean, b.demand.service_s_mean)
            and np.array_equal(a.demand.service_s_cv, b.demand.service_s_cv)
            and a.grid.events == b.grid.events)
