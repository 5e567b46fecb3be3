"""The field's own NVML clients on the simulated libnvidia-ml.so.1: gpustat and nvitop run
without errors and show what rigd reads (temperature, power, memory used, processes); and a
driver that silently drops a power-limit write is caught by rigd's read-back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SimRig = Any  # tests/nvml/conftest.py
GIB = 1 << 30
BIN = Path(sys.executable).parent
# rigd reads nvmlDeviceGetMemoryInfo (v1), whose "used" includes the driver's reserved memory
# (H100 512 MiB, RTX 4090 300 MiB); gpustat and nvitop read the _v2 struct, whose "used" does
# not. The two GPUs of every rig here are an H100 and an RTX 4090.
RESERVED_BYTES = [512 << 20, 300 << 20]


def _client_env(rig: SimRig) -> dict[str, str]:
    return {**os.environ, "LD_LIBRARY_PATH": str(rig.library.parent),
            "RIGD_NVML_SIM_STATE": str(rig.control.state_path), "TERM": "xterm",
            "COLUMNS": "200"}


def _rigd_reading(rig: SimRig) -> list[dict[str, Any]]:
    return rig.run("""
        out = []
        for gpu in discover():
            t = gpu.telemetry()
            out.append({"temp_c": t.temp_c, "power_w": t.power_w,
                        "mem_used_bytes": t.gpu.mem_used_bytes,
                        "pids": sorted(p.pid for p in t.gpu.processes)})
        emit(out)
    """)


def test_gpustat_shows_what_rigd_reads(make_rig: Any, workload: Any) -> None:
    rig = make_rig(["h100-sxm-80gb", "rtx-4090"], tau_s=0.01)  # temperatures settle at once
    proc = workload()
    rig.control.attach_load(0, pid=proc.pid, mem_bytes=20 * GIB, util_pct=90)
    ours = _rigd_reading(rig)
    run = subprocess.run([str(BIN / "gpustat"), "--json"], env=_client_env(rig),
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    theirs = json.loads(run.stdout)["gpus"]
    assert len(theirs) == len(ours) == 2
    for mine, shown, reserved in zip(ours, theirs, RESERVED_BYTES, strict=True):
        assert shown["temperature.gpu"] == round(mine["temp_c"])
        assert shown["power.draw"] == int(mine["power_w"])
        assert shown["memory.used"] * 2**20 == mine["mem_used_bytes"] - reserved
        assert sorted(p["pid"] for p in shown["processes"]) == mine["pids"]
    assert ours[0]["pids"] == [proc.pid]
    assert ours[0]["mem_used_bytes"] == 20 * GIB + RESERVED_BYTES[0]


def test_nvitop_shows_what_rigd_reads(make_rig: Any, workload: Any) -> None:
    rig = make_rig(["h100-sxm-80gb", "rtx-4090"], tau_s=0.01)
    proc = workload()
    rig.control.attach_load(1, pid=proc.pid, mem_bytes=6 * GIB, util_pct=50)
    ours = _rigd_reading(rig)
    once = subprocess.run([str(BIN / "nvitop"), "--once"], env=_client_env(rig),
                          capture_output=True, text=True, timeout=60, check=False)
    assert once.returncode == 0, once.stderr
    assert "Error" not in once.stderr and "FunctionNotFound" not in once.stdout, once.stderr
    script = """
import json
from nvitop import Device
out = []
for d in Device.all():
    out.append({"temp": d.temperature(), "power_mw": d.power_usage(),
                "mem": d.memory_used(), "pids": sorted(d.processes())})
print(json.dumps(out))
"""
    api = subprocess.run([sys.executable, "-c", script], env=_client_env(rig),
                         capture_output=True, text=True, timeout=60, check=False)
    assert api.returncode == 0, api.stderr
    theirs = json.loads(api.stdout)
    for mine, shown, reserved in zip(ours, theirs, RESERVED_BYTES, strict=True):
        assert shown["temp"] == round(mine["temp_c"])  # nvitop reads nvmlDeviceGetTemperatureV
        assert shown["power_mw"] / 1000 == mine["power_w"]
        assert shown["mem"] == mine["mem_used_bytes"] - reserved
        assert shown["pids"] == mine["pids"]
    assert ours[1]["pids"] == [proc.pid]


def test_linux_only_answers_match_a_real_driver(rig: SimRig) -> None:
    result = rig.run("""
        import pynvml
        discover()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        out = {"temp_v": pynvml.nvmlDeviceGetTemperatureV(h, 0),
               "temp": pynvml.nvmlDeviceGetTemperature(h, 0)}
        try:
            pynvml.nvmlDeviceGetDriverModel(h)
        except pynvml.NVMLError as exc:
            out["driver_model"] = type(exc).__name__
        emit(out)
    """)
    assert result["temp_v"] == result["temp"]
    assert result["driver_model"] == "NVMLError_NotSupported"  # WDDM/TCC: Windows only


def test_a_dropped_power_limit_write_is_caught_by_the_read_back(rig: SimRig) -> None:
    rig.control.set_drop_power_writes(True)
    result = rig.run("""
        gpu = discover()[0]
        emit({"error": error_of(gpu.set_power_limit, 450),
              "after": gpu.telemetry().power_limit_w})
    """)
    assert result["error"] is not None
    assert "reads back 700 W" in result["error"]["message"]
    assert result["after"] == 700.0
    assert rig.control.read().gpus[0].power_limit_mw == 0
    uuid = rig.control.read().gpus[0].uuid
    assert uuid not in rig.desired()  # a write that did not happen is not desired state
