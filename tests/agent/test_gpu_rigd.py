"""GPUs through rigd: the real hal.nvml and pynvml against the simulated libnvidia-ml.so.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hal.sim.nvml import SimControl, demo_setup
from rigapi import pb
from tests.agent.conftest import OPERATOR_TOKEN, RigdProcess, bearer, start_rigd


@pytest.fixture
def gpu_rig(tmp_path: Path) -> Iterator[tuple[RigdProcess, SimControl]]:
    options = demo_setup(tmp_path / "nvml", count=2)
    control = SimControl(Path(options["sim_state_path"]), Path(options["library_path"]))
    nvml = "\n".join(f'{key} = "{value}"' for key, value in options.items())
    rigd = start_rigd(tmp_path, f"[hal.nvml]\n{nvml}\n", backends=("host", "nvml"))
    yield rigd, control
    rigd.stop()


def gpu_ids(rigd: RigdProcess) -> list[str]:
    inventory = rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10)
    gpus = [d for d in inventory.devices if d.kind == pb.DEVICE_KIND_GPU]
    assert all(d.simulated and "set_power_limit" in d.capabilities for d in gpus)
    return [d.id for d in gpus]


def set_limit(rigd: RigdProcess, device_id: str, watts: float) -> pb.SetPowerLimitResponse:
    return rigd.stub(tcp=True).SetPowerLimit(
        pb.SetPowerLimitRequest(device_id=device_id, power_limit_w=watts),
        metadata=bearer(OPERATOR_TOKEN), timeout=10)


def test_power_limit_is_applied_read_back_and_seen_in_telemetry(
    gpu_rig: tuple[RigdProcess, SimControl]
) -> None:
    rigd, _ = gpu_rig
    first, second = gpu_ids(rigd)
    assert set_limit(rigd, first, 450).power_limit_w == pytest.approx(450)
    reading = rigd.stub().GetTelemetry(pb.GetTelemetryRequest(device_ids=[first], max_age_ms=1),
                                       timeout=10).devices[0]
    assert reading.power_limit_w == pytest.approx(450)
    assert reading.gpu.power_limit_max_w == pytest.approx(700)
    other = rigd.stub().GetTelemetry(pb.GetTelemetryRequest(device_ids=[second], max_age_ms=1),
                                     timeout=10).devices[0]
    assert other.power_limit_w == pytest.approx(700), "only the named GPU changes"


def test_out_of_range_limit_is_refused_with_the_range_and_changes_nothing(
    gpu_rig: tuple[RigdProcess, SimControl]
) -> None:
    rigd, _ = gpu_rig
    gpu = gpu_ids(rigd)[0]
    with pytest.raises(grpc.RpcError) as info:
        set_limit(rigd, gpu, 900)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "200" in (info.value.details() or "") and "700" in (info.value.details() or "")
    reading = rigd.stub().GetTelemetry(pb.GetTelemetryRequest(device_ids=[gpu], max_age_ms=1),
                                       timeout=10).devices[0]
    assert reading.power_limit_w == pytest.approx(700)


def test_missing_privilege_is_permission_denied_with_a_hint(
    gpu_rig: tuple[RigdProcess, SimControl]
) -> None:
    rigd, control = gpu_rig
    control.set_no_permission(True)
    with pytest.raises(grpc.RpcError) as info:
        set_limit(rigd, gpu_ids(rigd)[0], 400)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "CAP_SYS_ADMIN" in (info.value.details() or "")


def test_a_lost_gpu_is_unhealthy_while_the_other_keeps_reporting(
    gpu_rig: tuple[RigdProcess, SimControl]
) -> None:
    rigd, control = gpu_rig
    first, second = gpu_ids(rigd)
    control.set_lost(0, True)
    # A reading asked for with max_age_ms=1 is taken after the request: no waiting needed.
    readings = {r.device_id: r for r in rigd.stub().GetTelemetry(
        pb.GetTelemetryRequest(max_age_ms=1), timeout=10).devices}
    assert readings[first].health.state == pb.HEALTH_STATE_UNHEALTHY
    assert not readings[first].HasField("power_w")
    assert readings[second].health.state == pb.HEALTH_STATE_HEALTHY
    assert readings[second].power_w > 0
    control.set_lost(0, False)
    again = rigd.stub().GetTelemetry(pb.GetTelemetryRequest(device_ids=[first], max_age_ms=1),
                                     timeout=10).devices[0]
    assert again.health.state == pb.HEALTH_STATE_HEALTHY and again.power_w > 0
