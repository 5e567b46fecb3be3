"""The replay's table (printed, and as CSV) and its plot of one week."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from controller.sim.engine import RunResult
from controller.sim.traces import DAY_S, Traces

LYRA_WAIT_RATIO = 1.53  # Lyra (EuroSys 2023): 1.53x lower average queuing time
LYRA_JCT_RATIO = 1.48  # and 1.48x lower average job completion time

COLUMNS = ("policy", "energy_mwh", "energy_cost_usd", "mining_revenue_usd",
           "inference_revenue_usd", "net_margin_usd", "wait_p50_s", "wait_p95_s", "wait_p99_s",
           "wait_mean_s", "jct_mean_s", "sla_violations", "sla_violations_pct", "dropped",
           "switches_per_device_day", "grid_events_met", "grid_events_missed")


def rows(results: Sequence[RunResult]) -> list[dict[str, float | str]]:
    out: list[dict[str, float | str]] = []
    for r in results:
        arrived = sum(w.arrived for w in r.waits.values())
        # One profile in the default site; with several, the first is reported.
        w = next(iter(r.waits.values()), None)
        nan = math.nan
        violations = float(sum(x.sla_violations for x in r.waits.values()))
        out.append({
            "policy": r.policy, "energy_mwh": r.energy_mwh,
            "energy_cost_usd": r.energy_cost_usd, "mining_revenue_usd": r.mining_revenue_usd,
            "inference_revenue_usd": r.inference_revenue_usd,
            "net_margin_usd": r.net_margin_usd,
            "wait_p50_s": w.p50_wait_s if w else nan, "wait_p95_s": w.p95_wait_s if w else nan,
            "wait_p99_s": w.p99_wait_s if w else nan,
            "wait_mean_s": w.mean_wait_s if w else nan, "jct_mean_s": w.mean_jct_s if w else nan,
            "sla_violations": violations,
            "sla_violations_pct": 100.0 * violations / arrived if arrived else nan,
            "dropped": float(sum(x.dropped for x in r.waits.values())),
            "switches_per_device_day": r.switches_per_device_day,
            "grid_events_met": float(sum(e.met for e in r.events)),
            "grid_events_missed": float(sum(not e.met for e in r.events))})
    return out


def table(results: Sequence[RunResult]) -> str:
    """A Markdown table (as printed and as pasted in the README)."""
    head = ("| policy | energy MWh | energy cost $ | mining $ | inference $ | net margin $ "
            "| wait p50/p95/p99 s | mean JCT s | SLA violations | switches /device/day "
            "| grid events met/missed |")
    lines = [head, "|" + "---|" * head.count(" |")]
    for row in rows(results):
        def f(key: str, spec: str = ",.0f", row: dict[str, float | str] = row) -> str:
            value = row[key]
            assert isinstance(value, float)
            return "n/a" if math.isnan(value) else format(value, spec)
        waits = "/".join(f(k, ".2f") for k in ("wait_p50_s", "wait_p95_s", "wait_p99_s"))
        lines.append(
            f"| {row['policy']} | {f('energy_mwh')} | {f('energy_cost_usd')} "
            f"| {f('mining_revenue_usd')} | {f('inference_revenue_usd')} "
            f"| {f('net_margin_usd')} | {waits} | {f('jct_mean_s', '.2f')} "
            f"| {f('sla_violations')} ({f('sla_violations_pct', '.2f')} %) "
            f"| {f('switches_per_device_day', '.2f')} "
            f"| {f('grid_events_met')}/{f('grid_events_missed')} |")
    return "\n".join(lines)


def lyra_line(results: Sequence[RunResult], patience_s: float) -> str:
    """The queue-wait and JCT ratios of the static split over the controller, beside Lyra's,
    and why they differ, in the run's own numbers."""
    by = {r.policy: r for r in results}
    if "static split" not in by or "controller" not in by:
        return "queue wait against the static split: not run (needs both policies)"
    s = next(iter(by["static split"].waits.values()), None)
    c = next(iter(by["controller"].waits.values()), None)
    if s is None or c is None or not s.arrived:
        return "queue wait against the static split: no inference demand"

    def ratio(a: float, b: float) -> float:
        return math.inf if b <= 0 else a / b
    wait, jct = ratio(s.mean_wait_s, c.mean_wait_s), ratio(s.mean_jct_s, c.mean_jct_s)
    dropped = s.dropped / s.arrived
    from_drops = dropped * patience_s / s.mean_wait_s if s.mean_wait_s > 0 else 0.0
    service = c.mean_jct_s - c.mean_wait_s
    line = (f"inference queue wait, static split / controller: mean {s.mean_wait_s:.3f} s / "
            f"{c.mean_wait_s:.3f} s = {wait:.2f}x (Lyra, EuroSys 2023: {LYRA_WAIT_RATIO}x "
            f"lower average queuing time); mean JCT {s.mean_jct_s:.2f} s / {c.mean_jct_s:.2f} s "
            f"= {jct:.2f}x (Lyra: {LYRA_JCT_RATIO}x).")
    higher = wait > LYRA_WAIT_RATIO
    why = (f" The wait ratio is {'higher' if higher else 'lower'} than Lyra's, which loaned idle "
           f"inference servers to training jobs queuing for GPUs; here hashing GPUs are loaned "
           f"to inference requests that wait seconds: {from_drops:.0%} of the static split's "
           f"mean wait is the {dropped:.2%} of requests it dropped after {patience_s:.0f} s in "
           f"bursts its fixed GPUs could not serve, and the controller's mean is "
           f"{c.mean_wait_s:.3f} s, so the ratio of the two means is "
           f"{'large' if higher else 'small'}. The JCT ratio is "
           f"{'higher' if jct > LYRA_JCT_RATIO else 'lower'} than Lyra's because a request's "
           f"completion is mostly its {service:.1f} s of service.")
    return line + why


def write_csv(results: Sequence[RunResult], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for row in rows(results):
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})


def write_events_csv(results: Sequence[RunResult], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("policy", "event_id", "cap_w", "met", "worst_w", "below_cap_from_s"))
        for r in results:
            for e in r.events:
                w.writerow((r.policy, e.event_id, repr(e.cap_w), int(e.met), repr(e.worst_w),
                            "" if e.compliant_s is None else repr(e.compliant_s)))


def plot_week_start_day(traces: Traces) -> int:
    """The week to plot: the one with the most grid events, then the highest price."""
    days = int(traces.steps * traces.step_s // DAY_S)
    if days <= 7:
        return 0
    per_day = round(DAY_S / traces.step_s)
    best = (-1, -math.inf, 0)
    for start in range(0, days - 6, 7):
        lo, hi = start * DAY_S, (start + 7) * DAY_S
        events = sum(lo <= e.deadline_s < hi for e in traces.grid.events)
        peak = float(traces.price.usd_per_mwh[start * per_day:(start + 7) * per_day].max())
        best = max(best, (events, peak, -start))
    return -best[2]


def plot_week(results: Sequence[RunResult], traces: Traces, path: Path,
              start_day: int | None = None) -> int:
    import matplotlib  # only the plot needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = plot_week_start_day(traces) if start_day is None else start_day
    per_day = round(DAY_S / traces.step_s)
    lo, hi = start * per_day, min((start + 7) * per_day, traces.steps)
    days = np.arange(lo, hi) * traces.step_s / DAY_S
    fig, (ax_p, ax_w, ax_m, ax_g) = plt.subplots(4, 1, figsize=(12, 11), sharex=True)
    ax_p.plot(days, traces.price.usd_per_mwh[lo:hi], lw=0.7, color="black")
    ax_p.set_yscale("symlog", linthresh=100)
    ax_p.set_ylabel("energy price $/MWh")
    for r in results:
        ax_w.plot(days, r.series["site_power_w"][lo:hi] / 1e6, lw=0.8, label=r.policy)
    ax_w.set_ylabel("site power MW")
    ax_w.legend(fontsize=7, ncol=3, loc="lower left")
    for e in traces.grid.events:
        a, b = e.deadline_s / DAY_S, e.end_s / DAY_S
        if b >= days[0] and a <= days[-1]:
            for ax in (ax_p, ax_w):
                ax.axvspan(a, b, color="red", alpha=0.15)
            ax_w.hlines(e.cap_w / 1e6, a, b, color="red", lw=1.2)
    shown = next((r for r in results if r.policy == "controller"), results[0])
    s = shown.series
    ax_m.stackplot(days, s["asic_hashing"][lo:hi], s["asic_asleep"][lo:hi],
                   labels=("hashing", "asleep"), colors=("#d98c1f", "#bbbbbb"))
    ax_m.set_ylabel(f"miners ({shown.policy})")
    ax_m.legend(fontsize=7, loc="lower left")
    ax_g.stackplot(days, *(s[f"gpu_{k}"][lo:hi] for k in ("hashing", "inference", "standby",
                                                          "asleep")),
                   labels=("hashing", "inference", "standby", "asleep"),
                   colors=("#d98c1f", "#2a7ab9", "#8fbf6a", "#bbbbbb"))
    ax_g.set_ylabel(f"GPUs ({shown.policy})")
    ax_g.set_xlabel("day of the replay")
    ax_g.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"one week of the replay (days {start}-{start + 7}); red: grid events and caps")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return start


def write_record(result: RunResult, path: Path) -> None:
    """One policy's run as JSON lines: each round's changes (`{"round", "time_s", "changes":
    [[device, from, to], ...]}`) in the order decided, then each window's site power
    (`{"window", "site_power_w"}`): what a live run's journal is compared with."""
    from controller.model import WORKLOADS

    with path.open("w", encoding="utf-8") as f:
        for n, decision in enumerate(result.decisions):
            fleet = decision.fleet
            changes = []
            for i in decision.changed().tolist():
                desired = str(WORKLOADS[int(decision.desired[i])])
                if desired == "inference":
                    desired += f":{decision.profile_name(i)}"
                changes.append([fleet.device_ids[i], str(WORKLOADS[int(fleet.workload[i])]),
                                desired])
            f.write(json.dumps({"round": n, "time_s": decision.time_s, "changes": changes})
                    + "\n")
        for k, watts in enumerate(result.series["site_power_w"].tolist()):
            f.write(json.dumps({"window": k, "site_power_w": watts}) + "\n")
