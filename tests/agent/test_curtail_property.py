"""Curtailment as a stateful property: random sequences of Curtail (lower and higher targets),
CancelCurtailment, SetWorkload, SetPowerLimit, miners slept and woken by hand on their own
firmware, and SIGKILL + restart, against a real rigd on simulated GPUs (hashing on PoCL, an
inference runtime) and miners of every family. Invariants, checked from the API:

- while a curtailment is in force, from its deadline plus the simulators' ramp on, the rig reads
  at or below its target, or the curtailment says it is not met, with the shortfall in watts;
- once it is cancelled, every device is back as it was before the curtailment first touched it
  (or as the operator set it since: a limit set during the curtailment applies at its end);
- no workload process runs without its device's record, and none of a record is missing.

`make test` runs a few bounded examples (hypothesis prints the seed and the steps of a failing
one); RIGD_PROPERTY_EXAMPLES=N runs more.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import grpc
import psutil
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from agent.demo.pool import PoolThread
from hal.sim.asic import SimFleet
from rigapi import pb
from tests.agent.conftest import OPERATOR_TOKEN, bearer
from tests.agent.test_curtail import Rig, build_rig, cancel, follow, state, telemetry

FAMILIES = ["antminer", "luxos", "whatsminer", "avalon", "braiins"]
RAMP_S = 0.5
DEADLINE_S = 2  # whole seconds, as the API takes them
VERIFY_S = 2.0
SETTLE_ABOVE_S = 1.5  # curtail.settle_s: how long a curtailed rig may read above target
# After a change the loop did not make (a miner woken by hand, a limit set, a restart), the rig
# may read above target until the loop has seen it for settle_s and shed (ramp, verification).
REACT_S = SETTLE_ABOVE_S + RAMP_S + VERIFY_S + 1.0
EXAMPLES = int(os.environ.get("RIGD_PROPERTY_EXAMPLES", "3"))
SETTLE_S = 60.0  # the longest a restore or a switch may take before it is a failure

_rig: Rig | None = None


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, pool: PoolThread) -> Iterator[Rig]:
    global _rig
    with SimFleet.of(FAMILIES, warmup_s=0.3) as fleet:
        for miner in fleet.miners:
            miner.state.response_s = RAMP_S
        _rig = build_rig(tmp_path_factory.mktemp("property"), pool, fleet,
                         curtail={"verify_s": VERIFY_S, "settle_s": SETTLE_ABOVE_S})
        yield _rig
        assert _rig.rigd.stop() == 0
        _rig = None


def curtailment(rig: Rig) -> pb.Curtailment | None:
    inventory = rig.rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10)
    return inventory.curtailment if inventory.HasField("curtailment") else None


def touched(rig: Rig, since_unix_s: float) -> set[str]:
    """Devices a curtailment has acted on since it began (its rounds' operations)."""
    ops = rig.rigd.stub().ListOperations(pb.ListOperationsRequest(limit=200), timeout=10)
    return {d for op in ops.operations if op.kind == "curtail"
            and op.create_time.ToNanoseconds() / 1e9 >= since_unix_s - 1 for d in op.device_ids}


def workload_processes(rig: Rig) -> dict[str, int]:
    """rigd's workload processes by what they run: the hashing worker or a runtime."""
    found = {"hashing": 0, "inference": 0}
    for child in psutil.Process(rig.rigd.proc.pid).children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "agent.runtime.workloads.hashing.worker" in cmdline:
            found["hashing"] += 1
        elif "fake_runtime.py" in cmdline and "launch" not in cmdline:
            found["inference"] += 1
    return found


class CurtailmentSequences(RuleBasedStateMachine):
    """The model: the state each device must be restored to, and the curtailment asked for."""

    def __init__(self) -> None:
        super().__init__()
        assert _rig is not None
        self.rig = _rig
        self.expected: dict[str, set[tuple[Any, ...]]] = {}
        self.target_w: float | None = None
        self.holds_from = 0.0  # monotonic: from here on the target must hold
        self.since_unix_s = 0.0

    @initialize(fraction=st.sampled_from([0.3, 0.5, 0.7]))
    def start_curtailed(self, fraction: float) -> None:
        """Every sequence starts from a rig at rest, curtailed."""
        if curtailment(self.rig) is not None:
            cancel(self.rig)
        self._settle()
        self.curtail(fraction)

    # -- rules -------------------------------------------------------------------------------

    @rule(fraction=st.sampled_from([0.3, 0.5, 0.7, 0.9]))
    def curtail(self, fraction: float) -> None:
        STEPS.append(f"curtail {fraction:g}")
        _, power = telemetry(self.rig)
        base = power.total_w if self.target_w is None else max(power.total_w, self.target_w)
        target = round(base * fraction)
        if self.target_w is None:
            self.expected = {k: {v} for k, v in state(self.rig).items()}
            self.since_unix_s = time.time()
        self.rig.rigd.stub().Curtail(pb.CurtailRequest(
            rig_power_target_w=target, deadline_s=DEADLINE_S, expiry_s=3600,
            reason="property"), timeout=10)
        self.target_w = target
        self.holds_from = time.monotonic() + DEADLINE_S + RAMP_S + VERIFY_S + 1.0

    @rule()
    def cancel(self) -> None:
        STEPS.append("cancel")
        if self.target_w is None:
            return
        op = cancel(self.rig)
        assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
        self.target_w = None
        deadline = time.monotonic() + SETTLE_S
        while (now := state(self.rig)) and not all(now[k] in ok for k, ok in
                                                    self.expected.items() if k in now):
            differs = {k: (ok, now[k]) for k, ok in self.expected.items()
                       if k in now and now[k] not in ok}
            assert time.monotonic() < deadline, f"not as before the curtailment: {differs}"
            time.sleep(0.2)
        self.expected = {}

    @rule(index=st.integers(0, len(FAMILIES) - 1), asleep=st.booleans())
    def miner_by_hand(self, index: int, asleep: bool) -> None:
        """An operator on the miner's own firmware: rigd is not told."""
        STEPS.append(f"miner {index} {'asleep' if asleep else 'awake'} by hand")
        miner = self.rig.fleet.miners[index]
        device_id = self.rig.asics[index]
        before = touched(self.rig, self.since_unix_s) if self.target_w is not None else set()
        (miner.state.sleep if asleep else miner.state.wake)()
        if self.target_w is None:
            return
        self.holds_from = max(self.holds_from, time.monotonic() + REACT_S)
        after = touched(self.rig, self.since_unix_s)
        if device_id in before:
            return  # touched before the change: it is put back as it was then
        deadline = time.monotonic() + 10
        while True:  # the state the device now shows (its firmware's flags settle at once)
            now = state(self.rig)
            if now[device_id][4] == (not asleep) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        changed = {k: v for k, v in now.items() if k in (device_id, f"sim{index}")}
        for key, value in changed.items():
            if device_id in after:  # touched around the change: either is right
                self.expected.setdefault(key, set()).add(value)
            else:
                self.expected[key] = {value}

    @rule(which=st.integers(0, 1),
          kind=st.sampled_from([pb.WORKLOAD_KIND_HASHING, pb.WORKLOAD_KIND_INFERENCE,
                                pb.WORKLOAD_KIND_IDLE]))
    def set_workload(self, which: int, kind: int) -> None:
        STEPS.append(f"gpu {which} -> {kind}")
        if self.target_w is not None and kind != pb.WORKLOAD_KIND_IDLE:
            return  # held at its start until the curtailment ends: its own test covers it
        workload = pb.Workload(kind=kind)
        if kind == pb.WORKLOAD_KIND_INFERENCE:
            workload.inference.profile = "busy"
        gpu = self.rig.gpus[which]
        try:
            op = self.rig.rigd.stub().SetWorkload(pb.SetWorkloadRequest(
                device_ids=[gpu], workload=workload), timeout=10).operation
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc
            return
        follow(self.rig, op.operation_id)
        if self.target_w is not None:
            now = state(self.rig)
            self.expected[gpu] = {now[gpu]}

    @rule(index=st.sampled_from([1, 2]), fraction=st.sampled_from([0.7, 0.9]))
    def set_power_limit(self, index: int, fraction: float) -> None:
        """The operator's limit on a miner with a watt range (LuxOS, Whatsminer): during a
        curtailment it is kept and applied when it ends."""
        STEPS.append(f"limit miner {index} {fraction:g}")
        device_id = self.rig.asics[index]
        watts = round(3000 * fraction)
        try:
            self.rig.rigd.stub().SetPowerLimit(pb.SetPowerLimitRequest(
                device_id=device_id, power_limit_w=watts), timeout=30,
                metadata=bearer(OPERATOR_TOKEN))
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.FAILED_PRECONDITION), exc
            return
        if self.target_w is not None:
            self.holds_from = max(self.holds_from, time.monotonic() + REACT_S)
            self.expected.pop(device_id, None)  # its limit is the operator's new one
            self.expected.pop(f"sim{index}", None)

    @rule()
    def kill_and_restart(self) -> None:
        STEPS.append("SIGKILL + restart")
        self.rig.rigd.proc.send_signal(signal.SIGKILL)
        self.rig.rigd.proc.wait(timeout=10)
        self.rig.rigd = self.rig.rigd.restart()
        if self.target_w is not None:  # resumed from the rig as it is: it holds again soon
            self.holds_from = max(self.holds_from,
                                  time.monotonic() + DEADLINE_S + RAMP_S + VERIFY_S + 5.0)
        self._settle()

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def the_target_holds_or_says_why_not(self) -> None:
        if self.target_w is None:
            assert curtailment(self.rig) is None
            return
        while time.monotonic() < self.holds_from:
            time.sleep(0.1)
        readings, power = telemetry(self.rig)
        c = curtailment(self.rig)
        assert c is not None and c.rig_power_target_w == self.target_w
        if power.total_w > self.target_w:
            assert c.state == "target_not_met" and c.shortfall_w > 0, (
                f"{power.total_w:.0f} W over the {self.target_w:g} W target while the "
                f"curtailment says {c.state!r}: "
                + ", ".join(f"{d}={t.power_w:.0f}W" for d, t in readings.items()))

    @invariant()
    def every_workload_process_has_its_record(self) -> None:
        deadline = time.monotonic() + SETTLE_S
        while True:
            readings, _ = telemetry(self.rig)
            records = {"hashing": 0, "inference": 0}
            for device_id in self.rig.gpus:
                w = readings[device_id].workload
                if w.state in (pb.WORKLOAD_STATE_RUNNING, pb.WORKLOAD_STATE_STARTING):
                    records["hashing" if w.kind == pb.WORKLOAD_KIND_HASHING
                            else "inference"] += 1
            found = workload_processes(self.rig)
            if found == records:
                return
            assert time.monotonic() < deadline, f"processes {found}, records {records}"
            time.sleep(0.2)

    def _settle(self) -> None:
        """Until no operation runs (a restore, a switch): the rig is at rest."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            ops = self.rig.rigd.stub().ListOperations(pb.ListOperationsRequest(limit=50),
                                                      timeout=10).operations
            if not any(op.state == pb.OPERATION_STATE_RUNNING and op.kind != "curtail"
                       for op in ops):
                return
            assert time.monotonic() < deadline, "an operation never ended"
            time.sleep(0.2)


STEPS: list[str] = []  # every rule run, so that the test can tell it exercised the rig


def test_curtailment_holds_in_every_sequence(rig: Rig) -> None:
    assert EXAMPLES >= 1, "RIGD_PROPERTY_EXAMPLES must be at least 1"
    run_state_machine_as_test(CurtailmentSequences, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=6, deadline=None,
        suppress_health_check=list(HealthCheck), print_blob=True,
        # a real rig is not deterministic to the millisecond: a failing sequence is reported
        # as found (its steps and the blob to reproduce it), not shrunk by replaying it
        phases=[Phase.explicit, Phase.reuse, Phase.generate]))
    assert len(STEPS) >= EXAMPLES, f"the sequences ran {len(STEPS)} steps"
    print(f"{len(STEPS)} steps: {', '.join(STEPS)}")
