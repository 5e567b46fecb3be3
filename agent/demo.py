"""The embedded demo rig: a self-contained configuration that works on any machine.

It assembles the host, whatever real discovery finds, and the simulated devices of each backend
(each marked simulated in inventory), all on loopback: four H100s behind a simulated NVML, three
ASIC miners' firmware, and a local Stratum pool that the SHA-256d kernel mines against for real
on the best OpenCL device.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from agent.config import Config, HashingConfig

log = structlog.get_logger("rigd.demo")

# Half the CPU for the kernel leaves the other half to rigd and the visitor's shell.
DEMO_INTENSITY = 0.5
DEMO_SHARE_DIFFICULTY = 0.02  # ~2^26 hashes a share: one every few seconds on PoCL


class DemoRig:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stops: list[Callable[[], None]] = []
        self.backend_options: dict[str, Any] = {}
        self.pool_url = ""

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
        from hal.sim.nvml import demo_setup

        self.backend_options["nvml"] = demo_setup(self.workdir / "nvml", count=4)

    def _start_asics(self) -> None:
        """A stock Antminer S19 Pro, a LuxOS S19k Pro and a Whatsminer, on loopback ports."""
        from hal.sim.asic import start_demo_fleet

        fleet, options = start_demo_fleet(warmup_s=5.0)
        self._stops.append(fleet.stop)
        self.backend_options["asic"] = options
        log.info("demo_asics", addresses=[str(a) for a in fleet.addresses])

    def _start_pool(self) -> None:
        """A local Stratum pool with a share difficulty a CPU meets every few seconds."""
        from agent.workloads.hashing.pool import LocalPool

        pool = LocalPool(difficulty=DEMO_SHARE_DIFFICULTY).start_in_thread()
        self._stops.append(pool.stop)
        self.pool_url = f"stratum+tcp://127.0.0.1:{pool.port}"

    def apply(self, config: Config) -> tuple[Config, dict[str, Any]]:
        """The demo's configuration on top of the operator's (socket, logging, TCP stay theirs)."""
        hashing = HashingConfig(device="auto", pools=(self.pool_url,), user="demo.rig",
                                intensity=DEMO_INTENSITY)
        config = dataclasses.replace(config, rig_id="demo-rig", hashing=(hashing,))
        return config, dict(self.backend_options)

    def stop(self) -> None:
        while self._stops:
            self._stops.pop()()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
