"""What a workload process tells the device it computes on.

A workload (the hashing worker, an inference runtime) runs in a process of its own with the
environment its device gave it (`Device.workload_env()`). On a real GPU its CUDA or OpenCL
context is what NVML shows; on a simulated GPU nothing would, so the workload says what it holds
here and the simulator shows it the same way (NVML lists the process and its memory until it
exits or lets go).
"""

from __future__ import annotations


def occupy_device(mem_bytes: int, util_pct: int) -> bool:
    """Hold `mem_bytes` of device memory as this process, keeping the device `util_pct` busy;
    0 bytes lets go. False, and nothing done, where the device is real (its context does it)."""
    from hal.sim.nvml import attach_from_env

    return attach_from_env(mem_bytes, util_pct)
