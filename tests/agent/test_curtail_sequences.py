"""Curtailment in the orders of calls nobody planned, through the gRPC API of a real rigd on the
demo's parts (simulated H100s hashing on PoCL, an inference runtime drawing power, miners of three
firmware families ramping their power as hash boards do): curtail right after a restore, rigd
SIGKILLed 30 ms after Curtail, a switch admitted just before a Curtail.

The invariant every test checks from GetTelemetry and GetInventory: while a curtailment is in
force, from its deadline plus the simulators' ramp on, the rig reads at or below its target, or
the curtailment says it is not met, with the shortfall in watts."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

import hal.asic
from agent.demo.pool import PoolThread
from hal.sim.asic import SimFleet
from hal.sim.asic.server import Fault
from rigapi import pb
from tests.agent.test_curtail import (
    Rig,
    build_rig,
    cancel,
    follow,
    restored,
    state,
    telemetry,
    wait_until,
)

RAMP_S = 0.5  # the simulated miners' power ramp (SimFleet response_s)
HOLD_S = 4.0  # how long the invariant is watched once it must hold


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, pool: PoolThread) -> Iterator[Rig]:
    with SimFleet.of(["antminer", "luxos", "whatsminer"], warmup_s=0.3) as fleet:
        for miner in fleet.miners:
            miner.state.response_s = RAMP_S
        rig = build_rig(tmp_path_factory.mktemp("sequences"), pool, fleet)
        yield rig
        assert rig.rigd.stop() == 0


def ask_curtail(rig: Rig, target_w: float, deadline_s: float = 10, expiry_s: float = 600
                ) -> pb.Operation:
    return rig.rigd.stub().Curtail(pb.CurtailRequest(
        rig_power_target_w=target_w, deadline_s=deadline_s, expiry_s=expiry_s,
        reason="sequence test"), timeout=10).operation


def curtailment(rig: Rig) -> pb.Curtailment | None:
    inventory = rig.rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10)
    return inventory.curtailment if inventory.HasField("curtailment") else None


def holds(rig: Rig, target_w: float, until_s: float, watch_s: float = HOLD_S) -> None:
    """From `until_s` (monotonic: the deadline plus the ramp) on, for watch_s: the rig reads at
    or below target, or the curtailment in force says it is not met and by how much."""
    while time.monotonic() < until_s:
        time.sleep(0.1)
    end = time.monotonic() + watch_s
    while time.monotonic() < end:
        readings, power = telemetry(rig)
        c = curtailment(rig)
        assert c is not None and c.rig_power_target_w == target_w, "the curtailment is in force"
        if power.total_w > target_w:
            assert c.state == "target_not_met" and c.shortfall_w > 0, (
                f"the rig reads {power.total_w:.0f} W over its {target_w:g} W target while the "
                f"curtailment says {c.state!r}: "
                + ", ".join(f"{d}={t.power_w:.0f}W" for d, t in readings.items()))
        time.sleep(0.1)


def floor_target(rig: Rig) -> float:
    """A target the rig can reach only with every miner asleep and the hashing stopped."""
    readings, power = telemetry(rig)
    miners = sum(t.power_w for d, t in readings.items() if d in rig.asics)
    return round(power.total_w - miners * 0.9 - 100)


@pytest.mark.parametrize("pause_s", [0.0, 0.05, 0.5])
def test_curtail_right_after_a_restore_sheds_the_miners_still_waking(
        rig: Rig, pause_s: float) -> None:
    before = state(rig)
    target = floor_target(rig)
    first = follow(rig, ask_curtail(rig, target).operation_id)
    assert first.state == pb.OPERATION_STATE_SUCCEEDED, first.error
    assert cancel(rig).state == pb.OPERATION_STATE_SUCCEEDED  # the miners are waking now
    time.sleep(pause_s)
    asked = time.monotonic()
    # A deadline shorter than curtail.settle_s (5 s): waiting for the woken miners to show up
    # above target and shedding them then would be too late.
    second = ask_curtail(rig, target, deadline_s=2)
    holds(rig, target, asked + 2 + RAMP_S + 1.0)
    assert follow(rig, second.operation_id).state == pb.OPERATION_STATE_SUCCEEDED
    assert cancel(rig).state == pb.OPERATION_STATE_SUCCEEDED
    restored(rig, before)


def test_a_switch_admitted_before_a_curtail_waits_for_it_to_end(rig: Rig) -> None:
    """GPU 1 serves inference from a runtime that takes 2 s to finish its requests; a switch
    to hashing is admitted; a Curtail follows while it drains, before the worker starts: the
    switch waits at its start while the curtailment holds (its operation says so), the rig stays
    below target, and the switch completes once the curtailment ends."""
    before = state(rig)
    gpu = rig.gpus[1]
    stub = rig.rigd.stub()
    slow = follow(rig, stub.SetWorkload(pb.SetWorkloadRequest(
        device_ids=[gpu], workload=pb.Workload(kind=pb.WORKLOAD_KIND_INFERENCE,
                                               inference=pb.InferenceSpec(profile="slow-stop"))),
        timeout=10).operation.operation_id)
    assert slow.state == pb.OPERATION_STATE_SUCCEEDED, slow.error
    switch = stub.SetWorkload(pb.SetWorkloadRequest(
        device_ids=[gpu], workload=pb.Workload(kind=pb.WORKLOAD_KIND_HASHING)),
        timeout=10).operation
    _, power = telemetry(rig)
    target = round(power.total_w * 0.6)
    asked = time.monotonic()
    ask_curtail(rig, target, deadline_s=5)
    end = asked + 5 + RAMP_S + 1.0 + HOLD_S
    while time.monotonic() < end:
        readings, _ = telemetry(rig)
        w = readings[gpu].workload
        assert not (w.kind == pb.WORKLOAD_KIND_HASHING and w.state == pb.WORKLOAD_STATE_RUNNING
                    and curtailment(rig) is not None), "a workload started under a curtailment"
        time.sleep(0.1)
    holds(rig, target, 0.0, watch_s=1.0)
    waiting = stub.GetOperation(pb.GetOperationRequest(operation_id=switch.operation_id),
                                timeout=10).operation
    assert waiting.state == pb.OPERATION_STATE_RUNNING
    assert any("waiting to start: curtailment" in p.detail for p in waiting.phases), waiting
    assert cancel(rig).state == pb.OPERATION_STATE_SUCCEEDED
    done = follow(rig, switch.operation_id)
    assert done.state == pb.OPERATION_STATE_SUCCEEDED, done.error
    wait_until(rig, lambda t: t[gpu].workload.kind == pb.WORKLOAD_KIND_HASHING
               and t[gpu].workload.state == pb.WORKLOAD_STATE_RUNNING)
    back = rig.rigd.stub().SetWorkload(pb.SetWorkloadRequest(
        device_ids=[gpu], workload=pb.Workload(kind=pb.WORKLOAD_KIND_INFERENCE,
                                               inference=pb.InferenceSpec(profile="busy"))),
        timeout=10).operation
    assert follow(rig, back.operation_id).state == pb.OPERATION_STATE_SUCCEEDED
    restored(rig, before)


def test_rigd_killed_30_ms_after_curtail_resumes_shedding_after_its_restart(
        rig: Rig) -> None:
    """The journal holds the curtailment 'shedding' with no action taken; the restarted rigd
    re-plans from the rig as it is, sheds, and keeps the curtailment's deadline and expiry."""
    before = state(rig)
    _, power = telemetry(rig)
    target = round(power.total_w * 0.5)
    ask_curtail(rig, target, deadline_s=3, expiry_s=120)
    time.sleep(0.03)
    os.kill(rig.rigd.proc.pid, signal.SIGKILL)
    rig.rigd.proc.wait(timeout=10)
    rig.rigd = rig.rigd.restart()
    restarted = time.monotonic()
    c = curtailment(rig)
    assert c is not None and c.rig_power_target_w == target, "still in force after the restart"
    # The deadline has passed: from the restart plus the rig's bring-up and the ramp, it holds.
    holds(rig, target, restarted + 10.0)
    c = curtailment(rig)
    assert c is not None and c.state != "shedding", f"still {c.state!r} long after its deadline"
    assert cancel(rig).state == pb.OPERATION_STATE_SUCCEEDED
    restored(rig, before)


def test_a_confirmed_curtailment_is_confirmed_after_a_crash(rig: Rig) -> None:
    """What rigd journals is what a restarted rigd reports: a curtailment confirmed before a
    SIGKILL is still confirmed after it, with its time below target, and still holds."""
    before = state(rig)
    _, power = telemetry(rig)
    target = round(power.total_w * 0.5)
    op = follow(rig, ask_curtail(rig, target, deadline_s=10).operation_id)
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    confirmed = curtailment(rig)
    assert confirmed is not None and confirmed.state == "confirmed"
    os.kill(rig.rigd.proc.pid, signal.SIGKILL)
    rig.rigd.proc.wait(timeout=10)
    rig.rigd = rig.rigd.restart()
    after = curtailment(rig)
    assert after is not None and after.state == "confirmed", after
    assert after.below_target_after_s == pytest.approx(confirmed.below_target_after_s)
    holds(rig, target, time.monotonic() + RAMP_S + 1.0)
    assert cancel(rig).state == pb.OPERATION_STATE_SUCCEEDED
    restored(rig, before)


def test_a_miner_that_accepts_sleep_and_ignores_it_is_found_out(rig: Rig) -> None:
    """The LuxOS miner answers every command as done and changes nothing (Fault.IGNORE): its
    sleep is sent again after curtail.verify_s, then counted failed with what its own reading
    showed, and the plan sheds elsewhere; the operation says what it was asked and what it did."""
    before = state(rig)
    luxos_sim, luxos = rig.fleet.miners[1], rig.asics[1]
    luxos_sim.fault = Fault.IGNORE
    try:
        target = floor_target(rig)
        op = follow(rig, ask_curtail(rig, target, deadline_s=10).operation_id)
        said = [p.detail for p in op.phases if p.device_id == luxos]
        assert any("sent again" in d for d in said), said
        assert any("accepted but never took effect" in d and "mining" in d for d in said), said
        readings, power = telemetry(rig)
        assert readings[luxos].asic.is_mining, "it really ignored the sleep"
        shed = {p.device_id for p in op.phases if p.device_id and p.device_id != luxos}
        assert rig.gpus[1] in shed, "the plan shed elsewhere, down to inference"
        c = curtailment(rig)
        assert c is not None
        if power.total_w > target:
            assert c.state == "target_not_met" and luxos in op.error and "no effect" in op.error
        assert cancel(rig).state == pb.OPERATION_STATE_SUCCEEDED
    finally:
        luxos_sim.fault = Fault.NONE
    restored(rig, before)


def test_rigd_killed_while_firmwares_answer_its_commands_puts_every_miner_back(
        rig: Rig) -> None:
    """Every miner takes a command at once and answers it 0.7 s later (Fault.SLOW): rigd is
    SIGKILLed as soon as one firmware has changed, before any answer came. How each miner was
    must be on disk before its command went out: the restarted rigd, cancelled, puts every
    miner back as it was (journaled only after the answers, the restart took the changed
    miner's setting for how it was, and left it so)."""
    before = state(rig)
    sims = rig.fleet.miners

    def settings() -> list[tuple[Any, ...]]:
        return [(m.state.sleeping, m.state.power_target_w, getattr(m, "low_power", None),
                 getattr(m, "profile", None)) for m in sims]

    was = settings()
    _, power = telemetry(rig)
    for miner in sims:
        miner.slow_s, miner.fault = 0.7, Fault.SLOW  # within the 1 s a command may take
    try:
        ask_curtail(rig, round(power.total_w * 0.5), deadline_s=3, expiry_s=120)
        deadline = time.monotonic() + 30
        while settings() == was:
            assert time.monotonic() < deadline, "no miner was sent a command"
            time.sleep(0.005)
        os.kill(rig.rigd.proc.pid, signal.SIGKILL)
        rig.rigd.proc.wait(timeout=10)
    finally:
        for miner in sims:
            miner.fault = Fault.NONE
    rig.rigd = rig.rigd.restart()
    assert cancel(rig).state == pb.OPERATION_STATE_SUCCEEDED
    restored(rig, before)


def test_a_miner_asleep_across_a_restart_wakes_in_the_mode_it_had(rig: Rig) -> None:
    """The Antminer runs in low mode when the curtailment puts it to sleep; rigd is SIGKILLed
    and restarted, so the firmware client that wakes it never saw it go to sleep (an Antminer
    wakes in normal mode): the restore reads its mode back and puts it in low mode again."""
    antminer = next(m for m in hal.asic.discover(rig.fleet.discover_options())
                    if m.id == rig.asics[0])
    antminer.set_power_mode("low")
    try:
        wait_until(rig, lambda t: t[rig.asics[0]].asic.is_mining)
        before = state(rig)
        follow(rig, ask_curtail(rig, floor_target(rig), deadline_s=10).operation_id)
        assert rig.fleet.miners[0].state.sleeping, "the plan put the Antminer to sleep"
        os.kill(rig.rigd.proc.pid, signal.SIGKILL)
        rig.rigd.proc.wait(timeout=10)
        rig.rigd = rig.rigd.restart()
        assert cancel(rig).state == pb.OPERATION_STATE_SUCCEEDED
        restored(rig, before)
    finally:
        antminer.set_power_mode("normal")
