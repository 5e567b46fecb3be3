"""The embedded demo rig: a self-contained configuration that works on any machine.

It assembles the host, whatever real discovery finds, and the simulated devices of each backend
(each marked simulated in inventory), all on loopback: four H100s behind a simulated NVML, three
ASIC miners' firmware, and a local Stratum pool. Each simulated GPU hashes for real: its compute
facet is the best OpenCL device of the machine (the configuration's hal.compute_facets), and its
hashing worker registers GPU memory with the simulated driver as a real one would hold it.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from agent.config.settings import Config, HashingConfig

log = structlog.get_logger("rigd.demo")

# Four GPUs whose hashing runs on the CPU: an eighth each leaves half the CPU to rigd, the
# inference runtimes and the visitor's shell.
DEMO_INTENSITY = 0.125
DEMO_HOST_W = 250.0  # the host's own draw, estimated: nothing measures it
DEMO_SHARE_DIFFICULTY = 0.02  # ~2^26 hashes a share: one every few seconds on PoCL


class DemoRig:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stops: list[Callable[[], None]] = []
        self.backend_options: dict[str, Any] = {}
        self.pool_url = ""
        self.gpu_ids: list[str] = []

    @classmethod
    def start(cls) -> DemoRig:
        tmp = tempfile.TemporaryDirectory(prefix="rigd-demo-")
        rig = cls(Path(tmp.name))
        rig._tmp = tmp
        try:
            rig._start_gpus()
            rig._start_asics()
            rig._start_pool()
        except BaseException:
            rig.stop()
            raise
        return rig

    def _start_gpus(self) -> None:
        """Four simulated H100 SXM GPUs behind a simulated libnvidia-ml.so.1 (built with gcc)."""
        from hal.sim.nvml import SimControl, demo_setup

        options = demo_setup(self.workdir / "nvml", count=4)
        self.backend_options["nvml"] = options
        sim = SimControl(Path(options["sim_state_path"]), Path(options["library_path"]))
        self.gpu_ids = [f"gpu/{gpu.uuid}" for gpu in sim.read().gpus]

    def _start_asics(self) -> None:
        """A stock Antminer S19 Pro, a LuxOS S19k Pro and a Whatsminer, on loopback ports."""
        from hal.sim.asic import start_demo_fleet

        fleet, options = start_demo_fleet(warmup_s=5.0)
        self._stops.append(fleet.stop)
        self.backend_options["asic"] = options
        log.info("demo_asics", addresses=[str(a) for a in fleet.addresses])

    def _start_pool(self) -> None:
        """A local Stratum pool with a share difficulty a CPU meets every few seconds."""
        from agent.demo.pool import LocalPool

        pool = LocalPool(difficulty=DEMO_SHARE_DIFFICULTY).start_in_thread()
        self._stops.append(pool.stop)
        self.pool_url = f"stratum+tcp://127.0.0.1:{pool.port}"

    def apply(self, config: Config) -> tuple[Config, dict[str, Any]]:
        """The demo's configuration on top of the operator's (socket, logging, TCP stay theirs):
        every simulated GPU hashes on the machine's best OpenCL device, for the local pool."""
        facet = _best_opencl_device()
        facets = dict.fromkeys(self.gpu_ids, facet) if facet else {}
        hashing = tuple(HashingConfig(device=gpu, intensity=DEMO_INTENSITY) for gpu in facets)
        config = dataclasses.replace(
            config, rig_id="demo-rig", hashing=hashing, compute_facets=facets,
            pool_urls=(self.pool_url,), pool_user="demo.rig",
            state_dir=str(self.workdir / "state"), min_dwell_s=0.0,
            host_power_w=DEMO_HOST_W,
        )
        return config, dict(self.backend_options)

    def stop(self) -> None:
        while self._stops:
            self._stops.pop()()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _best_opencl_device() -> str | None:
    """The OpenCL device the kernel runs fastest on (enumerated only: no context is made)."""
    from agent.runtime.workloads.hashing.kernel import mining_rank
    from hal.errors import Unavailable
    from hal.opencl import OpenClDevice, discover

    try:
        devices = [d for d in discover({}) if isinstance(d, OpenClDevice) and d.compute_facet]
    except Unavailable:
        return None
    if not devices:
        return None
    return min(devices, key=lambda d: mining_rank(d.cl_device)).id
