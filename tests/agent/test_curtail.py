"""Curtail through a real rigd: simulated GPUs (hashing on PoCL, an inference runtime drawing
power), simulated miners of three firmware families, the host's configured figure. Confirmed
from telemetry; restored exactly on expiry or cancel; kept across a restart; bad requests
refused with nothing changed."""

from __future__ import annotations

import math
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

import hal.asic
from agent.demo.pool import PoolThread
from agent.demo.rig import _best_opencl_device
from hal.sim.asic import SimFleet
from hal.sim.nvml import SimControl, demo_setup
from rigapi import pb
from tests.agent.conftest import OPERATOR_TOKEN, RigdProcess, bearer, start_rigd
from tests.agent.test_asic_rigd import asic_section

FAKE = Path(__file__).with_name("runtimes") / "fake_runtime.py"
HOST_W = 300.0


@dataclass
class Rig:
    rigd: RigdProcess
    gpus: list[str]
    asics: list[str]
    fleet: SimFleet
    sim: SimControl


def build_rig(tmp: Path, pool: PoolThread, fleet: SimFleet, order: list[str] | None = None,
              intensity: float = 0.5, curtail: dict[str, object] | None = None) -> Rig:
    options = demo_setup(tmp / "nvml", count=2)
    sim = SimControl(Path(options["sim_state_path"]), Path(options["library_path"]))
    gpus = [f"gpu/{g.uuid}" for g in sim.read().gpus]
    facet = _best_opencl_device()
    nvml = "\n".join(f'{key} = "{value}"' for key, value in options.items())
    extra = (
        "compute_facets = { " + ", ".join(f'"{g}" = "{facet}"' for g in gpus) + " }\n"
        f"[hal.nvml]\n{nvml}\nwatch_xid = false\n"
        + asic_section(fleet.discover_options())
        + f'[[hashing]]\ndevice = "{gpus[0]}"\nintensity = {intensity}\n'
        + "[inference.profiles.busy]\n"
        f'argv = ["{sys.executable}", "{FAKE}", "--port", "{{port}}", "--gpu-load", "80"]\n'
        'devices = ["gpu"]\ngrace_s = 2.0\n'
        # the same, 2 s to finish its requests once told to stop (a switch away drains it)
        + "[inference.profiles.slow-stop]\n"
        f'argv = ["{sys.executable}", "{FAKE}", "--port", "{{port}}", "--gpu-load", "80", '
        f'"--term-takes", "2", "--done-file", "{tmp}/slow-stop.done"]\n'
        'devices = ["gpu"]\ngrace_s = 5.0\n'
    )
    settings: dict[str, dict[str, object]] = {
        "pool": {"urls": [f"stratum+tcp://127.0.0.1:{pool.port}"], "user": "curtail.test"},
        "workloads": {"min_dwell_s": 0.0, "state_dir": f"{tmp}/state"},
        "power": {"host_w": HOST_W},
        "telemetry": {"interval_s": 0.5},
        # the simulated miners ramp in 0.5 s: an action shows its effect well within 3 s
        "curtail": {"verify_s": 3.0},
    }
    if order is not None:
        settings["curtail"]["order"] = order
    settings["curtail"].update(curtail or {})
    rigd = start_rigd(tmp, extra, backends=("host", "nvml", "opencl", "asic"), settings=settings)
    asics = [f"asic/{a}" for a in fleet.addresses]
    rig = Rig(rigd, gpus, asics, fleet, sim)
    wait_until(rig, lambda t: t[gpus[0]].workload.state == pb.WORKLOAD_STATE_RUNNING)
    op = switch(rig, gpus[1], pb.Workload(kind=pb.WORKLOAD_KIND_INFERENCE,
                                          inference=pb.InferenceSpec(profile="busy")))
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    return rig


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, pool: PoolThread) -> Iterator[Rig]:
    with SimFleet.of(["antminer", "luxos", "whatsminer"], warmup_s=0.3) as fleet:
        for miner in fleet.miners:
            miner.state.response_s = 0.5  # power ramps to a new target, as hash boards do
        rig = build_rig(tmp_path_factory.mktemp("curtail"), pool, fleet)
        yield rig
        assert rig.rigd.stop() == 0


# ---- helpers ---------------------------------------------------------------------------------


def telemetry(rig: Rig) -> tuple[dict[str, pb.DeviceTelemetry], pb.RigPower]:
    reply = rig.rigd.stub().GetTelemetry(pb.GetTelemetryRequest(max_age_ms=1), timeout=10)
    return {d.device_id: d for d in reply.devices}, reply.rig_power


def wait_until(rig: Rig, condition: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        readings, _ = telemetry(rig)
        if condition(readings):
            return readings
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.1)


def switch(rig: Rig, device_id: str, workload: pb.Workload) -> pb.Operation:
    stub = rig.rigd.stub()
    op = stub.SetWorkload(pb.SetWorkloadRequest(device_ids=[device_id], workload=workload),
                          timeout=10).operation
    return follow(rig, op.operation_id)


def follow(rig: Rig, operation_id: str) -> pb.Operation:
    watch = rig.rigd.stub().WatchOperation(pb.WatchOperationRequest(operation_id=operation_id),
                                           timeout=120)
    return [m.operation for m in watch][-1]


def curtail(rig: Rig, target_w: float, expiry_s: int = 600, deadline_s: int = 30,
            reason: str = "test EEA") -> pb.Operation:
    op = rig.rigd.stub().Curtail(pb.CurtailRequest(
        rig_power_target_w=target_w, deadline_s=deadline_s, expiry_s=expiry_s, reason=reason),
        timeout=10).operation
    return follow(rig, op.operation_id)


def cancel(rig: Rig) -> pb.Operation:
    op = rig.rigd.stub().CancelCurtailment(pb.CancelCurtailmentRequest(), timeout=10).operation
    return follow(rig, op.operation_id)


def state(rig: Rig) -> dict[str, tuple[Any, ...]]:
    """What restoring must bring back exactly: each device's workload and settings."""
    readings, _ = telemetry(rig)
    inventory = rig.rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10)
    out: dict[str, tuple[Any, ...]] = {}
    for device in inventory.devices:
        t = readings[device.id]
        out[device.id] = (
            device.workload.kind, t.workload.state, round(t.workload.intensity, 3),
            t.power_limit_w if t.HasField("power_limit_w") else None,
            t.asic.is_mining if t.HasField("asic") else None,
        )
    for index, miner in enumerate(rig.fleet.miners):  # and the modes each firmware holds
        out[f"sim{index}"] = (miner.state.sleeping, getattr(miner, "low_power", None),
                              getattr(miner, "profile", None))
    return out


def restored(rig: Rig, before: dict[str, tuple[Any, ...]]) -> None:
    deadline = time.monotonic() + 60
    while (now := state(rig)) != before:
        changed = {k: (before.get(k), v) for k, v in now.items() if before.get(k) != v}
        assert time.monotonic() < deadline, f"not as before: {changed}"
        time.sleep(0.2)


def serving(rig: Rig, device_id: str) -> None:
    """The device's inference runtime runs and answers its readiness endpoint."""
    readings, _ = telemetry(rig)
    w = readings[device_id].workload
    assert w.kind == pb.WORKLOAD_KIND_INFERENCE and w.state == pb.WORKLOAD_STATE_RUNNING, w
    with urllib.request.urlopen(f"{w.endpoint}/health", timeout=10) as answer:
        assert answer.status == 200


# ---- tests -----------------------------------------------------------------------------------


def test_rig_power_keeps_measured_and_estimated_apart(rig: Rig) -> None:
    readings, power = telemetry(rig)
    measured = sum(t.power_w for t in readings.values()
                   if t.power_source == pb.POWER_SOURCE_MEASURED)
    estimated = sum(t.power_w for t in readings.values()
                    if t.power_source == pb.POWER_SOURCE_ESTIMATED)
    assert power.measured_w == pytest.approx(measured)
    assert power.estimated_w == pytest.approx(estimated)
    assert power.total_w == pytest.approx(measured + estimated)
    host = next(t for d, t in readings.items() if d.startswith("host/"))
    assert host.power_w == HOST_W and host.power_source == pb.POWER_SOURCE_ESTIMATED
    antminer, luxos, whatsminer = (readings[a] for a in rig.asics)
    assert antminer.power_source == pb.POWER_SOURCE_ESTIMATED  # stock firmware: nameplate
    assert luxos.power_source == whatsminer.power_source == pb.POWER_SOURCE_MEASURED
    assert all(readings[g].power_source == pb.POWER_SOURCE_MEASURED for g in rig.gpus)
    unknown = set(power.unknown_device_ids)
    assert unknown == {d for d, t in readings.items() if not t.HasField("power_w")}


def test_curtail_to_half_then_expiry_restores_every_device(rig: Rig) -> None:
    before = state(rig)
    _, power = telemetry(rig)
    target = power.total_w / 2
    op = curtail(rig, target, expiry_s=12, deadline_s=10)
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    phases = [p.phase for p in op.phases]
    assert phases[0] == pb.SWITCH_PHASE_SHEDDING and phases[-1] == pb.SWITCH_PHASE_CONFIRMED
    c = rig.rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10).curtailment
    assert c.state == "confirmed" and c.operation_id == op.operation_id
    assert c.below_target_after_s < 30 and c.source.startswith("unix:")
    _, now = telemetry(rig)
    assert now.total_w <= target, "below target, read from telemetry"
    shed = {p.device_id for p in op.phases if p.device_id}
    # The hashing steps (the miners asleep alone save most of the rig) reach half: inference is
    # shed last, so it was not shed at all, and it serves throughout.
    assert rig.gpus[1] not in shed, "inference is shed last"
    serving(rig, rig.gpus[1])
    # While it holds, a switch may stop a workload but not start one.
    with pytest.raises(grpc.RpcError) as info:
        rig.rigd.stub().SetWorkload(pb.SetWorkloadRequest(
            device_ids=[rig.gpus[0]], workload=pb.Workload(kind=pb.WORKLOAD_KIND_HASHING)),
            timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no workload starts before it ends" in (info.value.details() or "")
    restored(rig, before)  # the expiry (12 s) puts everything back
    listed = rig.rigd.stub().ListOperations(pb.ListOperationsRequest(limit=5), timeout=10)
    restore = next(o for o in listed.operations if o.kind == "restore_curtailment")
    assert restore.state == pb.OPERATION_STATE_SUCCEEDED and "expired" in restore.detail
    assert not rig.rigd.stub().GetInventory(pb.GetInventoryRequest(),
                                            timeout=10).HasField("curtailment")


def test_a_curtailment_the_hashing_steps_meet_leaves_inference_serving(rig: Rig) -> None:
    """However the target is reached, a runtime that need not stop serves on: with inference
    last in the order and every other step enough, it is never touched."""
    before = state(rig)
    readings, power = telemetry(rig)
    inference_w = readings[rig.gpus[1]].power_w
    hashing_w = power.total_w - inference_w - HOST_W  # what the hashing steps can shed at most
    target = round(power.total_w - 0.8 * hashing_w)
    op = curtail(rig, target, deadline_s=20)
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    assert rig.gpus[1] not in {p.device_id for p in op.phases}, "inference was shed"
    end = time.monotonic() + 3
    while time.monotonic() < end:
        serving(rig, rig.gpus[1])
        time.sleep(0.2)
    assert cancel(rig).state == pb.OPERATION_STATE_SUCCEEDED
    restored(rig, before)


def test_cancel_restores_and_a_lower_target_replaces(rig: Rig) -> None:
    before = state(rig)
    _, power = telemetry(rig)
    first = curtail(rig, power.total_w * 0.8)
    assert first.state == pb.OPERATION_STATE_SUCCEEDED, first.error
    second = curtail(rig, power.total_w * 0.6, reason="deeper")
    assert second.state == pb.OPERATION_STATE_SUCCEEDED, second.error
    c = rig.rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10).curtailment
    assert c.operation_id == second.operation_id and c.reason == "deeper"
    assert c.rig_power_before_w == pytest.approx(power.total_w, rel=0.05), \
        "the replacement keeps the state from before the first"
    # A higher target gives load back in place: devices put back while the rig stays below it.
    _, deep = telemetry(rig)
    third = curtail(rig, power.total_w * 0.9, reason="lighter")
    assert third.state == pb.OPERATION_STATE_SUCCEEDED, third.error
    given = [p for p in third.phases if p.detail.startswith("given back")]
    assert given, "a raised target gives load back"
    c = rig.rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10).curtailment
    assert c.rig_power_target_w == pytest.approx(power.total_w * 0.9)
    assert c.rig_power_before_w == pytest.approx(power.total_w, rel=0.05), "raised, not restored"
    readings = wait_until(rig, lambda t: sum(d.power_w for d in t.values()
                                             if d.HasField("power_w")) > deep.total_w + 100)
    assert sum(d.power_w for d in readings.values() if d.HasField("power_w")) \
        <= power.total_w * 0.9
    restore = cancel(rig)
    assert restore.state == pb.OPERATION_STATE_SUCCEEDED, restore.error
    restored(rig, before)


def test_a_target_below_the_rig_floor_reports_the_shortfall(rig: Rig) -> None:
    antminer = next(m for m in hal.asic.discover(rig.fleet.discover_options())
                    if m.id == rig.asics[0])
    antminer.set_power_mode("low")  # the operator runs it in low mode (hal/asic/antminer.py)
    wait_until(rig, lambda t: t[rig.asics[0]].asic.is_mining)
    before = state(rig)
    op = curtail(rig, 100.0, deadline_s=20)
    assert op.state == pb.OPERATION_STATE_FAILED
    assert "target 100 W not met" in op.error and "W above" in op.error
    for asic in rig.asics:  # everything at once: each miner straight to sleep, one write
        shed = [p.detail for p in op.phases if p.device_id == asic]
        assert len(shed) == 1 and shed[0].startswith("asleep"), shed
    c = rig.rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10).curtailment
    assert c.state == "target_not_met" and c.shortfall_w > HOST_W - 100
    readings, power = telemetry(rig)
    assert power.total_w > 100
    assert readings[rig.gpus[1]].workload.kind in (0, pb.WORKLOAD_KIND_IDLE), \
        "everything the order allows is shed, inference included"
    luxos = rig.fleet.miners[1]
    assert luxos.state.sleeping
    luxos.refuse_writes = 1  # its first wake command is refused: asked again, not left asleep
    restore = cancel(rig)
    assert restore.state == pb.OPERATION_STATE_SUCCEEDED, restore.error
    assert luxos.refuse_writes == 0
    retried = [p for p in restore.phases if p.device_id == rig.asics[1]]
    assert "awake" in retried[-1].detail
    restored(rig, before)  # the Antminer woke in normal mode: put back in low mode
    antminer.set_power_mode("normal")


def test_a_rig_back_above_target_is_shed_again_and_restored_as_it_was(rig: Rig) -> None:
    whatsminer = rig.fleet.miners[2]
    before = state(rig)
    whatsminer.state.sleep()  # asleep when the curtailment starts: nothing to shed there
    wait_until(rig, lambda t: not t[rig.asics[2]].asic.is_mining)
    _, power = telemetry(rig)
    target = round(power.total_w * 0.8)
    first = curtail(rig, target)
    assert first.state == pb.OPERATION_STATE_SUCCEEDED, first.error
    assert rig.asics[2] not in {p.device_id for p in first.phases}

    whatsminer.state.wake()  # woken by hand while the curtailment holds: the rig climbs back

    def shed_again() -> pb.Operation | None:
        listed = rig.rigd.stub().ListOperations(pb.ListOperationsRequest(limit=10), timeout=10)
        for op in listed.operations:  # the newest first
            if op.operation_id == first.operation_id:
                return None
            if op.kind == "curtail":
                return op
        return None

    deadline = time.monotonic() + 60
    while (again := shed_again()) is None:
        assert time.monotonic() < deadline, "the rig above target was never shed again"
        time.sleep(0.2)
    again = follow(rig, again.operation_id)
    assert again.state == pb.OPERATION_STATE_SUCCEEDED, again.error
    assert "above target again" in again.detail
    c = rig.rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10).curtailment
    assert c.operation_id == again.operation_id and c.state == "confirmed"
    assert c.rig_power_target_w == target
    _, now = telemetry(rig)
    assert now.total_w <= target, "below target again, read from telemetry"

    # The miner woken by hand is put back awake: as it was when the curtailment touched it.
    assert cancel(rig).state == pb.OPERATION_STATE_SUCCEEDED
    restored(rig, before)


@pytest.mark.parametrize(
    ("target_w", "deadline_s", "expiry_s", "reason", "fragment"),
    [
        (-5.0, 10, 60, "", "must be a positive number of watts"),
        (math.nan, 10, 60, "", "must be a positive number of watts"),
        (0.0, 10, 60, "", "must be a positive number of watts"),
        (math.inf, 10, 60, "", "must be a positive number of watts"),
        (1000.0, 0, 60, "", "deadline_s must be within 1 .. 3600"),
        (1000.0, 3601, 7200, "", "deadline_s must be within 1 .. 3600"),
        (1000.0, 10, 0, "", "expiry_s must be within 1 .. 86400"),
        (1000.0, 10, 86401, "", "expiry_s must be within 1 .. 86400"),
        (1000.0, 60, 30, "", "must not come before deadline_s"),
        (1000.0, 10, 60, "x" * 201, "reason: at most 200 characters"),
    ],
)
def test_bad_curtail_requests_are_refused(rig: Rig, target_w: float, deadline_s: int,
                                          expiry_s: int, reason: str, fragment: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        rig.rigd.stub().Curtail(pb.CurtailRequest(
            rig_power_target_w=target_w, deadline_s=deadline_s, expiry_s=expiry_s,
            reason=reason), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (info.value.details() or "")
    assert not rig.rigd.stub().GetInventory(pb.GetInventoryRequest(),
                                            timeout=10).HasField("curtailment")


def test_cancel_without_a_curtailment_is_refused(rig: Rig) -> None:
    with pytest.raises(grpc.RpcError) as info:
        rig.rigd.stub().CancelCurtailment(pb.CancelCurtailmentRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_viewers_cannot_curtail(rig: Rig) -> None:
    with pytest.raises(grpc.RpcError) as info:
        rig.rigd.stub(tcp=True).Curtail(pb.CurtailRequest(
            rig_power_target_w=1000, deadline_s=10, expiry_s=60), timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    lines = rig.rigd.audit_path.read_text().splitlines()
    assert '"method": "Curtail"' in lines[-1] and "PERMISSION_DENIED" in lines[-1]


# ---- the operator's settings and restarts: rigs of their own ---------------------------------


def test_an_operator_limit_set_during_a_curtailment_survives_it(tmp_path: Path,
                                                                pool: PoolThread) -> None:
    with SimFleet.of(["luxos"], warmup_s=0.3) as fleet:
        rig = build_rig(tmp_path, pool, fleet, order=["gpu_power_limit", "hashing_stop"],
                        intensity=1.0)
        try:
            stub = rig.rigd.stub(tcp=True)
            md = bearer(OPERATOR_TOKEN)
            readings, power = telemetry(rig)
            gpu = rig.gpus[0]
            # Enough to need both GPU caps and the miner turned down.
            caps = sum(readings[g].power_w - readings[g].gpu.power_limit_min_w
                       for g in rig.gpus)
            op = curtail(rig, power.total_w - caps - readings[rig.asics[0]].power_w / 3)
            assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
            capped = telemetry(rig)[0][gpu]
            assert capped.power_limit_w == capped.gpu.power_limit_min_w
            reply = stub.SetPowerLimit(pb.SetPowerLimitRequest(device_id=gpu,
                                                               power_limit_w=450),
                                       metadata=md, timeout=10)
            assert reply.requested_w == 450 and reply.power_limit_w == capped.power_limit_w
            assert "capped at" in reply.detail
            luxos = rig.asics[0]
            reply = stub.SetPowerLimit(pb.SetPowerLimitRequest(device_id=luxos,
                                                               power_limit_w=1900),
                                       metadata=md, timeout=10)
            assert "applies when it ends" in reply.detail
            assert cancel(rig).state == pb.OPERATION_STATE_SUCCEEDED
            readings, _ = telemetry(rig)
            assert readings[gpu].power_limit_w == 450, "the operator's limit, not the default"
            assert readings[luxos].power_limit_w <= 1900
            assert readings[luxos].power_limit_w > 1000, "the operator's profile, not the cap"
            # and after a restart the GPU keeps the operator's value (the cap is gone for good)
            assert rig.rigd.stop() == 0
            rig.rigd = rig.rigd.restart()
            assert telemetry(rig)[0][gpu].power_limit_w == 450
        finally:
            rig.rigd.stop()


def test_a_restart_keeps_the_curtailment_until_its_expiry(tmp_path: Path,
                                                          pool: PoolThread) -> None:
    with SimFleet.of(["antminer", "whatsminer"], warmup_s=0.3) as fleet:
        rig = build_rig(tmp_path, pool, fleet)
        try:
            before = state(rig)
            _, power = telemetry(rig)
            target = power.total_w / 2
            op = curtail(rig, target, expiry_s=25, deadline_s=10)
            assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
            expire_time = rig.rigd.stub().GetInventory(
                pb.GetInventoryRequest(), timeout=10).curtailment.expire_time
            assert rig.rigd.stop() == 0
            rig.rigd = rig.rigd.restart()
            c = rig.rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10).curtailment
            # still in force after the restart, resumed in a round of its own that names it
            assert c.rig_power_target_w == target and c.expire_time == expire_time
            resumed = rig.rigd.stub().GetOperation(
                pb.GetOperationRequest(operation_id=c.operation_id), timeout=10).operation
            assert op.operation_id in resumed.detail and "resumed" in resumed.detail
            # What the curtailment stopped stays stopped; the rig stays below target.
            wait_until(rig, lambda t: True)
            readings, now = telemetry(rig)
            assert now.total_w <= target
            assert readings[rig.gpus[0]].workload.kind in (0, pb.WORKLOAD_KIND_IDLE)
            restored(rig, before)  # at the expiry
        finally:
            rig.rigd.stop()
