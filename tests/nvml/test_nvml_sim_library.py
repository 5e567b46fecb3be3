"""The simulated libnvidia-ml.so.1 itself: build cache, ABI surface, control channel, sharing."""

from __future__ import annotations

import ctypes
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hal.errors import InvalidArgument
from hal.sim.nvml import SimControl, build_library, demo_setup

SimRig = Any  # tests/nvml/conftest.py

# Every C symbol pynvml (nvidia-ml-py 13.x) resolves for the calls hal/nvml.py makes.
RESOLVED_BY_BACKEND = [
    "nvmlInitWithFlags", "nvmlShutdown", "nvmlErrorString", "nvmlSystemGetDriverVersion",
    "nvmlSystemGetNVMLVersion", "nvmlSystemGetCudaDriverVersion_v2", "nvmlDeviceGetCount_v2",
    "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByUUID", "nvmlDeviceGetName",
    "nvmlDeviceGetUUID", "nvmlDeviceGetSerial", "nvmlDeviceGetPciInfo_v3",
    "nvmlDeviceGetTemperature", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetPowerManagementLimit",
    "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPowerManagementDefaultLimit",
    "nvmlDeviceGetPowerManagementLimitConstraints", "nvmlDeviceSetPowerManagementLimit",
    "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetClockInfo", "nvmlDeviceGetMaxClockInfo",
    "nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks",
    "nvmlDeviceSetMemoryLockedClocks", "nvmlDeviceResetMemoryLockedClocks",
    "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetFanSpeed",
    "nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetPersistenceMode",
    "nvmlDeviceSetPersistenceMode", "nvmlDeviceGetPerformanceState", "nvmlEventSetCreate",
    "nvmlDeviceGetSupportedEventTypes", "nvmlDeviceRegisterEvents", "nvmlEventSetWait_v2",
    "nvmlEventSetFree", "rigdSimVersion",
]
# Also exported, for other NVML clients: versioned aliases and the rest of the common surface.
OTHER_CLIENTS = [
    "nvmlInit_v2", "nvmlDeviceGetHandleByPciBusId_v2", "nvmlDeviceGetIndex",
    "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetClock", "nvmlDeviceGetFanSpeed_v2",
    "nvmlDeviceGetNumFans", "nvmlDeviceGetGraphicsRunningProcesses_v3",
    "nvmlDeviceGetComputeMode", "nvmlDeviceSetPowerManagementLimit_v2",
    "nvmlSystemGetCudaDriverVersion", "nvmlSystemGetProcessName",
]


def test_build_is_cached_and_has_the_soname(tmp_path: Path, nvml_library: Path) -> None:
    first = build_library(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert build_library(tmp_path) == first
    assert first.stat().st_mtime_ns == stamp  # not rebuilt
    dynamic = subprocess.run(["readelf", "-d", str(first)], capture_output=True, text=True,
                             check=True).stdout
    assert "Library soname: [libnvidia-ml.so.1]" in dynamic


def test_exports_every_symbol_pynvml_resolves(nvml_library: Path) -> None:
    lib = ctypes.CDLL(str(nvml_library))
    missing = [name for name in RESOLVED_BY_BACKEND + OTHER_CLIENTS if not hasattr(lib, name)]
    assert missing == []
    assert not hasattr(lib, "nvmlDeviceDoesNotExist")  # hasattr really probes the library


def test_unmodelled_features_answer_not_supported(rig: SimRig) -> None:
    result = rig.run("""
        import pynvml
        devices = discover()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        calls = {
            "encoder": lambda: pynvml.nvmlDeviceGetEncoderUtilization(h),
            "decoder": lambda: pynvml.nvmlDeviceGetDecoderUtilization(h),
            "mig": lambda: pynvml.nvmlDeviceGetMigMode(h),
            "ecc": lambda: pynvml.nvmlDeviceGetEccMode(h),
            "cc": lambda: pynvml.nvmlDeviceGetCudaComputeCapability(h),
            "fields": lambda: pynvml.nvmlDeviceGetFieldValues(h, [1]),
            "fan_h100": lambda: pynvml.nvmlDeviceGetFanSpeed(h),
        }
        out = {}
        for name, call in calls.items():
            try:
                call()
                out[name] = "ok"
            except pynvml.NVMLError as exc:
                out[name] = type(exc).__name__
        emit(out)
    """)
    assert set(result.values()) == {"NVMLError_NotSupported"}, result


def test_control_channel_rejects_bad_commands(rig: SimRig, tmp_path: Path,
                                              nvml_library: Path) -> None:
    control = rig.control
    with pytest.raises(InvalidArgument, match="no process"):
        control.attach_load(0, pid=2**22 + 12345, mem_bytes=1, util_pct=10)
    with pytest.raises(InvalidArgument, match="gpu="):
        control.inject_xid(7, 48)
    with pytest.raises(InvalidArgument):
        control.configure(["h200-imaginary"])
    with pytest.raises(InvalidArgument):
        control.attach_load(0, pid=-1, mem_bytes=1, util_pct=10)
    with pytest.raises(InvalidArgument, match="util_pct"):
        control.command("attach gpu=0 pid=1 mem_bytes=1 util_pct=101")
    unconfigured = SimControl(tmp_path / "never-configured", nvml_library)
    with pytest.raises(InvalidArgument, match="cannot read"):
        unconfigured.driver_reload()
    assert len(control.read().gpus) == 3 and control.read().loads == ()


def test_concurrent_setters_in_two_processes_both_persist(rig: SimRig) -> None:
    body = """
        gpu = discover(watch_xid=False)[{index}]
        for watts in range({low}, {low} + 40):
            gpu.set_power_limit(watts)
        emit(gpu.telemetry().power_limit_w)
    """
    with ThreadPoolExecutor(2) as pool:
        h100 = pool.submit(rig.run, body.format(index=0, low=300))
        rtx = pool.submit(rig.run, body.format(index=2, low=200))
        assert (h100.result(), rtx.result()) == (339.0, 239.0)
    gpus = rig.control.read().gpus
    assert (gpus[0].power_limit_mw, gpus[2].power_limit_mw) == (339_000, 239_000)


def test_a_second_user_of_the_state_dir_reapplies_the_latest_limit_not_its_copy(
        rig: SimRig) -> None:
    """Two HAL sessions on one state_dir (rigd and a script, or two scripts): the one that
    read the desired state first must not put its stale copy back on the GPU."""
    result = rig.run("""
        first = discover(watch_xid=False)[0]
        first.set_power_limit(300)
        second = discover(watch_xid=False)[0]  # reads the desired state: 300 W
        first.set_power_limit(339)
        second.reapply_desired_state("driver reload")  # as after a reset it noticed
        emit([second.telemetry().power_limit_w, first.telemetry().power_limit_w])
    """)
    assert result == [339.0, 339.0]
    assert rig.control.read().gpus[0].power_limit_mw == 339_000


def test_demo_setup_gives_four_h100s(tmp_path: Path) -> None:
    options = demo_setup(tmp_path)
    assert set(options) == {"library_path", "sim_state_path", "state_dir"}
    state = SimControl(Path(options["sim_state_path"]), Path(options["library_path"])).read()
    assert [g.profile for g in state.gpus] == ["h100-sxm-80gb"] * 4
