"""Inference queueing in aggregate: a fluid FIFO queue per runtime profile, plus the random
waits of a steady M/G/c queue where the fluid queue is empty.

Ninety days of individual requests (hundreds per second) are too many to replay one by one on
two cores, so requests are counts that arrive at a constant rate within a step (the demand
trace's per-step count), and the GPUs serving a profile are `slots` servers each (continuous
batching), requests taking `service_s_mean` on a slot:

- While the arrival rate exceeds what the ready GPUs serve, or a backlog is left, the queue is a
  deterministic fluid FIFO worked in sub-steps of `substep_s`: arrivals join as cohorts spread
  evenly over their sub-step, the servers drain cohorts in order at their rate (the GPUs ready in
  that sub-step, pro rata), and each piece of a cohort served records its waits exactly (they run
  linearly from its first to its last request). Requests waiting longer than `patience_s` leave
  (dropped; their wait counts as `patience_s`).
- Where the fluid queue is empty and capacity exceeds arrivals, waits are those of an M/M/c
  queue (Erlang C) scaled by Allen and Cunneen's (1 + cv^2) / 2 for general service times:
  P(W > t) = C exp(-(c - a) t / (s k)), with c servers, a = arrival rate x s, mean service s.
  Records are kept per stretch and evaluated together at the end (scipy's Poisson CDF).

What this leaves out: the randomness of arrivals inside an overloaded stretch (the fluid queue is
its mean), and batching slowing each request as a GPU fills (service time is load-independent).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, pdtr

from controller.model import FloatArray

EPS = 1e-9


@dataclass(frozen=True)
class WaitStats:
    arrived: float
    served: float
    dropped: float
    mean_wait_s: float  # over all arrivals, a dropped request counting patience_s
    p50_wait_s: float
    p95_wait_s: float
    p99_wait_s: float
    sla_violations: float  # arrivals that waited longer than the bound (dropped included)
    mean_jct_s: float  # served requests: their mean wait plus the mean service time


class WaitRecorder:
    """Every request's wait, in pieces: none, uniform between two waits, or an Erlang C tail."""

    def __init__(self) -> None:
        self.zero = 0.0
        self.uniform: list[tuple[float, float, float]] = []  # (mass, low, high)
        self.tails: list[tuple[float, float, float, float, float]] = []  # (mass, c, a, s, cv)
        self.dropped = 0.0
        self.service_mass_s = 0.0  # served requests x their mean service time

    def piece(self, mass: float, w0: float, w1: float) -> None:
        if mass <= EPS:
            return
        low, high = (w0, w1) if w0 <= w1 else (w1, w0)
        if high <= EPS:
            self.zero += mass
        else:
            self.uniform.append((mass, max(low, 0.0), high))

    def steady(self, mass: float, servers: float, offered: float, service_s: float,
               cv: float) -> None:
        if mass > EPS:
            self.tails.append((mass, servers, offered, service_s, cv))

    def _tails(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Mass, Erlang C probability of waiting, and tail rate of each steady record."""
        if not self.tails:
            z = np.zeros(0)
            return z, z, z
        mass, c, a, s, cv = (np.array(x, dtype=np.float64) for x in zip(*self.tails,
                                                                        strict=True))
        with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
            log_pmf = np.where(a > 0, c * np.log(np.where(a > 0, a, 1.0)) - a
                               - gammaln(c + 1), -np.inf)
            erlang_b = np.exp(log_pmf) / pdtr(c, a)
            rho = a / c
            erlang_c = np.clip(erlang_b / (1 - rho * (1 - erlang_b)), 0.0, 1.0)
            rate = (c - a) / (s * (1 + cv ** 2) / 2)
        erlang_c = np.where(np.isfinite(erlang_c) & (a > 0), erlang_c, 0.0)
        return mass, erlang_c, rate

    def stats(self, bound_s: float, patience_s: float, served: float) -> WaitStats:
        t_mass, t_c, t_rate = self._tails()
        if self.uniform:
            u_mass, u_low, u_high = (np.array(x) for x in zip(*self.uniform, strict=True))
        else:
            u_mass = u_low = u_high = np.zeros(0)
        total = self.zero + float(t_mass.sum()) + float(u_mass.sum()) + self.dropped
        if total <= EPS:
            nan = math.nan
            return WaitStats(0.0, 0.0, 0.0, nan, nan, nan, nan, 0.0, nan)

        def cdf(w: FloatArray) -> FloatArray:
            w = np.asarray(w, dtype=np.float64)
            out = np.full(w.shape, self.zero)
            if len(t_mass):
                out += (t_mass[:, None] * (1 - t_c[:, None] * np.exp(
                    -t_rate[:, None] * w[None, :]))).sum(axis=0)
            if len(u_mass):
                width = np.maximum(u_high - u_low, EPS)
                frac = np.clip((w[None, :] - u_low[:, None]) / width[:, None], 0.0, 1.0)
                out += (u_mass[:, None] * frac).sum(axis=0)
            out += self.dropped * (w >= patience_s)
            return np.asarray(out / total)

        grid = np.concatenate([[0.0], np.logspace(-3, math.log10(patience_s * 1.01), 400)])
        values = cdf(grid)

        def quantile(q: float) -> float:
            i = int(np.searchsorted(values, q - 1e-12))
            if i <= 0:
                return 0.0
            if i >= len(grid):
                return float(grid[-1])
            lo, hi = values[i - 1], values[i]
            return float(grid[i - 1] + (grid[i] - grid[i - 1]) * ((q - lo) / max(hi - lo, EPS)))

        with np.errstate(divide="ignore", invalid="ignore"):
            tail_wait = np.where(t_rate > 0, t_c / t_rate, 0.0)
        served_wait = float((t_mass * tail_wait).sum() + (u_mass * (u_low + u_high) / 2).sum())
        mean = (served_wait + self.dropped * patience_s) / total
        over = float((1 - cdf(np.array([bound_s])))[0]) * total
        served_mass = total - self.dropped
        jct = (served_wait + self.service_mass_s) / served_mass if served_mass > EPS else math.nan
        return WaitStats(arrived=total, served=served, dropped=self.dropped, mean_wait_s=mean,
                         p50_wait_s=quantile(0.5), p95_wait_s=quantile(0.95),
                         p99_wait_s=quantile(0.99), sla_violations=over, mean_jct_s=jct)


class FluidQueue:
    """One profile's queue: cohorts of waiting requests, each [first arrival s, last arrival s,
    count], spread evenly over their arrival times, oldest first."""

    def __init__(self, patience_s: float, substep_s: float) -> None:
        self.patience_s = patience_s
        self.substep_s = substep_s
        self.cohorts: list[list[float]] = []
        self.record = WaitRecorder()
        self.arrived = 0.0
        self.served = 0.0
        self.over = False  # the estimated wait is above the bound (a round was triggered)

    @property
    def backlog(self) -> float:
        return sum(c[2] for c in self.cohorts)

    def advance(self, start_s: float, end_s: float, arrival_rps: float, ready_s: list[float],
                per_gpu_rps: float, slots: int, service_s: float, cv: float, bound_s: float,
                trigger_from_s: float) -> tuple[float, float]:
        """Serve from start_s to end_s with GPUs ready at `ready_s` (sorted). Stops early at the
        end of the sub-step where the estimated wait (backlog / rate) goes above bound_s, if
        that is at or after trigger_from_s (once per crossing). Returns (where it stopped,
        requests served)."""
        t = start_s
        served_before = self.served
        while t < end_s - EPS:
            ready_now = bisect_right(ready_s, t)
            rate_now = per_gpu_rps * ready_now
            if not self.cohorts and arrival_rps <= rate_now * (1 - 1e-9):
                # Capacity only grows inside a segment: no fluid queue until end_s.
                count = arrival_rps * (end_s - t)
                self.arrived += count
                self.served += count
                self.record.steady(count, float(slots * ready_now), arrival_rps * service_s,
                                   service_s, cv)
                self.record.service_mass_s += count * service_s
                self.over = False
                t = end_s
                break
            coming = ready_now < len(ready_s) and ready_s[ready_now] < end_s
            h = min(self.substep_s, end_s - t)
            if ready_now == 0 and not coming:  # nothing serves: one step to a possible trigger
                h = max(h, min(end_s, max(trigger_from_s, t)) - t)
            e = t + h
            # GPUs ready part of this sub-step count pro rata.
            share = float(ready_now)
            for r in ready_s[ready_now:]:
                if r >= e:
                    break
                share += (e - r) / h
            self._substep(t, e, arrival_rps, per_gpu_rps * share, service_s)
            t = e
            rate = per_gpu_rps * bisect_right(ready_s, t)
            over = bool(self.cohorts) and (rate <= 0 or self.backlog / rate > bound_s)
            if not over:
                self.over = False
            elif not self.over and t >= trigger_from_s - EPS:
                self.over = True
                break
        return t, self.served - served_before

    def _substep(self, s: float, e: float, arrival_rps: float, rate: float,
                 service_s: float) -> None:
        h = e - s
        arrivals = arrival_rps * h
        self.arrived += arrivals
        budget = rate * h
        done = 0.0
        record = self.record
        while self.cohorts and budget - done > EPS:
            ts, te, count = self.cohorts[0]
            x = min(count, budget - done)
            d0, d1 = s + done / rate, s + (done + x) / rate
            a1 = ts + (x / count) * (te - ts)
            record.piece(x, d0 - ts, d1 - a1)
            done += x
            if x >= count - EPS:
                self.cohorts.pop(0)
            else:
                self.cohorts[0] = [a1, te, count - x]
        if arrivals > EPS:
            if self.cohorts or rate <= 0:
                self.cohorts.append([s, e, arrivals])
            else:
                tau = s + done / rate
                incoming = arrival_rps
                caught = (tau + (tau - s) * incoming / (rate - incoming)
                          if rate > incoming else math.inf)
                if caught < e:
                    queued = (caught - s) * incoming
                    record.piece(queued, tau - s, 0.0)
                    record.zero += arrivals - queued
                    done += arrivals
                else:
                    took = max((e - tau) * rate, 0.0)
                    took = min(took, arrivals)
                    last = s + took / incoming
                    record.piece(took, tau - s, e - last)
                    done += took
                    if arrivals - took > EPS:
                        self.cohorts.append([last, e, arrivals - took])
        self.served += done
        record.service_mass_s += done * service_s
        cut = e - self.patience_s
        while self.cohorts and self.cohorts[0][0] < cut:
            ts, te, count = self.cohorts[0]
            if te <= cut:
                record.dropped += count
                self.cohorts.pop(0)
            else:
                gone = count * (cut - ts) / (te - ts)
                record.dropped += gone
                self.cohorts[0] = [cut, te, count - gone]
                break

    def stats(self, bound_s: float) -> WaitStats:
        return self.record.stats(bound_s, self.patience_s, self.served)
