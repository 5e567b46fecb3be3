"""The policy over sequences of rounds (hypothesis): whatever the prices, demand and caps, the
invariants hold, read from the decisions themselves."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from controller.model import GridCap, PolicyMemory, RigState, Workload
from controller.policy import PolicyConfig, decide
from tests.controller.fleet import PROFILE, demand, follow, gpu, miner, rig, snapshot

TRUE_J = {"asic/a": 25.0, "asic/b": 35.0, "asic/c": 30.0, "asic/d": 20.0}
CONFIG = PolicyConfig()


class PolicyRounds(RuleBasedStateMachine):
    rigs: list[RigState]

    @initialize()
    def site(self) -> None:
        self.rigs = [
            rig(miner("a", 25.0), miner("b", 35.0), miner("c", 30.0), gpu("w", warm=True),
                gpu("c1"), rig_id="r1"),
            rig(miner("d", 20.0), gpu("c2", Workload.INFERENCE, profile=PROFILE), rig_id="r2")]
        self.memory = PolicyMemory.empty()
        self.t = 0.0
        self.cap: GridCap | None = None
        self.rounds = 0

    @rule(cap_w=st.one_of(st.none(), st.floats(300.0, 20_000.0)))
    def grid(self, cap_w: float | None) -> None:
        self.cap = None if cap_w is None else GridCap(cap_w=cap_w, deadline_s=self.t + 600.0)

    @rule(price=st.one_of(st.none(), st.floats(-400.0, 12_000.0), st.just(math.nan)),
          stale=st.booleans(), rps=st.floats(0.0, 30.0), waiting=st.floats(0.0, 300.0),
          dt=st.sampled_from([10.0, 300.0, 600.0]))
    def round(self, price: float | None, stale: bool, rps: float, waiting: float,
              dt: float) -> None:
        self.t += dt
        snap = snapshot(self.t, price, self.rigs, age_s=2_000.0 if stale else 0.0,
                        demands=[demand(waiting=waiting, arrivals_rps=rps)], cap=self.cap)
        d, memory = decide(snap, self.memory, CONFIG)
        f = snap.fleet
        usable = (price is not None and not stale and not math.isnan(price)
                  and -250.0 <= price <= 10_000.0)
        for i in range(len(f)):
            text = d.explain(i)
            assert "{" not in text and text
            dd = d.device(i)
            if not usable and dd.current in (Workload.ASLEEP, Workload.STANDBY):
                # A stale, missing or absurd price never wakes a device into hashing.
                assert dd.desired != Workload.HASHING, text
        if self.cap is not None:
            planned = float(d.numbers["plan_w"].sum() + 200.0)
            target = self.cap.cap_w * (1 - CONFIG.cap_margin)
            assert planned <= target + 1e-6 or any("cannot be met" in n for n in d.notes)
            assert sum(c.target_w for c in d.curtail) <= self.cap.cap_w + 1e-6
        else:
            assert d.curtail == ()
        # The same inputs with the memory read back from its journal: the same decision.
        again, _ = decide(snap, PolicyMemory.from_json(self.memory.to_json()), CONFIG)
        assert np.array_equal(again.desired, d.desired)
        assert np.array_equal(again.desired_profile, d.desired_profile)
        self.memory = memory
        self.rigs = follow(self.rigs, d, TRUE_J)
        self.rounds += 1

    @invariant()
    def counters_are_sane(self) -> None:
        m = self.memory
        assert (m.windows_above >= 0).all() and (m.windows_below >= 0).all()
        assert not (m.windows_above > 0)[(m.windows_below > 0)].any()  # never both


PolicyRounds.TestCase.settings = settings(max_examples=60, stateful_step_count=25,
                                          deadline=None)
TestPolicyRounds = PolicyRounds.TestCase
