"""The replay's inference queue against queues whose answers are known in closed form."""

from __future__ import annotations

import math

import pytest

from controller.sim.queue import FluidQueue

NEVER = math.inf


def test_an_overloaded_fluid_fifo() -> None:
    # 2 req/s arrive, 1 req/s is served, for 100 s: by t=100 the requests that arrived in
    # [0, 50) are served, the one arrived at u left at 2u: waits spread evenly over 0..50 s.
    q = FluidQueue(patience_s=1_000.0, substep_s=10.0)
    end, served = q.advance(0.0, 100.0, 2.0, [0.0], 1.0, 1, 1.0, 1.0, 1e9, NEVER)
    assert (end, served) == (100.0, pytest.approx(100.0))
    assert q.backlog == pytest.approx(100.0)
    s = q.stats(bound_s=10.0)
    assert s.mean_wait_s == pytest.approx(25.0)
    assert s.p50_wait_s == pytest.approx(25.0, rel=0.02)
    assert s.p95_wait_s == pytest.approx(47.5, rel=0.02)
    assert s.sla_violations == pytest.approx(80.0)  # waits above 10 s: arrivals in [5, 50)


@pytest.mark.parametrize(("arrivals", "servers", "cv", "mean_wait"), [
    (0.5, 1, 1.0, 1.0),  # M/M/1 at rho 0.5: Wq = rho / (mu - lambda)
    (1.0, 2, 1.0, 1 / 3),  # M/M/2, a = 1: Erlang C = 1/3, Wq = C / (c mu - lambda)
    (0.5, 1, 0.0, 0.5),  # M/D/1: Wq = rho s / (2 (1 - rho)); Allen-Cunneen is exact here
])
def test_steady_waits_are_erlang_c(arrivals: float, servers: int, cv: float,
                                   mean_wait: float) -> None:
    q = FluidQueue(patience_s=120.0, substep_s=10.0)
    q.advance(0.0, 3_600.0, arrivals, [0.0], float(servers), servers, 1.0, cv, 2.0, NEVER)
    s = q.stats(bound_s=2.0)
    assert s.mean_wait_s == pytest.approx(mean_wait, rel=1e-6)
    assert s.mean_jct_s == pytest.approx(mean_wait + 1.0, rel=1e-6)
    if (arrivals, servers, cv) == (0.5, 1, 1.0):
        # P(W > t) = rho exp(-(mu - lambda) t): the median is 0, p95 is 2 ln 10.
        assert s.p50_wait_s == 0.0
        assert s.p95_wait_s == pytest.approx(2 * math.log(10), rel=0.02)
        assert s.sla_violations / s.arrived == pytest.approx(0.5 * math.exp(-1.0), rel=1e-6)


def test_requests_leave_after_their_patience() -> None:
    q = FluidQueue(patience_s=120.0, substep_s=10.0)
    q.advance(0.0, 200.0, 1.0, [], 1.0, 1, 1.0, 1.0, 2.0, NEVER)
    s = q.stats(bound_s=2.0)
    assert s.dropped == pytest.approx(80.0)
    assert q.backlog == pytest.approx(120.0)
    assert s.mean_wait_s == pytest.approx(120.0)  # a dropped request counts its patience


def test_capacity_that_comes_late_drains_the_backlog_in_order() -> None:
    # Nothing serves until a GPU is ready at 30 s (2 req/s), 0.5 req/s arrive: the first
    # request waits 30 s; the 15 queued drain at 1.5 req/s, caught up at 40 s.
    q = FluidQueue(patience_s=120.0, substep_s=10.0)
    q.advance(0.0, 300.0, 0.5, [30.0], 2.0, 1, 0.5, 0.0, 1e9, NEVER)
    assert q.backlog == pytest.approx(0.0, abs=1e-9)
    s = q.stats(bound_s=2.0)
    assert s.served == pytest.approx(150.0)
    # Arrival u waits 30 + u/4 - u until 40 s (it is the 0.5u-th in line, served at 2/s from
    # 30 s): 15 requests averaging 18.75 s, 5 averaging 3.75 s; the 130 after that wait as in
    # an M/D/1 queue at rho 0.25 with 0.5 s service: rho s / (2 (1 - rho)).
    md1 = 0.25 * 0.5 / (2 * 0.75)
    assert s.mean_wait_s == pytest.approx((15 * 18.75 + 5 * 3.75 + 130 * md1) / 150)
    assert s.p99_wait_s == pytest.approx(30 - 0.01 * 150 / 0.5 * 0.75, rel=0.02)
    # The same queue with a 2 s bound stops at the first sub-step's end to ask for a round.
    q = FluidQueue(patience_s=120.0, substep_s=10.0)
    end, _ = q.advance(0.0, 300.0, 0.5, [30.0], 2.0, 1, 0.5, 0.0, 2.0, 0.0)
    assert end == 10.0
    # ...once: the next call goes on (the round did not help) until the wait falls back.
    end, _ = q.advance(end, 300.0, 0.5, [30.0], 2.0, 1, 0.5, 0.0, 2.0, 0.0)
    assert end == 300.0
